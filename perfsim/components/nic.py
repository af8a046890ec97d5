"""Physical NICs and the fabric between hosts.

Transmit (``Nic.xmit``): ``dev_xmit`` (qdisc) and ``nic_tx`` (driver) per skb on the sending
core; a GSO super-segment is cut into frames by the NIC (TSO, free for the CPU) or, with TSO
off, by software GSO just before the driver (``gso_segment`` per frame).  The skb then waits in
the NIC's queueing discipline: ``fq_codel`` (:class:`~perfsim.components.codel.CodelLink`, the
default) or ``pfifo``, a tail-drop :class:`~perfsim.components.link.Link` of ``queue_packets``.

Receive (``Nic.put``, called by the wire): receive-side scaling picks the core by the hash of
the (outer) 5-tuple; that core runs the driver (``nic_rx`` per frame) and, with GRO on, merges
the frames of a super-segment into one skb (``gro`` per frame) so every later stage pays its
per-packet cost once.  With GRO off each frame travels up the stack as its own skb.  A core
whose receive backlog already holds ``netdev_max_backlog`` packets drops the new one
(``rx_backlog_full``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perfsim.components.codel import QDISCS, CodelLink
from perfsim.components.link import Link
from perfsim.components.netdev import NetDevice
from perfsim.core.element import Element
from perfsim.core.packet import Packet
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError, check_number

if TYPE_CHECKING:
    from perfsim.components.host import Host


class Nic(NetDevice):
    """A physical NIC of ``rate_bps`` behind the queueing discipline ``qdisc`` (``queue_packets``
    is the ``pfifo`` limit, ``txqueuelen``)."""

    def __init__(
        self,
        host: Host,
        name: str,
        mac: int,
        rate_bps: float,
        mtu_bytes: int = 1500,
        queue_packets: int = 1000,
        wire_overhead_bytes: int = 24,
        qdisc: str = "fq_codel",
    ) -> None:
        super().__init__(host, name, mac, mtu_bytes)
        if qdisc not in QDISCS:
            raise ConfigError("qdisc", qdisc, " or ".join(QDISCS))
        self.tx_link: Link = (
            CodelLink(host.sim, f"{name}.tx", rate_bps, 0.0, mtu_bytes, wire_overhead_bytes)
            if qdisc == "fq_codel"
            else Link(host.sim, f"{name}.tx", rate_bps, 0.0, queue_packets, mtu_bytes, wire_overhead_bytes)
        )
        self._dev_xmit = host.stage("dev_xmit")
        self._nic_tx = host.stage("nic_tx")
        self._gso = host.stage("gso_segment")
        self._nic_rx = host.stage("nic_rx")
        self._gro = host.stage("gro")

    def xmit(self, pkt: Packet) -> None:
        self.tx_packets += 1
        self._dev_xmit.charge(pkt)
        if pkt.segs > 1 and not pkt.frags and not self.host.offloads.tso:
            self._gso.charge_frames(pkt)
        self._nic_tx.charge(pkt)
        self.sim.after_work(pkt, self._to_wire)

    def _to_wire(self, pkt: Packet) -> None:
        owner = pkt.owner
        departure = self.tx_link.enqueue(pkt)
        if owner is not None and departure >= 0.0:
            # TX completion frees the skb when its last frame has left: the sending socket's
            # TCP Small Queues / sndbuf accounting sees it then.
            owner.on_xmit_done(pkt, departure)

    def put(self, pkt: Packet) -> None:
        """Frames arrive from the wire."""
        host = self.host
        core = host.cpus.rss(pkt.flow)
        now = self.sim.env._now
        if core.backlog_full(now):
            self.sim.drop(pkt, self.name, "rx_backlog_full")
            return
        pkt.ct = None
        if pkt.segs > 1 and not pkt.frags and not host.offloads.gro:
            for frame in _split(self.sim, pkt):
                frame.core = core
                self._nic_rx.charge(frame)
                self.receive(frame)
        else:
            pkt.core = core
            self._nic_rx.charge_frames(pkt)
            if pkt.segs > 1 and not pkt.frags:
                self._gro.charge_frames(pkt)
            self.receive(pkt)
        core.backlog.append(max(now, core.busy_until_s))  # this packet leaves the queue then


def _split(sim: Sim, pkt: Packet) -> list[Packet]:
    """Cut a super-segment into its wire frames (receiver without GRO). The first frame reuses
    ``pkt``; the others count as created."""
    segs = pkt.segs
    per = pkt.payload_bytes // segs
    last = pkt.payload_bytes - per * (segs - 1)
    frames = [pkt]
    for i in range(1, segs):
        f = sim.clone(pkt)
        f.segs = 1
        f.payload_bytes = per if i < segs - 1 else last
        f.size_bytes = f.payload_bytes + f.hdr_bytes
        f.seq = pkt.seq + per * i
        frames.append(f)
    pkt.segs = 1
    pkt.payload_bytes = per
    pkt.size_bytes = per + pkt.hdr_bytes
    return frames


def cable(a: Nic, b: Nic, delay_s: float = 0.0) -> None:
    """Join two NICs back to back: each one's transmit link delivers to the other."""
    check_number("cable.delay_s", delay_s, low=0, high=10.0)
    a.tx_link.delay_s = delay_s
    b.tx_link.delay_s = delay_s
    a.tx_link.out = b
    b.tx_link.out = a


class Switch(Element):
    """A store-and-forward L2 switch, one output link per port.

    The MAC table is filled when a NIC is attached (a switch that has long since learned every
    host, as in a steady-state data centre fabric).  Each port's output link has the switch's
    ``rate_bps``, ``delay_s`` and queue; a broadcast or unknown MAC is flooded to every other
    port.  The switch costs no host CPU.
    """

    def __init__(
        self,
        sim: Sim,
        name: str,
        rate_bps: float,
        delay_s: float = 0.0,
        queue_packets: int = 1000,
        mtu_bytes: int = 1500,
    ) -> None:
        super().__init__(sim, name)
        self.rate_bps = rate_bps
        self.delay_s = delay_s
        self.queue_packets = queue_packets
        self.mtu_bytes = mtu_bytes
        self.links: list[Link] = []
        self._mac_port: dict[int, int] = {}

    def attach(self, nic: Nic) -> None:
        """Plug ``nic`` into a new port: its transmit link enters the switch, a link leaves."""
        idx = len(self.links)
        down = Link(
            self.sim, f"{self.name}.port{idx}", self.rate_bps, self.delay_s,
            self.queue_packets, self.mtu_bytes, nic.tx_link.overhead_bytes,
        )
        down.out = nic
        nic.tx_link.out = self
        nic.tx_link.delay_s = self.delay_s
        self.links.append(down)
        self._mac_port[nic.mac] = idx

    def put(self, pkt: Packet) -> None:
        out = self._mac_port.get(pkt.dst_mac)
        if out is not None:
            self.links[out].put(pkt)
            return
        in_port = self._mac_port.get(pkt.src_mac, -1)
        targets = [link for i, link in enumerate(self.links) if i != in_port]
        if not targets:
            self.sim.drop(pkt, self.name, "flood_no_port")
            return
        for link in targets[:-1]:
            link.put(self.sim.clone(pkt))
        targets[-1].put(pkt)
