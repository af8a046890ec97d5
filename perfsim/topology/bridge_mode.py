"""Docker's default bridge (``docker0``).

Same host::

    ctr-a eth0 --veth-- docker0 (172.17.0.1/16) --veth-- eth0 ctr-b

The whole path runs on the sender's core (a veth transmit queues on the current CPU's
backlog); bridged IPv4 frames cross iptables and conntrack (``bridge-nf-call-iptables=1``).
"""

from __future__ import annotations

from perfsim.components.bridge import Bridge
from perfsim.components.netdev import veth_pair
from perfsim.components.netns import NetNs
from perfsim.topology.base import ModeNetwork, make_endpoint
from perfsim.topology.cluster import Cluster

DOCKER0_NET = 0xAC110000  # 172.17.0.0/16


def add_container(
    cl: Cluster, h: int, name: str, bridge: Bridge, ip: int, plen: int, gateway: int | None, mtu: int
) -> NetNs:
    """A container namespace on host ``h`` whose ``eth0`` is a veth into ``bridge``."""
    host = cl.hosts[h]
    ns = NetNs(host, name, gc_thresh3=cl.spec.gc_thresh3)
    inner, outer = veth_pair(host, f"{name}/eth0", cl.new_mac(), f"h{h}/veth-{name}", cl.new_mac(), mtu)
    ns.add_device(inner, ip, plen)
    if gateway is not None:
        ns.routes.add(0, 0, inner, gateway=gateway)
    cl.roots[h].add_device(outer)
    bridge.add_port(outer)
    return ns


def build_bridge(cl: Cluster, containers_per_host: int) -> ModeNetwork:
    """``docker0`` with ``containers_per_host`` containers on every host."""
    net = ModeNetwork("bridge", cl)
    mtu = cl.spec.mtu_bytes
    for h, root in enumerate(cl.roots):
        hook = root.nf.bridge_hook if root.nf is not None else None
        br = Bridge(cl.hosts[h], f"h{h}/docker0", cl.new_mac(), mtu, nf_hook=hook)
        root.add_device(br, DOCKER0_NET + 1, 16)
        for c in range(containers_per_host):
            ip = DOCKER0_NET + 2 + c
            ns = add_container(cl, h, f"h{h}c{c}", br, ip, 16, DOCKER0_NET + 1, mtu)
            net.endpoints[(h, c)] = make_endpoint(cl, ns, ip, h, c, mtu)
    return net
