"""netperf workloads over the fake pair: rr/crr round trips by hand, port cycling, packet
kinds, determinism and parameter errors."""

from __future__ import annotations

from typing import Any

import pytest

from perfsim.core.packet import ACK, DATA, FIN, SYN, SYNACK
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.transport.workloads import Endpoint, Flow, start_workload

from .fakes import FakeNs, fake_pair

IP_A, IP_B = 0x0A000001, 0x0A000002


def cost(sim: Sim, stage: str, nbytes: int = 0) -> float:
    return sim.profile.cost(stage).seconds(nbytes)


def setup(sim: Sim, name: str, size: int, delay_s: float, client_port: int = 40000, **kw: float) -> tuple[Flow, FakeNs, FakeNs]:
    a, b = fake_pair(sim, delay_s)
    cli = Endpoint(a, IP_A, a.host.cpus.cores[0], 1448)
    srv = Endpoint(b, IP_B, b.host.cpus.cores[1], 1448)
    return start_workload(sim, name, cli, srv, size, 5001, client_port, **kw), a, b


def test_tcp_rr_round_trip_is_two_one_way_paths(sim: Sim) -> None:
    """Steady state: each way = copy + tcp_tx + delay + tcp_rx + the reader's wake-up switch +
    copy; ACKs ride on data.  Client and server run on different cores, so both copies pay
    ``copy_cross_core`` per byte."""
    d, m = 100e-6, 100
    flow, a, b = setup(sim, "tcp_rr", m, d)
    T = 0.05
    sim.run(T)
    one_way = (cost(sim, "sock_tx_copy", m) + cost(sim, "tcp_tx", m + 66) + d
               + cost(sim, "tcp_rx", m + 66) + cost(sim, "task_switch") + cost(sim, "sock_rx_copy", m)
               + 2 * m * sim.profile.cost("copy_cross_core").per_byte_s)
    rtt = 2 * one_way
    lat = flow.stats.latencies_s
    assert lat[0] >= 2 * d
    assert lat[1:] == pytest.approx([rtt] * (len(lat) - 1), abs=1e-12)
    n = flow.stats.transactions
    assert n == len(lat)
    assert T / rtt - 3 <= n <= T / rtt  # the handshake takes about one round trip
    assert flow.stats.bytes == 2 * m * n + (m if len(b.data()) > n else 0)
    # after the handshake only data packets: every ACK was piggybacked
    assert [s.kind for s in a.log[:2]] == [SYN, ACK]
    assert {s.kind for s in a.log[2:]} == {DATA}
    assert {s.kind for s in b.log[1:]} == {DATA}


def test_udp_rr_round_trip_by_hand(sim: Sim) -> None:
    d, m = 100e-6, 64
    flow, a, _ = setup(sim, "udp_rr", m, d)
    sim.run(0.01)
    one_way = (cost(sim, "sock_tx_copy", m) + cost(sim, "udp_tx", m + 42) + d
               + cost(sim, "udp_rx", m + 42) + cost(sim, "task_switch") + cost(sim, "udp_recv")
               + m * sim.profile.cost("sock_rx_copy").per_byte_s)
    lat = flow.stats.latencies_s
    assert lat == pytest.approx([2 * one_way] * len(lat), abs=1e-12)
    assert flow.stats.transactions == int(0.01 / (2 * one_way))
    n = flow.stats.transactions
    # the next request left at n x rtt; the server has read it if a one-way trip fits before 10 ms
    assert len(a.log) == n + 1
    assert flow.stats.datagrams == 2 * n + (n * 2 * one_way + one_way <= 0.01)


def test_tcp_crr_opens_a_connection_per_transaction_on_the_next_port(sim: Sim) -> None:
    flow, a, b = setup(sim, "tcp_crr", 200, 50e-6, client_port=40000)
    sim.run(0.01)
    syns = [s for s in a.log if s.kind == SYN]
    n = len(syns)
    assert n > 10
    assert [s.sport for s in syns] == list(range(40000, 40000 + n))
    assert flow.stats.connections in (n, n - 1)
    assert flow.stats.transactions in (n - 1, n)
    both = sorted(a.log + b.log, key=lambda s: (s.t, s.id))
    for port in range(40000, 40000 + n - 2):
        kinds = [(s.sport == port, s.kind) for s in both if port in (s.sport, s.dport)]
        assert kinds == [(True, SYN), (False, SYNACK), (True, ACK), (True, DATA), (False, DATA),
                         (True, FIN), (False, FIN), (True, ACK)]
    assert len(flow.server_sock.children) <= 2  # finished connections leave the listener
    assert sim.created == sim.delivered + sim.dropped + sim.in_flight()


def test_lost_final_ack_is_repaired_from_time_wait(sim: Sim) -> None:
    """The server's FIN is retransmitted after its RTO; the client, in TIME_WAIT, ACKs again."""
    flow, a, b = setup(sim, "tcp_crr", 200, 50e-6)
    lost: list[int] = []

    def lose(pkt: Any) -> bool:  # the client's last ACK of its first connection (seq = FIN + 1)
        if pkt.kind == ACK and pkt.flow.sport == 40000 and pkt.seq == 202 and not lost:
            lost.append(pkt.id)
            return True
        return False

    a.lose_if = lose
    sim.run(0.3)
    fins = [s for s in b.log if s.kind == FIN and s.dport == 40000]
    acks = [s for s in a.log if s.kind == ACK and s.sport == 40000 and s.seq == 202]
    assert len(lost) == 1
    assert len(fins) == 2
    assert len(acks) == 2
    assert fins[1].t - fins[0].t >= 0.2  # RTO_MIN
    assert acks[1].t > fins[1].t
    assert (IP_A, 40000) not in flow.server_sock.children
    assert flow.stats.timeouts == 1


