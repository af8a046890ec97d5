"""UDP sockets: synchronous ``sendmsg`` on the application core, a byte-limited receive queue.

Model
-----
* **Send.** ``sendmsg`` runs to completion on the caller's core: the copy (``sock_tx_copy``,
  per call + per payload byte) and ``udp_tx`` are charged on the datagram itself with
  ``pkt.core = app_core``, then ``ns.ip_output`` continues on the same core.  A datagram
  larger than ``mtu - 28`` bytes leaves as IP fragments: ``segs = ceil(payload / (mtu - 28))``
  frames of 42 header bytes each (Ethernet 14 + IPv4 20 + UDP 8; the UDP header really
  travels only in the first fragment), ``udp_tx`` is charged per frame and DF is cleared.
* **Receive.** ``udp_rx`` is charged in softirq (``pkt.core``); the datagram is queued if the
  queue's memory plus its skb's truesize (:func:`udp_truesize`) fits ``rcvbuf_bytes``
  (``net.core.rmem_default`` = 212992: 256 datagrams of 64 B), else it is dropped with reason
  ``socket_rcvbuf_full``.  ``recv()`` runs on the application core — ``udp_recv`` per call
  (measured: :mod:`perfsim.calibrate.percall`), ``sock_rx_copy``'s per-byte cost on the
  payload — and only then frees the datagram's queue space (``skb_consume_udp`` after the
  copy).  UDP's receive call is far cheaper than TCP's (no socket lock, no ACK or window
  update), so the two do not share a per-call constant.
* **Tasks.** A socket with a ``task`` (:class:`perfsim.core.sched.Task`, the ``udp_stream``
  receiver) tells the core's scheduler when its reader blocks, wakes and makes a call, so that
  a receiver sharing its core with the sender gets the core when EEVDF gives it, not after
  every datagram.
* **Send buffer.**  Each datagram's ``size_bytes`` (standing for its truesize) counts against
  the socket (``sk_wmem_alloc``, a :class:`~perfsim.transport.tsq.WmemAlloc`) from
  ``sendmsg`` until it is freed: by the NIC's TX completion once its last frame has left, at
  once when a veth or loopback device orphans it, or when it is dropped.  A blocking
  ``sendmsg`` (:meth:`UdpSocket.send`, or :meth:`UdpSocket.wait_sndbuf` before
  :meth:`UdpSocket.sendto`) waits while ``sk_wmem_alloc >= sndbuf_bytes``
  (``sock_alloc_send_pskb``; ``net.core.wmem_default`` = 212992) and is woken by the freeing
  path only once ``2 × sk_wmem_alloc <= sndbuf_bytes`` (``sock_def_write_space``): one event
  per wake-up, at that completion time.  So a sender faster than its NIC is held back instead
  of overflowing the NIC's queue, and a sender behind a veth is never held back.
* Queued datagrams are packets held by the socket: it is registered with the run and reports
  them in ``held_packets()``; they are consumed when the application has read them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from perfsim.core.packet import DATA, PROTO_UDP, FlowKey, Packet
from perfsim.errors import check_number
from perfsim.transport.common import reserve_app_work, wake_task
from perfsim.transport.tsq import DEFAULT_UDP_SNDBUF_BYTES, WmemAlloc
from perfsim.units import ETH_HDR_BYTES, IPV4_HDR_BYTES, UDP_HDR_BYTES

if TYPE_CHECKING:
    from perfsim.core.cpu import Core, Stage
    from perfsim.core.sched import Task
    from perfsim.core.sim import Sim
    from perfsim.transport.stats import FlowStats

UDP_FRAME_HDR_BYTES = ETH_HDR_BYTES + IPV4_HDR_BYTES + UDP_HDR_BYTES
"""42: headers counted on every UDP frame (fragment)."""
DEFAULT_UDP_RCVBUF_BYTES = 212992
MAX_DATAGRAM_BYTES = 65507


SKB_SHARED_INFO_BYTES = 320
"""``SKB_DATA_ALIGN(sizeof(struct skb_shared_info))``, at the end of every skb head."""
SK_BUFF_BYTES = 256
"""``SKB_DATA_ALIGN(sizeof(struct sk_buff))``, counted in every truesize."""
SMALL_HEAD_BYTES = 576
"""``SKB_SMALL_HEAD_CACHE_SIZE``: heads up to this size come from their own slab cache."""
UDP_HEAD_EXTRA_BYTES = 16 + 15 + IPV4_HDR_BYTES + UDP_HDR_BYTES
"""What ``__ip_append_data`` allocates beyond the payload: the device's reserved link-layer
space (16), 15 bytes of alignment slack, the IPv4 and UDP headers."""


def udp_truesize(payload_bytes: int, segs: int = 1) -> int:
    """The memory a received datagram charges to its socket (``skb->truesize``).

    Each of the ``segs`` frames is one skb whose head holds the headers and its share of the
    payload: ``SKB_DATA_ALIGN(alloc) + shared info``, rounded up to its slab (the small-head
    cache up to 576 B, else a power of two; above 32 KiB whole pages), plus the ``sk_buff``.
    Measured on this machine kind over loopback (``/proc/net/udp`` rx_queue over 10 queued
    datagrams): 832 B for 1–64 B payloads, 1280 B for 200 and 512 B, 2304 B for 1400 B — as
    computed here.
    """
    per = -(-payload_bytes // segs)
    head = -(-(per + UDP_HEAD_EXTRA_BYTES) // 64) * 64 + SKB_SHARED_INFO_BYTES
    if head <= SMALL_HEAD_BYTES:
        slab = SMALL_HEAD_BYTES
    elif head <= 32768:
        slab = 1 << (head - 1).bit_length()
    else:
        slab = -(-head // 4096) * 4096
    return segs * (slab + SK_BUFF_BYTES)


def udp_segs(payload_bytes: int, mtu_bytes: int) -> int:
    """Frames a datagram of ``payload_bytes`` needs on a path of ``mtu_bytes`` (IP fragments)."""
    per = mtu_bytes - IPV4_HDR_BYTES - UDP_HDR_BYTES
    return max(1, -(-payload_bytes // per))


class UdpSocket:
    """A bound UDP socket of an application running on ``app_core``.

    Parameters
    ----------
    ns: the namespace (``bind``, ``ip_output``, ``host``, ``sim``, ``name``).
    app_core: the core of the application using the socket.
    ip, port: local address and port (bound in ``ns``; ConfigError if taken).
    mtu_bytes: path MTU used to fragment large datagrams.
    stats: where reads and drops are counted (optional).
    rcvbuf_bytes: receive queue limit in bytes.
    sndbuf_bytes: send buffer (``sk_sndbuf``) in bytes, 2048 .. 2**31.
    """

    def __init__(
        self, ns: Any, app_core: Core, ip: int, port: int, mtu_bytes: int = 1500, *,
        stats: FlowStats | None = None, rcvbuf_bytes: int = DEFAULT_UDP_RCVBUF_BYTES,
        sndbuf_bytes: int = DEFAULT_UDP_SNDBUF_BYTES,
    ) -> None:
        self.ns = ns
        self.sim: Sim = ns.sim
        self.app_core = app_core
        self.ip = ip
        self.port = port
        self.mtu = mtu_bytes
        self.stats = stats
        self.rcvbuf = rcvbuf_bytes
        self.name = f"{ns.name}/udp:{port}"
        self.sndbuf = int(check_number(f"{self.name}.sndbuf_bytes", sndbuf_bytes, low=2048, high=1 << 31,
                                       integer=True))
        self.wmem = WmemAlloc(self.sim, self._on_write_space)
        """Bytes of datagrams sent and not yet freed (``sk_wmem_alloc``)."""
        self._space_ev: Any = None
        self.sndbuf_waits = 0
        """How often a sender had to wait for send-buffer space."""
        host = ns.host
        self._tx_copy = host.stage("sock_tx_copy")
        self._udp_tx = host.stage("udp_tx")
        self._udp_rx = host.stage("udp_rx")
        self._rx_copy = host.stage("sock_rx_copy")
        self._recv = host.stage("udp_recv")
        self._wake_stage = host.stage("task_wakeup")
        self._switch_stage = host.stage("task_switch")
        self.select: Stage | None = None
        """``select()`` before every read (iperf3's server loop), or None (a plain ``recvmsg``)."""
        self._q: deque[tuple[Packet, int]] = deque()
        """Queued datagrams with the truesize each charged."""
        self._q_bytes = 0
        self._read_ev: Any = None
        self.task: Task | None = None
        """The task using the socket, when its core's scheduler arbitrates it (``udp_stream``'s sender and reader)."""
        self.sent = 0
        self.received = 0
        self.drops = 0
        ns.bind(PROTO_UDP, port, self)
        self.sim.register(self.name, self)

    # -- send -------------------------------------------------------------------------------
    @property
    def sndbuf_full(self) -> bool:
        """True when a blocking ``sendmsg`` would wait (``sk_wmem_alloc >= sk_sndbuf``)."""
        return self.wmem.level() >= self.sndbuf

    def wait_sndbuf(self) -> Generator[Any, Any, None]:
        """Wait until a datagram may be allocated (``sock_alloc_send_pskb`` blocking)."""
        env = self.sim.env
        while self.wmem.level() >= self.sndbuf:
            self.sndbuf_waits += 1
            self._space_ev = ev = env.event()
            self.wmem.wait_until_at_most(self.sndbuf // 2)
            yield ev

    def _on_write_space(self) -> None:
        """``sock_def_write_space``: the freeing path wakes the blocked writer."""
        ev = self._space_ev
        self._space_ev = None
        if ev is not None and not ev.triggered:
            ev.succeed()

    def sendto(self, dst_ip: int, dst_port: int, nbytes: int) -> float:
        """``sendmsg`` of one datagram, synchronously on the app core.

        Returns the time at which the core has at least finished this datagram's own work
        (the caller waits until then, or until ``app_core.busy_until_s`` if later).  It does
        not check the send buffer: a blocking sender calls :meth:`wait_sndbuf` first
        (:meth:`send` does).
        """
        segs = udp_segs(nbytes, self.mtu)
        pkt = self.sim.new_packet(FlowKey(self.ip, dst_ip, PROTO_UDP, self.port, dst_port), nbytes,
                                  UDP_FRAME_HDR_BYTES, segs, DATA, owner=self)
        if segs > 1:
            pkt.df = False
            pkt.frags = True
        core = self.app_core
        pkt.core = core
        self._tx_copy.charge_bytes(pkt, nbytes)
        self._udp_tx.charge_frames(pkt)
        own = pkt.work_s
        self.sent += 1
        now = self.sim.now
        self.wmem.charge(pkt)
        self.ns.ip_output(pkt)
        busy = core.busy_until_s
        return max(busy, now + own)

    def send(self, dst_ip: int, dst_port: int, nbytes: int) -> Generator[Any, Any, None]:
        """Blocking ``sendmsg``: wait for send-buffer space, ``sendto``, then wait until the app
        core is free again (the syscall returned)."""
        env = self.sim.env
        if self.wmem.level() >= self.sndbuf:
            yield from self.wait_sndbuf()
        t = self.sendto(dst_ip, dst_port, nbytes)
        if t > env.now:
            yield env.timeout(t - env.now)

    # -- receive ----------------------------------------------------------------------------
    def deliver(self, pkt: Packet) -> None:
        """Softirq: charge ``udp_rx``; queue the datagram when the core has done it."""
        self._udp_rx.charge(pkt)
        self.sim.after_work(pkt, self._enqueue)

    def _enqueue(self, pkt: Packet) -> None:
        size = udp_truesize(pkt.payload_bytes, pkt.segs)
        if self._q_bytes + size > self.rcvbuf:
            self.sim.drop(pkt, self.name, "socket_rcvbuf_full")
            return
        self._q.append((pkt, size))
        self._q_bytes += size
        ev = self._read_ev
        if ev is not None:  # per datagram: skip the call while the reader is not blocked
            self._read_ev = None
            task = self.task
            scheduled = task is not None and not task.sched.single  # its scheduler charges the switch
            wake_task(ev, None, self._wake_stage, pkt.core, self.app_core, self.sim.now,
                      None if scheduled else self._switch_stage)

    def recv(self) -> Generator[Any, Any, tuple[int, int, int]]:
        """``recvmsg``: wait for a datagram, copy it; returns ``(nbytes, src_ip, src_port)``."""
        env = self.sim.env
        task = self.task
        while not self._q:
            self._read_ev = env.event()
            if task is not None:
                task.block()
            yield self._read_ev
            if task is not None and (turn := task.wake()) is not None:
                yield turn
        if task is not None and (turn := task.checkpoint()) is not None:
            yield turn
        pkt, size = self._q[0]
        n = pkt.payload_bytes
        if self.select is not None:
            reserve_app_work(self.select, self.app_core, env.now, 0)
        reserve_app_work(self._recv, self.app_core, env.now, 0)
        finish = reserve_app_work(self._rx_copy, self.app_core, env.now, n, calls=0)
        yield env.timeout(finish - env.now)
        self._q.popleft()
        self._q_bytes -= size
        self.received += 1
        self.sim.consume(pkt)
        now = env.now
        if self.stats is not None:
            self.stats.on_datagram(now, n, pkt.segs, pkt.t_created)
        flow = pkt.flow
        return n, flow.src_ip, flow.sport

    def held_packets(self) -> int:
        return len(self._q)

    @property
    def queued_bytes(self) -> int:
        return self._q_bytes

    def on_xmit_done(self, pkt: Packet, t_s: float) -> None:
        """The datagram stops counting against the send buffer at ``t_s``."""
        self.wmem.xmit_done(pkt, t_s)

    def on_drop(self, pkt: Packet, site: str, reason: str) -> None:
        self.wmem.dropped(pkt)
        self.drops += 1
        if self.stats is not None:
            self.stats.on_drop(self.sim.now)

    def close(self) -> None:
        self.ns.unbind(PROTO_UDP, self.port)

    def __repr__(self) -> str:
        return f"UdpSocket({self.name!r})"
