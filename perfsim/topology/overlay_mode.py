"""VXLAN overlay (Docker's overlay driver, Flannel vxlan, Weave fastdp).

::

    ctr eth0 (10.1.h.c, MTU 1450) --veth-- ovbr0 -- vxlan0 (VNI 4096, +50 B per frame)
         -> host stack (route, iptables, ARP) -> eth0 == switch == eth0 -> UDP 4789
         -> vxlan0 (decap) -- ovbr0 --veth-- eth0 ctr

Docker's control plane pre-populates each container's neighbour entries and each VTEP's FDB
(remote container MAC -> remote host), so no ARP crosses the overlay.

With ``learning=True`` (flood-and-learn, Flannel's early ``vxlan`` backend, a plain ``ip link
add vxlan0 ... learning``) nothing is pre-populated: a container's ARP request is broadcast on
ovbr0, reaches vxlan0 and is replicated to every other host's VTEP (head-end replication, one
all-zero FDB entry per remote host); each VTEP learns inner source MAC -> outer source IP from
what it decapsulates, and each bridge learns the remote MACs on its vxlan0 port, so the reply
and every later frame go unicast to one VTEP::

    ctr ARP who-has -> ovbr0 (flood) -> vxlan0 -> one copy per remote VTEP -> ovbr0 (flood)
        -> every remote container; the owner replies unicast -> learned on the way back
"""

from __future__ import annotations

from perfsim.components.bridge import Bridge
from perfsim.components.vxlan import VxlanDevice
from perfsim.errors import ConfigError, check_number
from perfsim.topology.base import ModeNetwork, make_endpoint
from perfsim.topology.bridge_mode import add_container
from perfsim.topology.cluster import Cluster
from perfsim.units import VXLAN_OVERHEAD_BYTES

OVERLAY_NET = 0x0A010000  # 10.1.0.0/16
OVERLAY_VNI = 4096


def build_overlay(
    cl: Cluster, containers_per_host: int, vni: int = OVERLAY_VNI, learning: bool = False
) -> ModeNetwork:
    """One overlay network spanning every host; containers at 10.1.<h>.<c+2>/16.

    ``learning``: flood-and-learn instead of the pre-populated neighbour entries and FDB.
    """
    check_number("mode_options.vni", vni, low=0, high=(1 << 24) - 1, integer=True)
    if not isinstance(learning, bool):
        raise ConfigError("mode_options.learning", learning, "True or False")
    check_number("containers_per_host", containers_per_host, low=1, high=253, integer=True)
    if len(cl.hosts) > 256:
        raise ConfigError("hosts", len(cl.hosts), "<= 256 for an overlay (10.1.<h>.0/24 per host)")
    mtu = cl.spec.mtu_bytes - VXLAN_OVERHEAD_BYTES
    if mtu < 68:
        raise ConfigError("mtu_bytes", cl.spec.mtu_bytes, f">= {68 + VXLAN_OVERHEAD_BYTES} for an overlay (50 B of VXLAN headers)")
    net = ModeNetwork("overlay", cl)
    vteps: list[VxlanDevice] = []
    macs: dict[tuple[int, int], int] = {}
    for h, root in enumerate(cl.roots):
        host = cl.hosts[h]
        br = Bridge(host, f"h{h}/ovbr0", cl.new_mac(), mtu)
        root.add_device(br)
        vx = VxlanDevice(
            host, f"h{h}/vxlan0", cl.new_mac(), vni, cl.host_ip(h), root, mtu, cl.spec.mtu_bytes, learning=learning
        )
        root.add_device(vx)
        br.add_port(vx)
        vteps.append(vx)
        for c in range(containers_per_host):
            ip = OVERLAY_NET + (h << 8) + c + 2
            ns = add_container(cl, h, f"h{h}c{c}", br, ip, 16, None, mtu)
            macs[(h, c)] = ns.devices["eth0"].mac
            net.endpoints[(h, c)] = make_endpoint(cl, ns, ip, h, c, mtu)
    if learning:
        for h, vx in enumerate(vteps):
            for h2 in range(len(vteps)):
                if h2 != h:
                    vx.add_flood_remote(cl.host_ip(h2))
        return net
    for (h, c), ep in net.endpoints.items():
        for (h2, c2), other in net.endpoints.items():
            if (h2, c2) != (h, c):
                ep.ns.neigh.add_permanent(other.ip, macs[(h2, c2)])
                if h2 != h:
                    vteps[h].add_remote(macs[(h2, c2)], cl.host_ip(h2))
    return net
