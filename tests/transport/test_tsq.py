"""Send-side queue limits: the TSQ formula, the ``sk_wmem_alloc`` account, TCP Small Queues and
the UDP send buffer behind a fake NIC (a FIFO at a given rate), and no throttling at all when the
skb is orphaned at once (a veth-like path)."""

from __future__ import annotations

from collections.abc import Generator
from itertools import pairwise
from typing import Any

import pytest

from perfsim.components.host import Offloads
from perfsim.core.packet import DATA, PROTO_TCP, FlowKey, Packet
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.transport.tcp import TcpConnection, TcpListener
from perfsim.transport.tsq import (
    DEFAULT_TCP_LIMIT_OUTPUT_BYTES,
    DEFAULT_UDP_SNDBUF_BYTES,
    WmemAlloc,
    tcp_pacing_rate,
    tsq_limit,
)
from perfsim.transport.udp import UdpSocket
from perfsim.transport.workloads import Endpoint, Flow, start_workload

from .fakes import FakeNs, fake_pair, other_core

AWAKE = load_profile("prior").awake()
"""The engineering-estimate profile, with cores that never sleep: these tests check mechanisms
and time the path itself (not idle wake-ups), independent of what calibration measured."""

IP_A, IP_B = 0x0A000001, 0x0A000002
MSS = 1448
GSO_SKB = 45 * MSS + 45 * 66
"""68130: size_bytes of a full GSO skb (45 MSS of payload, 66 header bytes per frame)."""


def cost(sim: Sim, stage: str, nbytes: int = 0) -> float:
    return sim.profile.cost(stage).seconds(nbytes)


def balanced(sim: Sim) -> bool:
    return sim.created == sim.delivered + sim.dropped + sim.in_flight()


# -- the formulas ----------------------------------------------------------------------------
def test_kernel_defaults() -> None:
    assert DEFAULT_TCP_LIMIT_OUTPUT_BYTES == 1048576
    assert DEFAULT_UDP_SNDBUF_BYTES == 212992


def test_pacing_rate_is_200_percent_in_slow_start_and_120_percent_after() -> None:
    """ratio × mss × max(cwnd, packets_out) / srtt; slow start means cwnd < ssthresh / 2."""
    assert tcp_pacing_rate(1448, 10, 1 << 30, 5, 100e-6) == pytest.approx(2.0 * 1448 * 10 / 100e-6)
    assert tcp_pacing_rate(1448, 74, 150, 5, 1e-3) == pytest.approx(2.0 * 1448 * 74 / 1e-3)
    assert tcp_pacing_rate(1448, 75, 150, 5, 1e-3) == pytest.approx(1.2 * 1448 * 75 / 1e-3)
    assert tcp_pacing_rate(1448, 20, 30, 40, 1e-3) == pytest.approx(1.2 * 1448 * 40 / 1e-3)
    assert tcp_pacing_rate(1448, 10, 1 << 30, 0, 0.0) == float("inf")


def test_tsq_limit_by_hand() -> None:
    """min(max(2 × skb, rate >> 10), tcp_limit_output_bytes)."""
    assert tsq_limit(GSO_SKB, 289.6e6, 1 << 20) == 282812  # 289600000 >> 10
    assert tsq_limit(GSO_SKB, 1e6, 1 << 20) == 2 * GSO_SKB  # two skbs at least
    assert tsq_limit(GSO_SKB, 5e9, 1 << 20) == 1 << 20  # capped
    assert tsq_limit(GSO_SKB, float("inf"), 262144) == 262144  # no RTT sample yet
    assert tsq_limit(GSO_SKB, 1e12, 100_000) == 100_000  # the cap wins over the 2-skb floor


# -- the account -------------------------------------------------------------------------------
def _pkts(sim: Sim, n: int, size: int) -> list[Packet]:
    return [sim.new_packet(FlowKey(IP_A, IP_B, PROTO_TCP, 1, 2), size - 66, 66) for _ in range(n)]


