"""Routed container networks: Calico BGP / Flannel host-gw (``routed``) and Calico IPIP (``ipip``).

``routed``, no encapsulation, no bridge: each container's ``eth0`` is a veth whose peer stays
in the host namespace; the host routes every container address (/32) to its veth and every
other host's container subnet (/24) to that host, as BGP (bird) or Flannel would install::

    h0: ctr eth0 (10.2.0.2/32) --veth-- [root: 10.2.0.2/32 dev veth-h0c0
                                               10.2.1.0/24 via 10.0.0.2]  eth0 ==\\
                                                                              switch
    h1: eth0 <====================================================================/
        [root: 10.2.1.2/32 dev veth-h1c0] --veth-- eth0 ctr (10.2.1.2/32)

``ipip`` is the same, except that other hosts' subnets are routed through ``tunl0``
(``10.2.1.0/24 via 10.0.0.2 dev tunl0 onlink``), which adds a 20 B outer IPv4 header; tunnel
and container MTUs are 1480 (underlay MTU - 20)::

    h0: ctr eth0 --veth-- root -> tunl0 (+20 B, proto 4, 10.0.0.1 -> 10.0.0.2) -> eth0 == switch
    h1: eth0 -> ipip_rcv (-20 B) -> tunl0 -> root -> veth -- eth0 ctr

Container side (what Calico's CNI plugin sets up): the address as a /32, ``169.254.1.1 dev
eth0 scope link`` and ``default via 169.254.1.1``.  Calico answers the container's ARP for the
link-local gateway with proxy ARP on the host-side veth; a permanent neighbour entry
(169.254.1.1 -> the host-side veth's MAC) is equivalent and is what is built here.  Host side:
Felix installs a static ARP entry for each local workload (its address -> its MAC), so the host
never ARPs over the veths either.

The host namespace tracks connections (conntrack, no NAT, no rules: Calico's policy chains are
not modelled).  For ``ipip``, see :mod:`perfsim.components.ipip` for how ``tunl0`` finds the
remote end and why the remote hosts' fabric neighbour entries are permanent in that mode.

Options: ``pod_cidr`` (both modes; Calico's IP pool / Flannel's network, default 10.2.0.0/16) —
host ``h`` gets its ``h``-th /24 block (``tunl0`` at ``block + 1``, containers ``block + 2 + c``),
so it must hold ``hosts × 256`` addresses: prefix length <= ``24 - ceil(log2(hosts))``.
``mtu_bytes`` (``ipip`` only; Calico's ``veth_mtu``): the tunnel's and the containers' MTU,
default the underlay MTU - 20 and at most that.
"""

from __future__ import annotations

from perfsim.components.ipip import IpipDevice
from perfsim.components.netdev import veth_pair
from perfsim.components.netns import NetNs
from perfsim.errors import ConfigError, check_number
from perfsim.topology.base import ModeNetwork, make_endpoint
from perfsim.topology.cluster import Cluster
from perfsim.topology.subnets import Subnet, check_mtu, check_room, parse_subnet
from perfsim.units import IPIP_OVERHEAD_BYTES, MIN_IPV4_MTU

ROUTED_NET = 0x0A020000  # 10.2.0.0/16: 10.2.<h>.0/24 per host
ROUTED_PLEN = 16
LINK_LOCAL_GW = 0xA9FE0101  # 169.254.1.1
MAX_CONTAINERS = 253  # .2 .. .254 of a host's /24
MAX_HOSTS = 256


def container_ip(h: int, c: int, base: int = ROUTED_NET) -> int:
    """10.2.<h>.<c+2>: address ``c + 2`` of the ``h``-th /24 block of the pod CIDR ``base``."""
    return base + (h << 8) + c + 2


