"""A network namespace: devices, addresses, routing table, neighbour table, netfilter, sockets.

This is the IP layer every mode shares (``ip_output`` for locally generated packets, ``ip_rcv``
for frames that arrive on a device, forwarding in between) — the three tables the seed names
(routing, ARP, MAC) are real here: the routing table is consulted by longest-prefix match, a
neighbour miss sends a real ARP request over the simulated devices and holds the packet
until the reply, and bridges keep their own FDB.

Costs charged here (on ``pkt.core``): ``ip_output`` per locally sent skb, ``ip_rcv`` per
received skb, ``ip_forward`` per forwarded skb, ``arp`` per ARP packet handled; netfilter
charges its own hooks.  Loopback traffic (to an address of this namespace) costs
``loopback_xmit`` instead of a device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from perfsim.components.neighbour import NeighbourTable
from perfsim.components.routing import RoutingTable
from perfsim.core.packet import ARP_REPLY, ARP_REQUEST, BROADCAST_MAC, FlowKey, Packet
from perfsim.errors import ConfigError

if TYPE_CHECKING:
    from perfsim.components.host import Host
    from perfsim.components.netdev import NetDevice
    from perfsim.components.netfilter import Netfilter

ARP_PAYLOAD_BYTES = 28
ETH_BYTES = 14


class NetNs:
    """One network namespace on ``host``.

    Parameters
    ----------
    ip_forward: ``net.ipv4.ip_forward`` (Docker turns it on in the host namespace).
    gc_thresh3: hard cap of the neighbour table (``net.ipv4.neigh.default.gc_thresh3``).
    netfilter: the namespace's iptables + conntrack, or ``None`` for a namespace without rules
        (a container's namespace: conntrack is only loaded where rules need it).
    """

    def __init__(
        self,
        host: Host,
        name: str,
        ip_forward: bool = False,
        gc_thresh3: int = 1024,
        netfilter: Netfilter | None = None,
    ) -> None:
        if name in host.namespaces:
            raise ConfigError("netns", name, "a namespace name not used on this host")
        self.sim = host.sim
        self.host = host
        self.name = name
        self.ip_forward = ip_forward
        self.devices: dict[str, NetDevice] = {}
        self.local_ips: dict[int, NetDevice] = {}
        self.routes = RoutingTable(name)
        self.neigh = NeighbourTable(host.sim, f"{name}.neigh", gc_thresh3=gc_thresh3)
        self.neigh.solicit = self._solicit
        self.nf = netfilter
        self.sockets: dict[tuple[int, int], Any] = {}
        self._ip_output = host.stage("ip_output")
        self._ip_rcv = host.stage("ip_rcv")
        self._ip_forward = host.stage("ip_forward")
        self._arp = host.stage("arp")
        self._loopback = host.stage("loopback_xmit")
        self._arp_core: Any = host.cpus.cores[0]
        host.namespaces[name] = self

    # -- configuration ------------------------------------------------------------------------
    def add_device(self, dev: NetDevice, ip: int | None = None, plen: int = 24) -> None:
        """Move ``dev`` into this namespace, optionally with an address and its connected route."""
        if dev.ifname in self.devices:
            raise ConfigError(f"{self.name}.devices", dev.ifname, "an interface name not used in this namespace")
        dev.ns = self
        self.devices[dev.ifname] = dev
        if ip is not None:
            self.add_address(dev, ip, plen)

    def add_address(self, dev: NetDevice, ip: int, plen: int) -> None:
        """``ip addr add IP/PLEN dev DEV``: a local address plus the connected (on-link) route."""
        if ip in self.local_ips:
            raise ConfigError(f"{self.name}.address", ip, "an address not already on this namespace")
        dev.addrs.append((ip, plen))
        self.local_ips[ip] = dev
        mask = ((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1) if plen else 0
        self.routes.add(ip & mask, plen, dev, src=ip)

    def add_route(self, cidr: str, via: str | None = None, dev: str | None = None, metric: int = 0) -> None:
        """``ip route add CIDR [via GW] [dev DEV]``, refusing a route to nowhere.

        As Linux does (``Nexthop has invalid gateway``), the gateway must lie on a connected
        subnet of this namespace; without a gateway the device must be named.
        """
        key = f"{self.name}.routes[{cidr}]"
        if via is None and dev is None:
            raise ConfigError(key, "no via, no dev", "a gateway ('via') or a device ('dev')")
        out = self.device(dev) if dev is not None else None
        if via is not None:
            from perfsim.core.addr import ip as parse_ip

            try:
                gw = parse_ip(via)
            except ConfigError:
                raise ConfigError(f"{key}.via", via, "an IPv4 address like 10.0.0.1") from None
            onlink = self.routes.lookup(gw)
            if onlink is None or onlink.gateway is not None or (out is not None and onlink.dev is not out):
                raise ConfigError(f"{key}.via", via, "an address on a connected subnet of this namespace")
            out = onlink.dev
        self.routes.add_cidr(cidr, out, gateway=via, metric=metric)

    def device(self, ifname: str) -> NetDevice:
        try:
            return self.devices[ifname]
        except KeyError:
            raise ConfigError(f"{self.name}.device", ifname, f"one of {sorted(self.devices)}") from None

    def bind(self, proto: int, port: int, sock: Any) -> None:
        """Bind a socket to ``(proto, port)`` on every address of this namespace."""
        key = (proto, port)
        if key in self.sockets:
            raise ConfigError(f"{self.name}.port", port, "a port no other socket of this namespace is bound to")
        self.sockets[key] = sock

    def unbind(self, proto: int, port: int) -> None:
        self.sockets.pop((proto, port), None)

    def source_ip_for(self, dst_ip: int) -> int:
        """The source address Linux would pick for ``dst_ip`` (route's src or device address)."""
        if dst_ip in self.local_ips:
            return dst_ip
        route = self.routes.lookup(dst_ip)
        if route is None:
            from perfsim.errors import RoutingError

            raise RoutingError(f"{self.name}: no route to {_ip_text(dst_ip)}")
        if route.src is not None:
            return int(route.src)
        if not route.dev.addrs:
            raise ConfigError(f"{self.name}.{route.dev.ifname}", "no address", "a device with an IPv4 address")
        return int(route.dev.addrs[0][0])

    def held_packets(self) -> int:
        return 0

    # -- transmit -----------------------------------------------------------------------------
    def ip_output(self, pkt: Packet) -> None:
        """Send a locally generated packet: route, OUTPUT/POSTROUTING hooks, neighbour, device."""
        self._ip_output.charge(pkt)
        dst = pkt.flow.dst_ip
        if dst in self.local_ips:
            self._loopback_deliver(pkt)
            return
        route = self.routes.lookup(dst)
        if route is None:
            self.sim.drop(pkt, self.name, "no_route")
            return
        nf = self.nf
        if nf is not None:
            if not nf.output(pkt, route.dev):
                return
            if pkt.flow.dst_ip != dst:  # DNAT in OUTPUT: route again
                route = self.routes.lookup(pkt.flow.dst_ip)
                if route is None:
                    self.sim.drop(pkt, self.name, "no_route")
                    return
            if not nf.postrouting(pkt, route.dev):
                return
        self._neigh_xmit(pkt, route.dev, route.gateway)

    def _loopback_deliver(self, pkt: Packet) -> None:
        self._loopback.charge(pkt)
        if pkt.owner is not None:
            pkt.owner.on_xmit_done(pkt, self.sim.env._now)  # loopback_xmit orphans the skb
        nf = self.nf
        if nf is not None and not (nf.output(pkt, None) and nf.postrouting(pkt, None)):
            return
        if nf is not None and not (nf.prerouting(pkt, None) and nf.input(pkt, None)):
            return
        self._deliver_local(pkt)

    def _neigh_xmit(self, pkt: Packet, dev: NetDevice, gateway: int | None) -> None:
        nexthop = gateway if gateway is not None else pkt.flow.dst_ip
        mac = self.neigh.lookup(nexthop)
        if mac is None:
            self.sim.settle(pkt)  # the work so far was done before the packet waits for ARP
            if pkt.core is not None:
                self._arp_core = pkt.core
            self.neigh.queue(nexthop, pkt, dev)
            return
        pkt.src_mac = dev.mac
        pkt.dst_mac = mac
        dev.xmit(pkt)

    # -- receive ------------------------------------------------------------------------------
    def ip_rcv(self, pkt: Packet, dev: NetDevice) -> None:
        """A frame arrived on ``dev`` (not enslaved to a bridge): ARP, local delivery or forward."""
        kind = pkt.kind
        if kind == ARP_REQUEST or kind == ARP_REPLY:
            self._arp_rcv(pkt, dev)
            return
        if pkt.dst_mac != dev.mac and pkt.dst_mac != BROADCAST_MAC:
            self.sim.filter(pkt, dev.name, "other_host")  # PACKET_OTHERHOST: a flooded copy
            return
        self._ip_rcv.charge(pkt)
        pkt.ct = None  # conntrack state belongs to the namespace the skb just left
        nf = self.nf
        if nf is not None and not nf.prerouting(pkt, dev):
            return
        dst = pkt.flow.dst_ip
        if dst in self.local_ips:
            if nf is not None and not nf.input(pkt, dev):
                return
            self._deliver_local(pkt)
            return
        if not self.ip_forward:
            self.sim.drop(pkt, self.name, "not_forwarding")
            return
        self._forward(pkt, dev)

    def _forward(self, pkt: Packet, in_dev: NetDevice) -> None:
        self._ip_forward.charge(pkt)
        pkt.ttl -= 1
        if pkt.ttl <= 0:
            self.sim.drop(pkt, self.name, "ttl_exceeded")
            return
        route = self.routes.lookup(pkt.flow.dst_ip)
        if route is None:
            self.sim.drop(pkt, self.name, "no_route")
            return
        out = route.dev
        nf = self.nf
        if nf is not None and not (nf.forward(pkt, in_dev, out) and nf.postrouting(pkt, out)):
            return
        self._neigh_xmit(pkt, out, route.gateway)

    def _deliver_local(self, pkt: Packet) -> None:
        pkt.frags = False  # ip_defrag: the socket receives one reassembled skb
        flow = pkt.flow
        sock = self.sockets.get((flow.proto, flow.dport))
        if sock is None:
            self.sim.drop(pkt, self.name, "no_socket")
            return
        sock.deliver(pkt)

    # -- ARP ----------------------------------------------------------------------------------
    def _solicit(self, target_ip: int, dev: NetDevice) -> None:
        """Send an ARP request (broadcast) for ``target_ip`` out of ``dev``."""
        src_ip = dev.addrs[0][0] if dev.addrs else 0
        req = self.sim.new_packet(
            FlowKey(src_ip, target_ip, 0, 0, 0), ARP_PAYLOAD_BYTES, ETH_BYTES, 1, ARP_REQUEST,
            src_mac=dev.mac, dst_mac=BROADCAST_MAC,
        )
        req.core = self._arp_core
        self._arp.charge(req)
        dev.xmit(req)

    def _arp_rcv(self, pkt: Packet, dev: NetDevice) -> None:
        self._arp.charge(pkt)
        sender_ip, target_ip = pkt.flow.src_ip, pkt.flow.dst_ip
        ours = target_ip in self.local_ips
        if pkt.kind == ARP_REQUEST:
            if not ours:
                self.sim.consume(pkt)  # not for us: the kernel ignores it
                return
            queued = self.neigh.confirm(sender_ip, pkt.src_mac)
            reply = self.sim.new_packet(
                FlowKey(target_ip, sender_ip, 0, 0, 0), ARP_PAYLOAD_BYTES, ETH_BYTES, 1, ARP_REPLY,
                src_mac=dev.mac, dst_mac=pkt.src_mac,
            )
            reply.core = pkt.core
            self.sim.consume(pkt)
            dev.xmit(reply)
        else:
            queued = self.neigh.confirm(sender_ip, pkt.src_mac) if ours else []
            self.sim.consume(pkt)
        for q in queued:
            q.core = pkt.core
            q.src_mac = dev.mac
            q.dst_mac = pkt.src_mac
            dev.xmit(q)

    def __repr__(self) -> str:
        return f"NetNs({self.name!r} on {self.host.name})"


def _ip_text(value: int) -> str:
    from perfsim.core.addr import ip_str

    return ip_str(value)
