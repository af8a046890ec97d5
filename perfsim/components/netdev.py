"""Network devices: the base class, veth pairs and the loopback device.

Receive model: a frame arriving on a device goes to the device's ``master`` (the bridge it is
enslaved to, like an rx_handler) if it has one, else up the IP stack of the device's namespace.
Transmit (``xmit``) is device-specific.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from perfsim.core.element import Element
from perfsim.core.packet import Packet
from perfsim.errors import check_number

if TYPE_CHECKING:
    from perfsim.components.host import Host


class NetDevice(Element):
    """A network interface: ``ifname`` inside its namespace, a MAC, an MTU, IPv4 addresses.

    ``name`` (unique in the run) is ``<namespace>/<ifname>`` once the device is placed.
    """

    def __init__(self, host: Host, name: str, mac: int, mtu_bytes: int = 1500) -> None:
        check_number(f"{name}.mtu_bytes", mtu_bytes, low=68, high=65535, integer=True)
        super().__init__(host.sim, name)
        self.host = host
        self.ifname = name.rsplit("/", 1)[-1]
        self.mac = mac
        self.mtu_bytes = mtu_bytes
        self.ns: Any = None
        self.master: Any = None
        self.addrs: list[tuple[int, int]] = []
        self.rx_packets = 0
        self.tx_packets = 0

    def put(self, pkt: Packet) -> None:
        """Element entry: a frame arriving from the medium (``receive``)."""
        self.receive(pkt)

    def receive(self, pkt: Packet) -> None:
        """A frame arrives on this device: to the bridge it is enslaved to, or up the stack."""
        self.rx_packets += 1
        pkt.dev = self
        if self.master is not None:
            self.master.handle(pkt, self)
        elif self.ns is not None:
            self.ns.ip_rcv(pkt, self)
        else:
            self.sim.drop(pkt, self.name, "device_not_in_namespace")

    def xmit(self, pkt: Packet) -> None:  # pragma: no cover - abstract
        """Transmit a frame out of this device."""
        raise NotImplementedError


class VethEnd(NetDevice):
    """One end of a veth pair. ``xmit`` hands the frame to the peer on the *same* CPU.

    Linux: ``veth_xmit`` calls ``netif_rx`` on the peer, which queues the skb on the backlog of
    the current CPU; the softirq on that CPU then receives it.  So the sender's core keeps
    doing the work (``veth_xmit`` + ``backlog_rx``), unless the host enables RPS, which steers the
    receive to the core chosen by the flow hash (one more hand-off).
    """

    def __init__(self, host: Host, name: str, mac: int, mtu_bytes: int = 1500) -> None:
        super().__init__(host, name, mac, mtu_bytes)
        self.peer: VethEnd | None = None
        self._xmit_stage = host.stage("veth_xmit")
        self._backlog_stage = host.stage("backlog_rx")

    def xmit(self, pkt: Packet) -> None:
        self.tx_packets += 1
        self._xmit_stage.charge(pkt)
        owner = pkt.owner
        if owner is not None:
            owner.on_xmit_done(pkt, self.sim.env._now)  # dev_forward_skb orphans the skb
        peer = self.peer
        assert peer is not None
        if self.host.rps:
            core = self.host.cpus.rss(pkt.flow)
            if core is not pkt.core:
                self.sim.after_work(pkt, self._steer_to(core))
                return
        self._backlog_stage.charge(pkt)
        peer.receive(pkt)

    def _steer_to(self, core: Any) -> Any:
        def arrive(pkt: Packet) -> None:
            pkt.core = core
            self._backlog_stage.charge(pkt)
            assert self.peer is not None
            self.peer.receive(pkt)

        return arrive


def veth_pair(host: Host, name_a: str, mac_a: int, name_b: str, mac_b: int, mtu_bytes: int = 1500) -> tuple[VethEnd, VethEnd]:
    """Create two connected veth ends (both start outside any namespace)."""
    a = VethEnd(host, name_a, mac_a, mtu_bytes)
    b = VethEnd(host, name_b, mac_b, mtu_bytes)
    a.peer, b.peer = b, a
    return a, b
