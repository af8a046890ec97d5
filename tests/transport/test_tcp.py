"""TCP over the fake namespace pair: handshake timing, slow start, window-limited throughput,
loss recovery (fast retransmit, RTO) and GSO, with costs taken from the default profile."""

from __future__ import annotations

import itertools
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
    # the SYN-ACK's softirq core wakes connect() on the client's other core (an IPI,
    # ``task_wakeup``) before it sends the ACK; the ACK's wakes accept(), whose core switches
    # to it (``task_switch``) before its work
    assert p.t_accepted == pytest.approx(ack.t + cost(sim, "task_wakeup") + tx + d + rx + cost(sim, "task_switch") + c,
                                         abs=1e-12)
    assert p.conn.state_name == p.server.state_name == "ESTABLISHED"  # type: ignore[union-attr]
    assert sim.created == sim.delivered == 3


def test_slow_start_doubles_cwnd_every_rtt(sim: Sim) -> None:
    """IW10, +1 segment per acked segment: 10, 20, 40, ... sampled mid-RTT.  From the fourth
    round on a round may end one segment short: the receiver ACKs every second segment, or
    whatever its reader has read, and a lone last segment waits for the next round's data
    (``rcv_nxt - rcv_wup`` is not above one MSS, so neither softirq nor the reader ACKs it)."""
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
    assert samples[:3] == [10, 20, 40]
    for prev, now in itertools.pairwise(samples[2:]):
        assert 2 * prev - 1 <= now <= 2 * prev
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


def _reader_pair(sim: Sim) -> tuple[FakeNs, FakeNs, Any, list[tuple[float, int]]]:
    """Client on ``a``'s core 0; on ``b`` the server application runs on the core that is not
    the softirq (RSS) core of the client's segments, and reads in 64 KiB chunks.  The client
    writes 10 MSS (one GSO skb) 1 ms after it connected."""
    from perfsim.core.packet import PROTO_TCP, FlowKey

    from .fakes import other_core

    a, b = fake_pair(sim, 1e-4, offloads=Offloads.all(True))
    app_b = other_core(b, FlowKey(IP_A, IP_B, PROTO_TCP, 40000, 80))
    lst = TcpListener(b, app_b, 80, MSS)
    conn = TcpConnection.client(a, a.host.cpus.cores[0], IP_A, 40000, IP_B, 80, MSS)
    reads: list[tuple[float, int]] = []

    def serve() -> Generator[Any, Any, None]:
        server = yield from lst.accept()
        while (n := (yield from server.read(1 << 16))) > 0:
            reads.append((sim.now, n))

    def send() -> Generator[Any, Any, None]:
        assert (yield from conn.connect())
        yield sim.env.timeout(1e-3)  # the server has accepted and sleeps in read()
        yield from conn.write(10 * MSS)

    sim.env.process(serve())
    sim.env.process(send())
    return a, b, app_b, reads


def test_data_the_reader_has_not_read_is_acked_by_the_reader_after_its_copy(sim: Sim) -> None:
    """``__tcp_ack_snd_check``: softirq acknowledges at once only if the window's right edge
    advances; data that waits for a sleeping reader shrinks the window, so the ACK leaves from
    the reader's core, in ``tcp_cleanup_rbuf``, the moment its copy ends — as the real kernel
    does on the calibration testbed (93-95 % of a stream's ACKs leave from the reader's CPU,
    ``net:net_dev_xmit``)."""
    a, b, app_b, reads = _reader_pair(sim)
    sim.run(0.05)
    (data,) = [s for s in a.log if s.kind == DATA]
    assert data.payload == 10 * MSS
    acks = [s for s in b.log if s.kind == ACK and s.t > data.t]
    assert len(acks) == 1
    assert reads == [(pytest.approx(acks[0].t, abs=1e-12), 10 * MSS)]
    assert acks[0].core == app_b.name
    assert acks[0].ack == 1 + 10 * MSS


def test_waking_a_task_on_an_idle_core_costs_the_waker_an_ipi(sim: Sim) -> None:
    """``try_to_wake_up``: a softirq core that wakes a task asleep on another, idle core pays
    ``task_wakeup`` once: on ``b`` for the server's accept() and its read(), on ``a`` for the
    client's connect().  The data itself is
    unchanged: one skb, read once."""
    a, b, _, reads = _reader_pair(sim)
    sim.run(0.05)
    assert [n for _, n in reads] == [10 * MSS]
    stage = b.host.stage("task_wakeup")
    assert stage.packets == 2
    assert stage.cpu_s == pytest.approx(2 * cost(sim, "task_wakeup"), rel=1e-12)
    from perfsim.core.packet import PROTO_TCP, FlowKey

    a_rx = a.host.cpus.rss(FlowKey(IP_B, IP_A, PROTO_TCP, 80, 40000))
    assert a_rx is not a.host.cpus.cores[0]  # the SYN-ACK's softirq runs on a/cpu1 ...
    assert a.host.stage("task_wakeup").packets == 1  # ... and wakes connect() on a/cpu0


def test_an_ack_is_processed_in_softirq_while_the_next_write_only_waits_for_its_core(sim: Sim) -> None:
    """A socket is owned (``lock_sock``) while its syscall's copy runs, not while the syscall
    still waits for its core behind other work (another stream's copy of a single-threaded
    client): the ACK of the first write, arriving on the other core during that wait, is
    processed there at once instead of in the writer's backlog after its copy."""
    from perfsim.core.packet import PROTO_TCP, FlowKey
    from perfsim.core.sim import reserve

    p = Pair(sim, 1e-4)
    core = p.a.host.cpus.cores[0]
    assert p.a.host.cpus.rss(FlowKey(IP_B, IP_A, PROTO_TCP, 80, 40000)) is not core
    marks: dict[str, float] = {}

    def client() -> Generator[Any, Any, None]:
        assert (yield from p.conn.connect())
        yield from p.conn.write(10 * MSS)
        marks["busy_until"] = reserve(core, sim.now, 2e-3)  # other work queued on the core
        yield from p.conn.write(10 * MSS)

    def probe() -> Generator[Any, Any, None]:
        while "busy_until" not in marks:
            yield sim.env.timeout(1e-5)
        yield sim.env.timeout(marks["busy_until"] - 0.5e-3 - sim.now)
        marks["una_before_copy"] = p.conn.snd_una

    sim.env.process(client())
    sim.env.process(probe())
    sim.run(0.05)
    assert sum(n for _, n in p.reads) == 20 * MSS
    first_ack = next(s for s in p.b.log if s.kind == ACK and s.ack == 1 + 10 * MSS)
    assert first_ack.t < marks["busy_until"] - 1e-3  # it arrived during the wait ...
    assert marks["una_before_copy"] == 1 + 10 * MSS  # ... and was processed then, in softirq