def test_lost_syn_is_retransmitted_after_one_second(sim: Sim) -> None:
    flow, a, _ = setup(sim, "tcp_rr", 10, 50e-6)
    a.lose_ids = {sim.created + 1}  # the next packet created: the SYN
    sim.run(1.1)
    syns = [s for s in a.log if s.kind == SYN]
    assert len(syns) == 2
    assert syns[1].t - syns[0].t == pytest.approx(1.0, abs=1e-12)  # RFC 6298 initial RTO
    assert flow.stats.transactions > 0


def test_tcp_crr_ports_wrap_around_the_ephemeral_range(sim: Sim) -> None:
    _, a, _ = setup(sim, "tcp_crr", 10, 50e-6, client_port=60998)
    sim.run(0.002)
    assert [s.sport for s in a.log if s.kind == SYN][:4] == [60998, 60999, 32768, 32769]


def test_tcp_stream_measures_after_warm_up_and_counts_segments(sim: Sim) -> None:
    flow, a, _ = setup(sim, "tcp_stream", 65536, 50e-6, measure_from_s=0.01)
    sim.run(0.03)
    st = flow.stats
    assert st.connections == 0  # connected before the window
    data = a.data()
    assert st.bytes > 0
    assert st.packets > 0
    assert len(st.latencies_s) > 0
    assert st.bytes <= sum(s.payload for s in data if s.t >= 0.009)
    row = flow.summary(0.03)
    assert row["throughput_bps"] == pytest.approx(st.bytes * 8 / 0.02)
    assert row["latency_mean_s"] > 50e-6


def _run(seed: int) -> tuple[dict[str, object], list[object]]:
    sim = Sim(seed)
    flow, a, b = setup(sim, "tcp_stream", 16384, 200e-6, measure_from_s=0.005)
    seen: list[int] = []

    def lose(pkt: object) -> bool:  # lose every 500th data skb once
        pid = pkt.id  # type: ignore[attr-defined]
        if pkt.kind == DATA and pid % 500 == 0 and pid not in seen:  # type: ignore[attr-defined]
            seen.append(pid)
            return True
        return False

    a.lose_if = lose
    sim.run(0.05)
    return flow.summary(0.05), a.log + b.log


def test_same_seed_gives_identical_results() -> None:
    s1, log1 = _run(7)
    s2, log2 = _run(7)
    assert s1["retransmits"] > 0  # type: ignore[operator]
    assert s1 == s2
    assert log1 == log2


@pytest.mark.parametrize(
    ("name", "size", "kw", "field"),
    [
        ("tcp_bulk", 100, {}, "workload"),
        ("tcp_stream", 0, {}, "message_size"),
        ("udp_stream", 65508, {}, "message_size"),
        ("tcp_rr", 1.5, {}, "message_size"),
        ("tcp_rr", 100, {"rate_bps": 1e6}, "rate_bps"),
        ("udp_stream", 100, {"rate_bps": -1.0}, "rate_bps"),
        ("tcp_stream", 100, {"start_s": -1.0}, "start_s"),
        ("tcp_stream", 100, {"tcp_limit_output_bytes": -1}, "tcp_limit_output_bytes"),
        ("tcp_stream", 100, {"tcp_limit_output_bytes": 2**31}, "tcp_limit_output_bytes"),
        ("tcp_stream", 100, {"tsq": 1}, "tsq"),
        ("udp_stream", 100, {"sndbuf_bytes": 1024}, "sndbuf_bytes"),
    ],
)
def test_bad_parameters_name_the_field(sim: Sim, name: str, size: int, kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: got "):
        setup(sim, name, size, 1e-4, **kw)


def test_buffer_and_tsq_settings_reach_the_sockets(sim: Sim) -> None:
    """sndbuf defaults to 4 MiB for TCP and 212992 B (net.core.wmem_default) for UDP; the TSQ
    settings reach the client and, through the listener, the accepted connection."""
    tcp, _, _ = setup(sim, "tcp_stream", 1000, 1e-4, tcp_limit_output_bytes=131072, tsq=False)
    udp, _, _ = setup(sim, "udp_stream", 1000, 1e-4, client_port=40001)
    sim.run(0.01)
    assert (tcp.client_sock.sndbuf, udp.client_sock.sndbuf, udp.server_sock.sndbuf) == (4 << 20, 212992, 212992)
    for conn in (tcp.client_sock, tcp.server_conn):
        assert (conn.limit_output_bytes, conn.tsq) == (131072, False)


def test_port_already_bound_is_a_config_error(sim: Sim) -> None:
    a, b = fake_pair(sim, 1e-4)
    cli = Endpoint(a, IP_A, a.host.cpus.cores[0], 1448)
    srv = Endpoint(b, IP_B, b.host.cpus.cores[0], 1448)
    start_workload(sim, "tcp_rr", cli, srv, 1, 5001, 40000)
    with pytest.raises(ConfigError, match="port"):
        start_workload(sim, "tcp_rr", cli, srv, 1, 5001, 40001)
    with pytest.raises(ConfigError, match="endpoint.mss_bytes"):
        Endpoint(a, IP_A, a.host.cpus.cores[0], 0)
