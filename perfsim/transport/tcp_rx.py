"""The receive half of a TCP endpoint (a mixin of :class:`~perfsim.transport.tcp.TcpConnection`).

In-order data goes to the receive queue (byte ranges with the creation time and segment count
of the skb they came in), out-of-order data is kept as sorted intervals and merged when the
hole fills, so bytes reach the application exactly once and in order.  ACK policy, the
advertised window and ``tcp_cleanup_rbuf`` window updates are described in
:mod:`perfsim.transport.tcp`.  The mixin owns the receive-side state (``_init_receiver``); it
uses the connection's ``state``, ``snd_nxt``, ``_send_ctrl`` and ``_finish``.

TCP options of every segment this end sends (SYN excepted), as Linux fills them with SACK and
timestamps negotiated (``tcp_established_options``):

* **TSecr** echoes ``ts_recent``: the newest TSval (the send time of a segment, ``t_created``)
  among the segments that arrived with ``seq <= rcv_wup``, ``rcv_nxt`` when the last ACK left
  (RFC 7323 via ``tcp_replace_ts_recent``): an out-of-order segment does not update it, the
  segment that fills a hole does, so the sender can tell an original from a retransmission;
* **SACK blocks** (RFC 2018, ``tcp_sack_new_ofo_skb`` / ``tcp_sack_remove``): up to 4 blocks
  kept, the one that changed last first, at most 3 sent (timestamps take the rest of the
  40 option bytes); a block is dropped once ``rcv_nxt`` covers it;
* **D-SACK** (RFC 2883, ``tcp_dsack_set``): data that arrived a second time (below
  ``rcv_nxt`` or inside a SACK block) is reported once, in the first block.

The options travel beside the packet (``Packet`` has no option field): the sending end keeps
them by packet id in ``_opts_out`` and the receiving end takes them out in ``process``; a
dropped packet's options are discarded in ``on_drop``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from perfsim.core.packet import ACK, SYN, Packet
from perfsim.core.sim import reserve
from perfsim.transport.common import (
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT,
    TIME_WAIT,
    LazyTimer,
    app_work_s,
    reserve_app_work,
    wake_task,
)

if TYPE_CHECKING:
    from perfsim.core.cpu import Core, Stage
    from perfsim.core.sim import Sim
    from perfsim.transport.stats import FlowStats
    from perfsim.transport.tcp_tx import SackBlocks, TcpOptions


MAX_SACK_BLOCKS_KEPT = 4
"""``TCP_NUM_SACKS``: SACK blocks the receiver remembers."""
MAX_SACK_BLOCKS_SENT = 3
"""SACK (and D-SACK) blocks that fit in an ACK beside the timestamp option."""


class TcpReceiver:
    """Receive-side state and processing of one TCP connection (mixin)."""

    if TYPE_CHECKING:
        sim: Sim
        env: Any
        app_core: Core
        stats: FlowStats | None
        mss: int
        state: int
        snd_nxt: int
        _fin_acked: bool

        def _send_ctrl(self, kind: int, seq: int, core: Core) -> None: ...

        def _finish(self, state: int) -> None: ...

        _wake_stage: Stage
        _switch_stage: Stage

    def _init_receiver(self, rcvbuf_bytes: int, rx_copy: Stage, cross_copy: Stage) -> None:
        self.rcvbuf = rcvbuf_bytes
        self._rx_copy = rx_copy
        self._xcopy = cross_copy
        self._cross_core = False
        """The peer's application runs on another core (or host): the payload this end copies
        was written last by another core (``copy_cross_core``); set at establishment."""
        self.rcv_nxt = 0
        self._readable_end = 0
        self._read_seq = 0
        self._rq: deque[tuple[int, float, int]] = deque()  # (end_seq, t_created, segs)
        self._ooo: list[list[Any]] = []  # sorted [seq, end, t_created, segs]
        self._fin_seq: int | None = None
        self.fin_received = False
        self._adv_right = 0
        self._adv_wnd = 0
        """The window the last ACK advertised (``tp->rcv_wnd``)."""
        self._ack_pending = False
        self._ack_now = False
        self._unacked_segs = 0
        self._rx_core: Core = self.app_core
        """Softirq core of the last segment received (ACKs and TSQ resumptions run there)."""
        self._delack = LazyTimer(self.sim, self._on_delack)
        self._read_ev: Any = None
        self.dup_bytes = 0
        self.bytes_read = 0
        self._sacks: list[list[int]] = []  # [start, end], most recently changed first
        self._dsack: tuple[int, int] | None = None
        self._ts_recent: float | None = None
        self._rcv_wup = 0
        """``rcv_nxt`` when the last ACK left (``tp->rcv_wup``)."""
        self._opts_out: dict[int, TcpOptions] = {}
        """TCP options (TSecr, SACK blocks) of the segments this end sent, by packet id."""
        self._owned_from = 0.0
        self._owned_until = 0.0
        """The application holds the socket (its syscall's copy runs) from ``_owned_from``
        until then."""
        self._backlog_until = 0.0
        """The owner has processed its socket backlog by then."""
        self._direct_until = 0.0
        """The softirq core has processed the last skb it took directly by then."""

    def _copy_holding_socket(self, stage: Stage, nbytes: int, held_from: float | None = None) -> float:
        """Reserve a syscall's copy of ``nbytes`` (``stage``, plus ``copy_cross_core`` when the
        peer runs on another core) on the application core and return its end.

        The syscall holds the socket (``lock_sock``) from ``held_from`` — by default from the
        start of its copy, not while it still waits for its core: a single-threaded
        application serving several sockets (iperf3 before 3.16) holds only the one it is
        copying, so softirq processes the others' skbs directly — until the copy ends."""
        now = self.sim.now
        work = app_work_s(stage, nbytes)
        finish = reserve_app_work(stage, self.app_core, now, nbytes)
        if self._cross_core and nbytes:
            xcopy = self._xcopy
            work += app_work_s(xcopy, nbytes, 0)
            finish = reserve_app_work(xcopy, self.app_core, now, nbytes, 0)
        self._owned_from = finish - work if held_from is None else held_from
        self._owned_until = finish
        return finish

    # -- application call -------------------------------------------------------------------
    def read(self, max_bytes: int) -> Generator[Any, Any, int]:
        """``recv()`` of up to ``max_bytes``: wait for data, copy it. Returns 0 at end of stream.

        The syscall takes what is queued when it runs on its core — after the core's wake-up
        or the work queued on it before — not what was there when the reader was woken: data
        that arrives meanwhile is copied by the same call (``tcp_recvmsg`` copies while data
        is queued, up to ``max_bytes``).  It holds the socket from then until its copy ends
        (data arriving during the copy waits in the backlog and is left for the next call)."""
        env = self.env
        while self._readable_end == self._read_seq:
            if self.fin_received or self.state in (CLOSED, TIME_WAIT):
                return 0
            self._read_ev = env.event()
            yield self._read_ev
        runs = reserve(self.app_core, env.now, 0.0)
        if runs > env.now:
            yield env.timeout(runs - env.now)
        n = min(self._readable_end - self._read_seq, max_bytes)
        # tcp_recvmsg holds the socket from its start (lock_sock) to after the ACK its
        # tcp_cleanup_rbuf sends; skbs that arrive meanwhile wait in the backlog, so that ACK
        # never finds unread data the call did not take
        finish = self._copy_holding_socket(self._rx_copy, n, held_from=env.now)
        yield env.timeout(finish - env.now)
        self._consume(n)
        return n

    def readable(self) -> bool:
        """``select()`` would report the socket readable: data to read, or end of stream."""
        return self._readable_end > self._read_seq or self.fin_received or self.state in (CLOSED, TIME_WAIT)

    # -- ACK fields of outgoing segments -----------------------------------------------------
    def _rcv_wnd(self) -> int:
        w = self.rcvbuf - (self._readable_end - self._read_seq)
        return max(0, w)

    def _stamp_ack(self, pkt: Packet) -> None:
        """Put the cumulative ACK, window and options on an outgoing skb; it acknowledges
        everything."""
        w = self._rcv_wnd()
        pkt.wnd = self._adv_wnd = w
        nxt = self.rcv_nxt
        self._adv_right = nxt + w
        self._rcv_wup = nxt
        self._ack_pending = self._ack_now = False
        self._unacked_segs = 0
        self._delack.deadline = None
        if pkt.kind == SYN:
            return
        blocks: SackBlocks | None = None
        sacks = self._sacks
        if sacks or self._dsack is not None:
            lst = [] if self._dsack is None else [self._dsack]
            self._dsack = None
            for b in sacks:
                if len(lst) == MAX_SACK_BLOCKS_SENT:
                    break
                lst.append((b[0], b[1]))
            blocks = tuple(lst)
        self._opts_out[pkt.id] = (self._ts_recent, blocks)

    def _saw_segment(self, pkt: Packet) -> None:
        """``tcp_replace_ts_recent``: take the segment's TSval if it starts at or below
        ``rcv_wup`` (and is not older than the one kept)."""
        if pkt.seq <= self._rcv_wup:
            ts = self._ts_recent
            if ts is None or pkt.t_created > ts:
                self._ts_recent = pkt.t_created


    # -- data processing (softirq) -------------------------------------------------------------
    def _on_data(self, pkt: Packet) -> None:
        seq = pkt.seq
        size = pkt.payload_bytes
        end = seq + size
        nxt = self.rcv_nxt
        if size == 0 or end <= nxt:
            self.dup_bytes += size
            if size:
                self._dsack = (seq, end)
            self._ack_now = True
            return
        if seq > nxt:
            self._ack_now = True
            for b in self._sacks:
                if b[0] <= seq and end <= b[1]:  # all of it is here already
                    self.dup_bytes += size
                    self._dsack = (seq, end)
                    return
            ooo = self._ooo
            i = len(ooo)
            while i and ooo[i - 1][0] > seq:
                i -= 1
            ooo.insert(i, [seq, end, pkt.t_created, pkt.segs])
            self._sack_new_ofo(seq, end)
            return
        if seq < nxt:
            self.dup_bytes += nxt - seq
            self._dsack = (seq, nxt)
        self._rq.append((end, pkt.t_created, pkt.segs))
        self.rcv_nxt = end
        new = end - nxt
        if self._ooo:
            self._merge_ooo()
            self._sack_remove()
            self._ack_now = True
        self._readable_end = self.rcv_nxt
        if self._fin_seq is not None and self.rcv_nxt == self._fin_seq:
            self._on_fin(self._fin_seq)
        self._wake_reader()
        self._unacked_segs += pkt.segs
        self._ack_pending = True
        if (new >= 2 * self.mss or self._unacked_segs >= 2) and self._rcv_wnd() >= self._adv_wnd:
            # __tcp_ack_snd_check: more than one MSS, and the window's right edge advances
            # (the reader has freed at least what arrived since the last ACK); otherwise the
            # reader's tcp_cleanup_rbuf sends the ACK after its copy, from its own core
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

    def _sack_new_ofo(self, seq: int, end: int) -> None:
        """``tcp_sack_new_ofo_skb``: extend the block the new data touches (and merge the
        blocks it joins) or start a new one; the block that changed goes first."""
        sacks = self._sacks
        for k, b in enumerate(sacks):
            if b[0] <= end and seq <= b[1]:
                b[0] = min(b[0], seq)
                b[1] = max(b[1], end)
                if k:
                    sacks.insert(0, sacks.pop(k))
                j = 1
                while j < len(sacks):  # tcp_sack_maybe_coalesce
                    o = sacks[j]
                    if o[0] <= b[1] and b[0] <= o[1]:
                        b[0] = min(b[0], o[0])
                        b[1] = max(b[1], o[1])
                        del sacks[j]
                    else:
                        j += 1
                return
        if len(sacks) == MAX_SACK_BLOCKS_KEPT:
            sacks.pop()
        sacks.insert(0, [seq, end])

    def _sack_remove(self) -> None:
        """``tcp_sack_remove``: forget the blocks ``rcv_nxt`` has reached."""
        nxt = self.rcv_nxt
        if self._sacks:
            self._sacks = [b for b in self._sacks if b[0] > nxt]

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

    def _on_delack(self) -> None:
        if self._ack_pending and self.state not in (CLOSED, TIME_WAIT):
            self._send_ctrl(ACK, self.snd_nxt, self._rx_core)

    def _wake_reader(self) -> None:
        """``sk_data_ready``: wake a blocked reader from the core processing the skb."""
        ev = self._read_ev
        if ev is not None:  # per skb: skip the call while the reader is not blocked
            self._read_ev = None
            wake_task(ev, None, self._wake_stage, self._rx_core, self.app_core, self.sim.now, self._switch_stage)

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
        if self.state not in (ESTABLISHED, FIN_WAIT):
            return
        if self._ack_pending and self.rcv_nxt - self._rcv_wup > self.mss:
            # tcp_cleanup_rbuf: the once-per-two-segments ACK softirq did not send
            self._send_ctrl(ACK, self.snd_nxt, self.app_core)
            return
        remaining = self._adv_right - self.rcv_nxt
        if 2 * remaining <= self.rcvbuf and self._read_seq + self.rcvbuf - self.rcv_nxt >= 2 * remaining:
            self._send_ctrl(ACK, self.snd_nxt, self.app_core)  # tcp_cleanup_rbuf window update


def wait_readable(conns: list[TcpReceiver]) -> Generator[Any, Any, None]:
    """``select()`` on ``conns`` by one thread: sleep until one of them is readable.  The
    first skb to arrive wakes the thread (``sk_data_ready`` of every socket points at it);
    skbs that arrive while it is awake wake no one."""
    ev = conns[0].env.event()
    for c in conns:
        c._read_ev = ev
    yield ev
    for c in conns:
        if c._read_ev is ev:
            c._read_ev = None
