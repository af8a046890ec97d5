"""TCP loss recovery on one bulk flow through a 1 Gbit/s fake NIC: reordering must not collapse
the window (spurious recoveries are undone), several holes in one window are repaired in one
recovery that retransmits exactly the lost bytes, a lost retransmission is found without a
timeout, and a timeout retransmits only what was not SACKed.

The path: GSO skbs of 45 MSS (65160 bytes of payload), a 1 Gbit/s FIFO of 1000 skbs on the
sender, 0.5 ms each way, a 2 MiB receive buffer.  TCP Small Queues keep about nine skbs
(~0.6 MB, ~5 ms) in the NIC, so the RTT is ~6 ms and ~700 kB (~480 segments) are in flight;
cwnd (~1200 segments) does not limit the flow.  A recovery halves the flight (ssthresh
~360 segments = 520 kB), still four times the bandwidth-delay product (1 ms × 1 Gbit/s =
125 kB): the NIC never runs dry, so the goodput across a loss or a reordering stays at the
link's payload rate ``1e9 / 8 × MSS / (MSS + 66)`` = 119.55 MB/s (within 2 %: a read is
counted when the application copies it).  The old NewReno sender (no SACK) fell to a few %
of that after one reordered skb: every partial ACK retransmitted the next skb although it had
arrived, the duplicates drew duplicate ACKs, and each burst of those started a new recovery
that halved cwnd again.
"""

from __future__ import annotations

from collections.abc import Generator
from itertools import pairwise
from typing import Any

import pytest

from perfsim.components.host import Offloads
from perfsim.core.packet import DATA, Packet
from perfsim.core.sim import Sim
from perfsim.transport.tcp import TcpConnection, TcpListener

from .fakes import fake_pair

IP_A, IP_B = 0x0A000001, 0x0A000002
MSS = 1448
SKB = 45 * MSS
"""65160: payload of a full GSO skb."""
RATE_BPS = 1e9
DELAY_S = 0.5e-3
RCVBUF = 2 << 20
LINK_BPS = RATE_BPS / 8 * MSS / (MSS + 66)
"""Payload bytes per second of the NIC (1514-byte frames)."""


class Flow:
    """A bulk flow a -> b; the server reads everything and logs its reads.  With ``total``
    the client writes that many bytes and closes."""

    def __init__(self, sim: Sim, total: int = 0) -> None:
        self.sim = sim
        self.a, self.b = fake_pair(sim, DELAY_S, offloads=Offloads.all(True))
        self.a.set_nic(RATE_BPS, 1000)
        self.lst = TcpListener(self.b, self.b.host.cpus.cores[0], 80, MSS, rcvbuf_bytes=RCVBUF)
        self.conn = TcpConnection.client(self.a, self.a.host.cpus.cores[0], IP_A, 40000, IP_B, 80,
                                         MSS)
        self.reads: list[tuple[float, int]] = []
        self.server: TcpConnection | None = None
        self.total = total
        self.t_eof: float | None = None
        sim.env.process(self._serve())
        sim.env.process(self._send())

    def _serve(self) -> Generator[Any, Any, None]:
        self.server = yield from self.lst.accept()
        while True:
            n = yield from self.server.read(1 << 16)
            if n == 0:
                self.t_eof = self.sim.now
                self.server.close()
                return
            self.reads.append((self.sim.now, n))

    def _send(self) -> Generator[Any, Any, None]:
        assert (yield from self.conn.connect())
        left = self.total or -1
        while left:
            n = 1 << 16 if left < 0 else min(1 << 16, left)
            yield from self.conn.write(n)
            if left > 0:
                left -= n
        self.conn.close()

    def goodput_Bps(self, t0: float, t1: float) -> float:
        return sum(n for t, n in self.reads if t0 <= t < t1) / (t1 - t0)

    def retransmitted(self) -> list[tuple[int, int]]:
        """(seq, payload) of every data skb sent again."""
        seen: set[int] = set()
        again = []
        for s in self.a.data():
            for seq in range(s.seq, s.seq + s.payload, MSS):
                if seq in seen:
                    again.append((s.seq, s.payload))
                    break
                seen.add(seq)
        return again