def test_account_frees_at_completion_times_with_one_wake_up_event(sim: Sim) -> None:
    woken: list[float] = []
    w = WmemAlloc(sim, lambda: woken.append(sim.now))
    p = _pkts(sim, 3, 1000)
    for pkt in p:
        w.charge(pkt)
    for i, pkt in enumerate(p):
        w.xmit_done(pkt, (i + 1) * 1e-3)
    assert (w.level(), w.skbs) == (3000, 3)
    events = len(sim.env._queue)
    w.wait_until_at_most(1000)
    assert len(sim.env._queue) == events + 1  # one event, at the second completion
    sim.run(1.5e-3)
    assert (w.level(), woken) == (2000, [])
    sim.run(10e-3)
    assert woken == [2e-3]
    assert (w.level(), w.wakeups, w.skbs) == (0, 1, 0)


def test_second_reports_are_ignored_and_drops_free_at_once(sim: Sim) -> None:
    """A veth orphans the skb, then a NIC reports it again (overlay path); a dropped skb is
    freed now; completions reported out of order stay sorted."""
    w = WmemAlloc(sim, lambda: None)
    a, b, c = _pkts(sim, 3, 500)
    for pkt in (a, b, c):
        w.charge(pkt)
    w.xmit_done(a, 0.0)
    w.xmit_done(a, 5e-3)
    assert w.level() == 1000
    w.xmit_done(c, 3e-3)
    w.xmit_done(b, 1e-3)
    sim.run(2e-3)
    assert w.level() == 500
    d = _pkts(sim, 1, 700)[0]
    w.charge(d)
    w.dropped(d)
    w.dropped(d)
    assert w.level() == 500
    sim.run(4e-3)
    assert (w.level(), w.skbs) == (0, 0)


def test_wake_up_waits_for_a_later_completion_report(sim: Sim) -> None:
    """While the skbs are still on the CPU (not reported) nothing is scheduled; the report that
    makes the threshold reachable arms the wake-up at its completion time."""
    woken: list[float] = []
    w = WmemAlloc(sim, lambda: woken.append(sim.now))
    a, b = _pkts(sim, 2, 800)
    w.charge(a)
    w.charge(b)
    events = len(sim.env._queue)
    w.wait_until_at_most(0)
    w.xmit_done(a, 0.0)
    assert len(sim.env._queue) == events
    w.xmit_done(b, 4e-3)
    sim.run(1.0)
    assert woken == [4e-3]


# -- TCP behind a fake NIC -----------------------------------------------------------------------
class Bulk:
    """A bulk TCP flow a -> b through a fake NIC on ``a``; records ``sk_wmem_alloc`` just before
    each data skb was charged, and samples it every 20 µs."""

    def __init__(self, sim: Sim, rate_bps: float, delay_s: float, gso: bool = True,
                 rcvbuf_bytes: int = 6 << 20, nic: bool = True, **kw: Any) -> None:
        self.sim = sim
        self.a, self.b = fake_pair(sim, delay_s, offloads=Offloads.all(gso))
        if nic:
            self.a.set_nic(rate_bps, 1000)
        self.lst = TcpListener(self.b, self.b.host.cpus.cores[0], 80, MSS, rcvbuf_bytes=rcvbuf_bytes)
        self.conn = TcpConnection.client(self.a, self.a.host.cpus.cores[0], IP_A, 40000, IP_B, 80, MSS, **kw)
        self.before: list[int] = []
        self.samples: list[int] = []
        self.reads: list[tuple[float, int]] = []
        self.a.on_output = self._probe
        sim.env.process(self._serve())
        sim.env.process(self._sample())

    def _probe(self, pkt: Packet) -> None:
        if pkt.kind == DATA:
            self.before.append(self.conn.tx_queued_bytes - pkt.size_bytes)

    def _serve(self) -> Generator[Any, Any, None]:
        srv = yield from self.lst.accept()
        while True:
            n = yield from srv.read(1 << 16)
            self.reads.append((self.sim.now, n))

    def _sample(self) -> Generator[Any, Any, None]:
        while True:
            yield self.sim.env.timeout(20e-6)
            self.samples.append(self.conn.tx_queued_bytes)

    def send_forever(self) -> None:
        def run() -> Generator[Any, Any, None]:
            assert (yield from self.conn.connect())
            while True:
                yield from self.conn.write(1 << 16)

        self.sim.env.process(run())

    def goodput_Bps(self, t0: float, t1: float) -> float:
        return sum(n for t, n in self.reads if t0 <= t < t1) / (t1 - t0)


