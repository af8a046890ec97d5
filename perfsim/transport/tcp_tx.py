"""The send half of a TCP endpoint (a mixin of :class:`~perfsim.transport.tcp.TcpConnection`):
``write()``, ``tcp_write_xmit`` with TCP Small Queues, ACK processing, Reno/NewReno congestion
control, fast retransmit and the retransmission timer.

The model is described in :mod:`perfsim.transport.tcp`; TCP Small Queues (TSQ) and the
pacing rate it depends on in :mod:`perfsim.transport.tsq`.  TSQ here:

* every data skb (new or retransmitted) is charged to the socket's :class:`WmemAlloc` when it
  is handed to IP and freed at its TX completion (``on_xmit_done``) or drop (``on_drop``);
  pure ACKs, SYNs, FINs and zero-window probes are not charged (they are tiny, and Linux
  does not throttle them);
* ``tcp_write_xmit`` checks ``tcp_small_queue_check`` before every data skb; a range sent
  again after a timeout (go-back-N from ``snd_una``) is allowed twice the limit, as
  ``tcp_xmit_retransmit_queue`` does (``factor`` 1).  Deviation: the retransmission of the
  head skb (fast retransmit, NewReno partial ACK) is sent without the check, as the
  timeout's first retransmission is in Linux (Linux checks the fast one with twice the
  limit);
* a throttled socket resumes (``tcp_tsq_handler``) at the completion that brings
  ``sk_wmem_alloc`` down to the limit.  Linux runs that handler in softirq on the CPU that
  freed the skb; which CPU takes the NIC's TX-completion interrupt is not modelled, so the
  resumed transmission runs on the softirq core of the last segment this connection received
  (``_rx_core``: where its ACKs are processed, the same core as a transmission triggered by
  an ACK), or the application core before any was received.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from perfsim.core.packet import ACK, DATA, FIN, SYN, SYNACK, Packet
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
    reserve_app_work,
)
from perfsim.transport.tsq import WmemAlloc, tcp_pacing_rate, tsq_limit

if TYPE_CHECKING:
    from perfsim.core.cpu import Core, Stage
    from perfsim.core.packet import FlowKey
    from perfsim.core.sim import Sim
    from perfsim.transport.stats import FlowStats


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
        self.in_recovery = False
        self.recover = 0
        self.dupacks = 0
        self._out: deque[list[Any]] = deque()  # [seq, end, segs, t_sent, retransmitted]
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
        self.timeouts = 0
        self.fast_retransmits = 0

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
        finish = reserve_app_work(self._tx_copy, self.app_core, env.now, nbytes)
        self._owned_until = finish
        yield env.timeout(finish - env.now)
        self.write_end += nbytes
        self._push(self.app_core)
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
            self._count_rexmit(segs)
        if self._rto.deadline is None:
            self._rto.set(sim.now + self._rto_s())
        self.wmem.charge(pkt)
        self.ns.ip_output(pkt)

    def _count_rexmit(self, segs: int) -> None:
        self.retransmits += segs
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
            if data <= 0:
                if self._fin_queued and nxt == self.write_end:
                    rexmit = nxt < self.snd_max
                    self.snd_nxt = nxt + 1
                    self.snd_max = max(self.snd_max, nxt + 1)
                    self._out.append([nxt, nxt + 1, 1, now, rexmit])
                    if rexmit:
                        self._count_rexmit(1)
                    self._send_ctrl(FIN, nxt, core)
                    if self._rto.deadline is None:
                        self._rto.set(now + self._rto_s())
                break
            cwnd_edge = una + (self.cwnd + (self.dupacks if self.in_recovery else 0)) * mss
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
            rexmit = nxt < self.snd_max
            if self.tsq and self._tsq_throttled(size + -(-size // mss) * TCP_FRAME_HDR_BYTES, rexmit):
                break
            end = nxt + size
            if size % mss:
                self.snd_sml = end
            self.snd_nxt = end
            self.snd_max = max(self.snd_max, end)
            self._out.append([nxt, end, -(-size // mss), now, rexmit])
            self._send_data(nxt, size, core, rexmit)
        out = -(-(self.snd_nxt - self.snd_una) // mss)
        if out > self._max_out or self.snd_una >= self._max_out_seq:
            self._max_out = out
            self._max_out_seq = self.snd_nxt

    def _retransmit_head(self, core: Core) -> None:
        """Retransmit the first unacknowledged skb (fast retransmit / NewReno partial ACK)."""
        if not self._out:
            return
        rec = self._out[0]
        seq = self.snd_una
        rec[3] = self.sim.now
        rec[4] = True
        if self._fin_queued and rec[1] == self.write_end + 1 and rec[0] == self.write_end:
            self._count_rexmit(1)
            self._send_ctrl(FIN, seq, core)
        else:
            self._send_data(seq, rec[1] - seq, core, True)

    # -- TCP Small Queues -------------------------------------------------------------------
    def tsq_limit_bytes(self, skb_bytes: int) -> int:
        """The TSQ limit now for an skb of ``skb_bytes`` (pacing rate from cwnd and srtt)."""
        mss = self.mss
        out = (self.snd_nxt - self.snd_una + mss - 1) // mss
        rate = tcp_pacing_rate(mss, self.cwnd, self.ssthresh, out, self.srtt)
        return tsq_limit(skb_bytes, rate, self.limit_output_bytes)

    def _tsq_throttled(self, skb_bytes: int, rexmit: bool) -> bool:
        """``tcp_small_queue_check``: True (and a wake-up armed) if the skb has to wait.

        A retransmission after a timeout is allowed twice the limit (``factor`` 1, as
        ``tcp_xmit_retransmit_queue`` passes).
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
    def _on_ack(self, pkt: Packet, core: Core) -> None:
        ack = pkt.ack
        una = self.snd_una
        if ack > self.snd_max or ack < una:
            return
        if ack == una:
            right = ack + pkt.wnd
            if pkt.kind == ACK and self.snd_max > una and right <= self.snd_right:
                self.dupacks += 1
                if not self.in_recovery:
                    n_out = len(self._out)
                    thresh = 3 if n_out >= 4 or self.write_end > self.snd_nxt else max(1, n_out - 1)
                    if self.dupacks >= thresh and n_out:
                        self._fast_retransmit(core)
            elif right > self.snd_right:
                self.snd_right = right
            return
        now = self.sim.now
        acked_segs = 0
        sample = -1.0
        out = self._out
        while out and out[0][1] <= ack:
            rec = out.popleft()
            acked_segs += rec[2]
            if not rec[4]:
                sample = now - rec[3]
        if out and out[0][0] < ack:
            out[0][0] = ack
        if sample >= 0.0:
            self._rtt_sample(sample)
        self.snd_una = ack
        self.snd_nxt = max(self.snd_nxt, ack)
        self.snd_right = ack + pkt.wnd
        self._backoff = self._retries = 0
        if self.in_recovery:
            if ack >= self.recover:
                self.in_recovery = False
                self.cwnd = self.ssthresh
                self.dupacks = 0
            else:
                self.dupacks = 0
                self._retransmit_head(core)
        else:
            self.dupacks = 0
            self._grow_cwnd(acked_segs)
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
        ev = self._space_ev
        if ev is not None and not ev.triggered:
            ev.succeed()

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

    def _fast_retransmit(self, core: Core) -> None:
        flight = -(-(self.snd_nxt - self.snd_una) // self.mss)
        self.ssthresh = max(flight // 2, 2)
        self.cwnd = self.ssthresh
        self.in_recovery = True
        self.recover = self.snd_max
        self.fast_retransmits += 1
        if self.stats is not None:
            self.stats.on_retransmit(self.sim.now, 0, fast=True)
        self._retransmit_head(core)

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
        flight = -(-(self.snd_nxt - self.snd_una) // self.mss)
        self.ssthresh = max(flight // 2, 2)
        self.cwnd = 1
        self._cwnd_cnt = 0
        self.in_recovery = False
        self.dupacks = 0
        self.recover = self.snd_max
        self.snd_nxt = self.snd_una
        self._out.clear()
        self.timeouts += 1
        if self.stats is not None:
            self.stats.on_retransmit(self.sim.now, 0, timeout=True)
        self._rto.set(self.sim.now + self._rto_s())
        self._push(core)

    def _send_data_probe(self, core: Core) -> None:
        pkt = self.sim.new_packet(self.flow, 0, TCP_FRAME_HDR_BYTES, 1, DATA, seq=self.snd_una - 1,
                                  ack=self.rcv_nxt, owner=self)
        self._stamp_ack(pkt)
        pkt.core = core
        self._tx.charge(pkt)
        self.ns.ip_output(pkt)

