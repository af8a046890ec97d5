"""Namespaces wired by real devices: ARP over the simulated wire, routing, local delivery."""

from __future__ import annotations

import pytest

from perfsim.components.host import Host
from perfsim.components.netns import NetNs
from perfsim.components.nic import Nic, cable
from perfsim.core.addr import ip
from perfsim.core.packet import PROTO_UDP, FlowKey, Packet
from perfsim.core.profile import STAGES, Profile, StageCost
from perfsim.core.sim import Sim
from perfsim.units import ETH_WIRE_OVERHEAD_BYTES

DELAY_S = 10e-6
RATE_BPS = 1e9


def zero_profile() -> Profile:
    return Profile("zero", {s: StageCost(0.0, 0.0) for s in STAGES}, {"source": "test: no CPU cost"})


class RecordingSocket:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.log: list[tuple[float, Packet]] = []

    def deliver(self, pkt: Packet) -> None:
        self.log.append((self.sim.now, pkt))
        self.sim.consume(pkt)


def two_hosts(sim: Sim) -> tuple[NetNs, NetNs, RecordingSocket]:
    nss = []
    for i in range(2):
        host = Host(sim, f"h{i}", cores=1)
        ns = NetNs(host, f"h{i}")
        nic = Nic(host, f"h{i}/eth0", 0x020000000001 + i, RATE_BPS)
        ns.add_device(nic, ip(f"10.0.0.{i + 1}"), 24)
        nss.append(ns)
    cable(nss[0].devices["eth0"], nss[1].devices["eth0"], DELAY_S)  # type: ignore[arg-type]
    sock = RecordingSocket(sim)
    nss[1].bind(PROTO_UDP, 9000, sock)
    return nss[0], nss[1], sock


def send(sim: Sim, ns: NetNs, payload: int = 1000) -> None:
    pkt = sim.new_packet(FlowKey(ip("10.0.0.1"), ip("10.0.0.2"), PROTO_UDP, 5000, 9000), payload, 42)
    pkt.core = ns.host.cpus.cores[0]
    ns.ip_output(pkt)


def test_arp_miss_costs_exactly_one_round_trip_without_cpu_costs() -> None:
    sim = Sim(seed=1, profile=zero_profile())
    a, _b, sock = two_hosts(sim)
    send(sim, a)  # neighbour miss: ARP request, reply, then the packet
    sim.call_at(1e-3, lambda _: send(sim, a), None)  # neighbour known now
    sim.run(0.01)
    assert len(sock.log) == 2
    first = sock.log[0][0]
    second = sock.log[1][0] - 1e-3
    arp_frame_s = (42 + ETH_WIRE_OVERHEAD_BYTES) * 8 / RATE_BPS
    assert first - second == pytest.approx(2 * (arp_frame_s + DELAY_S), abs=1e-12)
    assert second == pytest.approx((1042 + ETH_WIRE_OVERHEAD_BYTES) * 8 / RATE_BPS + DELAY_S, abs=1e-12)
    assert sim.created == sim.delivered + sim.dropped + sim.in_flight()


def test_arp_miss_with_cpu_costs_is_slower_by_more_than_the_wire_round_trip() -> None:
    sim = Sim(seed=1)
    a, _b, sock = two_hosts(sim)
    send(sim, a)
    sim.call_at(1e-3, lambda _: send(sim, a), None)
    sim.run(0.01)
    first, second = sock.log[0][0], sock.log[1][0] - 1e-3
    arp_frame_s = (42 + ETH_WIRE_OVERHEAD_BYTES) * 8 / RATE_BPS
    assert first - second > 2 * (arp_frame_s + DELAY_S)
    assert a.host.stage("arp").packets == 2 and sim.delivered == 4


def test_no_route_and_no_socket_are_counted_drops() -> None:
    sim = Sim(seed=1, profile=zero_profile())
    a, b, _sock = two_hosts(sim)
    pkt = sim.new_packet(FlowKey(ip("10.0.0.1"), ip("192.0.2.1"), PROTO_UDP, 1, 2), 10, 42)
    a.ip_output(pkt)
    pkt = sim.new_packet(FlowKey(ip("10.0.0.1"), ip("10.0.0.2"), PROTO_UDP, 1, 9999), 10, 42)
    pkt.core = a.host.cpus.cores[0]
    a.ip_output(pkt)
    sim.run(0.01)
    assert sim.drops[("h0", "no_route")] == 1
    assert sim.drops[("h1", "no_socket")] == 1
    assert sim.created == sim.delivered + sim.dropped + sim.in_flight()


def test_unanswered_arp_drops_the_queued_packet_after_three_solicitations() -> None:
    sim = Sim(seed=1, profile=zero_profile())
    a, _b, _sock = two_hosts(sim)
    pkt = sim.new_packet(FlowKey(ip("10.0.0.1"), ip("10.0.0.77"), PROTO_UDP, 1, 2), 10, 42)
    pkt.core = a.host.cpus.cores[0]
    a.ip_output(pkt)
    sim.run(10.0)
    assert sim.drops[("h0.neigh", "neigh_failed")] == 1
    assert a.host.stage("arp").packets == 3