def test_tsq_keeps_the_queue_at_the_limit_and_the_link_busy(sim: Sim) -> None:
    """1 Gbit/s NIC, 100 µs RTT, tcp_limit_output_bytes 256 KiB (the pacing term, ~4 ms of
    traffic here, is larger): every skb leaves with at most 256 KiB below the socket, so the
    queue never exceeds the limit plus one skb, and the link stays busy."""
    limit = 256 * 1024
    f = Bulk(sim, 1e9, 50e-6, tcp_limit_output_bytes=limit)
    f.send_forever()
    sim.run(0.1)
    assert f.conn.tsq_limit_bytes(GSO_SKB) == limit
    assert max(f.before) <= limit
    assert max(f.before) > limit - GSO_SKB  # it did fill up to the limit
    assert max(f.samples) <= limit + GSO_SKB
    assert f.conn.tsq_throttles > 0
    assert f.a.nic_max_queue <= 5
    payload_Bps = 1e9 / 8 * MSS / (MSS + 66)  # 119.55 MB/s of payload in 1514-byte frames
    got = f.goodput_Bps(0.05, 0.1)
    assert got == pytest.approx(payload_Bps, rel=0.01)
    assert got * 8 > 0.95 * 1e9
    assert f.conn.srtt < 100e-6 + (limit + GSO_SKB) * 8 / 1e9 + 50e-6
    assert f.conn.retransmits == 0
    assert balanced(sim)


def test_without_tsq_the_queue_grows_to_the_window(sim: Sim) -> None:
    """The same flow with TSQ off fills the NIC queue with the whole 2 MiB window: the bound of
    the test above is exceeded eight times over and the RTT is ~17 ms instead of ~2 ms."""
    limit = 256 * 1024
    rcvbuf = 2 << 20
    f = Bulk(sim, 1e9, 50e-6, rcvbuf_bytes=rcvbuf, tcp_limit_output_bytes=limit, tsq=False)
    f.send_forever()
    sim.run(0.1)
    window_wire = rcvbuf * (MSS + 66) / MSS
    assert max(f.samples) > 0.95 * window_wire
    assert max(f.samples) > 6 * (limit + GSO_SKB)
    assert f.conn.tsq_throttles == 0
    assert f.conn.srtt > 0.9 * window_wire * 8 / 1e9
    assert f.goodput_Bps(0.05, 0.1) == pytest.approx(1e9 / 8 * MSS / (MSS + 66), rel=0.01)


def test_default_limit_caps_a_10g_flow_at_1_mib(sim: Sim) -> None:
    f = Bulk(sim, 10e9, 50e-6)
    f.send_forever()
    sim.run(0.04)
    assert f.conn.tsq_limit_bytes(GSO_SKB) == 1 << 20
    assert 1048576 - GSO_SKB < max(f.before) <= 1048576
    assert max(f.samples) <= 1048576 + GSO_SKB
    assert f.goodput_Bps(0.02, 0.04) == pytest.approx(10e9 / 8 * MSS / (MSS + 66), rel=0.01)


def test_a_lost_skb_is_released_and_the_flow_recovers(sim: Sim) -> None:
    """An skb dropped before the NIC is freed at once (``on_drop``), so the TSQ-limited flow
    is not stuck behind it: fast retransmit repairs the loss and every byte arrives."""
    f = Bulk(sim, 1e9, 50e-6, tcp_limit_output_bytes=256 * 1024)
    f.a.lose_if = lambda pkt: pkt.kind == DATA and pkt.seq > 2 << 20 and not f.a.lost
    total = 8 << 20

    def run() -> Generator[Any, Any, None]:
        assert (yield from f.conn.connect())
        yield from f.conn.write(total)

    sim.env.process(run())
    sim.run(0.2)
    assert len(f.a.lost) == 1
    assert (f.conn.fast_retransmits, f.conn.timeouts) == (1, 0)
    assert sum(n for _, n in f.reads) == total
    assert max(f.before) <= 2 * 256 * 1024
    assert (f.conn.tx_queued_bytes, f.conn.wmem.skbs) == (0, 0)
    assert balanced(sim)


