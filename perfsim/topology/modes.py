"""Docker network modes as topology builders over a :class:`~perfsim.topology.cluster.Cluster`.

Each builder wires the devices of one mode on every host and returns a function that gives the
application endpoint of container ``c`` on host ``h``.  Issue-2 scope: ``host``, ``bridge``
(same-host) and ``overlay``; the remaining modes build on the same parts.
"""

from __future__ import annotations

from collections.abc import Callable

from perfsim.components.bridge import Bridge
from perfsim.components.netdev import veth_pair
from perfsim.components.netns import NetNs
from perfsim.components.vxlan import VxlanDevice
from perfsim.errors import ConfigError
from perfsim.topology.cluster import Cluster
from perfsim.transport.workloads import Endpoint
from perfsim.units import IPV4_HDR_BYTES, TCP_HDR_BYTES, VXLAN_OVERHEAD_BYTES

EndpointFn = Callable[[int, int], Endpoint]

DOCKER0_NET = 0xAC110000  # 172.17.0.0/16
OVERLAY_NET = 0x0A010000  # 10.1.0.0/16
OVERLAY_VNI = 4096


def _endpoint(cl: Cluster, ns: NetNs, ip: int, h: int, c: int, mtu: int) -> Endpoint:
    cores = cl.hosts[h].cpus.cores
    return Endpoint(ns=ns, ip=ip, app_core=cores[c % len(cores)], mss_bytes=mtu - IPV4_HDR_BYTES - TCP_HDR_BYTES, mtu_bytes=mtu)


def build_host(cl: Cluster, containers_per_host: int) -> EndpointFn:
    """``--network host``: every container uses its host's namespace and stack::

        app -- h0 stack -- eth0 == switch == eth0 -- h1 stack -- app
    """
    mtu = cl.spec.mtu_bytes
    return lambda h, c: _endpoint(cl, cl.roots[h], cl.host_ip(h), h, c, mtu)


def _container(cl: Cluster, h: int, c: int, name: str, bridge: Bridge, ip: int, plen: int, gw: int | None, mtu: int) -> NetNs:
    host = cl.hosts[h]
    ns = NetNs(host, name, gc_thresh3=cl.spec.gc_thresh3)
    inner, outer = veth_pair(host, f"{name}/eth0", cl.new_mac(), f"h{h}/veth{name}", cl.new_mac(), mtu)
    ns.add_device(inner, ip, plen)
    if gw is not None:
        ns.routes.add(0, 0, inner, gateway=gw)
    cl.roots[h].add_device(outer)
    bridge.add_port(outer)
    return ns


def build_bridge(cl: Cluster, containers_per_host: int) -> EndpointFn:
    """Default ``docker0`` bridge, same host::

        ctr-a eth0 --veth-- docker0 (172.17.0.1/16) --veth-- eth0 ctr-b

    The whole path runs on the sender's core (veth queues on the current CPU's backlog);
    bridged IPv4 frames cross iptables FORWARD and conntrack (``bridge-nf-call-iptables=1``).
    """
    mtu = cl.spec.mtu_bytes
    eps: dict[tuple[int, int], Endpoint] = {}
    for h, root in enumerate(cl.roots):
        hook = root.nf.bridge_hook if root.nf is not None else None
        br = Bridge(cl.hosts[h], f"h{h}/docker0", cl.new_mac(), mtu, nf_hook=hook)
        root.add_device(br, DOCKER0_NET + 1, 16)
        for c in range(containers_per_host):
            ip = DOCKER0_NET + 2 + c
            ns = _container(cl, h, c, f"h{h}c{c}", br, ip, 16, DOCKER0_NET + 1, mtu)
            eps[(h, c)] = _endpoint(cl, ns, ip, h, c, mtu)
    return lambda h, c: eps[(h, c)]


def build_overlay(cl: Cluster, containers_per_host: int, vni: int = OVERLAY_VNI) -> EndpointFn:
    """VXLAN overlay (Docker overlay driver / Flannel vxlan)::

        ctr eth0 (10.1.h.c, MTU 1450) --veth-- ovbr0 -- vxlan0 (VNI, +50 B)
             -> h stack (route, iptables, ARP) -> eth0 == switch == eth0 -> UDP 4789
             -> vxlan0 (decap) -- ovbr0 --veth-- eth0 ctr

    Docker's control plane pre-populates each container's neighbour entries and each VTEP's
    FDB (remote container MAC -> remote host), so no ARP crosses the overlay.
    """
    mtu = cl.spec.mtu_bytes - VXLAN_OVERHEAD_BYTES
    if mtu < 68:
        raise ConfigError("mtu_bytes", cl.spec.mtu_bytes, f">= {68 + VXLAN_OVERHEAD_BYTES} for an overlay (50 B of VXLAN headers)")
    eps: dict[tuple[int, int], Endpoint] = {}
    vteps: list[VxlanDevice] = []
    macs: dict[tuple[int, int], int] = {}
    for h, root in enumerate(cl.roots):
        host = cl.hosts[h]
        br = Bridge(host, f"h{h}/ovbr0", cl.new_mac(), mtu)
        root.add_device(br)
        vx = VxlanDevice(host, f"h{h}/vxlan0", cl.new_mac(), vni, cl.host_ip(h), root, mtu, cl.spec.mtu_bytes)
        root.add_device(vx)
        br.add_port(vx)
        vteps.append(vx)
        for c in range(containers_per_host):
            ip = OVERLAY_NET + (h << 8) + c + 2
            ns = _container(cl, h, c, f"h{h}c{c}", br, ip, 16, None, mtu)
            macs[(h, c)] = ns.devices["eth0"].mac
            eps[(h, c)] = _endpoint(cl, ns, ip, h, c, mtu)
    for (h, c), ep in eps.items():
        for (h2, c2), other in eps.items():
            if (h2, c2) != (h, c):
                ep.ns.neigh.add_permanent(other.ip, macs[(h2, c2)])
                if h2 != h:
                    vteps[h].add_remote(macs[(h2, c2)], cl.host_ip(h2))
    return lambda h, c: eps[(h, c)]


MODES: dict[str, Callable[[Cluster, int], EndpointFn]] = {
    "host": build_host,
    "bridge": build_bridge,
    "overlay": build_overlay,
}