def pod_subnet(cl: Cluster, mode: str, pod_cidr: str | None) -> Subnet:
    """The pod CIDR: the default 10.2.0.0/16 (at most 256 hosts) or ``pod_cidr`` with room for
    one /24 per host."""
    hosts = len(cl.hosts)
    if pod_cidr is None:
        if hosts > MAX_HOSTS:
            raise ConfigError("hosts", hosts, f"<= {MAX_HOSTS} for mode {mode} (one 10.2.<h>.0/24 per host)")
        return ROUTED_NET, ROUTED_PLEN
    subnet = parse_subnet("mode_options.pod_cidr", pod_cidr)
    check_room("mode_options.pod_cidr", pod_cidr, subnet, hosts << 8, f"{hosts} hosts (one /24 per host)")
    return subnet


def _build(
    cl: Cluster, containers_per_host: int, mode: str, ipip: bool, pod_cidr: str | None = None,
    mtu_bytes: int | None = None,
) -> ModeNetwork:
    check_number("containers_per_host", containers_per_host, low=1, high=MAX_CONTAINERS, integer=True)
    base, _plen = pod_subnet(cl, mode, pod_cidr)
    underlay = cl.spec.mtu_bytes
    mtu = underlay - (IPIP_OVERHEAD_BYTES if ipip else 0)
    if mtu < MIN_IPV4_MTU:
        low = MIN_IPV4_MTU + IPIP_OVERHEAD_BYTES
        raise ConfigError("mtu_bytes", underlay, f">= {low} for ipip (20 B of outer IPv4 header)")
    if mtu_bytes is not None:
        mtu = check_mtu("mode_options.mtu_bytes", mtu_bytes, mtu,
                        f"MTU too large for the 20 B IPIP encapsulation on the {underlay} B underlay")
    net = ModeNetwork(mode, cl)
    for h, root in enumerate(cl.roots):
        host = cl.hosts[h]
        for c in range(containers_per_host):
            name = f"h{h}c{c}"
            ip = container_ip(h, c, base)
            ns = NetNs(host, name, gc_thresh3=cl.spec.gc_thresh3)
            inner, outer = veth_pair(host, f"{name}/eth0", cl.new_mac(), f"h{h}/veth-{name}", cl.new_mac(), mtu)
            ns.add_device(inner, ip, 32)
            ns.routes.add(LINK_LOCAL_GW, 32, inner)
            ns.routes.add(0, 0, inner, gateway=LINK_LOCAL_GW)
            ns.neigh.add_permanent(LINK_LOCAL_GW, outer.mac)  # stands for proxy ARP on the veth
            root.add_device(outer)
            root.routes.add(ip, 32, outer)
            root.neigh.add_permanent(ip, inner.mac)  # Felix's static ARP entry for the workload
            net.endpoints[(h, c)] = make_endpoint(cl, ns, ip, h, c, mtu)
        nic = cl.nics[h]
        tunl = None
        if ipip:
            tunl = IpipDevice(host, f"h{h}/tunl0", cl.new_mac(), cl.host_ip(h), root, mtu, cl.spec.mtu_bytes)
            root.add_device(tunl, base + (h << 8) + 1, 32)
        for h2 in range(len(cl.hosts)):
            if h2 == h:
                continue
            remote = cl.host_ip(h2)
            root.routes.add(base + (h2 << 8), 24, tunl if tunl is not None else nic, gateway=remote)
            if tunl is not None:
                root.neigh.add_permanent(remote, cl.nics[h2].mac)  # tunl0 is NOARP (see ipip.py)
    return net


def build_routed(cl: Cluster, containers_per_host: int, pod_cidr: str | None = None) -> ModeNetwork:
    """Calico BGP / Flannel host-gw: containers at <h-th /24 of pod_cidr>.<c+2>/32 (10.2.<h>.<c+2>
    by default), routed by the hosts."""
    return _build(cl, containers_per_host, "routed", ipip=False, pod_cidr=pod_cidr)


def build_ipip(
    cl: Cluster, containers_per_host: int, pod_cidr: str | None = None, mtu_bytes: int | None = None
) -> ModeNetwork:
    """Calico IPIP: as ``routed``, with other hosts' subnets through ``tunl0`` (MTU: underlay - 20
    by default, ``mtu_bytes`` at most that)."""
    return _build(cl, containers_per_host, "ipip", ipip=True, pod_cidr=pod_cidr, mtu_bytes=mtu_bytes)