def test_throttled_socket_resumes_at_tx_completion_on_the_ack_core(sim: Sim) -> None:
    """limit 0, MSS skbs, 1 Gbit/s, 10 ms one way: the first two skbs leave at once (the
    retransmit queue is empty or holds one skb), then each skb waits for the completion of the
    one before it and is sent from the core that received the SYN-ACK, at exactly that time."""
    a, b = fake_pair(sim, 10e-3, offloads=Offloads.all(False))
    a.set_nic(1e9, 1000)
    lst = TcpListener(b, b.host.cpus.cores[0], 80, MSS)
    flow = FlowKey(IP_A, IP_B, PROTO_TCP, 40000, 80)
    ack_core = a.host.cpus.rss(flow.reversed())
    app_core = other_core(a, flow.reversed())
    conn = TcpConnection.client(a, app_core, IP_A, 40000, IP_B, 80, MSS, tcp_limit_output_bytes=0)

    def run() -> Generator[Any, Any, None]:
        assert (yield from conn.connect())
        yield from conn.write(10 * MSS)

    sim.env.process(run())
    sim.env.process(lst.accept())
    sim.run(0.035)  # data leaves at ~20 ms (after the handshake); its ACKs arrive at ~40 ms
    data = a.data()
    assert len(data) == 10
    assert [s.core for s in data] == [app_core.name] * 2 + [ack_core.name] * 8
    tx = cost(sim, "tcp_tx", MSS + 66)
    ser = (MSS + 66) * 8 / 1e9
    t0 = data[0].t
    assert data[1].t == t0
    assert data[2].t == pytest.approx(t0 + tx + 2 * ser, abs=1e-12)  # the second one's completion
    gaps = [y.t - x.t for x, y in pairwise(data[2:])]
    assert gaps == pytest.approx([tx + ser] * 7, abs=1e-12)
    assert conn.tsq_throttles == conn.wmem.wakeups == 8


def test_veth_like_completion_never_throttles(sim: Sim) -> None:
    """Orphaned at once, the skbs never count: even with tcp_limit_output_bytes = 0 the flow is
    packet for packet the flow without TSQ (and a UDP socket with the smallest send buffer
    never blocks)."""

    def run(tsq: bool) -> tuple[list[Any], int]:
        s = Sim(1, profile=AWAKE)
        f = Bulk(s, 0.0, 50e-6, nic=False, tcp_limit_output_bytes=0, tsq=tsq)
        f.send_forever()
        s.run(0.02)
        assert max(f.before) == 0
        assert f.conn.wmem.wakeups == 0
        return f.a.log, f.conn.tsq_throttles

    log_on, throttles = run(True)
    log_off, _ = run(False)
    assert throttles == 0
    assert len(log_on) > 1000
    assert log_on == log_off

    a, b = fake_pair(sim, 50e-6)
    cli = Endpoint(a, IP_A, a.host.cpus.cores[0], 1448)
    srv = Endpoint(b, IP_B, b.host.cpus.cores[0], 1448)
    flow = start_workload(sim, "udp_stream", cli, srv, 1472, 9000, 40000, sndbuf_bytes=2048)
    sim.run(0.005)
    assert flow.client_sock.sndbuf_waits == 0
    assert flow.stats.datagrams > 1000


# -- UDP behind a fake NIC -------------------------------------------------------------------
def _udp(sim: Sim, queue_packets: int, **kw: Any) -> tuple[Flow, FakeNs, list[tuple[float, int]]]:
    a, b = fake_pair(sim, 50e-6)
    a.set_nic(1e9, queue_packets)
    cli = Endpoint(a, IP_A, a.host.cpus.cores[0], 1448)
    srv = Endpoint(b, IP_B, b.host.cpus.cores[1], 1448)
    flow = start_workload(sim, "udp_stream", cli, srv, 1472, 9000, 40000, measure_from_s=0.01, **kw)
    before: list[tuple[float, int]] = []
    sock = flow.client_sock
    a.on_output = lambda pkt: before.append((sim.now, sock.wmem.level() - pkt.size_bytes))
    return flow, a, before


