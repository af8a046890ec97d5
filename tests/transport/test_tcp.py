"""TCP over the fake namespace pair: handshake timing, slow start, window-limited throughput,
loss recovery (fast retransmit, RTO) and GSO, with costs taken from the default profile."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from perfsim.components.host import Offloads
from perfsim.core.packet import ACK, DATA, SYN, SYNACK, Packet
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.transport.tcp import TcpConnection, TcpListener

from .fakes import FakeNs, fake_pair

AWAKE = load_profile("prior").awake()
"""The engineering-estimate profile, with cores that never sleep: these tests check mechanisms
and time the path itself (not idle wake-ups), independent of what calibration measured."""

IP_A, IP_B = 0x0A000001, 0x0A000002
MSS = 1448


def cost(sim: Sim, stage: str, nbytes: int = 0) -> float:
    return sim.profile.cost(stage).seconds(nbytes)


class Pair:
    """A client connection on ``a`` and a listener on ``b``; the server reads everything."""

    def __init__(self, sim: Sim, delay_s: float, gso: bool = False, rcvbuf_bytes: int = 6 << 20) -> None:
        self.sim = sim
        self.a, self.b = fake_pair(sim, delay_s, offloads=Offloads.all(gso))
        self.lst = TcpListener(self.b, self.b.host.cpus.cores[0], 80, MSS, rcvbuf_bytes=rcvbuf_bytes)
        self.conn = TcpConnection.client(self.a, self.a.host.cpus.cores[0], IP_A, 40000, IP_B, 80, MSS)
        self.server: TcpConnection | None = None
        self.t_connected: float | None = None
        self.t_accepted: float | None = None
        self.reads: list[tuple[float, int]] = []
        sim.env.process(self._serve())

    def _serve(self) -> Generator[Any, Any, None]:
        self.server = yield from self.lst.accept()
        self.t_accepted = self.sim.now
        while True:
            n = yield from self.server.read(1 << 16)
            if n == 0:
                return
            self.reads.append((self.sim.now, n))

    def send(self, total: int, chunk: int = 1 << 16) -> None:
        def run() -> Generator[Any, Any, None]:
            assert (yield from self.conn.connect())
            self.t_connected = self.sim.now
            left = total
            while left > 0:
                n = min(chunk, left)
                yield from self.conn.write(n)
                left -= n

        self.sim.env.process(run())


def test_handshake_packets_and_times_follow_the_profile(sim: Sim) -> None:
    """SYN after connect()'s cost, SYN-ACK one delay + tx + rx later, then the ACK."""
    d = 1e-3
    p = Pair(sim, d)
    p.send(0)
    sim.run(0.1)
    c = cost(sim, "tcp_connect")
    tx, rx = cost(sim, "tcp_tx", 66), cost(sim, "tcp_rx", 66)
    syn, ack = p.a.log
    (synack,) = p.b.log
    assert (syn.kind, syn.seq, syn.ack, syn.size) == (SYN, 0, 0, 66)
    assert (synack.kind, synack.seq, synack.ack) == (SYNACK, 0, 1)
    assert (ack.kind, ack.seq, ack.ack) == (ACK, 1, 1)
    assert syn.t == pytest.approx(c, abs=1e-12)
    assert synack.t == pytest.approx(c + tx + d + rx, abs=1e-12)
    assert ack.t == pytest.approx(c + 2 * tx + 2 * d + 2 * rx, abs=1e-12)
    assert p.t_connected == pytest.approx(ack.t, abs=1e-12)
    assert p.t_accepted == pytest.approx(ack.t + tx + d + rx + c, abs=1e-12)
    assert p.conn.state_name == p.server.state_name == "ESTABLISHED"  # type: ignore[union-attr]
    assert sim.created == sim.delivered == 3


def test_slow_start_doubles_cwnd_every_rtt(sim: Sim) -> None:
    """IW10, +1 segment per acked segment: 10, 20, 40, ... sampled mid-RTT."""
    d = 1e-3
    p = Pair(sim, d)
    p.send(8 << 20)
    samples: list[int] = []

    def probe() -> Generator[Any, Any, None]:
        while p.t_connected is None:
            yield sim.env.timeout(1e-4)
        t0 = p.t_connected
        for k in range(6):
            yield sim.env.timeout(t0 + k * 2 * d + d - sim.now)
            samples.append(p.conn.cwnd)

    sim.env.process(probe())
    sim.run(0.015)
    assert samples == [10, 20, 40, 80, 160, 320]
    assert p.conn.retransmits == 0


