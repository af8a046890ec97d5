"""``--network container:<name>`` (shared namespace, like a Kubernetes pod) and ``--network none``.

``container``: containers come in pairs; container ``2k`` is an ordinary ``docker0`` container
and container ``2k+1`` joins its namespace, so the pair shares one ``eth0``, one address and
one ``lo``.  A flow between the two members never leaves the namespace::

    h0: pod k  [ ctr 2k  app --\\                                    ]
               [                loopback_xmit (lo) -- backlog -- TCP/IP ]
               [ ctr 2k+1 app --/                                    ]
               eth0 (172.17.0.k+2) --veth-- docker0 (as in bridge mode)

``none``: each container has its own namespace with only ``lo`` (127.0.0.1); nothing leaves it::

    h0: [ ctr c: lo 127.0.0.1 ]   (no eth0, no route)

A flow inside one ``none`` container would work (over ``lo``); between two containers it
cannot: :meth:`NoneNetwork.target` refuses it with a ConfigError.

Options of ``container`` (the pods sit on ``docker0``): ``subnet`` and ``mtu_bytes`` as for
``bridge`` (:mod:`perfsim.topology.bridge_mode`); a pod takes one address, so the subnet must
hold ``containers_per_host / 2 + 3`` addresses.

A loopback flow's MSS comes from ``lo``'s 64 KiB MTU (as in Linux: the route to a local
address goes through ``lo``), so it sends 64 KiB segments even with offloads off — measured on
the calibration testbed: offloads off cost a loopback stream only ~10 % where every veth path
loses 70-85 %.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perfsim.components.netdev import NetDevice
from perfsim.components.netns import NetNs
from perfsim.core.packet import Packet
from perfsim.errors import ConfigError
from perfsim.topology.base import ModeNetwork, Slot, make_endpoint
from perfsim.topology.bridge_mode import (
    BRIDGE_PLEN,
    DOCKER0_NET,
    MAX_ANY_SUBNET,
    MAX_CONTAINERS,
    Attachment,
    DockerBridgeNetwork,
    add_container,
    add_docker_bridge,
    bridge_mtu,
    bridge_subnet,
    check_containers,
)
from perfsim.topology.cluster import Cluster

if TYPE_CHECKING:
    from perfsim.components.host import Host

LOOPBACK_IP = 0x7F000001  # 127.0.0.1
LOOPBACK_MTU = 65535  # Linux's lo has 65536, one above what a 16-bit IP length allows here


class LoopbackDevice(NetDevice):
    """``lo``.  Packets to one of the namespace's own addresses never reach it: the namespace
    delivers them itself (``loopback_xmit``).  A frame routed out of ``lo`` (to another
    127/8 address) is looped back into the namespace's receive path, as ``loopback_xmit`` does.
    """

    def __init__(self, host: Host, name: str, mac: int = 0, mtu_bytes: int = LOOPBACK_MTU) -> None:
        super().__init__(host, name, mac, mtu_bytes)
        self._stage = host.stage("loopback_xmit")

    def xmit(self, pkt: Packet) -> None:
        self.tx_packets += 1
        self._stage.charge(pkt)
        if pkt.owner is not None:
            pkt.owner.on_xmit_done(pkt, self.sim.env._now)
        self.receive(pkt)


def build_container(
    cl: Cluster, containers_per_host: int, subnet: str | None = None, mtu_bytes: int | None = None
) -> DockerBridgeNetwork:
    """``containers_per_host`` (even) containers per host, as ``containers_per_host // 2``
    ``docker0`` pods of two; same-host flow ``i`` (container ``2i`` to ``2i+1``) stays in a pod.
    ``subnet`` and ``mtu_bytes``: docker0's, as in :func:`~perfsim.topology.bridge_mode.build_bridge`."""
    mtu = bridge_mtu(cl, mtu_bytes)
    check_containers(containers_per_host, 2 * (MAX_CONTAINERS if subnet is None else MAX_ANY_SUBNET))
    if containers_per_host % 2:
        raise ConfigError("containers_per_host", containers_per_host, "an even number (pairs share a namespace)")
    pods = containers_per_host // 2
    base, plen = bridge_subnet("mode_options.subnet", subnet, pods, (DOCKER0_NET, BRIDGE_PLEN))
    net = DockerBridgeNetwork("container", cl)
    for h in range(len(cl.roots)):
        br = add_docker_bridge(cl, h, "docker0", base, mtu, plen)
        for k in range(pods):
            ip = base + 2 + k
            ns = add_container(cl, h, f"h{h}c{2 * k}", br, ip, plen, base + 1, mtu)
            for c in (2 * k, 2 * k + 1):
                net.endpoints[(h, c)] = make_endpoint(cl, ns, ip, h, c, mtu)
                net.attachments[(h, c)] = [Attachment("docker0", ip)]
    return net


class NoneNetwork(ModeNetwork):
    """Containers with only ``lo``: a flow between two of them is impossible."""

    def target(self, client: Slot, server: Slot, port: int, proto: int) -> tuple[int, int]:
        ep = self.endpoint(*server)
        self.endpoint(*client)
        if client != server:
            raise ConfigError(
                "mode", "none",
                f"a mode with a network device: a 'none' container has only a loopback device "
                f"and cannot reach h{server[0]}c{server[1]}",
            )
        return ep.ip, port


def build_none(cl: Cluster, containers_per_host: int) -> NoneNetwork:
    """One namespace per container with ``lo`` (127.0.0.1/8) and nothing else."""
    check_containers(containers_per_host, 1_000_000)
    net = NoneNetwork("none", cl)
    mtu = cl.spec.mtu_bytes
    for h in range(len(cl.roots)):
        host = cl.hosts[h]
        for c in range(containers_per_host):
            name = f"h{h}c{c}"
            ns = NetNs(host, name, gc_thresh3=cl.spec.gc_thresh3)
            ns.add_device(LoopbackDevice(host, f"{name}/lo"), LOOPBACK_IP, 8)
            net.endpoints[(h, c)] = make_endpoint(cl, ns, LOOPBACK_IP, h, c, mtu)
    return net
