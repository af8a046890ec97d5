"""TCP endpoints: handshake, Reno/NewReno congestion control, GSO skbs, delayed ACKs, close.

Model (what Linux does, and where the CPU time goes)
----------------------------------------------------
* **Sender.** ``write()`` waits for room in the send buffer (``sndbuf_bytes``, unacked +
  unsent), copies the message on the application core (``sock_tx_copy``, packet-less work
  reserved with :func:`perfsim.core.sim.reserve`) and then transmits what the windows allow.
  Transmission (``tcp_tx`` per skb, then ``ns.ip_output``) runs on the core that triggered it:
  the application core after a write, the softirq core of the incoming ACK after an ACK
  (``tcp_data_snd_check`` in softirq), the core that last transmitted when a timer fires.
* **TCP Small Queues.**  Before each new data skb, ``tcp_write_xmit`` stops while the bytes
  of this connection's skbs not yet freed by TX completion (``sk_wmem_alloc``) exceed
  ``min(max(2 skbs, sk_pacing_rate / 1024), tcp_limit_output_bytes)`` and resumes from the
  completion path (``tcp_tsq_handler``); see :mod:`perfsim.transport.tsq` and
  :mod:`perfsim.transport.tcp_tx`.  A veth or loopback device frees the skb at once, so only
  a NIC (a real transmit queue) ever throttles a socket.
* **skbs.** With GSO on the sending host an skb holds up to
  ``floor((gso_max_bytes - 52) / mss) × mss`` payload bytes (52 = IPv4 + TCP headers), cut at
  an MSS boundary unless it ends the queued data; ``segs = ceil(payload / mss)``.  Without GSO
  every skb is one MSS.  Each wire frame carries 66 header bytes (Ethernet 14 + IPv4 20 + TCP
  32 with timestamps).  Nagle is on, with Minshall's rule (a sub-MSS tail may leave unless
  another sub-MSS segment is unacknowledged), like ``tcp_nagle_check``.
* **Congestion control** (Reno with SACK loss recovery; sequence numbers are byte offsets,
  the SYN and the FIN use one each, both sides start at 0).  Slow start from IW10 (``cwnd``
  in segments, +1 per delivered segment), congestion avoidance +1 per cwnd delivered
  segments, both only while cwnd-limited (``tcp_is_cwnd_limited``).  SACK, D-SACK and
  timestamps are on (Linux's defaults).  Recovery is RFC 6675 with Linux's state machine
  (``tcp_fastretrans_alert``): it starts when ``reordering`` (3, adapted up to 300 when
  reordering is seen) segments are SACKed (fewer when fewer than four are out: early
  retransmit, RFC 5827), sets ``ssthresh = max(FlightSize / 2, 2)`` and the recovery point
  to ``snd_nxt``, retransmits only un-SACKed skbs with ``reordering`` SACKed segments above
  them, once each, while ``pipe < cwnd``; ``cwnd`` follows PRR (RFC 6937) during recovery
  and is ``ssthresh`` when ``snd_una`` passes the recovery point.  A recovery proven
  spurious by the timestamp echo (an original filled the hole) or by D-SACKs for all its
  retransmissions is undone (``cwnd`` and ``ssthresh`` restored).  The RTO is
  ``max(200 ms, srtt + 4 rttvar)`` (RFC 6298, 1 s before the first sample), doubled per
  consecutive timeout; on expiry every un-SACKed skb is lost, ``cwnd = 1`` and they are
  retransmitted in slow start.  The usable window is ``min(cwnd, peer's advertised
  window)``.  Details and deviations (no RACK-TLP, no F-RTO) in
  :mod:`perfsim.transport.tcp_tx`.
* **Receiver** (softirq core = ``pkt.core``): ``tcp_rx`` once per skb; in-order data goes to
  the receive queue, out-of-order data is kept as intervals and merged when the hole fills
  (bytes reach the application exactly once, in order).  ACKs leave from the same core at
  once for out-of-order or duplicate data and when a hole fills, and for an skb with >= 2 MSS
  of new data (GRO) or every second segment if the window's right edge advances
  (``__tcp_ack_snd_check``: the reader has freed at least what arrived since the last ACK).
  Otherwise the reader's ``tcp_cleanup_rbuf`` sends it after its copy, from the application
  core, once more than one MSS is unacknowledged; failing both, the 40 ms delayed-ACK timer,
  unless data going the other way carries the ACK first.  The advertised window is
  ``rcvbuf_bytes`` minus unread bytes (so its right edge never moves left).  When the reader
  frees space and the window had fallen to half or less, a window update leaves from the
  application core (``tcp_cleanup_rbuf``).  ``read()`` copies on the application core
  (``sock_rx_copy``: wakeup + copy per call) what is queued when it runs there (after the
  core's wake-up), and holds the socket from then until its copy ends.
* **Copies across cores.**  When the two ends' applications run on different cores (or
  hosts), each copy costs ``copy_cross_core`` per byte on top: the reader copies lines the
  sender's core (or a NIC) wrote, the writer writes into pages the reader's core freed — a
  cache-line transfer per 64 B that a sender and receiver sharing one core do not pay (the
  measurements behind it: ``docs/kernel-evidence.md``).
* **Connections.** ``connect()`` and ``accept()`` each cost ``tcp_connect`` once on the
  application core; SYN / SYN-ACK / ACK and FIN / FIN / ACK are ordinary skbs (``tcp_tx`` /
  ``tcp_rx``).  The closer stays in TIME_WAIT for 1 s (re-ACKing a repeated FIN) and then
  frees its port, as ``tcp_tw_reuse`` allows; conntrack keeps its own TIME_WAIT downstream.

Code layout: the send half (``write``, transmission, TSQ, ACKs, congestion control, RTO) is
:class:`~perfsim.transport.tcp_tx.TcpSender`, the receive half (``read``, reassembly, ACK
policy) :class:`~perfsim.transport.tcp_rx.TcpReceiver`, the listening socket
:class:`~perfsim.transport.tcp_listener.TcpListener`; this module joins them.

Packets are consumed when the receiving stack has processed them; the queues hold byte
ranges, not packets, so a connection holds no packets (nothing to report to ``in_flight``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from perfsim.core.packet import ACK, DATA, FIN, PROTO_TCP, SYN, SYNACK, FlowKey, Packet
from perfsim.core.sim import reserve
from perfsim.errors import check_number
from perfsim.transport.common import (
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    DEFAULT_RCVBUF_BYTES,
    DEFAULT_SNDBUF_BYTES,
    DELAYED_ACK_S,
    ESTABLISHED,
    FIN_WAIT,
    INITIAL_CWND_SEGS,
    LAST_ACK,
    MAX_RETRIES,
    MAX_SYN_RETRIES,
    RTO_INITIAL_S,
    RTO_MAX_S,
    RTO_MIN_S,
    SENDING_STATES,
    STATE_NAMES,
    SYN_RECV,
    SYN_SENT,
    TCP_FRAME_HDR_BYTES,
    TIME_WAIT,
    TIME_WAIT_REUSE_S,
    LazyTimer,
    reserve_app_work,
    wake_task,
)
from perfsim.transport.tcp_listener import TcpListener
from perfsim.transport.tcp_rx import TcpReceiver
from perfsim.transport.tcp_tx import TcpSender
from perfsim.transport.tsq import DEFAULT_TCP_LIMIT_OUTPUT_BYTES
from perfsim.units import IPV4_HDR_BYTES, TCP_HDR_BYTES

if TYPE_CHECKING:
    from perfsim.core.cpu import Core
    from perfsim.core.sim import Sim
    from perfsim.transport.stats import FlowStats

__all__ = [
    "CLOSED", "CLOSE_WAIT", "CLOSING", "DEFAULT_RCVBUF_BYTES", "DEFAULT_SNDBUF_BYTES",
    "DEFAULT_TCP_LIMIT_OUTPUT_BYTES", "DELAYED_ACK_S", "ESTABLISHED", "FIN_WAIT",
    "INITIAL_CWND_SEGS", "LAST_ACK", "MAX_RETRIES", "MAX_SYN_RETRIES", "RTO_INITIAL_S",
    "RTO_MAX_S", "RTO_MIN_S", "STATE_NAMES", "SYN_RECV", "SYN_SENT", "TCP_FRAME_HDR_BYTES",
    "TIME_WAIT", "TIME_WAIT_REUSE_S", "LazyTimer", "TcpConnection", "TcpListener",
    "reserve_app_work",
]


class TcpConnection(TcpSender, TcpReceiver):
    """One end of a TCP connection (create with :meth:`client` or via :class:`TcpListener`).

    Parameters
    ----------
    ns: the namespace (``bind``/``unbind``/``ip_output``, ``host``, ``sim``, ``name``).
    app_core: the core the owning application runs on.
    flow: the 5-tuple as this end sends it (source = local address and port).
    mss_bytes: payload bytes per segment (already the minimum of both ends' MSS).
    stats: where reads, retransmissions and drops are counted (optional).
    sndbuf_bytes, rcvbuf_bytes: send buffer (unacked + unsent bytes) and receive buffer.
    tcp_limit_output_bytes: ``net.ipv4.tcp_limit_output_bytes``, the cap of the TCP Small
        Queues limit (bytes, 0 .. 2**31 - 1; default 1 MiB).
    tsq: False turns TCP Small Queues off (a kernel before 3.6): the connection then fills
        whatever queue is below it up to its windows.
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
        tcp_limit_output_bytes: int = DEFAULT_TCP_LIMIT_OUTPUT_BYTES,
        tsq: bool = True,
    ) -> None:
        limit = int(check_number(f"{ns.name}/tcp:{flow.sport}.tcp_limit_output_bytes", tcp_limit_output_bytes,
                                 low=0, high=2**31 - 1, integer=True))
        self.ns = ns
        self.sim: Sim = ns.sim
        self.env = self.sim.env
        self.app_core = app_core
        self.flow = flow
        self.mss = mss_bytes
        self.stats = stats
        self.listener = listener
        host = ns.host
        self._rx_stage = host.stage("tcp_rx")
        self._connect_stage = host.stage("tcp_connect")
        self._wake_stage = host.stage("task_wakeup")
        self._switch_stage = host.stage("task_switch")
        off = host.offloads
        l34 = IPV4_HDR_BYTES + TCP_HDR_BYTES
        max_skb = max(mss_bytes, (off.gso_max_bytes - l34) // mss_bytes * mss_bytes) if off.gso else mss_bytes
        self.state = CLOSED
        self._syn_t: float | None = None
        self._est_ev: Any = None
        self.drops = 0
        self._init_sender(sndbuf_bytes, max_skb, host.stage("tcp_tx"), host.stage("sock_tx_copy"), limit, tsq)
        self._init_receiver(rcvbuf_bytes, host.stage("sock_rx_copy"), host.stage("copy_cross_core"))

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
        """Called by the namespace in softirq context: charge ``tcp_rx``, then process.

        While the application holds the socket (a ``recvmsg``/``sendmsg`` copy is running on
        its core), Linux cannot process the skb in softirq: ``tcp_v4_rcv`` queues it on the
        socket's backlog and the owner processes it in ``release_sock`` — on the
        application's core, right after its copy.  So part of the receive work follows the
        reader (and the ACK work the writer) to their own cores.  The backlog's work is booked
        on the application core; its effect takes place when the copy ends plus the backlog's
        work (not behind other sockets' copies the core has queued since: the owner drains
        its backlog before it returns)."""
        core = pkt.core
        now = self.env._now
        if (core is not None and core is not self.app_core and self._direct_until <= now
                and (self._owned_from <= now < self._owned_until or self._backlog_until > now)):
            # while the owner still works through its backlog, new skbs join it; while an
            # earlier skb is still being processed in softirq, this one follows it: in order
            self.sim.settle(pkt)  # the softirq core did the work up to here
            pkt.core = self.app_core
            self._rx_stage.charge(pkt)
            work = pkt.work_s
            pkt.work_s = 0.0
            reserve(self.app_core, now, work)
            self._backlog_until = max(now, self._owned_until, self._backlog_until) + work
            self.sim.call_at(self._backlog_until, self.process, pkt)
            return
        self._rx_stage.charge(pkt)
        finish = self.sim.after_work(pkt, self.process)
        if core is not self.app_core:
            self._direct_until = finish

    def on_xmit_done(self, pkt: Packet, t_s: float) -> None:
        """The skb stops counting against this socket at ``t_s`` (TX completion or orphan)."""
        self.wmem.xmit_done(pkt, t_s)

    def on_drop(self, pkt: Packet, site: str, reason: str) -> None:
        self._opts_out.pop(pkt.id, None)
        self.wmem.dropped(pkt)
        self.drops += 1
        if self.stats is not None:
            self.stats.on_drop(self.sim.now)

    @property
    def tx_queued_bytes(self) -> int:
        """Bytes of data skbs handed to IP and not yet freed (``sk_wmem_alloc``), now."""
        return self.wmem.level()

    def process(self, pkt: Packet) -> None:
        """Process one received skb after its ``tcp_rx`` work (``tcp_rcv_*``)."""
        self.sim.consume(pkt)
        owner = pkt.owner
        opts = owner._opts_out.pop(pkt.id, None) if owner is not None else None
        core = pkt.core if pkt.core is not None else self.app_core
        self._rx_core = core
        kind = pkt.kind
        self._saw_segment(pkt)
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
        self._on_ack(pkt, core, opts)
        if kind == DATA:
            self._on_data(pkt)
        elif kind == FIN:
            self._on_fin(pkt.seq)
        if self.state in SENDING_STATES:
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
        peer = pkt.owner
        self._cross_core = peer is None or peer.app_core is not self.app_core
        self.snd_una = self._max_out_seq = 1
        if self.rcv_nxt == 0:
            self.rcv_nxt = self._readable_end = self._read_seq = 1
        self.snd_right = pkt.ack + pkt.wnd
        if self._syn_t is not None and self._backoff == 0:
            self._rtt_sample(now - self._syn_t)
        self._backoff = self._retries = 0
        self._rto.cancel()
        wake_task(self._est_ev, True, self._wake_stage, core, self.app_core, now, self._switch_stage)

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


    def __repr__(self) -> str:
        return f"TcpConnection({self.flow}, {self.state_name})"

