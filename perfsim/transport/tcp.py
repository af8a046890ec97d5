"""TCP endpoints: handshake, Reno/NewReno congestion control, GSO skbs, delayed ACKs, close.

Model (what Linux does, and where the CPU time goes)
----------------------------------------------------
* **Sender.** ``write()`` waits for room in the send buffer (``sndbuf_bytes``, unacked +
  unsent), copies the message on the application core (``sock_tx_copy``, packet-less work
  reserved with :func:`perfsim.core.sim.reserve`) and then transmits what the windows allow.
  Transmission (``tcp_tx`` per skb, then ``ns.ip_output``) runs on the core that triggered it:
  the application core after a write, the softirq core of the incoming ACK after an ACK
  (``tcp_data_snd_check`` in softirq), the core that last transmitted when a timer fires.
* **skbs.** With GSO on the sending host an skb holds up to
  ``floor((gso_max_bytes - 52) / mss) × mss`` payload bytes (52 = IPv4 + TCP headers), cut at
  an MSS boundary unless it ends the queued data; ``segs = ceil(payload / mss)``.  Without GSO
  every skb is one MSS.  Each wire frame carries 66 header bytes (Ethernet 14 + IPv4 20 + TCP
  32 with timestamps).  Nagle is on, with Minshall's rule (a sub-MSS tail may leave unless
  another sub-MSS segment is unacknowledged), like ``tcp_nagle_check``.
* **Congestion control** (Reno with NewReno recovery; sequence numbers are byte offsets, the
  SYN and the FIN use one each, both sides start at 0).  Slow start from IW10 (``cwnd`` in
  segments, +1 per acked segment), congestion avoidance +1 per cwnd acked segments, both only
  while cwnd-limited (``tcp_is_cwnd_limited``).  Three duplicate ACKs (fewer when fewer than
  four skbs are out: early retransmit, RFC 5827) retransmit the head skb, set
  ``ssthresh = cwnd = flight/2`` and inflate the window by one segment per further duplicate
  (RFC 5681); a partial ACK retransmits the next hole (RFC 6582).  The RTO is
  ``max(200 ms, srtt + 4 rttvar)`` (RFC 6298, 1 s before the first sample), doubled per
  consecutive timeout; on expiry ``cwnd = 1`` and the sender goes back to ``snd_una``.
  The usable window is ``min(cwnd, peer's advertised window)``.
  Assumption: no SACK; a duplicate ACK counts once however many segments it stands for.
* **Receiver** (softirq core = ``pkt.core``): ``tcp_rx`` once per skb; in-order data goes to
  the receive queue, out-of-order data is kept as intervals and merged when the hole fills
  (bytes reach the application exactly once, in order).  ACKs leave from the same core: at
  once for an skb with >= 2 MSS of new data (GRO), for every second segment, for
  out-of-order or duplicate data and when a hole fills; otherwise after the 40 ms delayed-ACK
  timer unless data going the other way carries the ACK first.  The advertised window is
  ``rcvbuf_bytes`` minus unread bytes (so its right edge never moves left).  When the reader
  frees space and the window had fallen to half or less, a window update leaves from the
  application core (``tcp_cleanup_rbuf``).  ``read()`` copies on the application core
  (``sock_rx_copy``: wakeup + copy per call).
* **Connections.** ``connect()`` and ``accept()`` each cost ``tcp_connect`` once on the
  application core; SYN / SYN-ACK / ACK and FIN / FIN / ACK are ordinary skbs (``tcp_tx`` /
  ``tcp_rx``).  The closer stays in TIME_WAIT for 1 s (re-ACKing a repeated FIN) and then
  frees its port, as ``tcp_tw_reuse`` allows; conntrack keeps its own TIME_WAIT downstream.

Packets are consumed when the receiving stack has processed them; the queues hold byte
ranges, not packets, so a connection holds no packets (nothing to report to ``in_flight``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from perfsim.core.packet import ACK, DATA, FIN, PROTO_TCP, SYN, SYNACK, FlowKey, Packet
from perfsim.core.sim import reserve
from perfsim.units import ETH_HDR_BYTES, IPV4_HDR_BYTES, TCP_HDR_BYTES

if TYPE_CHECKING:
    from perfsim.core.cpu import Core, Stage
    from perfsim.core.sim import Sim
    from perfsim.transport.stats import FlowStats

TCP_FRAME_HDR_BYTES = ETH_HDR_BYTES + IPV4_HDR_BYTES + TCP_HDR_BYTES
"""66: headers of every TCP frame on the wire."""
INITIAL_CWND_SEGS = 10
RTO_MIN_S = 0.2
RTO_INITIAL_S = 1.0
RTO_MAX_S = 120.0
DELAYED_ACK_S = 0.04
MAX_RETRIES = 15
"""``tcp_retries2``: consecutive timeouts before the connection is aborted."""
MAX_SYN_RETRIES = 6
TIME_WAIT_REUSE_S = 1.0
"""How long a TIME_WAIT socket keeps its port (re-ACKing a repeated FIN) before a new
connection may take it over: ``tcp_tw_reuse`` allows reuse after 1 s (Linux holds TIME_WAIT
60 s, which conntrack models on its own)."""
DEFAULT_SNDBUF_BYTES = 4 * 1024 * 1024
DEFAULT_RCVBUF_BYTES = 6 * 1024 * 1024

CLOSED, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSING, CLOSE_WAIT, LAST_ACK, TIME_WAIT = range(9)
STATE_NAMES = ("CLOSED", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSING",
               "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT")
_SENDING = (ESTABLISHED, FIN_WAIT, CLOSING, CLOSE_WAIT, LAST_ACK)


def reserve_app_work(stage: Stage, core: Core, now_s: float, nbytes: int) -> float:
    """Reserve one application call of ``stage`` moving ``nbytes`` on ``core``; return its end.

    The time is accounted on the stage (``reserve`` only books the core).
    """
    c = stage.per_packet_s + stage.per_byte_s * nbytes
    stage.cpu_s += c
    stage.packets += 1
    return reserve(core, now_s, c)


class LazyTimer:
    """A re-armable timer that costs one event per expiry, not one per re-arm.

    ``set(t)`` moves the deadline; an event already scheduled earlier re-schedules itself to
    the new deadline when it fires.  ``cancel()`` disarms it.
    """

    __slots__ = ("_sched", "deadline", "fn", "sim")

    def __init__(self, sim: Sim, fn: Any) -> None:
        self.sim = sim
        self.fn = fn
        self.deadline: float | None = None
        self._sched: float | None = None

    def set(self, t_s: float) -> None:
        self.deadline = t_s
        if self._sched is None or t_s < self._sched:
            self._sched = t_s
            self.sim.call_at(t_s, self._fire, t_s)

    def cancel(self) -> None:
        self.deadline = None

    def _fire(self, t_s: float) -> None:
        if self._sched == t_s:
            self._sched = None
        d = self.deadline
        if d is None:
            return
        if d <= self.sim.now:
            self.deadline = None
            self.fn()
        elif self._sched is None:
            self._sched = d
            self.sim.call_at(d, self._fire, d)


class TcpConnection:
    """One end of a TCP connection (create with :meth:`client` or via :class:`TcpListener`).

    Parameters
    ----------
    ns: the namespace (``bind``/``unbind``/``ip_output``, ``host``, ``sim``, ``name``).
    app_core: the core the owning application runs on.
    flow: the 5-tuple as this end sends it (source = local address and port).
    mss_bytes: payload bytes per segment (already the minimum of both ends' MSS).
    stats: where reads, retransmissions and drops are counted (optional).
    """

    def __init__(
        self,
        ns: Any,
        app_core: Core,
        flow: FlowKey,
        mss_bytes: int,
        *,
        stats: FlowStats | None = None,
        sndbuf_bytes: int = DEFAULT_SNDBUF_BYTES,
        rcvbuf_bytes: int = DEFAULT_RCVBUF_BYTES,
        listener: TcpListener | None = None,
    ) -> None:
        self.ns = ns
        self.sim: Sim = ns.sim
        self.env = self.sim.env
        self.app_core = app_core
        self.flow = flow
        self.mss = mss_bytes
        self.stats = stats
        self.sndbuf = sndbuf_bytes
        self.rcvbuf = rcvbuf_bytes
        self.listener = listener
        host = ns.host
        self._tx = host.stage("tcp_tx")
        self._rx_stage = host.stage("tcp_rx")
        self._connect_stage = host.stage("tcp_connect")
        self._tx_copy = host.stage("sock_tx_copy")
        self._rx_copy = host.stage("sock_rx_copy")
        off = host.offloads
        l34 = IPV4_HDR_BYTES + TCP_HDR_BYTES
        self.max_skb = max(mss_bytes, (off.gso_max_bytes - l34) // mss_bytes * mss_bytes) if off.gso else mss_bytes
        self.state = CLOSED
        # send side (byte sequence numbers; data starts at 1, after the SYN)
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
        self.srtt = 0.0
        self.rttvar = 0.0
        self._backoff = 0
        self._retries = 0
        self._syn_t: float | None = None
        self._rto = LazyTimer(self.sim, self._on_rto)
        self._last_core: Core = app_core
        self._in_push = False
        self._push_again = False
        # receive side
        self.rcv_nxt = 0
        self._readable_end = 0
        self._read_seq = 0
        self._rq: deque[tuple[int, float, int]] = deque()  # (end_seq, t_created, segs)
        self._ooo: list[list[Any]] = []  # sorted [seq, end, t_created, segs]
        self._fin_seq: int | None = None
        self.fin_received = False
        self._adv_right = 0
        self._ack_pending = False
        self._ack_now = False
        self._unacked_segs = 0
        self._rx_core: Core = app_core
        self._delack = LazyTimer(self.sim, self._on_delack)
        self._read_ev: Any = None
        self._space_ev: Any = None
        self._est_ev: Any = None
        self._fin_acked = False
        # counters
        self.retransmits = 0
        self.timeouts = 0
        self.fast_retransmits = 0
        self.drops = 0
        self.dup_bytes = 0
        self.bytes_read = 0

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def client(
        cls, ns: Any, app_core: Core, local_ip: int, local_port: int, remote_ip: int,
        remote_port: int, mss_bytes: int, **kw: Any,
    ) -> TcpConnection:
        """A client socket bound to ``local_port`` (ConfigError if the port is taken)."""
        conn = cls(ns, app_core, FlowKey(local_ip, remote_ip, PROTO_TCP, local_port, remote_port), mss_bytes, **kw)
        ns.bind(PROTO_TCP, local_port, conn)
        return conn

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    # -- application calls (generators for SimPy processes) ---------------------------------
    def connect(self) -> Generator[Any, Any, bool]:
        """``connect()``: ``tcp_connect`` on the app core, SYN, wait for the SYN-ACK.

        Returns False if the handshake failed (SYN retries exhausted).
        """
        env = self.env
        finish = reserve_app_work(self._connect_stage, self.app_core, env.now, 0)
        yield env.timeout(finish - env.now)
        self.state = SYN_SENT
        self._est_ev = env.event()
        self._send_ctrl(SYN, 0, self.app_core)
        self._syn_t = env.now
        self.snd_nxt = self.snd_max = 1
        self._rto.set(env.now + self._rto_s())
        ok = yield self._est_ev
        return bool(ok)

    def write(self, nbytes: int) -> Generator[Any, Any, int]:
        """``send()`` of ``nbytes``: wait for send-buffer room, copy, transmit. Returns bytes
        written (0 if the connection cannot send any more)."""
        env = self.env
        need = min(nbytes, self.sndbuf)
        while self.state in _SENDING and not self._fin_queued and self.write_end - self.snd_una + need > self.sndbuf:
            self._space_ev = env.event()
            yield self._space_ev
        if self.state not in _SENDING or self._fin_queued:
            return 0
        finish = reserve_app_work(self._tx_copy, self.app_core, env.now, nbytes)
        yield env.timeout(finish - env.now)
        self.write_end += nbytes
        self._push(self.app_core)
        return nbytes

    def read(self, max_bytes: int) -> Generator[Any, Any, int]:
        """``recv()`` of up to ``max_bytes``: wait for data, copy it. Returns 0 at end of stream."""
        env = self.env
        while self._readable_end == self._read_seq:
            if self.fin_received or self.state in (CLOSED, TIME_WAIT):
                return 0
            self._read_ev = env.event()
            yield self._read_ev
        n = min(self._readable_end - self._read_seq, max_bytes)
        finish = reserve_app_work(self._rx_copy, self.app_core, env.now, n)
        yield env.timeout(finish - env.now)
        self._consume(n)
        return n

    def close(self) -> None:
        """``close()``: queue a FIN after the unsent data and transmit from the app core."""
        if self.state == ESTABLISHED:
            self.state = FIN_WAIT
        elif self.state == CLOSE_WAIT:
            self.state = LAST_ACK
        else:
            return
        self._fin_queued = True
        self._push(self.app_core)

    # -- receive entry (softirq) -------------------------------------------------------------
    def deliver(self, pkt: Packet) -> None:
        """Called by the namespace in softirq context: charge ``tcp_rx``, then process."""
        self._rx_stage.charge(pkt)
        self.sim.after_work(pkt, self.process)

    def on_xmit_done(self, pkt: Packet, t_s: float) -> None:
        """The skb stopped counting against this socket (no send-side limit modelled yet)."""

    def on_drop(self, pkt: Packet, site: str, reason: str) -> None:
        self.drops += 1
        if self.stats is not None:
            self.stats.on_drop(self.sim.now)

    def process(self, pkt: Packet) -> None:
        """Process one received skb after its ``tcp_rx`` work (``tcp_rcv_*``)."""
        self.sim.consume(pkt)
        core = pkt.core if pkt.core is not None else self.app_core
        kind = pkt.kind
        st = self.state
        if kind == SYNACK:
            if st == SYN_SENT:
                self._established(pkt, core)
                self._send_ctrl(ACK, self.snd_nxt, core)
            elif st != CLOSED:
                self._send_ctrl(ACK, self.snd_nxt, core)  # our ACK was lost: repeat it
            return
        if kind == SYN:
            if st == SYN_RECV:
                self._send_ctrl(SYNACK, 0, core)  # the client did not get the SYN-ACK
            return
        if st == SYN_RECV:
            if pkt.ack < 1:
                return
            self._established(pkt, core)
            if self.listener is not None:
                self.listener._queue_accept(self)
        elif st in (CLOSED, SYN_SENT, TIME_WAIT):
            if st == TIME_WAIT and kind == FIN:
                self._send_ctrl(ACK, self.snd_nxt, core)  # our last ACK was lost
            return
        self._rx_core = core
        self._on_ack(pkt, core)
        if kind == DATA:
            self._on_data(pkt)
        elif kind == FIN:
            self._on_fin(pkt.seq)
        if self.state in _SENDING:
            self._push(core)
        if self._ack_now:
            self._send_ctrl(ACK, self.snd_nxt, core)
        elif self._ack_pending and self._delack.deadline is None:
            self._delack.set(self.sim.now + DELAYED_ACK_S)

    # -- handshake -----------------------------------------------------------------------
    def _accept_syn(self, syn: Packet) -> None:
        """Server side: a SYN created this child; answer with a SYN-ACK from the softirq core."""
        self.state = SYN_RECV
        self.rcv_nxt = self._readable_end = self._read_seq = 1
        self.snd_right = syn.wnd
        self._syn_t = self.sim.now
        self._send_ctrl(SYNACK, 0, syn.core if syn.core is not None else self.app_core)
        self.snd_nxt = self.snd_max = 1
        self._rto.set(self.sim.now + self._rto_s())

    def _established(self, pkt: Packet, core: Core) -> None:
        now = self.sim.now
        self.state = ESTABLISHED
        self.snd_una = self._max_out_seq = 1
        if self.rcv_nxt == 0:
            self.rcv_nxt = self._readable_end = self._read_seq = 1
        self.snd_right = pkt.ack + pkt.wnd
        if self._syn_t is not None and self._backoff == 0:
            self._rtt_sample(now - self._syn_t)
        self._backoff = self._retries = 0
        self._rto.cancel()
        ev = self._est_ev
        if ev is not None and not ev.triggered:
            ev.succeed(True)

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

    def _rcv_wnd(self) -> int:
        w = self.rcvbuf - (self._readable_end - self._read_seq)
        return max(0, w)

    def _stamp_ack(self, pkt: Packet) -> None:
        """Put the cumulative ACK and window on an outgoing skb; it acknowledges everything."""
        w = self._rcv_wnd()
        pkt.wnd = w
        self._adv_right = self.rcv_nxt + w
        self._ack_pending = self._ack_now = False
        self._unacked_segs = 0
        self._delack.deadline = None

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
        while self.state in _SENDING:
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
            end = nxt + size
            if size % mss:
                self.snd_sml = end
            self.snd_nxt = end
            rexmit = nxt < self.snd_max
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

    # -- data processing (receiver side) ------------------------------------------------------
    def _on_data(self, pkt: Packet) -> None:
        seq = pkt.seq
        size = pkt.payload_bytes
        end = seq + size
        nxt = self.rcv_nxt
        if size == 0 or end <= nxt:
            self.dup_bytes += size
            self._ack_now = True
            return
        if seq > nxt:
            ooo = self._ooo
            i = len(ooo)
            while i and ooo[i - 1][0] > seq:
                i -= 1
            ooo.insert(i, [seq, end, pkt.t_created, pkt.segs])
            self._ack_now = True
            return
        self.dup_bytes += nxt - seq
        self._rq.append((end, pkt.t_created, pkt.segs))
        self.rcv_nxt = end
        new = end - nxt
        if self._ooo:
            self._merge_ooo()
            self._ack_now = True
        self._readable_end = self.rcv_nxt
        if self._fin_seq is not None and self.rcv_nxt == self._fin_seq:
            self._on_fin(self._fin_seq)
        self._wake_reader()
        self._unacked_segs += pkt.segs
        self._ack_pending = True
        if new >= 2 * self.mss or self._unacked_segs >= 2:
            self._ack_now = True

    def _merge_ooo(self) -> None:
        ooo = self._ooo
        while ooo and ooo[0][0] <= self.rcv_nxt:
            seq, end, t_created, segs = ooo.pop(0)
            if end > self.rcv_nxt:
                self.dup_bytes += self.rcv_nxt - seq
                self._rq.append((end, t_created, segs))
                self.rcv_nxt = end
            else:
                self.dup_bytes += end - seq

    def _on_fin(self, seq: int) -> None:
        if seq != self.rcv_nxt:
            if seq > self.rcv_nxt:
                self._fin_seq = seq
            self._ack_now = True
            return
        self._fin_seq = None
        self.rcv_nxt = seq + 1
        self.fin_received = True
        self._wake_reader()
        st = self.state
        if st == ESTABLISHED:
            self.state = CLOSE_WAIT
            self._ack_pending = True  # the FIN of our close() will usually carry the ACK
        elif st == FIN_WAIT:
            self._ack_now = True
            if self._fin_acked:
                self._finish(TIME_WAIT)
            else:
                self.state = CLOSING

    def _finish(self, state: int) -> None:
        """Enter TIME_WAIT or CLOSED: release the port (or leave the listener), stop timers."""
        if state == TIME_WAIT and (self._ack_now or self._ack_pending):
            self._send_ctrl(ACK, self.snd_nxt, self._rx_core)
        self.state = state
        self._rto.cancel()
        self._delack.cancel()
        if state == TIME_WAIT:
            self.sim.call_in(TIME_WAIT_REUSE_S, self._release, None)
        else:
            self._release(None)
        self._wake_reader()
        for ev in (self._space_ev, self._est_ev):
            if ev is not None and not ev.triggered:
                ev.succeed(False)

    def _release(self, _: Any) -> None:
        """Give the port back (or leave the listener's table): the connection is gone."""
        self.state = CLOSED
        if self.listener is not None:
            self.listener._forget(self)
        else:
            self.ns.unbind(PROTO_TCP, self.flow.sport)

    def _on_delack(self) -> None:
        if self._ack_pending and self.state not in (CLOSED, TIME_WAIT):
            self._send_ctrl(ACK, self.snd_nxt, self._rx_core)

    def _wake_reader(self) -> None:
        ev = self._read_ev
        if ev is not None and not ev.triggered:
            ev.succeed()
        self._read_ev = None

    def _consume(self, n: int) -> None:
        """The application copied ``n`` bytes out: count them, maybe send a window update."""
        now = self.sim.now
        self._read_seq += n
        self.bytes_read += n
        st = self.stats
        if st is not None:
            st.on_read(now, n)
        rq = self._rq
        read = self._read_seq
        while rq and rq[0][0] <= read:
            _, t_created, segs = rq.popleft()
            if st is not None:
                st.on_skb(now, t_created, segs)
        remaining = self._adv_right - self.rcv_nxt
        if (self.state in (ESTABLISHED, FIN_WAIT) and 2 * remaining <= self.rcvbuf
                and self._read_seq + self.rcvbuf - self.rcv_nxt >= 2 * remaining):
            self._send_ctrl(ACK, self.snd_nxt, self.app_core)  # tcp_cleanup_rbuf window update

    def __repr__(self) -> str:
        return f"TcpConnection({self.flow}, {self.state_name})"


class TcpListener:
    """A listening socket: creates a child per SYN, hands established children to ``accept``.

    The namespace delivers every segment for the port here; the listener charges ``tcp_rx``
    and demultiplexes by the remote address and port as seen in this namespace (after NAT).
    """

    def __init__(
        self, ns: Any, app_core: Core, port: int, mss_bytes: int, *, stats: FlowStats | None = None,
        sndbuf_bytes: int = DEFAULT_SNDBUF_BYTES, rcvbuf_bytes: int = DEFAULT_RCVBUF_BYTES,
    ) -> None:
        self.ns = ns
        self.sim: Sim = ns.sim
        self.app_core = app_core
        self.port = port
        self.mss = mss_bytes
        self.stats = stats
        self.sndbuf = sndbuf_bytes
        self.rcvbuf = rcvbuf_bytes
        self.name = f"{ns.name}/tcp:{port}"
        self.children: dict[tuple[int, int], TcpConnection] = {}
        self._accept_q: deque[TcpConnection] = deque()
        self._accept_ev: Any = None
        self._rx_stage = ns.host.stage("tcp_rx")
        self._connect_stage = ns.host.stage("tcp_connect")
        ns.bind(PROTO_TCP, port, self)

    def deliver(self, pkt: Packet) -> None:
        self._rx_stage.charge(pkt)
        self.sim.after_work(pkt, self._process)

    def _process(self, pkt: Packet) -> None:
        flow = pkt.flow
        child = self.children.get((flow.src_ip, flow.sport))
        if child is not None:
            child.process(pkt)
            return
        if pkt.kind != SYN:
            self.sim.drop(pkt, self.name, "no_connection")
            return
        self.sim.consume(pkt)
        child = TcpConnection(self.ns, self.app_core, flow.reversed(), self.mss, stats=self.stats,
                              sndbuf_bytes=self.sndbuf, rcvbuf_bytes=self.rcvbuf, listener=self)
        self.children[(flow.src_ip, flow.sport)] = child
        child._accept_syn(pkt)

    def on_xmit_done(self, pkt: Packet, t_s: float) -> None:
        """The skb stopped counting against this socket (no send-side limit modelled yet)."""

    def on_drop(self, pkt: Packet, site: str, reason: str) -> None:  # pragma: no cover - owns none
        pass

    def _queue_accept(self, child: TcpConnection) -> None:
        self._accept_q.append(child)
        ev = self._accept_ev
        if ev is not None and not ev.triggered:
            ev.succeed()

    def _forget(self, child: TcpConnection) -> None:
        key = (child.flow.dst_ip, child.flow.dport)
        if self.children.get(key) is child:
            del self.children[key]

    def accept(self) -> Generator[Any, Any, TcpConnection]:
        """``accept()``: wait for an established connection, pay ``tcp_connect`` on the app core."""
        env = self.sim.env
        while not self._accept_q:
            self._accept_ev = env.event()
            yield self._accept_ev
        conn = self._accept_q.popleft()
        finish = reserve_app_work(self._connect_stage, self.app_core, env.now, 0)
        yield env.timeout(finish - env.now)
        return conn

    def close(self) -> None:
        self.ns.unbind(PROTO_TCP, self.port)
