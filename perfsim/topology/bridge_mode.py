"""Docker's default bridge (``docker0``), its iptables rules and published ports.

Same host::

    ctr-a eth0 --veth-- docker0 (172.17.0.1/16) --veth-- eth0 ctr-b

Across hosts, only through a published port (``docker run -p HOST_PORT:PORT``)::

    h0: ctr eth0 (172.17.0.2) --veth-- docker0 -> ip_forward -> FORWARD (-i docker0 ! -o docker0)
        -> POSTROUTING MASQUERADE (src 10.0.0.1) -> eth0 ==\\
                                                          switch
    h1: eth0 <===========================================/
        -> PREROUTING DNAT (10.0.0.2:P -> 172.17.0.2:P) -> FORWARD (DOCKER: -d 172.17.0.2 --dport P)
        -> docker0 --veth-- eth0 ctr (172.17.0.2)

The whole same-host path runs on the sender's core (a veth transmit queues on the current
CPU's backlog); bridged IPv4 frames cross iptables and conntrack (``bridge-nf-call-iptables=1``).
Container addresses are local to their host (every host uses 172.17.0.0/16): a packet routed
to a container's address from another host is refused by the FORWARD policy, unless the port
is published.

iptables, as Docker (20.10 - 27) installs it, with its user chains inlined (perfsim's netfilter
has built-in chains only, so a jump and its ``RETURN`` cost no ``nf_rule``; the per-port rules are
marked as reached through their jump — ``-m addrtype --dst-type LOCAL -j DOCKER`` in nat
PREROUTING, ``-o docker0 -j DOCKER`` in FORWARD — so a packet the jump does not match skips
all of them for one rule, and only new connections to the host pay one ``nf_rule`` per
published port ahead of theirs)::

    nat    POSTROUTING  -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
    nat    PREROUTING   (DOCKER, per published port)
                        -d <host ip>/32 ! -i docker0 -p tcp --dport H -j DNAT --to <ctr>:P
    filter FORWARD      policy DROP
                        (DOCKER-USER: empty)
                        (DOCKER-ISOLATION-STAGE-1/2: -i br-X -o br-Y -j DROP, other bridges)
                        -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
                        (DOCKER, per published port)
                        -d <ctr>/32 ! -i docker0 -o docker0 -p tcp --dport P -j ACCEPT
                        -i docker0 ! -o docker0 -j ACCEPT
                        -i docker0 -o docker0 -j ACCEPT

``-m addrtype --dst-type LOCAL`` (the jump to the nat DOCKER chain) is matched as ``-d <host
ip>/32``, the one local address reachable from the fabric.  Not modelled: docker-proxy and the
nat OUTPUT rule (connections from the host itself to a published port), hairpin NAT.

Options (``dockerd --bip`` / ``--mtu``): ``subnet`` (default ``"172.17.0.0/16"``) is docker0's
network: its first host address is the gateway (docker0's own address), containers follow
(``subnet + 2``, ``+ 3``, ...), so it must hold ``containers_per_host + 3`` addresses (network,
gateway, broadcast).  ``mtu_bytes`` (default: the hosts' NIC MTU) is the MTU of docker0 and of
both ends of every veth, hence the containers' MSS (``mtu - 52``).  Docker accepts any bridge
MTU; one above the NIC MTU makes cross-host frames larger than the NIC MTU, which the NIC drops
(``mtu_exceeded``: path-MTU discovery is not modelled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perfsim.components.bridge import Bridge
from perfsim.components.netdev import veth_pair
from perfsim.components.netfilter import Netfilter, Rule
from perfsim.components.netns import NetNs
from perfsim.core.packet import PROTO_TCP, PROTO_UDP
from perfsim.errors import ConfigError, check_number
from perfsim.topology.base import ModeNetwork, Slot, make_endpoint
from perfsim.topology.cluster import Cluster
from perfsim.topology.subnets import Subnet, check_mtu, check_room, parse_subnet

DOCKER0_NET = 0xAC110000  # 172.17.0.0/16
BRIDGE_PLEN = 16
MAX_CONTAINERS = (1 << (32 - BRIDGE_PLEN)) - 3  # .0 network, .1 gateway, broadcast
MAX_ANY_SUBNET = 1 << 24
"""Sanity cap on containers per host with a ``subnet`` option (whose room is checked itself)."""
ESTABLISHED = frozenset({"RELATED", "ESTABLISHED"})


def add_container(
    cl: Cluster, h: int, name: str, bridge: Bridge, ip: int, plen: int, gateway: int | None, mtu: int,
    ns: NetNs | None = None, ifname: str = "eth0",
) -> NetNs:
    """A container namespace on host ``h`` whose ``ifname`` is a veth into ``bridge``.

    With ``ns`` given, the interface is added to that (existing) container: ``docker network
    connect``.  ``gateway`` sets the default route through this interface.
    """
    host = cl.hosts[h]
    if ns is None:
        ns = NetNs(host, name, gc_thresh3=cl.spec.gc_thresh3)
    suffix = "" if ifname == "eth0" else f".{ifname}"
    inner, outer = veth_pair(
        host, f"{name}/{ifname}", cl.new_mac(), f"h{h}/veth-{name}{suffix}", cl.new_mac(), mtu
    )
    ns.add_device(inner, ip, plen)
    if gateway is not None:
        ns.routes.add(0, 0, inner, gateway=gateway)
    cl.roots[h].add_device(outer)
    bridge.add_port(outer)
    return ns


def check_containers(containers_per_host: int, high: int = MAX_CONTAINERS) -> None:
    """``containers_per_host`` must be an integer 1..``high`` (addresses of one subnet)."""
    check_number("containers_per_host", containers_per_host, low=1, high=high, integer=True)


def bridge_subnet(field: str, subnet: Any, addresses: int, default: Subnet) -> Subnet:
    """The subnet of a Docker bridge whose containers take ``addresses`` addresses after the
    gateway: ``default`` when ``subnet`` is None (the caller has already checked the container
    count against it), else ``subnet`` parsed and checked to hold them plus the network,
    gateway and broadcast addresses."""
    if subnet is None:
        return default
    parsed = parse_subnet(field, subnet)
    check_room(field, subnet, parsed, addresses + 3,
               f"{addresses} container address{'es' if addresses > 1 else ''} + gateway, network and broadcast")
    return parsed


def bridge_mtu(cl: Cluster, mtu_bytes: Any) -> int:
    """The MTU of a Docker bridge and its veths: the NIC MTU by default; any 68 .. 65535."""
    if mtu_bytes is None:
        return cl.spec.mtu_bytes
    return check_mtu("mode_options.mtu_bytes", mtu_bytes, 65535)


def root_nf(cl: Cluster, h: int) -> Netfilter:
    nf = cl.roots[h].nf
    if nf is None or nf.conntrack is None:
        raise ConfigError(f"h{h}.netfilter", None, "iptables with conntrack in the host namespace")
    return nf


def add_docker_bridge(cl: Cluster, h: int, ifname: str, net: int, mtu: int, plen: int = BRIDGE_PLEN) -> Bridge:
    """Create a Docker-managed bridge ``ifname`` (gateway ``net + 1``/``plen``) on host ``h`` with
    the per-bridge rules Docker installs: MASQUERADE for its subnet and its FORWARD block."""
    root = cl.roots[h]
    nf = root_nf(cl, h)
    br = Bridge(cl.hosts[h], f"h{h}/{ifname}", cl.new_mac(), mtu, nf_hook=nf.bridge_hook)
    root.add_device(br, net + 1, plen)
    nf.append("nat", "POSTROUTING", Rule("MASQUERADE", src=(net, plen), out_if=f"!{ifname}"))
    nf.append("filter", "FORWARD", Rule("ACCEPT", out_if=ifname, ctstate=ESTABLISHED))
    nf.append("filter", "FORWARD", Rule("ACCEPT", in_if=ifname, out_if=f"!{ifname}"))
    nf.append("filter", "FORWARD", Rule("ACCEPT", in_if=ifname, out_if=ifname))
    nf.set_policy("filter", "FORWARD", "DROP")
    return br


def add_isolation(cl: Cluster, h: int, ifnames: list[str]) -> None:
    """DOCKER-ISOLATION-STAGE-1/2 inlined at the top of FORWARD: from one Docker bridge to
    another, drop (``-i br-X ! -o br-X -j STAGE-2``; ``-o br-Y -j DROP``)."""
    nf = root_nf(cl, h)
    rules = [Rule("DROP", in_if=a, out_if=b) for a in ifnames for b in ifnames if a != b]
    for i, rule in enumerate(rules):
        nf.insert("filter", "FORWARD", rule, i)


@dataclass
class Attachment:
    """A container's interface on one Docker bridge."""

    bridge: str
    """The bridge's interface name (``docker0``, ``br-net1``)."""
    ip: int


