"""Routed (Calico BGP / host-gw) and IPIP: the routes BGP would install, +20 B per frame."""

from __future__ import annotations

import pytest

from perfsim.components.ipip import IpipDevice
from perfsim.components.neighbour import NudState
from perfsim.core.addr import ip
from perfsim.core.packet import DATA, PROTO_IPIP, PROTO_UDP, FlowKey, Packet
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.topology.cluster import ClusterSpec, build_cluster
from perfsim.topology.routed_mode import build_ipip, build_routed
from perfsim.transport.workloads import start_workload
from perfsim.units import IPIP_OVERHEAD_BYTES

AWAKE = load_profile("prior").awake()
"""The engineering-estimate profile, with cores that never sleep: these tests check mechanisms
and time the path itself (not idle wake-ups), independent of what calibration measured."""


def _record(obj: object, attr: str, log: list[tuple[int, int, int, int]]) -> None:
    """Wrap ``obj.attr(pkt)``: log (id, size_bytes, segs, largest frame's IP length) of DATA."""
    inner = getattr(obj, attr)

    def wrapper(pkt: Packet) -> None:
        if pkt.kind == DATA:
            log.append((pkt.id, pkt.size_bytes, pkt.segs, pkt.l3_bytes_per_seg))
        inner(pkt)

    setattr(obj, attr, wrapper)


def test_routed_host_routes_are_what_bgp_installs_and_containers_use_a_link_local_gateway() -> None:
    sim = Sim(seed=1, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=3))
    net = build_routed(cl, 2)
    assert [str(r) for r in cl.roots[1].routes.routes()] == [
        "10.2.1.2/32 dev h1/veth-h1c0 metric 0",
        "10.2.1.3/32 dev h1/veth-h1c1 metric 0",
        "10.2.0.0/24 via 10.0.0.1 dev h1/eth0 metric 0",
        "10.2.2.0/24 via 10.0.0.3 dev h1/eth0 metric 0",
        "10.0.0.0/16 dev h1/eth0 metric 0 src 10.0.0.2",
    ]
    ep = net.endpoint(1, 1)
    assert ep.ip == ip("10.2.1.3")
    assert ep.mtu_bytes == 1500
    assert [str(r) for r in ep.ns.routes.routes()] == [
        "10.2.1.3/32 dev h1c1/eth0 metric 0 src 10.2.1.3",
        "169.254.1.1/32 dev h1c1/eth0 metric 0",
        "0.0.0.0/0 via 169.254.1.1 dev h1c1/eth0 metric 0",
    ]
    host_veth = cl.roots[1].devices["veth-h1c1"]
    assert ep.ns.neigh.entries() == [(ip("169.254.1.1"), host_veth.mac, NudState.PERMANENT)]
    assert "bridge" not in " ".join(type(d).__name__.lower() for d in cl.roots[1].devices.values())


def _one_datagram_on_the_wire(builder) -> list[tuple[int, int, int, int]]:  # type: ignore[no-untyped-def]
    sim = Sim(seed=4, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=2))
    net = builder(cl, 1)
    wire: list[tuple[int, int, int, int]] = []
    assert cl.switch is not None
    _record(cl.switch, "put", wire)
    flow = start_workload(sim, "udp_rr", net.endpoint(0, 0), net.endpoint(1, 0), 1000, server_port=5001,
                          client_port=40000)
    sim.run(0.0005)
    assert flow.stats.transactions > 3
    assert sim.dropped == 0
    return wire


def test_ipip_frames_on_the_fabric_are_exactly_20_bytes_larger_than_routed() -> None:
    routed = _one_datagram_on_the_wire(build_routed)
    ipip = _one_datagram_on_the_wire(build_ipip)
    # 1000 B of UDP payload + 8 UDP + 20 IP + 14 Ethernet; IPIP adds one outer IPv4 header
    assert {size for _, size, _, _ in routed} == {1042}
    assert {size for _, size, _, _ in ipip} == {1042 + IPIP_OVERHEAD_BYTES}


