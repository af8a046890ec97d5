"""Modes built from real parts: VXLAN sizes on the wire, MTU rules, where the CPU work lands."""

from __future__ import annotations

import pytest

from perfsim.components.vxlan import VxlanDevice
from perfsim.core.packet import DATA, PROTO_UDP, FlowKey, Packet
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import run
from perfsim.topology.cluster import ClusterSpec, build_cluster
from perfsim.topology.overlay_mode import build_overlay
from perfsim.transport.workloads import start_workload
from perfsim.units import VXLAN_OVERHEAD_BYTES

AWAKE = load_profile("prior").awake()
"""The engineering-estimate profile, with cores that never sleep: these tests check mechanisms
and time the path itself (not idle wake-ups), independent of what calibration measured."""


def _record(obj: object, attr: str, log: list[tuple[int, int, int]]) -> None:
    """Wrap ``obj.attr(pkt)`` so every packet's (id, size_bytes, segs) is logged first."""
    inner = getattr(obj, attr)

    def wrapper(pkt: Packet) -> None:
        if pkt.kind == DATA:
            log.append((pkt.id, pkt.size_bytes, pkt.segs))
        inner(pkt)

    setattr(obj, attr, wrapper)


@pytest.mark.parametrize("offloads", [True, False])
def test_vxlan_frames_on_the_wire_are_exactly_50_bytes_longer_per_frame(offloads: bool) -> None:
    sim = Sim(seed=3, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=2, cores=2, offloads=offloads))
    net = build_overlay(cl, 1)
    client, server = net.endpoint(0, 0), net.endpoint(1, 0)
    inner: list[tuple[int, int, int]] = []
    wire: list[tuple[int, int, int]] = []
    _record(client.ns.devices["eth0"], "xmit", inner)
    assert cl.switch is not None
    _record(cl.switch, "put", wire)
    start_workload(sim, "tcp_stream", client, server, 65536, server_port=5001, client_port=40000)
    sim.run(0.002)
    sizes = {pid: (size, segs) for pid, size, segs in inner}
    on_wire = [(pid, size, segs) for pid, size, segs in wire if pid in sizes]
    assert len(on_wire) > 20
    assert all(size == sizes[pid][0] + VXLAN_OVERHEAD_BYTES * segs for pid, size, segs in on_wire)
    assert any(segs > 1 for _, _, segs in on_wire) == offloads


def test_vxlan_drops_an_inner_packet_above_its_mtu_and_counts_the_reason() -> None:
    sim = Sim(seed=1, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=2))
    build_overlay(cl, 1)
    vx = next(el for el in sim.elements.values() if isinstance(el, VxlanDevice))
    assert vx.mtu_bytes == 1450
    pkt = sim.new_packet(FlowKey(1, 2, PROTO_UDP, 1, 2), 1451 - 28, 42)  # IP length 1451
    pkt.core = cl.hosts[0].cpus.cores[0]
    vx.xmit(pkt)
    assert sim.drops[(vx.name, "mtu_exceeded_df")] == 1
    ok = sim.new_packet(FlowKey(1, 2, PROTO_UDP, 1, 2), 1450 - 28, 42)  # exactly the MTU
    ok.core = cl.hosts[0].cpus.cores[0]
    ok.dst_mac = next(iter(vx.fdb))  # the remote container: a known VTEP
    vx.xmit(ok)
    assert sim.dropped == 1
    assert vx.encapsulated == 1


def test_overlay_mtu_must_leave_room_for_the_50_byte_header() -> None:
    sim = Sim(seed=1, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=2, mtu_bytes=117))
    with pytest.raises(ConfigError, match="mtu_bytes: got 117; allowed: >= 118"):
        build_overlay(cl, 1)


def test_same_host_bridge_keeps_the_transmit_path_on_the_sender_core() -> None:
    """veth queues on the current CPU's backlog: the sender core runs veth, bridge, netfilter
    and the receiver's TCP; the receiving app core only copies."""
    r = run(RunSpec(mode="bridge", placement="same-host", containers_per_host=2, duration_s=0.01, warmup_s=0.002,
                    cluster=ClusterSpec(hosts=1, cores=2)))
    stages = r.stages.set_index("stage")["cpu_s"]
    assert stages["bridge_forward"] > 0 and stages["veth_xmit"] > 0 and stages["conntrack_lookup"] > 0
    assert "nic_rx" not in stages.index and "vxlan_encap" not in stages.index
    busy = r.cores.set_index("core")["busy_s"]
    assert (r.cores["utilisation"] <= 1.0 + 1e-9).all()
    assert busy.sum() > 0