@dataclass
class DockerBridgeNetwork(ModeNetwork):
    """A bridge-driver network: endpoints, each container's attachments, published ports."""

    attachments: dict[Slot, list[Attachment]] = field(default_factory=dict)
    """Per container, its interfaces in order (``eth0`` first)."""
    published: dict[tuple[int, int, int], tuple[int, int]] = field(default_factory=dict)
    """(host, proto, host port) -> (container, container port)."""

    def publish(self, h: int, c: int, host_port: int, container_port: int, proto: int) -> None:
        """``docker run -p HOST_PORT:CONTAINER_PORT/proto``: DNAT from the host's address and
        the FORWARD ACCEPT in the DOCKER chain (for the container's ``eth0`` network).

        Raises ConfigError when the host port is already published on host ``h`` for ``proto``.
        """
        self.endpoint(h, c)
        check_number("publish.host_port", host_port, low=1, high=65535, integer=True)
        check_number("publish.container_port", container_port, low=1, high=65535, integer=True)
        if proto not in (PROTO_TCP, PROTO_UDP):
            raise ConfigError("publish.proto", proto, "6 (tcp) or 17 (udp)")
        key = (h, proto, host_port)
        if key in self.published:
            allowed = "a host port not already allocated (Docker: port is already allocated)"
            raise ConfigError("publish", host_port, allowed)
        self.published[key] = (c, container_port)
        att = self.attachments[(h, c)][0]
        nf = root_nf(self.cluster, h)
        br = att.bridge
        local = (self.cluster.host_ip(h), 32)
        nf.append("nat", "PREROUTING", Rule(
            "DNAT", proto=proto, dst=local, dport=host_port, in_if=f"!{br}",
            to_ip=att.ip, to_port=container_port,
        ), jump=Rule(dst=local))  # -m addrtype --dst-type LOCAL -j DOCKER
        accept = Rule("ACCEPT", proto=proto, dst=(att.ip, 32), dport=container_port, in_if=f"!{br}", out_if=br)
        # The DOCKER chain is reached from `-o br -j DOCKER`, just before `-i br ! -o br -j ACCEPT`.
        marker = Rule("ACCEPT", in_if=br, out_if=f"!{br}")
        rules = nf.chain("filter", "FORWARD").rules
        at = len(rules) - 1 - rules[::-1].index(marker)  # near the end: thousands of ports stay cheap
        nf.insert("filter", "FORWARD", accept, at, jump=Rule(out_if=br))  # -o br -j DOCKER

    def target(self, client: Slot, server: Slot, port: int, proto: int) -> tuple[int, int]:
        """Same host: the server container's address.  Across hosts: the server host's address
        and the host port that publishes ``port`` of the server container — an existing
        publication (``-p 8080:80``) if there is one, else one published on first use as the
        same number as the container port."""
        ep = self.endpoint(*server)
        self.endpoint(*client)
        if client[0] == server[0]:
            return ep.ip, port
        h = server[0]
        for (ph, pproto, host_port), dest in self.published.items():
            if ph == h and pproto == proto and dest == (server[1], port):
                return self.cluster.host_ip(h), host_port
        self.publish(h, server[1], port, port, proto)
        return self.cluster.host_ip(h), port


