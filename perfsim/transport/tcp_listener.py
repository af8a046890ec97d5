"""The listening TCP socket: one child :class:`~perfsim.transport.tcp.TcpConnection` per SYN."""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from perfsim.core.packet import PROTO_TCP, SYN, Packet
from perfsim.errors import check_number
from perfsim.transport.common import (
    DEFAULT_RCVBUF_BYTES,
    DEFAULT_SNDBUF_BYTES,
    reserve_app_work,
    wake_task,
)
from perfsim.transport.tsq import DEFAULT_TCP_LIMIT_OUTPUT_BYTES

if TYPE_CHECKING:
    from perfsim.core.cpu import Core
    from perfsim.core.sim import Sim
    from perfsim.transport.stats import FlowStats
    from perfsim.transport.tcp import TcpConnection


class TcpListener:
    """A listening socket: creates a child per SYN, hands established children to ``accept``.

    The namespace delivers every segment for the port here; the listener charges ``tcp_rx``
    and demultiplexes by the remote address and port as seen in this namespace (after NAT).
    The children inherit the buffer sizes and the TSQ settings (``tcp_limit_output_bytes``,
    ``tsq``; see :class:`~perfsim.transport.tcp.TcpConnection`).
    """

    def __init__(
        self, ns: Any, app_core: Core, port: int, mss_bytes: int, *, stats: FlowStats | None = None,
        sndbuf_bytes: int = DEFAULT_SNDBUF_BYTES, rcvbuf_bytes: int = DEFAULT_RCVBUF_BYTES,
        tcp_limit_output_bytes: int = DEFAULT_TCP_LIMIT_OUTPUT_BYTES, tsq: bool = True,
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
        self.limit_output_bytes = int(check_number(
            f"{self.name}.tcp_limit_output_bytes", tcp_limit_output_bytes, low=0, high=2**31 - 1, integer=True))
        self.tsq = tsq
        self.children: dict[tuple[int, int], TcpConnection] = {}
        self._accept_q: deque[TcpConnection] = deque()
        self._accept_ev: Any = None
        self._rx_stage = ns.host.stage("tcp_rx")
        self._connect_stage = ns.host.stage("tcp_connect")
        self._wake_stage = ns.host.stage("task_wakeup")
        self._switch_stage = ns.host.stage("task_switch")
        ns.bind(PROTO_TCP, port, self)

    def deliver(self, pkt: Packet) -> None:
        """Softirq: a segment of an accepted connection goes to that connection (its own
        ``deliver``: ``tcp_rx``, and the socket backlog while its application holds it); the
        rest (SYNs, handshake ACKs) to the listener."""
        flow = pkt.flow
        child = self.children.get((flow.src_ip, flow.sport))
        if child is not None:
            child.deliver(pkt)
            return
        self._rx_stage.charge(pkt)
        self.sim.after_work(pkt, self._process)

    def _process(self, pkt: Packet) -> None:
        from perfsim.transport.tcp import TcpConnection

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
                              sndbuf_bytes=self.sndbuf, rcvbuf_bytes=self.rcvbuf, listener=self,
                              tcp_limit_output_bytes=self.limit_output_bytes, tsq=self.tsq)
        self.children[(flow.src_ip, flow.sport)] = child
        child._accept_syn(pkt)

    def on_xmit_done(self, pkt: Packet, t_s: float) -> None:
        """The listener sends nothing itself (its children own their skbs)."""

    def on_drop(self, pkt: Packet, site: str, reason: str) -> None:  # pragma: no cover - owns none
        pass

    def _queue_accept(self, child: TcpConnection) -> None:
        self._accept_q.append(child)
        wake_task(self._accept_ev, None, self._wake_stage, child._rx_core, self.app_core, self.sim.now,
                  self._switch_stage)

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