def test_window_limited_throughput_is_window_over_rtt(sim: Sim) -> None:
    """rcvbuf 256 KiB over a 2 ms RTT: ~131 MB/s, far below what the CPUs could do."""
    d = 1e-3
    rcvbuf = 256 * 1024
    p = Pair(sim, d, rcvbuf_bytes=rcvbuf)
    p.send(1 << 40)
    sim.run(0.15)
    got = sum(n for t, n in p.reads if t >= 0.05)
    rate = got / 0.1
    assert rate == pytest.approx(rcvbuf / (2 * d), rel=0.05)
    assert p.conn.cwnd * MSS > rcvbuf  # the receive window, not cwnd, was the limit


def _lose_first(ns: FakeNs, seq: int) -> None:
    done: list[bool] = []

    def lose(pkt: Packet) -> bool:
        if pkt.kind == DATA and pkt.seq == seq and not done:
            done.append(True)
            return True
        return False

    ns.lose_if = lose


def test_single_loss_is_repaired_by_fast_retransmit_exactly_once(sim: Sim) -> None:
    d = 1e-3
    total = 300 * MSS
    p = Pair(sim, d)
    lost_seq = 1 + 30 * MSS
    _lose_first(p.a, lost_seq)
    p.send(total)
    sim.run(0.5)
    srv = p.server
    assert srv is not None
    assert len(p.a.lost) == 1
    assert (p.conn.fast_retransmits, p.conn.timeouts, p.conn.retransmits) == (1, 0, 1)
    rexmits = [s for s in p.a.data() if s.seq == lost_seq]
    assert len(rexmits) == 2
    assert sum(n for _, n in p.reads) == total
    assert srv.bytes_read == total
    assert srv.rcv_nxt == 1 + total
    assert srv.dup_bytes == 0
    assert p.conn.snd_una == 1 + total
    assert p.conn.ssthresh == 20  # half the 40-segment flight (third RTT) at the loss
    assert sim.created == sim.delivered + sim.dropped + sim.in_flight()


def test_rto_fires_when_the_only_outstanding_segment_is_lost(sim: Sim) -> None:
    d = 1e-3
    p = Pair(sim, d)
    _lose_first(p.a, 1)
    p.send(100)
    sim.run(1.0)
    first, again = p.a.data()
    assert (first.seq, first.payload, again.seq, again.payload) == (1, 100, 1, 100)
    assert again.t - first.t == pytest.approx(0.2, abs=1e-12)  # max(200 ms, srtt + 4 rttvar)
    assert (p.conn.timeouts, p.conn.fast_retransmits, p.conn.retransmits) == (1, 0, 1)
    assert p.reads
    assert sum(n for _, n in p.reads) == 100
    assert p.conn.cwnd == 2  # 1 after the timeout, +1 for the acked segment


def _transfer(gso: bool, total: int) -> tuple[list[Any], int]:
    sim = Sim(1, profile=AWAKE)
    p = Pair(sim, 50e-6, gso=gso)
    p.send(total)
    sim.run(0.2)
    assert sum(n for _, n in p.reads) == total
    return p.a.data(), p.a.host.stage("tcp_tx").packets


def test_gso_builds_super_segments_and_cuts_per_skb_work() -> None:
    total = 4 << 20
    on, tx_on = _transfer(True, total)
    off, tx_off = _transfer(False, total)
    assert all(s.segs == 1 and s.payload <= MSS for s in off)
    assert max(s.payload for s in on) == 45 * MSS  # (65536 - 52) // 1448 MSS
    assert max(s.segs for s in on) == 45
    assert all(s.segs == -(-s.payload // MSS) and s.size == s.payload + 66 * s.segs for s in on)
    segs_on = sum(s.segs for s in on)
    assert abs(segs_on - len(off)) <= len(on)  # same wire segments, up to one partial per skb
    assert len(on) * 5 < len(off)
    # tcp_tx runs once per skb: the per-skb count falls by the mean super-segment size
    assert tx_off / tx_on == pytest.approx(segs_on / len(on), rel=0.05)
