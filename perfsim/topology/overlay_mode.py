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

Options: ``subnet`` (``docker network create -d overlay --subnet``, default 10.1.0.0/16) —
host ``h`` takes the ``h``-th /24 block of it and its containers ``block + 2 + c``, so it must
hold ``hosts × 256`` addresses (prefix length <= ``24 - ceil(log2(hosts))``); the containers'
interfaces carry its prefix length.  ``mtu_bytes`` (``-o com.docker.network.driver.mtu``): the
inner MTU of the containers, the bridge and the VTEP, default the underlay MTU - 50 and at most
that, since the NIC must carry the 50 B of VXLAN headers on top of a full inner frame.
"""

from __future__ import annotations

from perfsim.components.bridge import Bridge
from perfsim.components.vxlan import VxlanDevice
from perfsim.errors import ConfigError, check_number
from perfsim.topology.base import ModeNetwork, make_endpoint
from perfsim.topology.bridge_mode import add_container
from perfsim.topology.cluster import Cluster
from perfsim.topology.subnets import check_mtu, check_room, parse_subnet
from perfsim.units import MIN_IPV4_MTU, VXLAN_OVERHEAD_BYTES

OVERLAY_NET = 0x0A010000  # 10.1.0.0/16
OVERLAY_PLEN = 16
OVERLAY_VNI = 4096
OVERLAY_WIDE_NET = 0x0A400000  # 10.64.0.0/10: a /24 for each of up to 16384 hosts
OVERLAY_WIDE_PLEN = 10


def overlay_subnet(hosts: int, subnet: str | None) -> tuple[int, int]:
    """The overlay's (network, prefix length): ``subnet`` checked to hold a /24 per host, or the
    default — 10.1.0.0/16 up to 256 hosts, 10.64.0.0/10 beyond (Docker swarm's default overlay
    is a single /24; a cluster-wide overlay with a /24 per node is what Flannel does)."""
    if subnet is None:
        if hosts <= 256:
            return OVERLAY_NET, OVERLAY_PLEN
        if hosts > 1 << (24 - OVERLAY_WIDE_PLEN):
            raise ConfigError("hosts", hosts, f"<= {1 << (24 - OVERLAY_WIDE_PLEN)} for an overlay (one /24 per host)")
        return OVERLAY_WIDE_NET, OVERLAY_WIDE_PLEN
    base, plen = parse_subnet("mode_options.subnet", subnet)
    check_room("mode_options.subnet", subnet, (base, plen), hosts << 8, f"{hosts} hosts (one /24 per host)")
    return base, plen


def build_overlay(
    cl: Cluster, containers_per_host: int, vni: int = OVERLAY_VNI, learning: bool = False,
    subnet: str | None = None, mtu_bytes: int | None = None,
) -> ModeNetwork:
    """One overlay network spanning every host; containers at <h-th /24 of subnet>.<c+2>
    (10.1.<h>.<c+2>/16 by default; see :func:`overlay_subnet`).

    ``learning``: flood-and-learn instead of the pre-populated neighbour entries and FDB.
    ``subnet``: the overlay network; ``mtu_bytes``: the inner MTU (<= underlay MTU - 50).
    """
    check_number("mode_options.vni", vni, low=0, high=(1 << 24) - 1, integer=True)
    if not isinstance(learning, bool):
        raise ConfigError("mode_options.learning", learning, "True or False")
    check_number("containers_per_host", containers_per_host, low=1, high=253, integer=True)
    base, plen = overlay_subnet(len(cl.hosts), subnet)
    max_mtu = cl.spec.mtu_bytes - VXLAN_OVERHEAD_BYTES
    if max_mtu < MIN_IPV4_MTU:
        raise ConfigError("mtu_bytes", cl.spec.mtu_bytes, f">= {68 + VXLAN_OVERHEAD_BYTES} for an overlay (50 B of VXLAN headers)")
    mtu = max_mtu if mtu_bytes is None else check_mtu(
        "mode_options.mtu_bytes", mtu_bytes, max_mtu,
        f"MTU too large for the 50 B VXLAN encapsulation on the {cl.spec.mtu_bytes} B underlay")
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
            ip = base + (h << 8) + c + 2
            ns = add_container(cl, h, f"h{h}c{c}", br, ip, plen, None, mtu)
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
