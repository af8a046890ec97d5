"""The send half of a TCP endpoint (a mixin of :class:`~perfsim.transport.tcp.TcpConnection`):
``write()``, ``tcp_write_xmit`` with TCP Small Queues, ACK processing with the SACK
scoreboard, Reno congestion control with SACK loss recovery (RFC 6675) and PRR (RFC 6937),
undo of spurious recoveries, and the retransmission timer.

The model is described in :mod:`perfsim.transport.tcp`; TCP Small Queues (TSQ) and the
pacing rate it depends on in :mod:`perfsim.transport.tsq`.  TSQ here:

* every data skb (new or retransmitted) is charged to the socket's :class:`WmemAlloc` when it
  is handed to IP and freed at its TX completion (``on_xmit_done``) or drop (``on_drop``);
  pure ACKs, SYNs, FINs and zero-window probes are not charged (they are tiny, and Linux
  does not throttle them);
* ``tcp_write_xmit`` checks ``tcp_small_queue_check`` before every data skb; a
  retransmission from the retransmit queue is allowed twice the limit, as
  ``tcp_xmit_retransmit_queue`` does (``factor`` 1); the first retransmission after a
  timeout is sent without the check, as ``tcp_retransmit_timer`` sends it;
* a throttled socket resumes (``tcp_tsq_handler``) at the completion that brings
  ``sk_wmem_alloc`` down to the limit.  Linux runs that handler in softirq on the CPU that
  freed the skb; which CPU takes the NIC's TX-completion interrupt is not modelled, so the
  resumed transmission runs on the softirq core of the last segment this connection received
  (``_rx_core``: where its ACKs are processed, the same core as a transmission triggered by
  an ACK), or the application core before any was received.

Loss recovery, as ``tcp_ack`` / ``tcp_fastretrans_alert`` in ``net/ipv4/tcp_input.c`` (with
the classic duplicate-threshold loss marking that Linux used before RACK):

* **Scoreboard.**  The retransmit queue holds one :class:`SentSkb` per skb sent and not yet
  cumulatively acknowledged, with the bits ``sacked``, ``lost``, ``retrans`` (a
  retransmission is in flight) and ``ever_retrans``.  A SACK block marks the skbs it covers
  (split at its edges, like ``tcp_match_skb_to_sack``); a D-SACK (first block below the ACK
  or inside the second block) marks nothing and counts towards undo.  ``pipe`` (RFC 6675,
  ``tcp_packets_in_flight``) is the bytes sent and not acknowledged, minus SACKed, minus
  lost, plus retransmitted; new data and retransmissions may leave while
  ``pipe < cwnd × MSS``.
* **Entering recovery** when ``reordering`` (``net.ipv4.tcp_reordering`` = 3, raised up to
  ``tcp_max_reordering`` = 300 when reordering is detected) segments are SACKed, or fewer
  when fewer than four segments are out and nothing else is to be sent (early retransmit,
  RFC 5827): ``ssthresh = max(FlightSize / 2, 2)`` (RFC 5681; FlightSize at most ``cwnd``,
  without what limited transmit sent, RFC 3042), recovery point
  ``high_seq = snd_nxt``.  An un-SACKed skb is lost when at least ``reordering`` segments
  above it are SACKed (RFC 6675 ``IsLost``; the head skb at once); a retransmission is lost
  again when ``reordering`` segments sent after it are SACKed (``tcp_mark_lost_retrans``).
  Only lost, un-SACKed skbs are retransmitted, each at most once per recovery, cut to what
  the window allows (``tcp_xmit_retransmit_queue``).
* **During recovery** ``cwnd`` follows Proportional Rate Reduction (``tcp_cwnd_reduction``,
  RFC 6937 with slow-start reduction bound) towards ``ssthresh``; on exit, when ``snd_una``
  reaches ``high_seq``, ``cwnd = ssthresh``.
* **Undo** (``tcp_try_undo_partial`` / ``_recovery`` / ``_dsack`` / ``_loss``): an ACK whose
  timestamp echo (TSecr, 1 ms clock) is older than the first retransmission of the episode
  proves that an original filled the hole (the "loss" was reordering), and D-SACKs for every
  retransmitted segment prove all retransmissions spurious; either restores ``cwnd`` and
  ``ssthresh`` to their values before the reduction.  A partial undo also raises
  ``reordering`` to the distance observed, as ``tcp_check_sack_reordering`` does.
* **Timeout** (``tcp_enter_loss``): the RTO is ``max(200 ms, srtt + 4 rttvar)`` (RFC 6298,
  1 s before the first sample), doubled per consecutive timeout; every un-SACKed skb is
  marked lost, ``cwnd = 1``, ``ssthresh`` halves (once per episode), and the lost skbs are
  retransmitted in slow start, skipping SACKed ones; the Loss state ends when ``snd_una``
  reaches the ``snd_nxt`` of the timeout.

Deviations: no RACK-TLP (loss detection is by duplicate threshold; a lost tail waits for the
RTO), no F-RTO; SACK is always negotiated (both ends are perfsim sockets).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Generator
from heapq import heappop, heappush
from itertools import count
from typing import TYPE_CHECKING, Any

from perfsim.core.packet import DATA, FIN, SYN, SYNACK, Packet
from perfsim.transport.common import (
    CLOSED,
    CLOSING,
    INITIAL_CWND_SEGS,
    LAST_ACK,
    MAX_RETRIES,
    MAX_SYN_RETRIES,
    RTO_INITIAL_S,
    RTO_MAX_S,
    RTO_MIN_S,
    SENDING_STATES,
    SYN_RECV,
    SYN_SENT,
    TCP_FRAME_HDR_BYTES,
    TIME_WAIT,
    LazyTimer,
    wake_task,
)
from perfsim.transport.tsq import WmemAlloc, tcp_pacing_rate, tsq_limit

if TYPE_CHECKING:
    from perfsim.core.cpu import Core, Stage
    from perfsim.core.packet import FlowKey
    from perfsim.core.sim import Sim
    from perfsim.transport.stats import FlowStats

CA_OPEN, CA_RECOVERY, CA_LOSS = 0, 1, 2
"""Congestion states (``icsk_ca_state``): Open (also Disorder: some data SACKed), fast
Recovery, Loss (after a timeout)."""
CA_STATE_NAMES = ("Open", "Recovery", "Loss")
REORDERING_INIT = 3
"""``net.ipv4.tcp_reordering``: SACKed segments that make the segments below them lost."""
REORDERING_MAX = 300
"""``net.ipv4.tcp_max_reordering``."""
TS_CLOCK_HZ = 1000
"""The TCP timestamp clock (TSval/TSecr): 1 ms ticks, as ``tcp_time_stamp``."""


SackBlocks = tuple[tuple[int, int], ...]
"""SACK blocks of one segment: (start, end) sequence numbers, D-SACK first if any."""
TcpOptions = tuple[float | None, SackBlocks | None]
"""The options of one segment that the model carries: (TSecr as a time, SACK blocks)."""


def ts_ticks(t_s: float) -> int:
    """A time as the TCP timestamp option carries it (ms ticks)."""
    return int(t_s * TS_CLOCK_HZ)


class SentSkb:
    """One skb of the retransmit queue: bytes ``[seq, end)`` and its scoreboard bits."""

    __slots__ = ("end", "ever_retrans", "fin", "lost", "retrans", "retrans_hi", "sacked", "segs",
                 "seq", "t_sent")

    def __init__(self, seq: int, end: int, segs: int, t_sent: float, fin: bool = False) -> None:
        self.seq = seq
        self.end = end
        self.segs = segs
        self.t_sent = t_sent
        self.fin = fin
        self.sacked = False
        self.lost = False
        self.retrans = False
        """A retransmission of it is in flight (``TCPCB_SACKED_RETRANS``)."""
        self.ever_retrans = False
        self.retrans_hi = 0
        """``snd_nxt`` when it was last retransmitted (lost-retransmission detection)."""

    def __repr__(self) -> str:
        bits = "".join(c for c, on in (("S", self.sacked), ("L", self.lost), ("R", self.retrans),
                                      ("E", self.ever_retrans)) if on)
        return f"SentSkb({self.seq}..{self.end}, {self.segs}, {bits or '-'})"


def _seq_of(rec: SentSkb) -> int:
    return rec.seq


def _minus(s: int, e: int, known: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[s, e)`` without the ranges in ``known``."""
    parts = [(s, e)]
    for ks, ke in known:
        if ke <= s or ks >= e:
            continue
        rest = []
        for ps, pe in parts:
            if ke <= ps or ks >= pe:
                rest.append((ps, pe))
                continue
            if ps < ks:
                rest.append((ps, ks))
            if ke < pe:
                rest.append((ke, pe))
        parts = rest
    return parts