@pytest.mark.parametrize("offloads", [True, False])
def test_ipip_tcp_stream_adds_20_bytes_per_frame_and_fills_exactly_the_1500_byte_mtu(offloads: bool) -> None:
    sim = Sim(seed=3, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=2, cores=2, offloads=offloads))
    net = build_ipip(cl, 1)
    client, server = net.endpoint(0, 0), net.endpoint(1, 0)
    tunl = cl.roots[0].devices["tunl0"]
    assert isinstance(tunl, IpipDevice)
    assert tunl.mtu_bytes == 1480
    assert client.ns.devices["eth0"].mtu_bytes == 1480
    assert client.mss_bytes == 1480 - 20 - 32
    inner: list[tuple[int, int, int, int]] = []
    wire: list[tuple[int, int, int, int]] = []
    _record(client.ns.devices["eth0"], "xmit", inner)
    assert cl.switch is not None
    _record(cl.switch, "put", wire)
    start_workload(sim, "tcp_stream", client, server, 65536, server_port=5001, client_port=40000)
    sim.run(0.002)
    sizes = {pid: (size, segs) for pid, size, segs, _ in inner}
    on_wire = [(pid, size, segs, l3) for pid, size, segs, l3 in wire if pid in sizes]
    assert len(on_wire) > 20
    # the rest are the handshake and pure ACKs: 66 B frames, plus the outer 20 B
    assert all(size == 66 + IPIP_OVERHEAD_BYTES for pid, size, _, _ in wire if pid not in sizes)
    assert all(size == sizes[pid][0] + IPIP_OVERHEAD_BYTES * segs for pid, size, segs, _ in on_wire)
    assert max(l3 for *_, l3 in on_wire) == 1500
    assert any(segs > 1 for _, _, segs, _ in on_wire) == offloads
    assert tunl.encapsulated >= len(on_wire)
    assert sim.dropped == 0
    remote = cl.roots[1].devices["tunl0"]
    assert isinstance(remote, IpipDevice)
    assert remote.decapsulated > 0
    assert cl.hosts[0].stage("ipip_encap").cpu_s > 0
    assert cl.hosts[1].stage("ipip_decap").cpu_s > 0


def test_ipip_routes_other_hosts_through_tunl0_and_takes_the_remote_from_the_route() -> None:
    sim = Sim(seed=1, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=3))
    build_ipip(cl, 1)
    root = cl.roots[0]
    routes = [str(r) for r in root.routes.routes()]
    assert "10.2.1.0/24 via 10.0.0.2 dev h0/tunl0 metric 0" in routes
    assert "10.2.2.0/24 via 10.0.0.3 dev h0/tunl0 metric 0" in routes
    # tunl0 is NOARP: the next hops are permanent, with the remote NICs' MACs
    assert root.neigh.state(ip("10.0.0.3")) == NudState.PERMANENT
    assert root.neigh.lookup(ip("10.0.0.3")) == cl.nics[2].mac
    tunl = root.devices["tunl0"]
    sent: list[FlowKey] = []
    root.ip_output = lambda pkt: sent.append(pkt.flow)  # type: ignore[method-assign]
    pkt = sim.new_packet(FlowKey(ip("10.2.0.2"), ip("10.2.2.7"), PROTO_UDP, 1, 2), 100, 42)
    pkt.core = cl.hosts[0].cpus.cores[0]
    tunl.xmit(pkt)
    assert sent == [FlowKey(ip("10.0.0.1"), ip("10.0.0.3"), PROTO_IPIP, 0, 0)]
    assert pkt.size_bytes == 142 + IPIP_OVERHEAD_BYTES


def test_ipip_drops_an_oversized_df_packet_and_needs_room_for_the_header() -> None:
    sim = Sim(seed=1, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=2))
    build_ipip(cl, 1)
    tunl = cl.roots[0].devices["tunl0"]
    pkt = sim.new_packet(FlowKey(ip("10.2.0.2"), ip("10.2.1.2"), PROTO_UDP, 1, 2), 1481 - 28, 42)
    pkt.core = cl.hosts[0].cpus.cores[0]
    tunl.xmit(pkt)
    assert dict(sim.drops) == {("h0/tunl0", "mtu_exceeded_df"): 1}
    sim2 = Sim(seed=1, profile=AWAKE)
    small = build_cluster(sim2, ClusterSpec(hosts=2, mtu_bytes=87))
    with pytest.raises(ConfigError, match=r"^mtu_bytes: got 87; allowed: >= 88 for ipip"):
        build_ipip(small, 1)
    with pytest.raises(ConfigError, match=r"^containers_per_host: got 254"):
        build_routed(build_cluster(Sim(seed=1, profile=AWAKE), ClusterSpec(hosts=1)), 254)