def data_skbs_after(flow: Flow, t_s: float, picks: set[int]) -> Any:
    """A predicate true for the ``picks``-th (0-based) new data skbs (not retransmissions)
    that reach the wire after ``t_s``."""
    count = [0]
    hi = [0]

    def pick(pkt: Packet) -> bool:
        if pkt.kind != DATA or pkt.seq < hi[0]:
            return False  # not new data: a retransmission
        hi[0] = pkt.seq + pkt.payload_bytes
        if flow.sim.now < t_s:
            return False
        k = count[0]
        count[0] += 1
        return k in picks

    return pick


def test_a_reordered_skb_is_not_a_loss_and_the_window_survives(sim: Sim) -> None:
    """One skb at 0.2 s arrives 3 ms late (six skbs overtake it): the receiver SACKs the
    later ones, the sender takes the head for lost and retransmits part of it; the ACK that
    the late original draws echoes its timestamp, older than the retransmission, so the
    recovery is undone (cwnd and ssthresh back) and ``reordering`` is raised to what was
    seen (6 skbs of 45 segments), so the smaller disorders that follow (2 ms late: four
    skbs overtake) start no recovery at all."""
    f = Flow(sim)
    pick = data_skbs_after(f, 0.2, {0, 100, 200})
    delays = iter((3e-3, 2e-3, 2e-3))
    f.a.delay_if = lambda pkt: next(delays) if pick(pkt) else 0.0
    cwnds: list[tuple[float, int]] = []

    def probe() -> Generator[Any, Any, None]:
        while True:
            yield sim.env.timeout(1e-3)
            cwnds.append((sim.now, f.conn.cwnd))

    sim.env.process(probe())
    sim.run(0.6)
    c = f.conn
    assert len(f.a.delayed) == 3
    assert not f.a.lost
    assert c.timeouts == 0
    assert c.fast_retransmits == 1  # the first disorder only: reordering was raised
    assert c.undos == 1
    assert c.reordering == 6 * 45  # six 45-segment skbs overtook the late one
    assert c.retransmitted_bytes <= SKB  # part of the head skb, sent before the undo
    assert c.cwnd >= max(w for t, w in cwnds if t < 0.2)  # undone, and grown since
    assert f.goodput_Bps(0.2, 0.6) == pytest.approx(LINK_BPS, rel=0.02)
    assert f.server is not None
    assert f.server.dup_bytes == c.retransmitted_bytes


