"""UDP sockets over the fake pair: CBR delivery, receive-buffer overflow, IP fragments."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from perfsim.core.packet import PROTO_UDP, FlowKey
from perfsim.core.sim import Sim, reserve
from perfsim.transport.udp import UdpSocket, udp_segs, udp_truesize
from perfsim.transport.workloads import Endpoint, start_workload

from .fakes import fake_pair, other_core

IP_A, IP_B = 0x0A000001, 0x0A000002


def cost(sim: Sim, stage: str, nbytes: int = 0) -> float:
    return sim.profile.cost(stage).seconds(nbytes)


def test_cbr_stream_delivers_rate_times_duration_with_constant_latency(sim: Sim) -> None:
    """8 Mbit/s of 1000 B datagrams = one per ms; 100 ms window -> 100 datagrams."""
    d = 100e-6
    a, b = fake_pair(sim, d)
    cli = Endpoint(a, IP_A, a.host.cpus.cores[0], 1448)
    srv = Endpoint(b, IP_B, b.host.cpus.cores[0], 1448)
    flow = start_workload(sim, "udp_stream", cli, srv, 1000, 9000, 40000, rate_bps=8e6, measure_from_s=0.0105)
    sim.run(0.1105)
    st = flow.stats
    assert st.bytes == pytest.approx(8e6 * 0.1 / 8, abs=1000)
    assert (st.bytes, st.datagrams, st.packets, st.drops) == (100_000, 100, 100, 0)
    # the reader sleeps between datagrams: each wakes it, and its core switches to it; recv()
    # is udp_recv per call plus sock_rx_copy's per-byte cost
    one_way = (cost(sim, "sock_tx_copy", 1000) + cost(sim, "udp_tx", 1042) + d
               + cost(sim, "udp_rx", 1042) + cost(sim, "task_switch") + cost(sim, "udp_recv")
               + 1000 * sim.profile.cost("sock_rx_copy").per_byte_s)
    assert st.latencies_s == pytest.approx([one_way] * 100, abs=1e-12)
    sent = a.data()
    assert [round(s.t * 1e6, 6) for s in sent[:3]] == [0.0, 1000.0, 2000.0]
    assert sim.created == sim.delivered + sim.dropped + sim.in_flight()


def test_receive_buffer_overflow_drops_and_counts(sim: Sim) -> None:
    """212992 B of queue holds 92 datagrams of 1000 B (2304 B of truesize each); the other 208
    of 300 are dropped."""
    a, b = fake_pair(sim, 10e-6)
    flow = FlowKey(IP_A, IP_B, PROTO_UDP, 40000, 9000)
    app_b = other_core(b, flow)
    reserve(app_b, 0.0, 1.0)  # the receiving application is busy for a second
    tx = UdpSocket(a, a.host.cpus.cores[0], IP_A, 40000)
    rx = UdpSocket(b, app_b, IP_B, 9000)
    got: list[int] = []

    def send() -> Generator[Any, Any, None]:
        for _ in range(300):
            yield from tx.send(IP_B, 9000, 1000)

    def recv() -> Generator[Any, Any, None]:
        while True:
            n, src, sport = yield from rx.recv()
            assert (src, sport) == (IP_A, 40000)
            got.append(n)

    sim.env.process(send())
    sim.env.process(recv())
    sim.run(0.5)
    assert rx.held_packets() == 92
    assert rx.queued_bytes == 92 * 2304
    assert sim.drops[("b/udp:9000", "socket_rcvbuf_full")] == 208
    assert tx.drops == 208  # the sender owns the datagrams and hears of each drop
    assert sim.created == sim.delivered + sim.dropped + sim.in_flight()
    sim.run(2.0)
    assert len(got) == 92
    assert rx.held_packets() == 0
    assert sim.created == 300 == sim.delivered + sim.dropped


@pytest.mark.parametrize(("payload", "segs", "truesize"),
                         [(1, 1, 832), (64, 1, 832), (200, 1, 1280), (512, 1, 1280), (1400, 1, 2304),
                          (3000, 3, 3 * 2304), (30000, 1, 32768 + 256), (60000, 1, 61440 + 256)])
def test_udp_truesize_matches_the_kernel(payload: int, segs: int, truesize: int) -> None:
    """The first five were measured on this machine kind over loopback (``/proc/net/udp``
    rx_queue of 10 queued datagrams, divided by 10)."""
    assert udp_truesize(payload, segs) == truesize


@pytest.mark.parametrize(("payload", "segs"), [(1, 1), (1472, 1), (1473, 2), (4000, 3), (65507, 45)])
def test_fragment_count(payload: int, segs: int) -> None:
    assert udp_segs(payload, 1500) == segs


def test_large_datagram_leaves_as_fragments_charged_per_frame(sim: Sim) -> None:
    a, b = fake_pair(sim, 10e-6)
    tx = UdpSocket(a, a.host.cpus.cores[0], IP_A, 40000, mtu_bytes=1500)
    UdpSocket(b, b.host.cpus.cores[0], IP_B, 9000)
    udp_tx = a.host.stage("udp_tx")
    tx.sendto(IP_B, 9000, 4000)
    (s,) = a.log
    assert (s.payload, s.segs, s.size) == (4000, 3, 4000 + 3 * 42)
    assert udp_tx.packets == 3
    assert udp_tx.cpu_s == pytest.approx(sim.profile.cost("udp_tx").seconds(4126, units=3), abs=1e-15)
    assert a.host.cpus.cores[0].busy_s == pytest.approx(
        udp_tx.cpu_s + cost(sim, "sock_tx_copy", 4000), abs=1e-15)