class TcpSender:
    """Send-side state and processing of one TCP connection (mixin)."""

    if TYPE_CHECKING:
        ns: Any
        sim: Sim
        env: Any
        app_core: Core
        flow: FlowKey
        stats: FlowStats | None
        mss: int
        state: int
        rcv_nxt: int
        _rx_core: Core

        def _stamp_ack(self, pkt: Packet) -> None: ...

        def _finish(self, state: int) -> None: ...

        def _copy_holding_socket(self, stage: Stage, nbytes: int, held_from: float | None = None) -> float: ...

        _wake_stage: Stage
        _switch_stage: Stage
        _owned_until: float

    def _init_sender(self, sndbuf_bytes: int, max_skb_bytes: int, tx: Stage, tx_copy: Stage,
                     limit_output_bytes: int, tsq: bool) -> None:
        self.sndbuf = sndbuf_bytes
        self.max_skb = max_skb_bytes
        self._tx = tx
        self._tx_copy = tx_copy
        # byte sequence numbers; data starts at 1, after the SYN
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_max = 0
        self.write_end = 1
        self.snd_right = 0  # peer's advertised right edge (ack + wnd)
        self.snd_sml = 0
        self.cwnd = INITIAL_CWND_SEGS
        self.ssthresh = 1 << 30
        self._cwnd_cnt = 0
        self._max_out = 0
        self._max_out_seq = 0
        self._cwnd_limited = False
        # loss recovery (see the module docstring)
        self.ca_state = CA_OPEN
        self.high_seq = 0
        """The recovery point: ``snd_nxt`` when Recovery or Loss began."""
        self.reordering = REORDERING_INIT
        self.prior_cwnd = 0
        self.prior_ssthresh = 0
        self.undo_marker: int | None = None
        self.undo_retrans = -1
        self.retrans_stamp: float | None = None
        """When the first retransmission of the episode left (``None``: none yet)."""
        self.prr_delivered = 0
        self.prr_out = 0
        self._out: list[SentSkb] = []
        self.sacked_bytes = 0
        self.lost_bytes = 0
        self.retrans_bytes = 0
        self._pending_bytes = 0  # lost, not SACKed, no retransmission in flight
        self._rtx_hint = 0  # no skb below this sequence number is pending
        self._lost_mark_seq = 0  # every un-SACKed skb ending at or below it is lost
        self._sacked_above_mark = 0  # SACKed bytes of the skbs starting at or above it
        self._sack_cache: list[tuple[int, int]] = []  # the SACK blocks of the last ACK
        self._rexmits: list[tuple[int, int, SentSkb]] = []  # heap of (retrans_hi, n, skb)
        self._rexmit_n = count()
        self.fack = 0
        """The highest SACKed sequence number (``tcp_highest_sack_seq``)."""
        self._hold_rexmit = False
        self._rto_rexmit = False
        self._fin_queued = False
        self._fin_acked = False
        self.srtt = 0.0
        self.rttvar = 0.0
        self._backoff = 0
        self._retries = 0
        self._rto = LazyTimer(self.sim, self._on_rto)
        self._last_core: Core = self.app_core
        self._in_push = False
        self._push_again = False
        self._space_ev: Any = None
        self.limit_output_bytes = limit_output_bytes
        self.tsq = tsq
        self.wmem = WmemAlloc(self.sim, self._tsq_wake)
        """Bytes of this connection's data skbs below it (``sk_wmem_alloc``)."""
        self.tsq_throttles = 0
        """How often ``tcp_small_queue_check`` stopped ``tcp_write_xmit``."""
        self.retransmits = 0
        """Segments retransmitted."""
        self.retransmitted_bytes = 0
        self.timeouts = 0
        self.fast_retransmits = 0
        """Fast recoveries entered."""
        self.undos = 0
        """Congestion-window reductions undone (spurious recoveries or timeouts)."""
        self.dsacks = 0
        """D-SACK blocks received."""

    @property
    def in_recovery(self) -> bool:
        return self.ca_state == CA_RECOVERY

    @property
    def ca_state_name(self) -> str:
        return CA_STATE_NAMES[self.ca_state]

    # -- application call -------------------------------------------------------------------
    def write(self, nbytes: int) -> Generator[Any, Any, int]:
        """``send()`` of ``nbytes``: wait for send-buffer room, copy, transmit. Returns bytes
        written (0 if the connection cannot send any more)."""
        env = self.env
        need = min(nbytes, self.sndbuf)
        while self.state in SENDING_STATES and not self._fin_queued and self.write_end - self.snd_una + need > self.sndbuf:
            self._space_ev = env.event()
            yield self._space_ev
        if self.state not in SENDING_STATES or self._fin_queued:
            return 0
        finish = self._copy_holding_socket(self._tx_copy, nbytes)
        yield env.timeout(finish - env.now)
        self.write_end += nbytes
        self._push(self.app_core)
        # tcp_sendmsg still holds the socket while tcp_push transmits (the work it queued on
        # this core): an ACK arriving meanwhile waits in the backlog and is processed here.
        # Linux holds it also through the softirq that, over a veth or lo, receives what it
        # sent at its local_bh_enable; perfsim does not (docs/kernel-evidence.md)
        busy = self.app_core.busy_until_s
        if busy > self._owned_until:
            self._owned_until = busy
        return nbytes

    # -- sending ---------------------------------------------------------------------------
    def _rto_s(self) -> float:
        base = RTO_INITIAL_S if self.srtt == 0.0 else max(RTO_MIN_S, self.srtt + 4.0 * self.rttvar)
        return min(base * (1 << self._backoff), RTO_MAX_S)

    def _rtt_sample(self, r: float) -> None:
        if self.srtt == 0.0:
            self.srtt, self.rttvar = r, r / 2.0
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r


    def _send_ctrl(self, kind: int, seq: int, core: Core) -> None:
        """Send a SYN, SYN-ACK, pure ACK or FIN (no payload) from ``core``."""
        pkt = self.sim.new_packet(self.flow, 0, TCP_FRAME_HDR_BYTES, 1, kind, seq=seq,
                                  ack=self.rcv_nxt if kind != SYN else 0, owner=self)
        self._stamp_ack(pkt)
        pkt.core = core
        self._tx.charge(pkt)
        self._last_core = core
        self.ns.ip_output(pkt)

    def _send_data(self, seq: int, size: int, core: Core, rexmit: bool) -> None:
        """Build one data skb ``[seq, seq+size)``, charge ``tcp_tx``, hand it to IP."""
        segs = -(-size // self.mss)
        sim = self.sim
        pkt = sim.new_packet(self.flow, size, TCP_FRAME_HDR_BYTES, segs, DATA, seq=seq, ack=self.rcv_nxt, owner=self)
        self._stamp_ack(pkt)
        pkt.core = core
        self._tx.charge(pkt)
        self._last_core = core
        if rexmit:
            self._count_rexmit(segs, size)
        if self.ca_state == CA_RECOVERY:
            self.prr_out += segs
        if self._rto.deadline is None:
            self._rto.set(sim.now + self._rto_s())
        self.wmem.charge(pkt)
        self.ns.ip_output(pkt)

    def _count_rexmit(self, segs: int, nbytes: int) -> None:
        self.retransmits += segs
        self.retransmitted_bytes += nbytes
        if self.stats is not None:
            self.stats.on_retransmit(self.sim.now, segs)

    def _push(self, core: Core) -> None:
        """``tcp_write_xmit``: send queued data (then a queued FIN) as the windows allow."""
        if self._in_push:
            self._push_again = True
            return
        self._in_push = True
        try:
            self._push_again = True
            while self._push_again:
                self._push_again = False
                if (self._pending_bytes and not self._hold_rexmit
                        and not self._xmit_retransmit_queue(core)):
                    continue  # TSQ holds the retransmissions: no new data either
                self._push_loop(core)
        finally:
            self._in_push = False

    def _push_loop(self, core: Core) -> None:
        mss = self.mss
        now = self.sim.now
        while self.state in SENDING_STATES:
            nxt = self.snd_nxt
            una = self.snd_una
            data = self.write_end - nxt
            # room = cwnd - pipe, pipe = (nxt - una) - sacked - lost + retransmitted
            cwnd_edge = (una + self.cwnd * mss
                         + self.sacked_bytes + self.lost_bytes - self.retrans_bytes)
            if data <= 0:
                if self._fin_queued and nxt == self.write_end:
                    self.snd_nxt = self.snd_max = nxt + 1
                    self._out.append(SentSkb(nxt, nxt + 1, 1, now, fin=True))
                    if self.ca_state == CA_RECOVERY:
                        self.prr_out += 1
                    self._send_ctrl(FIN, nxt, core)
                    if self._rto.deadline is None:
                        self._rto.set(now + self._rto_s())
                break
            right = self.snd_right
            room = min(right, cwnd_edge) - nxt
            if room < mss and room < data:
                if cwnd_edge <= right:
                    self._cwnd_limited = True
                elif self.snd_max <= una and self._rto.deadline is None:
                    self._rto.set(now + self._rto_s())  # persist timer: window probe later
                break
            size = min(room, data)
            size = min(size, self.max_skb)
            if size < data:
                size -= size % mss
            elif size % mss and nxt > una and self.snd_sml > una:
                size -= size % mss  # Nagle (Minshall): hold the sub-MSS tail
                if size == 0:
                    break
            if self.tsq and self._tsq_throttled(size + -(-size // mss) * TCP_FRAME_HDR_BYTES, False):
                break
            end = nxt + size
            if size % mss:
                self.snd_sml = end
            self.snd_nxt = self.snd_max = end
            self._out.append(SentSkb(nxt, end, -(-size // mss), now))
            self._send_data(nxt, size, core, False)
        out = -(-(self.snd_nxt - self.snd_una) // mss)
        if out > self._max_out or self.snd_una >= self._max_out_seq:
            self._max_out = out
            self._max_out_seq = self.snd_nxt

    def _pipe_bytes(self) -> int:
        """RFC 6675 ``pipe`` in bytes: sent, not acknowledged, not SACKed, not lost, plus
        retransmissions in flight."""
        return (self.snd_nxt - self.snd_una
                - self.sacked_bytes - self.lost_bytes + self.retrans_bytes)

    def _xmit_retransmit_queue(self, core: Core) -> bool:
        """``tcp_xmit_retransmit_queue``: retransmit lost skbs, oldest first, while
        ``pipe < cwnd``; a skb larger than the room left is cut at an MSS boundary.
        Returns False if TCP Small Queues stopped it."""
        mss = self.mss
        now = self.sim.now
        out = self._out
        i = max(bisect_right(out, self._rtx_hint, key=_seq_of) - 1, 0)
        while self._pending_bytes and self.state in SENDING_STATES:
            segs_room = self.cwnd - -(-self._pipe_bytes() // mss)
            if segs_room <= 0:
                return True
            n = len(out)
            while i < n:
                rec = out[i]
                if rec.lost and not rec.retrans and not rec.sacked:
                    break
                i += 1
            else:  # pragma: no cover - the counters say one is pending
                raise AssertionError("retransmit queue out of sync with its counters")
            self._rtx_hint = rec.seq
            if rec.segs > segs_room and not rec.fin:
                self._split(i, rec.seq + segs_room * mss)
            size = rec.end - rec.seq
            first_rto = self._rto_rexmit
            if (not first_rto and not rec.fin and self.tsq
                    and self._tsq_throttled(size + rec.segs * TCP_FRAME_HDR_BYTES, True)):
                return False
            self._rto_rexmit = False
            rec.retrans = rec.ever_retrans = True
            rec.retrans_hi = self.snd_nxt
            heappush(self._rexmits, (rec.retrans_hi, next(self._rexmit_n), rec))
            rec.t_sent = now
            self.retrans_bytes += size
            self._pending_bytes -= size
            if self.retrans_stamp is None:
                self.retrans_stamp = now
            self.undo_retrans = max(self.undo_retrans, 0)
            self.undo_retrans += rec.segs
            if rec.fin:
                self._count_rexmit(1, 0)
                if self.ca_state == CA_RECOVERY:
                    self.prr_out += 1
                self._send_ctrl(FIN, rec.seq, core)
            else:
                self._send_data(rec.seq, size, core, True)
            i += 1
        return True

    def _split(self, i: int, at: int) -> None:
        """Cut ``_out[i]`` at ``at`` into two skbs with the same scoreboard bits."""
        rec = self._out[i]
        mss = self.mss
        tail = SentSkb(at, rec.end, -(-(rec.end - at) // mss), rec.t_sent)
        tail.sacked, tail.lost, tail.retrans = rec.sacked, rec.lost, rec.retrans
        tail.ever_retrans, tail.retrans_hi = rec.ever_retrans, rec.retrans_hi
        rec.end = at
        rec.segs = -(-(at - rec.seq) // mss)
        self._out.insert(i + 1, tail)
        if tail.retrans:
            heappush(self._rexmits, (tail.retrans_hi, next(self._rexmit_n), tail))

    # -- TCP Small Queues -------------------------------------------------------------------
    def tsq_limit_bytes(self, skb_bytes: int) -> int:
        """The TSQ limit now for an skb of ``skb_bytes`` (pacing rate from cwnd and srtt)."""
        mss = self.mss
        out = (self.snd_nxt - self.snd_una + mss - 1) // mss
        rate = tcp_pacing_rate(mss, self.cwnd, self.ssthresh, out, self.srtt)
        return tsq_limit(skb_bytes, rate, self.limit_output_bytes)

    def _tsq_throttled(self, skb_bytes: int, rexmit: bool) -> bool:
        """``tcp_small_queue_check``: True (and a wake-up armed) if the skb has to wait.

        A retransmission from the retransmit queue is allowed twice the limit (``factor`` 1,
        as ``tcp_xmit_retransmit_queue`` passes).
        """
        queued = self.wmem.level()
        if queued <= min(2 * skb_bytes, self.limit_output_bytes) << rexmit:
            return False  # under the limit whatever the pacing rate
        if len(self._out) <= 1:
            return False  # the retransmit queue is empty or holds one skb: always send
        limit = self.tsq_limit_bytes(skb_bytes) << rexmit
        if queued <= limit:
            return False
        self.tsq_throttles += 1
        self.wmem.wait_until_at_most(limit)
        return True

    def _tsq_wake(self) -> None:
        """``tcp_tsq_handler``: enough has completed; transmit again (see the module doc)."""
        if self.state in SENDING_STATES:
            self._push(self._rx_core)

    # -- ACK processing (sender side) ----------------------------------------------------------
    def _on_ack(self, pkt: Packet, core: Core, opts: TcpOptions | None = None) -> None:
        """``tcp_ack``: SACK tagging, cumulative ACK, recovery state machine, cwnd.

        ``opts`` are the segment's TCP options: (TSecr, SACK blocks) or None."""
        ack = pkt.ack
        una = self.snd_una
        if ack > self.snd_max or ack < una:
            return
        tsecr, blocks = opts if opts is not None else (None, None)
        if ack == una and not blocks:
            right = ack + pkt.wnd
            self.snd_right = max(self.snd_right, right)
            return
        now = self.sim.now
        self._hold_rexmit = False
        prior_fack = max(una, self.fack)
        reord = self.snd_max
        delivered = 0
        newly_lost = False
        if blocks:
            delivered, reord, newly_lost = self._sacktag(blocks, ack, prior_fack)
        advanced = ack > una
        acked_segs = 0
        if advanced:
            acked_segs, newly, reord = self._clean_rtx(ack, prior_fack, reord, now)
            delivered += newly
            self.snd_una = ack
            if self.snd_nxt < ack:  # pragma: no cover - snd_nxt never falls behind
                self.snd_nxt = self.snd_max = ack
            self.snd_right = ack + pkt.wnd
            self._backoff = self._retries = 0
        else:
            right = ack + pkt.wnd
            self.snd_right = max(self.snd_right, right)
        if reord < prior_fack:
            self._check_reordering(reord)
        newly_lost = self._fastretrans_alert(advanced, una, tsecr) or newly_lost
        if self.ca_state == CA_RECOVERY:
            self._prr(delivered, advanced, newly_lost)
        elif advanced:
            self._grow_cwnd(acked_segs)
        if advanced:
            if ack >= self.snd_max:
                self._rto.cancel()
            else:
                self._rto.set(now + self._rto_s())
            if self._fin_queued and ack == self.write_end + 1:
                self._fin_acked = True
                if self.state == LAST_ACK:
                    self._finish(CLOSED)
                elif self.state == CLOSING:
                    self._finish(TIME_WAIT)
            wake_task(self._space_ev, None, self._wake_stage, core, self.app_core, now, self._switch_stage)  # sk_stream_write_space

    def _sacktag(self, blocks: SackBlocks, ack: int, prior_fack: int) -> tuple[int, int, bool]:
        """``tcp_sacktag_write_queue``: mark the skbs the SACK blocks cover.

        Parts of a block that the previous ACK's blocks covered are skipped (the SACK cache
        of ``tcp_sacktag_write_queue``): their skbs are SACKed already.  Returns (segments
        newly SACKed, lowest never-retransmitted sequence newly SACKed below ``prior_fack``
        or ``snd_max``, whether a retransmission was found lost again)."""
        first = blocks[0]
        if first[0] < ack or (len(blocks) > 1
                              and blocks[1][0] <= first[0] and first[1] <= blocks[1][1]):
            self._on_dsack(first[0], first[1])
            blocks = blocks[1:]
        newly = 0
        reord = self.snd_max
        fack0 = self.fack
        nxt = self.snd_nxt
        cache = self._sack_cache
        self._sack_cache = list(blocks)
        for s0, e0 in blocks:
            if e0 <= ack or s0 >= nxt or s0 >= e0:
                continue
            for s, e in _minus(max(s0, ack), e0, cache):
                newly, reord = self._tag_range(s, e, newly, reord, prior_fack)
        lost_again = False
        if self.retrans_bytes and self.fack > fack0:
            lost_again = self._mark_lost_retrans()
        return newly, reord, lost_again

    def _tag_range(self, s: int, e: int, newly: int, reord: int,
                   prior_fack: int) -> tuple[int, int]:
        """Mark SACKed the skbs in ``[s, e)``, cutting the ones that straddle an edge."""
        out = self._out
        i = max(bisect_right(out, s, key=_seq_of) - 1, 0)
        while i < len(out):
            rec = out[i]
            if rec.seq >= e:
                break
            if rec.sacked or rec.end <= s or rec.fin:
                i += 1
                continue
            if rec.seq < s:
                self._split(i, s)
                i += 1
                rec = out[i]
            if rec.end > e:
                self._split(i, e)
            size = rec.end - rec.seq
            rec.sacked = True
            self.sacked_bytes += size
            if rec.seq >= self._lost_mark_seq:
                self._sacked_above_mark += size
            if rec.lost:
                rec.lost = False
                self.lost_bytes -= size
                if not rec.retrans:
                    self._pending_bytes -= size
            if rec.retrans:
                rec.retrans = False
                self.retrans_bytes -= size
            newly += rec.segs
            if not rec.ever_retrans and rec.end <= prior_fack and rec.seq < reord:
                reord = rec.seq
            self.fack = max(self.fack, rec.end)
            i += 1
        return newly, reord

    def _on_dsack(self, s: int, e: int) -> None:
        """A D-SACK block: data that arrived twice; counts towards undo (``tcp_check_dsack``)."""
        self.dsacks += 1
        if self.undo_marker is not None and self.undo_retrans > 0 and e > self.undo_marker:
            self.undo_retrans = max(0, self.undo_retrans - -(-(e - s) // self.mss))

    def _mark_lost_retrans(self) -> bool:
        """A retransmission is lost if ``reordering`` segments sent after it were SACKed."""
        limit = self.fack - self.reordering * self.mss
        heap = self._rexmits
        found = False
        while heap and heap[0][0] <= limit:
            hi, _, rec = heappop(heap)
            if rec.retrans and rec.retrans_hi == hi:  # else: delivered or cleared since
                rec.retrans = False
                size = rec.end - rec.seq
                self.retrans_bytes -= size
                if not rec.lost:  # an undo unmarked it while the retransmission flew
                    rec.lost = True
                    self.lost_bytes += size
                self._pending_bytes += size  # lost: retransmit again
                self._rtx_hint = min(self._rtx_hint, rec.seq)
                found = True
        return found

    def _clean_rtx(self, ack: int, prior_fack: int, reord: int, now: float) -> tuple[int, int, int]:
        """``tcp_clean_rtx_queue``: drop the skbs ``ack`` covers, trim a partly covered head,
        take an RTT sample (Karn: never-retransmitted skbs only).  Returns (segments of the
        skbs dropped, SACKed before or not: what ``cwnd`` grows by, as byte counting on the
        cumulative ACK (RFC 3465) does; segments newly delivered, i.e. not SACKed before:
        what PRR counts; the updated reordering mark)."""
        out = self._out
        n = 0
        acked = 0
        delivered = 0
        sample = -1.0
        for rec in out:
            if rec.end > ack:
                break
            n += 1
            acked += rec.segs
            size = rec.end - rec.seq
            if rec.sacked:
                self.sacked_bytes -= size
                if rec.seq >= self._lost_mark_seq:
                    self._sacked_above_mark -= size
            else:
                delivered += rec.segs
                if not rec.ever_retrans:
                    sample = now - rec.t_sent
                    if rec.seq < reord and rec.seq < prior_fack:
                        reord = rec.seq
            if rec.lost:
                self.lost_bytes -= size
                if not rec.retrans:
                    self._pending_bytes -= size
            if rec.retrans:
                self.retrans_bytes -= size
                rec.retrans = False  # its entry in _rexmits is void now
        if n:
            del out[:n]
            if not self.retrans_bytes:
                self._rexmits.clear()
        if out and out[0].seq < ack:
            rec = out[0]
            cut = ack - rec.seq
            if rec.sacked:  # pragma: no cover - the receiver SACKs whole skbs
                self.sacked_bytes -= cut
            if rec.lost:
                self.lost_bytes -= cut
                if not rec.retrans:
                    self._pending_bytes -= cut
            if rec.retrans:
                self.retrans_bytes -= cut
            rec.seq = ack
            segs = -(-(rec.end - ack) // self.mss)
            delivered += rec.segs - segs
            rec.segs = segs
        if sample >= 0.0:
            self._rtt_sample(sample)
        if self.fack <= ack:
            self.fack = 0
        return acked, delivered, reord

    def _check_reordering(self, low_seq: int) -> None:
        """``tcp_check_sack_reordering``: data up to the highest SACK arrived before
        ``low_seq``; raise ``reordering`` to that distance (segments)."""
        fack = max(self.snd_una, self.fack)
        if low_seq >= fack:
            return
        metric = fack - low_seq
        mss = self.mss
        if metric > self.reordering * mss:
            self.reordering = min(-(-metric // mss), REORDERING_MAX)

    # -- the recovery state machine ----------------------------------------------------------
    def _fastretrans_alert(self, advanced: bool, prior_una: int, tsecr: float | None) -> bool:
        """``tcp_fastretrans_alert``; returns True if skbs were newly marked lost."""
        st = self.ca_state
        if st == CA_OPEN:
            self.retrans_stamp = None
        elif self.snd_una >= self.high_seq:
            if st == CA_RECOVERY:
                if not self._try_undo_recovery(tsecr):
                    self.cwnd = self.ssthresh  # tcp_end_cwnd_reduction
                    self._cwnd_cnt = 0
            else:
                self._try_undo_recovery(tsecr)
            self.ca_state = st = CA_OPEN
        if st == CA_RECOVERY:
            if advanced and self._try_undo_partial(prior_una, tsecr):
                return False
            if self._try_undo_dsack():
                self._keep_open()
        elif st == CA_LOSS:
            if advanced and self._may_undo(tsecr):
                self._undo(unmark_loss=True)  # tcp_try_undo_loss
                self.ca_state = CA_OPEN
            return False
        fast = False
        if self.ca_state == CA_OPEN:
            if self.undo_marker is not None:
                self._try_undo_dsack()
            if not self._time_to_recover():
                return False
            self._enter_recovery()
            fast = True
        return self._update_scoreboard(fast)

    def _dupthresh(self) -> int:
        """SACKed segments that start a recovery: ``reordering``, or one less than the
        segments out when fewer than four are out and nothing new can follow (RFC 5827)."""
        out = -(-(self.snd_nxt - self.snd_una) // self.mss)
        if out < 4 and self.write_end <= self.snd_nxt:
            return max(1, out - 1)
        return self.reordering

    def _time_to_recover(self) -> bool:
        if self.lost_bytes:
            return True
        return self.sacked_bytes > 0 and -(-self.sacked_bytes // self.mss) >= self._dupthresh()

    def _enter_recovery(self) -> None:
        """``tcp_enter_recovery``: remember the window for undo, halve ``ssthresh``."""
        self.fast_retransmits += 1
        if self.stats is not None:
            self.stats.on_retransmit(self.sim.now, 0, fast=True)
        cwnd = self.cwnd
        self.undo_marker = self.snd_una
        self.undo_retrans = -1
        self.prior_ssthresh = max(self.ssthresh, (cwnd >> 1) + (cwnd >> 2))
        self.prior_cwnd = cwnd
        self.high_seq = self.snd_nxt
        self.prr_delivered = self.prr_out = 0
        self.ssthresh = self._halved_flight()
        self._cwnd_cnt = 0
        self.ca_state = CA_RECOVERY

    def _halved_flight(self) -> int:
        """The new ``ssthresh``: ``max(FlightSize / 2, 2)`` (RFC 5681), FlightSize in
        segments and without what was sent beyond ``cwnd`` while SACKs arrived (limited
        transmit, RFC 3042)."""
        flight = min(-(-(self.snd_nxt - self.snd_una) // self.mss), self.cwnd)
        return max(flight // 2, 2)

    def _update_scoreboard(self, fast: bool) -> bool:
        """Mark lost every un-SACKed skb with at least ``dupthresh`` SACKed segments above it
        (the head skb at once when the recovery starts).  Returns True if any was marked.

        Below ``_lost_mark_seq`` every un-SACKed skb is lost already; the mark moves up past
        each skb that qualifies (or SACKed skb with enough SACKed above it), keeping
        ``_sacked_above_mark``, so each skb is passed once per recovery."""
        if self.ca_state != CA_RECOVERY:
            return False
        out = self._out
        if not out:
            return False
        marked = False
        head = out[0]
        if fast and not head.lost and not head.sacked:
            self._mark_lost(head)
            marked = True
            self._lost_mark_seq = max(self._lost_mark_seq, head.end)
        need = self._dupthresh() * self.mss
        above = self._sacked_above_mark
        if above < need:
            return marked
        i = max(bisect_right(out, self._lost_mark_seq, key=_seq_of) - 1, 0)
        n = len(out)
        while i < n:
            rec = out[i]
            if rec.end <= self._lost_mark_seq:
                i += 1
                continue
            if rec.sacked:
                size = rec.end - rec.seq
                if above - size < need:
                    break  # nothing above it has enough SACKed above
                above -= size
            elif above < need:
                break
            elif not rec.lost:
                self._mark_lost(rec)
                marked = True
            self._lost_mark_seq = rec.end
            i += 1
        self._sacked_above_mark = above
        return marked

    def _mark_lost(self, rec: SentSkb) -> None:
        rec.lost = True
        size = rec.end - rec.seq
        self.lost_bytes += size
        if not rec.retrans:
            self._pending_bytes += size
            self._rtx_hint = min(self._rtx_hint, rec.seq)

    def _prr(self, delivered: int, advanced: bool, newly_lost: bool) -> None:
        """``tcp_cwnd_reduction``: Proportional Rate Reduction (RFC 6937, SSRB)."""
        if delivered <= 0 or not self.prior_cwnd:
            return
        pipe = -(-self._pipe_bytes() // self.mss)
        delta = self.ssthresh - pipe
        self.prr_delivered += delivered
        if delta < 0:
            sndcnt = -(-(self.ssthresh * self.prr_delivered) // self.prior_cwnd) - self.prr_out
        elif advanced and not newly_lost:
            sndcnt = min(delta, max(self.prr_delivered - self.prr_out, delivered) + 1)
        else:
            sndcnt = min(delta, delivered)
        sndcnt = max(sndcnt, 0 if self.prr_out else 1)
        self.cwnd = max(pipe + sndcnt, 1)

    # -- undo (spurious recoveries) ------------------------------------------------------------
    def _packet_delayed(self, tsecr: float | None) -> bool:
        """``tcp_packet_delayed``: the ACK echoes a timestamp from before the first
        retransmission, so an original transmission reached the receiver."""
        rs = self.retrans_stamp
        return rs is not None and tsecr is not None and ts_ticks(tsecr) < ts_ticks(rs)

    def _may_undo(self, tsecr: float | None) -> bool:
        return self.undo_marker is not None and (self.undo_retrans == 0
                                                 or self._packet_delayed(tsecr))

    def _undo(self, unmark_loss: bool) -> None:
        """``tcp_undo_cwnd_reduction``: restore the window from before the reduction."""
        if unmark_loss and self.lost_bytes:
            for rec in self._out:
                if rec.lost:
                    rec.lost = False
            self.lost_bytes = 0
            self._pending_bytes = 0
            self._lost_mark_seq = 0
            self._sacked_above_mark = self.sacked_bytes
        if self.prior_ssthresh:
            self.cwnd = max(self.cwnd, self.prior_cwnd)
            self.ssthresh = max(self.ssthresh, self.prior_ssthresh)
        self.undo_marker = None
        self.undos += 1

    def _try_undo_recovery(self, tsecr: float | None) -> bool:
        if self._may_undo(tsecr):
            self._undo(unmark_loss=False)
            return True
        return False

    def _try_undo_partial(self, prior_una: int, tsecr: float | None) -> bool:
        if self.undo_marker is None or not self._packet_delayed(tsecr):
            return False
        # "Plain luck! Hole is filled with delayed packet, rather than with a retransmit."
        self._check_reordering(prior_una)
        if self.retrans_bytes:
            self._hold_rexmit = True  # clock out new data, retransmit nothing more now
            return True
        self._undo(unmark_loss=True)
        self._keep_open()
        return True

    def _try_undo_dsack(self) -> bool:
        if self.undo_marker is not None and self.undo_retrans == 0:
            self._undo(unmark_loss=False)
            return True
        return False

    def _keep_open(self) -> None:
        """``tcp_try_keep_open``: back to Open (Disorder), a new recovery point."""
        self.ca_state = CA_OPEN
        self.high_seq = self.snd_nxt

    def _grow_cwnd(self, acked: int) -> None:
        if self.cwnd < self.ssthresh:
            if self.cwnd < 2 * self._max_out:
                self.cwnd = min(self.cwnd + acked, max(self.ssthresh, self.cwnd))
        elif self._cwnd_limited:
            self._cwnd_cnt += acked
            if self._cwnd_cnt >= self.cwnd:
                self.cwnd += self._cwnd_cnt // self.cwnd
                self._cwnd_cnt %= self.cwnd
        self._cwnd_limited = False

    # -- retransmission timer --------------------------------------------------------------------
    def _on_rto(self) -> None:
        """Retransmission (or persist) timer expiry, on the core that last transmitted."""
        core = self._last_core
        st = self.state
        if st in (CLOSED, TIME_WAIT):
            return
        self._backoff += 1
        self._retries += 1
        limit = MAX_SYN_RETRIES if st in (SYN_SENT, SYN_RECV) else MAX_RETRIES
        if self._retries > limit:
            self._finish(CLOSED)
            return
        if st in (SYN_SENT, SYN_RECV):
            self._send_ctrl(SYN if st == SYN_SENT else SYNACK, 0, core)
            self._rto.set(self.sim.now + self._rto_s())
            return
        if self.snd_max <= self.snd_una:
            if self.write_end > self.snd_nxt:  # zero-window probe: an old byte elicits an ACK
                self._send_data_probe(core)
                self._rto.set(self.sim.now + self._rto_s())
            return
        self._enter_loss()
        self.timeouts += 1
        if self.stats is not None:
            self.stats.on_retransmit(self.sim.now, 0, timeout=True)
        self._rto.set(self.sim.now + self._rto_s())
        self._rto_rexmit = True
        self._push(core)
        self._rto_rexmit = False

    def _enter_loss(self) -> None:
        """``tcp_enter_loss``: every un-SACKed skb is lost, ``cwnd = 1``."""
        st = self.ca_state
        if st == CA_OPEN or self.high_seq <= self.snd_una or (st == CA_LOSS and self._retries == 1):
            cwnd = self.cwnd
            in_reduction = st == CA_RECOVERY
            self.prior_ssthresh = (self.ssthresh if in_reduction
                                   else max(self.ssthresh, (cwnd >> 1) + (cwnd >> 2)))
            self.prior_cwnd = cwnd
            self.ssthresh = self._halved_flight()
            self.undo_marker = self.snd_una
            self.undo_retrans = -1
        self.cwnd = 1
        self._cwnd_cnt = 0
        self._hold_rexmit = False
        lost = 0
        for rec in self._out:
            rec.retrans = False
            if not rec.sacked:
                rec.lost = True
                lost += rec.end - rec.seq
        self.lost_bytes = self._pending_bytes = lost
        self.retrans_bytes = 0
        self._rexmits.clear()
        self._rtx_hint = 0
        self._lost_mark_seq = self.snd_nxt
        self._sacked_above_mark = 0
        self.high_seq = self.snd_nxt
        self.ca_state = CA_LOSS

    def _send_data_probe(self, core: Core) -> None:
        pkt = self.sim.new_packet(self.flow, 0, TCP_FRAME_HDR_BYTES, 1, DATA, seq=self.snd_una - 1,
                                  ack=self.rcv_nxt, owner=self)
        self._stamp_ack(pkt)
        pkt.core = core
        self._tx.charge(pkt)
        self.ns.ip_output(pkt)