def build_bridge(
    cl: Cluster, containers_per_host: int, subnet: str | None = None, mtu_bytes: int | None = None
) -> DockerBridgeNetwork:
    """``docker0`` with ``containers_per_host`` containers on every host: gateway at the
    subnet's first address (172.17.0.1), containers after it (172.17.0.2, .3, ...).

    ``subnet``: docker0's network (``--bip``), default 172.17.0.0/16; ``mtu_bytes``: docker0's
    and the containers' MTU (``--mtu``), default the NIC MTU.
    """
    mtu = bridge_mtu(cl, mtu_bytes)
    check_containers(containers_per_host, MAX_CONTAINERS if subnet is None else MAX_ANY_SUBNET)
    base, plen = bridge_subnet("mode_options.subnet", subnet, containers_per_host, (DOCKER0_NET, BRIDGE_PLEN))
    net = DockerBridgeNetwork("bridge", cl)
    for h in range(len(cl.roots)):
        br = add_docker_bridge(cl, h, "docker0", base, mtu, plen)
        for c in range(containers_per_host):
            ip = base + 2 + c
            ns = add_container(cl, h, f"h{h}c{c}", br, ip, plen, base + 1, mtu)
            net.endpoints[(h, c)] = make_endpoint(cl, ns, ip, h, c, mtu)
            net.attachments[(h, c)] = [Attachment("docker0", ip)]
    return net
