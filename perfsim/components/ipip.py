"""IP-in-IP tunnels (``tunl0``), as Calico's IPIP mode uses them.

Transmit (``IpipDevice.xmit``, reached by routing: ``ip route add 10.2.1.0/24 via 10.0.0.2 dev
tunl0 onlink``): charge ``ipip_encap``, check the inner packet against the device MTU (too
large: dropped if DF is set, else cut into IP fragments, each with its own headers), find the
remote tunnel end, push an outer IPv4 header (+20 B per frame, protocol 4) and hand the
packet to the underlay namespace's IP output (route, netfilter, ARP, NIC).

The remote end: ``tunl0`` is a point-to-multipoint tunnel without a fixed remote, so
``ipip_tunnel_xmit`` takes the outer destination from the inner packet's route — its gateway
(``rt_nexthop``), or the inner destination for a route without one.  The device does the same:
it looks the route up again by the inner destination (a cached dict lookup).

The neighbour step before ``xmit``: ``tunl0`` is a NOARP device, so Linux never sends ARP for
its next hop.  perfsim's neighbour table is keyed by address alone (Linux keys it by address
and device), so the gateway of a tunnel route (the remote host) shares the fabric entry; the
builder makes that entry PERMANENT with the remote NIC's MAC (:mod:`perfsim.topology.routed_mode`).
The MAC the namespace writes on the inner frame is not used by the tunnel.

Receive: the underlay delivers IP protocol 4 to :class:`IpipHandler` (bound with
``underlay.bind(PROTO_IPIP, 0, handler)``): ``ipip_decap`` is charged, the outer header
removed, and the inner packet arrives on the tunnel device, whose namespace forwards it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perfsim.components.netdev import NetDevice
from perfsim.core.packet import ARP_REPLY, ARP_REQUEST, PROTO_IPIP, FlowKey, Packet
from perfsim.errors import ConfigError, check_number
from perfsim.units import IPIP_OVERHEAD_BYTES, MIN_IPV4_MTU

if TYPE_CHECKING:
    from perfsim.components.host import Host
    from perfsim.components.netns import NetNs


class IpipHandler:
    """The underlay's receive handler for IP protocol 4 (``ipip_rcv``), one per namespace."""

    def __init__(self, underlay: NetNs, dev: IpipDevice) -> None:
        self.underlay = underlay
        self.dev = dev
        underlay.bind(PROTO_IPIP, 0, self)

    def deliver(self, pkt: Packet) -> None:
        self.dev.rcv(pkt)


class IpipDevice(NetDevice):
    """An IPIP tunnel device (``tunl0``).

    Parameters
    ----------
    local_ip: underlay address the outer header comes from.
    underlay: the namespace whose routing, netfilter and NIC carry the outer packets; it also
        receives them (protocol 4 is bound there).
    mtu_bytes: inner MTU (default 1480); must leave 20 B under the underlay device MTU.
    """

    def __init__(
        self,
        host: Host,
        name: str,
        mac: int,
        local_ip: int,
        underlay: NetNs,
        mtu_bytes: int = 1480,
        underlay_mtu_bytes: int = 1500,
    ) -> None:
        low = MIN_IPV4_MTU + IPIP_OVERHEAD_BYTES
        check_number(f"{name}.underlay_mtu_bytes", underlay_mtu_bytes, low=low, high=65535, integer=True)
        limit = underlay_mtu_bytes - IPIP_OVERHEAD_BYTES
        check_number(f"{name}.mtu_bytes", mtu_bytes, low=MIN_IPV4_MTU, high=limit, integer=True)
        check_number(f"{name}.local_ip", local_ip, low=0, high=2**32 - 1, integer=True)
        if (PROTO_IPIP, 0) in underlay.sockets:
            raise ConfigError(f"{name}.underlay", underlay.name, "a namespace without another IPIP tunnel")
        super().__init__(host, name, mac, mtu_bytes)
        self.local_ip = local_ip
        self.underlay = underlay
        self.handler = IpipHandler(underlay, self)
        self._encap = host.stage("ipip_encap")
        self._decap = host.stage("ipip_decap")
        self.encapsulated = 0
        self.decapsulated = 0
        self.fragmented = 0

    def xmit(self, pkt: Packet) -> None:
        self.tx_packets += 1
        kind = pkt.kind
        if kind in (ARP_REQUEST, ARP_REPLY):
            self.sim.drop(pkt, self.name, "noarp")  # IFF_NOARP: no link layer to resolve
            return
        self._encap.charge(pkt)
        if pkt.l3_bytes_per_seg > self.mtu_bytes:
            if pkt.df:
                self.sim.drop(pkt, self.name, "mtu_exceeded_df")
                return
            pkt.fragment(self.mtu_bytes)
            self.fragmented += 1
        inner_dst = pkt.flow.dst_ip
        route = self.ns.routes.lookup(inner_dst) if self.ns is not None else None
        if route is None or route.dev is not self:
            self.sim.drop(pkt, self.name, "no_route")
            return
        remote = inner_dst if route.gateway is None else route.gateway
        pkt.push_outer(FlowKey(self.local_ip, remote, PROTO_IPIP, 0, 0), 0, 0, IPIP_OVERHEAD_BYTES)
        pkt.ct = None
        self.encapsulated += 1
        self.underlay.ip_output(pkt)

    def rcv(self, pkt: Packet) -> None:
        """An outer packet (protocol 4) for this host arrived on the underlay."""
        self._decap.charge(pkt)
        pkt.pop_outer()
        self.decapsulated += 1
        pkt.dst_mac = self.mac
        pkt.ct = None
        self.receive(pkt)
