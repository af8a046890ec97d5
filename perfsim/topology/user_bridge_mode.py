"""User-defined bridge networks (``docker network create NAME``), isolated from each other.

One network per host (``networks=1``)::

    ctr-a eth0 --veth-- br-net1 (172.18.0.1/16) --veth-- eth0 ctr-b
                         + embedded DNS 127.0.0.11 in every container

Two networks (``networks=2``): container ``c`` is on network ``c % 2``; iptables isolation
drops what one user bridge forwards to the other::

    ctr-0 eth0 (172.18.0.2) --veth-- br-net1 --X-- br-net2 --veth-- eth0 (172.19.0.3) ctr-1
                                   FORWARD -i br-net1 -o br-net2 -j DROP

``attach_both=True`` (``docker network connect``) gives every container an interface on every
network, its own network's first (``eth0``, default route), the other second (``eth1``); a
client then reaches the server on the client's own network, bridged, without routing::

    ctr-0 eth0 (172.18.0.2) --veth-- br-net1 --veth-- eth1 (172.18.0.3) ctr-1
    ctr-0 eth1 (172.19.0.2) --veth-- br-net2 --veth-- eth0 (172.19.0.3) ctr-1

Each network's bridge gets the same iptables block as ``docker0`` (MASQUERADE, FORWARD rules,
published ports for cross-host flows: see :mod:`perfsim.topology.bridge_mode`), and the
isolation rules (DOCKER-ISOLATION-STAGE-1/2) are inlined at the top of FORWARD.  User networks
are local to a host (bridge driver): every host has the same subnets, and a cross-host flow
goes through a published port.

Options: ``subnets`` (one CIDR string per network, ``docker network create --subnet``; default
172.18.0.0/16, 172.19.0.0/16, ...) — each network's gateway is its first host address and
container ``c`` is at ``subnet + 2 + c`` on every network it joins, so each subnet must hold
``containers_per_host + 3`` addresses, and no two may overlap (Docker: "Pool overlaps with other
one on this address space"); ``mtu_bytes`` (``-o com.docker.network.driver.mtu``, default the
NIC MTU, 68 .. 65535) for every bridge and veth, as for ``docker0``.

Embedded DNS: a client resolves the server's name (the container name on the same host, the
host name across hosts, which the embedded server forwards) once through dockerd's resolver
at 127.0.0.11 — one ``dns_lookup`` charged on the client's application core — and then uses
its cache.  A name on a network the client is not attached to would not resolve; the
simulated client connects to the address anyway, and the isolation rules drop the flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perfsim.core.sim import reserve
from perfsim.errors import ConfigError, check_number
from perfsim.topology.base import Slot, make_endpoint
from perfsim.topology.bridge_mode import (
    BRIDGE_PLEN,
    MAX_ANY_SUBNET,
    MAX_CONTAINERS,
    Attachment,
    DockerBridgeNetwork,
    add_container,
    add_docker_bridge,
    add_isolation,
    bridge_mtu,
    bridge_subnet,
    check_containers,
)
from perfsim.topology.cluster import Cluster
from perfsim.topology.subnets import Subnet, check_disjoint

USER_NET_BASE = 0xAC120000  # 172.18.0.0/16, then 172.19.0.0/16, ...
MAX_NETWORKS = 14  # 172.18 .. 172.31: the private 172.16.0.0/12 block Docker allocates from


def network_ifname(k: int) -> str:
    """Bridge interface of the ``k``-th user network (``br-net1``, ``br-net2``, ...).

    Docker names it ``br-`` + the first 12 hex digits of the network id.
    """
    return f"br-net{k + 1}"


@dataclass
class UserBridgeNetwork(DockerBridgeNetwork):
    """User-defined bridges with embedded DNS: name lookups are charged once per client."""

    dns_cache: dict[tuple[str, str], int] = field(default_factory=dict)
    """(client namespace, name) -> resolved address."""
    dns_lookups: int = 0

    def resolve(self, client: Slot, name: str, address: int) -> int:
        """Resolve ``name`` from ``client``: the first time costs one ``dns_lookup`` on the
        client's application core (served now, before the client's own work), then cached."""
        ep = self.endpoint(*client)
        key = (ep.ns.name, name)
        cached = self.dns_cache.get(key)
        if cached is not None:
            return cached
        stage = ep.ns.host.stage("dns_lookup")
        cost = stage.per_packet_s
        stage.cpu_s += cost
        stage.packets += 1
        stage.note(ep.app_core, 1, 0)
        reserve(ep.app_core, self.cluster.sim.now, cost)
        self.dns_cache[key] = address
        self.dns_lookups += 1
        return address

    def target(self, client: Slot, server: Slot, port: int, proto: int) -> tuple[int, int]:
        """Same host: the server's address on the client's own network when the server is on it
        (or on any shared network), else the server's ``eth0`` address (isolated: dropped).
        Across hosts: a published port on the server's host, as for ``docker0``."""
        self.endpoint(*server)
        if client[0] != server[0]:
            ip, p = super().target(client, server, port, proto)
            return self.resolve(client, f"h{server[0]}", ip), p
        mine = [a.bridge for a in self.attachments[client]]
        theirs = {a.bridge: a.ip for a in self.attachments[server]}
        ip = next((theirs[b] for b in mine if b in theirs), self.attachments[server][0].ip)
        return self.resolve(client, f"h{server[0]}c{server[1]}", ip), port