def test_overlay_costs_more_cpu_per_byte_than_host_mode_on_the_same_cluster() -> None:
    """Emerges from the extra stages (veth, bridge, encap/decap); not a written-down ratio."""
    kw = dict(duration_s=0.01, warmup_s=0.002, cluster=ClusterSpec(hosts=2, cores=2))
    host = run(RunSpec(mode="host", **kw)).summary()
    overlay = run(RunSpec(mode="overlay", **kw)).summary()
    assert overlay["cpu_s_per_gb"] > host["cpu_s_per_gb"]


def test_vxlan_fragments_an_oversized_packet_without_df_and_each_fragment_gets_50_bytes() -> None:
    sim = Sim(seed=1, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=2))
    net = build_overlay(cl, 1)
    vx = next(el for el in sim.elements.values() if isinstance(el, VxlanDevice))
    wire: list[tuple[int, int, int]] = []
    assert cl.switch is not None
    _record(cl.switch, "put", wire)
    flow = FlowKey(net.endpoint(0, 0).ip, net.endpoint(1, 0).ip, PROTO_UDP, 1, 2)
    pkt = sim.new_packet(flow, 2000, 42)  # IP length 2028 > 1450
    pkt.df = False
    pkt.core = cl.hosts[0].cpus.cores[0]
    pkt.dst_mac = next(iter(vx.fdb))
    vx.xmit(pkt)
    sim.run(0.01)
    assert vx.fragmented == 1
    assert dict(sim.drops) == {("h1c0", "no_socket"): 1}  # reassembled at the far container
    # 2000 B of payload in fragments of 1450 - 28 = 1422 B: two frames, each 42 + 50 B of headers
    assert wire == [(pkt.id, 2000 + 2 * (42 + VXLAN_OVERHEAD_BYTES), 2)]


def test_offloads_off_pays_per_packet_costs_per_frame_and_costs_more_cpu_per_byte() -> None:
    kw = {"duration_s": 0.01, "warmup_s": 0.002, "mode": "host"}
    on = run(RunSpec(cluster=ClusterSpec(hosts=2, cores=2, offloads=True), **kw))
    off = run(RunSpec(cluster=ClusterSpec(hosts=2, cores=2, offloads=False), **kw))
    tcp_on = on.stages.query("stage == 'tcp_tx' and host == 'h0'")["skbs"].iloc[0]
    tcp_off = off.stages.query("stage == 'tcp_tx' and host == 'h0'")["skbs"].iloc[0]
    bytes_on, bytes_off = on.flows["bytes"].sum(), off.flows["bytes"].sum()
    # GSO: ~40x fewer skbs per byte through the stack
    assert (tcp_off / bytes_off) > 10 * (tcp_on / bytes_on)
    assert off.summary()["cpu_s_per_gb"] > on.summary()["cpu_s_per_gb"]
    assert "gro" in set(on.stages["stage"]) and "gro" not in set(off.stages["stage"])


def test_rps_steers_the_veth_receive_to_the_flow_hash_core() -> None:
    from perfsim.components.host import Host
    from perfsim.components.netdev import veth_pair

    sim = Sim(seed=5, profile=AWAKE)
    host = Host(sim, "h", cores=4, rps=True)
    a, b = veth_pair(host, "h/a", 1, "h/b", 2)
    seen: dict[FlowKey, object] = {}

    class FakeNs:
        def ip_rcv(self, pkt: Packet, dev: object) -> None:
            seen[pkt.flow] = pkt.core
            sim.consume(pkt)

    b.ns = FakeNs()
    flows = [FlowKey(1, 2, PROTO_UDP, sport, 80) for sport in range(1000, 1016)]
    for flow in flows:
        pkt = sim.new_packet(flow, 100, 42)
        pkt.core = host.cpus.cores[0]
        a.xmit(pkt)
    sim.run(0.01)
    assert seen == {f: host.cpus.rss(f) for f in flows}
    assert len({id(c) for c in seen.values()}) > 1  # spread over several cores, not only the sender's