def test_holes_in_one_window_are_repaired_in_one_recovery_with_the_lost_bytes_only(
        sim: Sim) -> None:
    """Four skbs of one window lost at 0.2 s (two adjacent, two apart): one recovery
    retransmits exactly those bytes, each once, all within about one RTT of the third SACK
    (RFC 6675 with PRR), ends with cwnd = ssthresh = half the flight, and the link stays
    busy."""
    f = Flow(sim)
    f.a.lose_if = data_skbs_after(f, 0.2, {0, 1, 5, 12})
    entry: list[tuple[int, float]] = []
    enter = f.conn._enter_recovery

    def enter_recovery() -> None:
        c = f.conn
        entry.append((-(-(c.snd_nxt - c.snd_una) // MSS), c.srtt))
        enter()

    f.conn._enter_recovery = enter_recovery  # type: ignore[method-assign]
    exits: list[tuple[float, int, int]] = []

    def probe() -> Generator[Any, Any, None]:
        was = False
        while True:
            yield sim.env.timeout(20e-6)
            c = f.conn
            if was and not c.in_recovery:
                exits.append((sim.now, c.cwnd, c.ssthresh))
            was = c.in_recovery

    sim.env.process(probe())
    sim.run(0.5)
    c = f.conn
    lost = sum(p.payload_bytes for p in f.a.lost)
    assert len(f.a.lost) == 4
    assert lost == 4 * SKB
    assert (c.fast_retransmits, c.timeouts, c.undos) == (1, 0, 0)
    assert c.retransmitted_bytes == lost
    holes = sorted((p.seq, p.seq + p.payload_bytes) for p in f.a.lost)
    pieces = sorted((seq, seq + n) for seq, n in f.retransmitted())
    assert all(any(hs <= s and e <= he for hs, he in holes) for s, e in pieces)
    assert all(e0 <= s1 for (_, e0), (s1, _) in pairwise(pieces))
    (flight, srtt), = entry
    (t_exit, cwnd, ssthresh), = exits
    last_lost_sent = max(p.t_created for p in f.a.lost)
    # one RTT until data sent after the last hole is SACKed, one for its retransmission
    assert t_exit - last_lost_sent < 2.5 * srtt
    assert ssthresh == flight // 2
    assert cwnd == ssthresh
    assert ssthresh * MSS > 4 * RATE_BPS / 8 * 2 * DELAY_S  # the premise of the next line
    assert f.goodput_Bps(0.2, 0.5) == pytest.approx(LINK_BPS, rel=0.02)
    assert f.server is not None
    assert f.server.dup_bytes == 0


def test_a_lost_retransmission_is_found_without_a_timeout(sim: Sim) -> None:
    """The skb lost at 0.2 s is lost again when retransmitted (its first piece: PRR lets
    one MSS out at the start of the recovery): the data sent after that retransmission is
    SACKed, so it is marked lost once more and retransmitted again within the same recovery;
    no RTO (which would cost >= 200 ms)."""
    f = Flow(sim)
    state = {"orig": -1, "again": 0}

    def lose(pkt: Packet) -> bool:
        if pkt.kind != DATA or sim.now < 0.2:
            return False
        if state["orig"] < 0:
            state["orig"] = pkt.seq
            return True
        if pkt.seq == state["orig"] and state["again"] == 0:
            state["again"] = 1
            return True
        return False

    f.a.lose_if = lose
    sim.run(0.5)
    c = f.conn
    assert len(f.a.lost) == 2
    assert c.timeouts == 0
    assert c.fast_retransmits == 1
    first, again = f.a.lost
    assert first.payload_bytes == SKB
    assert again.seq == first.seq
    assert c.retransmitted_bytes == SKB + again.payload_bytes  # exactly what was lost
    assert f.goodput_Bps(0.25, 0.5) == pytest.approx(LINK_BPS, rel=0.02)


def test_a_timeout_retransmits_only_what_was_not_sacked(sim: Sim) -> None:
    """A 3 MB transfer (46 skbs) loses its 45th skb and every retransmission of it during the
    fast recovery; nothing new follows those retransmissions (the transfer has ended), so
    nothing reveals the second loss: the RTO fires (200 ms after the last retransmission, RTO_min as
    srtt + 4 rttvar is smaller), cwnd = 1, and only the hole is sent again, not the SACKed
    skbs after it (which the old go-back-N from snd_una re-sent); the FIN then closes."""
    total = 46 * SKB
    f = Flow(sim, total)
    hole: list[int] = []

    def lose(pkt: Packet) -> bool:
        if pkt.kind != DATA:
            return False
        if not hole and pkt.seq >= 1 + 44 * SKB:
            hole.extend((pkt.seq, pkt.seq + pkt.payload_bytes))
            return True
        # every retransmission of the fast recovery is lost too
        return bool(hole) and hole[0] <= pkt.seq < hole[1] and f.conn.timeouts == 0

    f.a.lose_if = lose
    sim.run(1.0)
    c = f.conn
    lost = sum(p.payload_bytes for p in f.a.lost)
    assert len(f.a.lost) >= 2
    assert (c.fast_retransmits, c.timeouts) == (1, 1)
    assert c.retransmitted_bytes == lost  # each lost transmission repaired once, nothing else
    assert all(hole[0] <= seq and seq + n <= hole[1] for seq, n in f.retransmitted())
    assert sum(n for _, n in f.reads) == total
    assert f.t_eof is not None
    assert c.state_name in ("TIME_WAIT", "CLOSED")