def user_subnets(subnets: Any, networks: int, containers_per_host: int) -> list[Subnet]:
    """The subnet of each network: the defaults (172.18.0.0/16, ...) or ``subnets`` checked
    one by one (format, room for the containers, no overlap with an earlier one)."""
    if subnets is None:
        return [(USER_NET_BASE + (k << 16), BRIDGE_PLEN) for k in range(networks)]
    if not isinstance(subnets, list | tuple) or len(subnets) != networks:
        raise ConfigError("mode_options.subnets", subnets,
                          f"a list of {networks} CIDR subnet{'s' if networks > 1 else ''}, one per network "
                          f"(networks = {networks})")
    out: list[Subnet] = []
    for i, text in enumerate(subnets):
        field_ = f"mode_options.subnets[{i}]"
        parsed = bridge_subnet(field_, text, containers_per_host, (0, 0))
        check_disjoint(field_, text, parsed, out)
        out.append(parsed)
    return out


def build_user_bridge(
    cl: Cluster, containers_per_host: int, networks: int = 1, attach_both: bool = False,
    subnets: list[str] | tuple[str, ...] | None = None, mtu_bytes: int | None = None,
) -> UserBridgeNetwork:
    """``networks`` user-defined bridges per host (172.18.0.0/16, 172.19.0.0/16, ... or
    ``subnets``); container ``c`` on network ``c % networks`` at ``subnet + c + 2``; with
    ``attach_both`` on every network.  ``mtu_bytes``: every bridge's and veth's MTU."""
    check_number("mode_options.networks", networks, low=1, high=MAX_NETWORKS, integer=True)
    if not isinstance(attach_both, bool):
        raise ConfigError("mode_options.attach_both", attach_both, "True or False")
    if attach_both and networks < 2:
        raise ConfigError("mode_options.attach_both", attach_both, "False unless networks >= 2")
    mtu = bridge_mtu(cl, mtu_bytes)
    check_containers(containers_per_host, MAX_CONTAINERS if subnets is None else MAX_ANY_SUBNET)
    nets = user_subnets(subnets, networks, containers_per_host)
    net = UserBridgeNetwork("user-bridge", cl)
    ifnames = [network_ifname(k) for k in range(networks)]
    for h in range(len(cl.roots)):
        bridges = [add_docker_bridge(cl, h, ifnames[k], nets[k][0], mtu, nets[k][1]) for k in range(networks)]
        add_isolation(cl, h, ifnames)
        for c in range(containers_per_host):
            name = f"h{h}c{c}"
            own = c % networks
            order = [own] + ([k for k in range(networks) if k != own] if attach_both else [])
            ns = None
            atts = []
            for i, k in enumerate(order):
                base, plen = nets[k]
                ip = base + 2 + c
                gw = base + 1 if i == 0 else None
                ns = add_container(cl, h, name, bridges[k], ip, plen, gw, mtu, ns=ns, ifname=f"eth{i}")
                atts.append(Attachment(ifnames[k], ip))
            assert ns is not None
            net.endpoints[(h, c)] = make_endpoint(cl, ns, atts[0].ip, h, c, mtu)
            net.attachments[(h, c)] = atts
    return net