def test_udp_sender_blocks_on_the_send_buffer_instead_of_overflowing_the_nic(sim: Sim) -> None:
    """A sender ~6× faster than its 1 Gbit/s NIC: 212992 B of send buffer hold 141 datagrams of
    1514 B, the NIC queue holds 141, nothing is dropped and the link runs at line rate.  The
    writer is admitted while below 212992 B (at most 140 datagrams below it) and woken when
    twice the queued bytes fit the buffer again (70 datagrams)."""
    flow, a, before = _udp(sim, 141)
    T = 0.05
    sim.run(0.01 + T)
    st = flow.stats
    sock = flow.client_sock
    assert st.drops == 0
    assert not sim.drops
    assert a.nic_max_queue == 141
    assert sock.sndbuf == 212992
    assert sock.sndbuf_waits > 0
    assert sock.sndbuf_waits - sock.wmem.wakeups in (0, 1)  # maybe blocked right now
    assert st.bytes / T == pytest.approx(1e9 / 8 * 1472 / 1514, rel=0.01)
    assert st.datagrams * 1514 * 8 / T == pytest.approx(1e9, rel=0.02)
    levels = [lvl for t, lvl in before if t >= 0.01]
    assert max(levels) == 140 * 1514
    assert min(levels) == 70 * 1514
    assert balanced(sim)


def test_udp_without_a_send_buffer_limit_overflows_the_nic(sim: Sim) -> None:
    flow, _, _ = _udp(sim, 141, sndbuf_bytes=1 << 30)
    sim.run(0.02)
    assert flow.client_sock.sndbuf_waits == 0
    assert sim.drops[("a", "fake_queue_full")] > 1000
    assert flow.client_sock.wmem.level() <= 142 * 1514  # the dropped datagrams were freed
    assert balanced(sim)


def test_blocking_send_is_woken_when_half_the_buffer_is_free(sim: Sim) -> None:
    """``send()`` of 64 KiB datagrams (45 fragments, 67397 B each) with a 150000 B buffer and a
    1 Gbit/s NIC: three go at once (the third with 134794 B < 150000 B below the socket); the
    fourth waits for twice the queued bytes to fit the buffer (``sock_def_write_space``):
    after the second completion (67397 B left), not the first (134794 B, already < 150000 B)."""
    a, b = fake_pair(sim, 10e-6)
    a.set_nic(1e9, 1000)
    tx = UdpSocket(a, a.host.cpus.cores[0], IP_A, 40000, sndbuf_bytes=150_000)
    UdpSocket(b, b.host.cpus.cores[0], IP_B, 9000, rcvbuf_bytes=1 << 20)

    def send() -> Generator[Any, Any, None]:
        for _ in range(4):
            yield from tx.send(IP_B, 9000, 65507)

    sim.env.process(send())
    sim.run(0.01)
    sent = a.data()
    assert [s.size for s in sent] == [67397] * 4
    own = cost(sim, "sock_tx_copy", 65507) + sim.profile.cost("udp_tx").seconds(67397, units=45)
    ser = 67397 * 8 / 1e9
    assert [s.t for s in sent] == pytest.approx([0.0, own, 2 * own, own + 2 * ser], abs=1e-12)
    assert (tx.sndbuf_waits, tx.wmem.wakeups) == (1, 1)
    assert tx.drops == 0


# -- parameters ---------------------------------------------------------------------------
def test_bad_limits_name_the_field(sim: Sim) -> None:
    a, b = fake_pair(sim, 1e-4)
    with pytest.raises(ConfigError, match=r"^a/tcp:40000\.tcp_limit_output_bytes: got -1"):
        TcpConnection.client(a, a.host.cpus.cores[0], IP_A, 40000, IP_B, 80, MSS, tcp_limit_output_bytes=-1)
    with pytest.raises(ConfigError, match=r"^b/tcp:80\.tcp_limit_output_bytes: got 1.5"):
        TcpListener(b, b.host.cpus.cores[0], 80, MSS, tcp_limit_output_bytes=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^a/udp:9000\.sndbuf_bytes: got 100;"):
        UdpSocket(a, a.host.cpus.cores[0], IP_A, 9000, sndbuf_bytes=100)
