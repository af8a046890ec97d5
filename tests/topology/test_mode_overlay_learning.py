"""Overlay with flood-and-learn: ARP floods to every remote VTEP once, then unicast."""

from __future__ import annotations

import pytest

from perfsim.components.neighbour import NudState
from perfsim.components.vxlan import VxlanDevice
from perfsim.core.addr import ip
from perfsim.core.packet import ARP_REQUEST, Packet
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.topology.cluster import ClusterSpec, build_cluster
from perfsim.topology.modes import MODES
from perfsim.topology.overlay_mode import build_overlay
from perfsim.transport.workloads import start_workload

AWAKE = load_profile("prior").awake()
"""The engineering-estimate profile, with cores that never sleep: these tests check mechanisms
and time the path itself (not idle wake-ups), independent of what calibration measured."""


def _vteps(sim: Sim) -> list[VxlanDevice]:
    return sorted((el for el in sim.elements.values() if isinstance(el, VxlanDevice)), key=lambda v: v.name)


def _log_sends(vx: VxlanDevice, log: list[tuple[float, int, int]]) -> None:
    """Wrap the VTEP's per-remote send: log (time, packet kind, remote VTEP)."""
    inner = vx._send

    def wrapper(pkt: Packet, remote_ip: int) -> None:
        log.append((vx.sim.now, pkt.kind, remote_ip))
        inner(pkt, remote_ip)

    vx._send = wrapper  # type: ignore[method-assign]


def test_learning_floods_the_first_arp_to_every_remote_vtep_then_learns_and_stops_flooding() -> None:
    sim = Sim(seed=6, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=3, cores=2))
    net = build_overlay(cl, 1, learning=True)
    client, server = net.endpoint(0, 0), net.endpoint(1, 0)
    vteps = _vteps(sim)
    assert [v.fdb for v in vteps] == [{}, {}, {}]
    assert vteps[0].flood_remotes == [ip("10.0.0.2"), ip("10.0.0.3")]
    assert client.ns.neigh.entries() == []
    sends: list[tuple[float, int, int]] = []
    _log_sends(vteps[0], sends)
    flow = start_workload(sim, "tcp_rr", client, server, 1, server_port=5001, client_port=40000)
    sim.run(0.003)
    assert flow.stats.transactions > 10
    assert sim.dropped == 0
    # the ARP request: one copy per remote VTEP, the only packet h2 ever receives
    assert [(kind, remote) for _, kind, remote in sends[:2]] == [
        (ARP_REQUEST, ip("10.0.0.2")), (ARP_REQUEST, ip("10.0.0.3")),
    ]
    assert all(remote == ip("10.0.0.2") and kind != ARP_REQUEST for _, kind, remote in sends[2:])
    assert len(sends) > 20
    mac0 = client.ns.devices["eth0"].mac
    mac1 = server.ns.devices["eth0"].mac
    assert vteps[0].fdb == {mac1: ip("10.0.0.2")}
    assert vteps[1].fdb == {mac0: ip("10.0.0.1")}
    assert vteps[2].fdb == {mac0: ip("10.0.0.1")}  # learned from the flooded request
    assert vteps[2].decapsulated == 1
    assert client.ns.neigh.state(server.ip) == NudState.REACHABLE


def test_without_learning_the_control_plane_prepopulates_and_nothing_floods() -> None:
    sim = Sim(seed=6, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=3, cores=2))
    net = build_overlay(cl, 1)
    vteps = _vteps(sim)
    assert all(v.flood_remotes == [] and not v.learning for v in vteps)
    server = net.endpoint(1, 0)
    assert vteps[0].fdb == {server.ns.devices["eth0"].mac: ip("10.0.0.2"),
                            net.endpoint(2, 0).ns.devices["eth0"].mac: ip("10.0.0.3")}
    assert net.endpoint(0, 0).ns.neigh.state(server.ip) == NudState.PERMANENT


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning": 1}, r"^mode_options.learning: got 1; allowed: True or False"),
        ({"vni": -1}, r"^mode_options.vni: got -1"),
        ({"networks": 2}, r"^mode_options.networks: got 2; allowed: one of vni, learning, subnet, mtu_bytes for mode overlay"),
    ],
)
def test_overlay_options_are_validated(options: dict, message: str) -> None:
    sim = Sim(seed=1, profile=AWAKE)
    cl = build_cluster(sim, ClusterSpec(hosts=2))
    with pytest.raises(ConfigError, match=message):
        MODES["overlay"].build(cl, 1, **options)
