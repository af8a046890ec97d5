"""Linux bridge: learning, flooding, FDB ageing and caps, netfilter hook, exact CPU charges."""

from __future__ import annotations

from typing import Any

import pytest

from perfsim.components.bridge import Bridge
from perfsim.components.host import Host
from perfsim.components.netdev import NetDevice, veth_pair
from perfsim.core.packet import ARP_REQUEST, BROADCAST_MAC, DATA, FlowKey, Packet
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError

FLOW = FlowKey(0xAC110002, 0xAC110003, 6, 40000, 80)
BR_MAC = 0x0242AC110001
MAC_A, MAC_B, MAC_C = 0x0242AC110002, 0x0242AC110003, 0x0242AC110004
MAC_UNKNOWN = 0x0242AC1100FF
MCAST = 0x01005E000001


class FakePort(NetDevice):
    """A bridge port whose transmit records ``(time, pkt)`` and consumes the frame."""

    def __init__(self, host: Host, name: str, mac: int) -> None:
        super().__init__(host, name, mac)
        self.log: list[tuple[float, Packet]] = []
        self.work_s: list[float] = []
        """CPU work each frame carried when it reached this port (consume serves it)."""

    def xmit(self, pkt: Packet) -> None:
        self.log.append((self.sim.now, pkt))
        self.work_s.append(pkt.work_s)
        self.sim.consume(pkt)


class FakeNs:
    """Stands in for a namespace: ``ip_rcv`` records and consumes."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.log: list[tuple[float, Packet, Any]] = []

    def ip_rcv(self, pkt: Packet, dev: Any) -> None:
        self.log.append((self.sim.now, pkt, dev))
        self.sim.consume(pkt)


def make_bridge(sim: Sim, n_ports: int = 3, **kw: Any) -> tuple[Host, Bridge, list[FakePort], FakeNs]:
    host = Host(sim, "h1", cores=1)
    br = Bridge(host, "h1/br0", BR_MAC, **kw)
    ns = FakeNs(sim)
    br.ns = ns
    ports = [FakePort(host, f"h1/p{i}", 0x0242AC120000 + i) for i in range(n_ports)]
    for p in ports:
        br.add_port(p)
    return host, br, ports, ns


def frame(sim: Sim, host: Host, src: int, dst: int, kind: int = DATA) -> Packet:
    pkt = sim.new_packet(FLOW, 1000, 54, kind=kind, src_mac=src, dst_mac=dst)
    pkt.core = host.cpus.cores[0]
    return pkt


def cost(sim: Sim, stage: str) -> float:
    return sim.profile.cost(stage).per_packet_s


def sent(port: FakePort) -> list[int]:
    return [p.dst_mac for _, p in port.log]


def test_unknown_destination_floods_other_ports_and_charges_per_copy(sim: Sim) -> None:
    """Unknown unicast: one copy per other port (not the ingress), one flood charge per copy."""
    host, br, (p0, p1, p2), ns = make_bridge(sim)
    pkt = frame(sim, host, MAC_A, MAC_UNKNOWN)
    p0.receive(pkt)
    assert sent(p0) == []
    assert sent(p1) == [MAC_UNKNOWN]
    assert sent(p2) == [MAC_UNKNOWN]
    assert ns.log == []  # unknown unicast does not go up the local stack
    assert p2.log[0][1] is pkt  # the original object goes to the last destination
    assert p1.log[0][1] is not pkt
    f, c = cost(sim, "bridge_forward"), cost(sim, "bridge_flood_copy")
    assert host.stage("bridge_forward").cpu_s == f
    assert host.stage("bridge_flood_copy").cpu_s == 0.0 + c + c
    assert host.stage("bridge_flood_copy").packets == 2
    # the bridge_forward work already on the frame rides on the first copy only
    assert p1.work_s[0] == f + c
    assert p2.work_s[0] == c
    assert (br.floods, br.flood_copies, br.forwarded) == (1, 2, 0)
    assert sim.created == 2


def test_broadcast_also_reaches_local_stack(sim: Sim) -> None:
    host, br, (p0, p1, p2), ns = make_bridge(sim)
    pkt = frame(sim, host, MAC_A, BROADCAST_MAC, ARP_REQUEST)
    p1.receive(pkt)
    assert sent(p0) == [BROADCAST_MAC]
    assert sent(p1) == []
    assert sent(p2) == [BROADCAST_MAC]
    assert len(ns.log) == 1
    assert ns.log[0][1] is pkt and ns.log[0][2] is br
    assert pkt.dev is br
    c = cost(sim, "bridge_flood_copy")
    assert host.stage("bridge_flood_copy").cpu_s == 0.0 + c + c + c
    assert br.flood_copies == 3
    assert sim.created == 3 and sim.delivered == 3


def test_multicast_floods_without_local_copy(sim: Sim) -> None:
    host, br, (p0, p1, p2), ns = make_bridge(sim)
    p0.receive(frame(sim, host, MAC_A, MCAST))
    assert (sent(p1), sent(p2), ns.log) == ([MCAST], [MCAST], [])


def test_frame_to_bridge_mac_goes_up_its_stack(sim: Sim) -> None:
    host, br, (p0, p1, p2), ns = make_bridge(sim)
    pkt = frame(sim, host, MAC_A, BR_MAC)
    p0.receive(pkt)
    assert [x[1] for x in ns.log] == [pkt]
    assert p1.log == [] and p2.log == []
    assert host.stage("bridge_flood_copy").cpu_s == 0.0
    assert br.rx_packets == 1


def test_learns_mac_then_stops_flooding(sim: Sim) -> None:
    """After B (on p1) sends to A, a frame to B goes out of p1 only."""
    host, br, (p0, p1, p2), _ = make_bridge(sim)
    p1.receive(frame(sim, host, MAC_B, MAC_A))  # A unknown: flooded to p0 and p2
    assert br.fdb_lookup(MAC_B) is p1
    p0.log.clear()
    p2.log.clear()
    p0.receive(frame(sim, host, MAC_A, MAC_B))
    assert (sent(p0), sent(p1), sent(p2)) == ([], [MAC_B], [])
    assert (br.learned, br.floods, br.forwarded) == (2, 1, 1)
    assert host.stage("bridge_forward").packets == 2
    assert host.stage("bridge_flood_copy").packets == 2


def test_learning_moves_a_mac_to_its_new_port(sim: Sim) -> None:
    host, br, (p0, p1, p2), _ = make_bridge(sim)
    p1.receive(frame(sim, host, MAC_B, BROADCAST_MAC))
    p2.receive(frame(sim, host, MAC_B, BROADCAST_MAC))
    assert br.fdb_lookup(MAC_B) is p2
    assert (br.learned, br.moved) == (1, 1)


def test_invalid_sources_are_not_learned(sim: Sim) -> None:
    host, br, (p0, _, _), _ = make_bridge(sim)
    for src in (0, MCAST, BROADCAST_MAC, BR_MAC):
        p0.receive(frame(sim, host, src, MAC_UNKNOWN))
    assert br.fdb_size() == 0
    assert br.learned == 0


def test_fdb_entry_ages_out(sim: Sim) -> None:
    """ageing 300 s: B last seen at 0; a frame to B at 299 s is forwarded, at 301 s flooded."""
    host, br, (p0, p1, p2), _ = make_bridge(sim, ageing_time_s=300.0)
    p1.receive(frame(sim, host, MAC_B, MAC_A))
    p0.log.clear()
    p2.log.clear()
    sim.call_at(299.0, p0.put, frame(sim, host, MAC_A, MAC_B))
    sim.call_at(301.0, p0.put, frame(sim, host, MAC_A, MAC_B))
    sim.run(400.0)
    assert [t for t, _ in p1.log] == [299.0, 301.0]
    assert [t for t, _ in p2.log] == [301.0]  # only the second one was flooded
    assert p0.log == []
    assert br.aged_out == 1
    assert br.fdb_lookup(MAC_B) is None
    assert br.fdb_lookup(MAC_A) is p0  # A refreshed at 301 s


def test_entry_expires_exactly_at_ageing_time(sim: Sim) -> None:
    """Linux ``has_expired``: ``updated + ageing_time <= now``."""
    host, br, (p0, p1, _), _ = make_bridge(sim, ageing_time_s=300.0)
    p1.receive(frame(sim, host, MAC_B, MAC_A))
    sim.run(300.0)
    assert br.fdb_lookup(MAC_B) is None
    assert br.aged_out == 1


def test_fdb_size_purges_expired_entries(sim: Sim) -> None:
    host, br, (p0, p1, p2), _ = make_bridge(sim, ageing_time_s=10.0)
    p0.receive(frame(sim, host, MAC_A, BROADCAST_MAC))
    sim.call_at(5.0, p1.put, frame(sim, host, MAC_B, BROADCAST_MAC))
    sim.run(12.0)
    assert br.fdb_size() == 1
    assert set(br.fdb_entries()) == {MAC_B}
    assert br.fdb_entries()[MAC_B].last_seen_s == 5.0
    assert br.aged_out == 1
    assert br.occupancy() == {"fdb_entries": 1, "fdb_learned": 1, "fdb_max_seen": 2}


def test_static_entries_never_age(sim: Sim) -> None:
    host, br, (p0, p1, p2), _ = make_bridge(sim, ageing_time_s=300.0)
    br.add_static(MAC_B, p1)
    sim.call_at(10_000.0, p0.put, frame(sim, host, MAC_A, MAC_B))
    sim.run(10_001.0)
    assert [t for t, _ in p1.log] == [10_000.0]
    assert p2.log == []
    assert br.aged_out == 0
    assert br.fdb_entries()[MAC_B].static


def test_ageing_time_zero_disables_learning_but_not_static_entries(sim: Sim) -> None:
    host, br, (p0, p1, p2), _ = make_bridge(sim, ageing_time_s=0.0)
    p1.receive(frame(sim, host, MAC_B, MAC_A))
    assert br.learned == 0
    p0.receive(frame(sim, host, MAC_A, MAC_B))
    assert sent(p2) == [MAC_A, MAC_B]  # both flooded
    br.add_static(MAC_B, p1)
    p0.receive(frame(sim, host, MAC_A, MAC_B))
    assert sent(p2) == [MAC_A, MAC_B]
    assert sent(p1)[-1] == MAC_B and br.forwarded == 1


def test_sticky_static_entry_is_not_moved_by_learning(sim: Sim) -> None:
    host, br, (p0, p1, p2), _ = make_bridge(sim)
    br.add_static(MAC_B, p1, sticky=True)
    br.add_static(MAC_C, p1)
    p2.receive(frame(sim, host, MAC_B, BROADCAST_MAC))
    p2.receive(frame(sim, host, MAC_C, BROADCAST_MAC))
    assert br.fdb_lookup(MAC_B) is p1
    assert br.fdb_lookup(MAC_C) is p2  # Linux moves a non-sticky static entry
    assert br.moved == 1


def test_fdb_max_learned_caps_learning(sim: Sim) -> None:
    host, br, (p0, p1, p2), _ = make_bridge(sim, fdb_max_learned=2)
    br.add_static(0x0242AC1100AA, p2)  # static entries do not count against the cap
    p0.receive(frame(sim, host, MAC_A, BROADCAST_MAC))
    p1.receive(frame(sim, host, MAC_B, BROADCAST_MAC))
    p2.receive(frame(sim, host, MAC_C, BROADCAST_MAC))
    assert (br.learned, br.learn_refused) == (2, 1)
    assert br.fdb_size() == 3
    p0.log.clear()
    p1.log.clear()
    p0.receive(frame(sim, host, MAC_A, MAC_C))  # C was not learned: flooded
    assert (sent(p1), sent(p2)) == ([MAC_C], [BROADCAST_MAC, BROADCAST_MAC, MAC_C])
    assert br.learn_refused == 1  # A was known: refreshing it is not a new entry
    # known MACs are still refreshed and forwarded to: the cap only stops new entries
    p1.receive(frame(sim, host, MAC_B, MAC_A))
    assert sent(p0) == [MAC_A]
    assert br.learn_refused == 1


def test_cap_frees_up_when_learned_entries_expire(sim: Sim) -> None:
    host, br, (p0, p1, _), _ = make_bridge(sim, ageing_time_s=300.0, fdb_max_learned=1)
    p0.receive(frame(sim, host, MAC_A, BROADCAST_MAC))
    sim.call_at(100.0, p1.put, frame(sim, host, MAC_B, BROADCAST_MAC))
    sim.call_at(301.0, p1.put, frame(sim, host, MAC_B, BROADCAST_MAC))
    sim.run(302.0)
    assert br.learn_refused == 1
    assert br.aged_out == 1
    assert br.fdb_lookup(MAC_B) is p1 and br.fdb_lookup(MAC_A) is None
    assert br.fdb_max_seen == 1


def test_same_port_destination_is_dropped(sim: Sim) -> None:
    host, br, (p0, p1, p2), _ = make_bridge(sim)
    p0.receive(frame(sim, host, MAC_A, BROADCAST_MAC))
    p0.receive(frame(sim, host, MAC_C, MAC_A))  # C also behind p0 (e.g. a hub)
    assert sim.drops[(br.name, "same_port")] == 1
    assert sent(p0) == []
    assert sim.created == sim.delivered + sim.dropped


def test_nf_hook_false_stops_forwarding_and_arp_bypasses_it(sim: Sim) -> None:
    calls: list[tuple[int, str, str]] = []

    def hook(pkt: Packet, i: NetDevice, o: NetDevice) -> bool:
        calls.append((pkt.id, i.name, o.name))
        sim.drop(pkt, "filter.FORWARD", "policy_drop")
        return False

    host, br, (p0, p1, p2), _ = make_bridge(sim, nf_hook=hook)
    p1.receive(frame(sim, host, MAC_B, BROADCAST_MAC, ARP_REQUEST))
    p0.receive(frame(sim, host, MAC_A, MAC_B, ARP_REQUEST))  # ARP: no hook
    assert sent(p1) == [MAC_B]
    pkt = frame(sim, host, MAC_A, MAC_B)
    p0.receive(pkt)
    assert calls == [(pkt.id, "h1/p0", "h1/p1")]
    assert sent(p1) == [MAC_B]
    assert br.forwarded == 1
    assert sim.drops[("filter.FORWARD", "policy_drop")] == 1


def test_nf_hook_true_lets_ipv4_through(sim: Sim) -> None:
    calls: list[int] = []
    host, br, (p0, p1, _), _ = make_bridge(sim, nf_hook=lambda p, i, o: calls.append(p.id) is None)
    br.add_static(MAC_B, p1)
    pkt = frame(sim, host, MAC_A, MAC_B)
    p0.receive(pkt)
    assert calls == [pkt.id]
    assert p1.log[0][1] is pkt


def test_xmit_from_bridge_device_forwards_by_fdb(sim: Sim) -> None:
    host, br, (p0, p1, p2), ns = make_bridge(sim)
    p1.receive(frame(sim, host, MAC_B, BR_MAC))  # learn B; goes up the stack
    pkt = frame(sim, host, BR_MAC, MAC_B)
    br.xmit(pkt)
    assert (sent(p0), sent(p1), sent(p2)) == ([], [MAC_B], [])
    assert p1.work_s == [cost(sim, "bridge_forward")]
    br.xmit(frame(sim, host, BR_MAC, MAC_UNKNOWN))  # miss: every port, no local copy
    br.xmit(frame(sim, host, BR_MAC, BROADCAST_MAC))
    assert sent(p0) == [MAC_UNKNOWN, BROADCAST_MAC]
    assert sent(p1) == [MAC_B, MAC_UNKNOWN, BROADCAST_MAC]
    assert sent(p2) == [MAC_UNKNOWN, BROADCAST_MAC]
    assert len(ns.log) == 1
    assert host.stage("bridge_flood_copy").packets == 6
    assert br.tx_packets == 3 and br.learned == 1  # xmit does not learn the bridge's own MAC


def test_flood_with_no_other_port_is_dropped(sim: Sim) -> None:
    host, br, (p0,), ns = make_bridge(sim, n_ports=1)
    p0.receive(frame(sim, host, MAC_A, MAC_UNKNOWN))
    assert sim.drops[(br.name, "flood_no_port")] == 1
    p0.receive(frame(sim, host, MAC_A, BROADCAST_MAC))  # the local stack is still a destination
    assert len(ns.log) == 1
    assert br.floods == 1


def test_remove_port_flushes_its_entries(sim: Sim) -> None:
    host, br, (p0, p1, p2), _ = make_bridge(sim)
    p1.receive(frame(sim, host, MAC_B, BROADCAST_MAC))
    br.add_static(MAC_C, p1)
    br.remove_port(p1)
    assert p1.master is None
    assert br.fdb_size() == 0
    assert br.ports == (p0, p2)
    p0.receive(frame(sim, host, MAC_A, MAC_B))
    assert sent(p1) == []
    assert sent(p2) == [BROADCAST_MAC, MAC_B]  # B is unknown again: flooded to p2 only


def test_accounting_invariant_with_floods_through_veths(sim: Sim) -> None:
    """created == delivered + dropped + in_flight after floods over real veth ports."""
    host, br, ports, ns = make_bridge(sim, n_ports=2)
    far_ns = FakeNs(sim)
    ends = []
    for i in range(3):
        mac = MAC_A + 16 * i
        ctr, outer = veth_pair(host, f"c{i}/eth0", mac, f"h1/veth{i}", mac + 1)
        ctr.ns = far_ns
        br.add_port(outer)
        ends.append(ctr)
    for k in range(5):
        ends[k % 3].xmit(frame(sim, host, ends[k % 3].mac, MAC_UNKNOWN + k))
        ends[k % 3].xmit(frame(sim, host, ends[k % 3].mac, BROADCAST_MAC))
    ends[0].xmit(frame(sim, host, ends[0].mac, ends[1].mac))  # learned by now: unicast
    ports[0].receive(frame(sim, host, 0x0242AC1300AA, ends[0].mac))
    sim.run(1.0)
    assert sim.created == sim.delivered + sim.dropped + sim.in_flight()
    # 12 originals; 10 floods to the 4 other ports, the 5 broadcasts also up the local stack
    assert sim.created == 12 + 10 * 3 + 5
    assert sim.delivered == 10 * 4 + 5 + 2
    assert (sim.dropped, sim.in_flight()) == (0, 0)
    assert len(far_ns.log) == 10 * 2 + 2  # each flood reaches the two other containers
    assert len(ns.log) == 5
    assert [len(p.log) for p in ports] == [10, 10]


def test_bad_parameters_raise_config_error_naming_the_field(sim: Sim) -> None:
    host = Host(sim, "h1", cores=1)
    with pytest.raises(ConfigError, match=r"br0\.ageing_time_s"):
        Bridge(host, "h1/br0", BR_MAC, ageing_time_s=-1.0)
    with pytest.raises(ConfigError, match=r"br0\.fdb_max_learned"):
        Bridge(host, "h1/br0", BR_MAC, fdb_max_learned=-1)
    with pytest.raises(ConfigError, match=r"br0\.fdb_max_learned"):
        Bridge(host, "h1/br0", BR_MAC, fdb_max_learned=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"br0\.mac"):
        Bridge(host, "h1/br0", MCAST)
    br = Bridge(host, "h1/br0", BR_MAC)
    port = FakePort(host, "h1/p0", MAC_A)
    br.add_port(port)
    with pytest.raises(ConfigError, match=r"br0\.ports"):
        br.add_port(port)
    with pytest.raises(ConfigError, match=r"br0\.fdb\.port"):
        br.add_static(MAC_B, FakePort(host, "h1/p1", MAC_B))
    with pytest.raises(ConfigError, match=r"br0\.fdb\.mac"):
        br.add_static(BROADCAST_MAC, port)
    other = Host(sim, "h2", cores=1)
    with pytest.raises(ConfigError, match=r"br0\.ports"):
        br.add_port(FakePort(other, "h2/p0", MAC_C))


def test_two_containers_resolve_and_talk_through_the_bridge(sim: Sim) -> None:
    """Real namespaces: A's ARP request floods (and reaches the host stack), the reply and the
    data packet are forwarded by the FDB, and the packet reaches B's socket."""
    from perfsim.components.netns import NetNs

    host = Host(sim, "h1", cores=1)
    root = NetNs(host, "h1")
    br = Bridge(host, "h1/docker0", BR_MAC)
    root.add_device(br, 0xAC110001, 16)
    nss = []
    for i, mac in enumerate((MAC_A, MAC_B)):
        ns = NetNs(host, f"c{i}")
        inner, outer = veth_pair(host, f"c{i}/eth0", mac, f"h1/veth{i}", mac + 0x100)
        ns.add_device(inner, 0xAC110002 + i, 16)
        root.add_device(outer)
        br.add_port(outer)
        nss.append(ns)

    class Sock:
        def __init__(self) -> None:
            self.got: list[Packet] = []

        def deliver(self, pkt: Packet) -> None:
            self.got.append(pkt)
            sim.consume(pkt)

    sock = Sock()
    nss[1].bind(17, 5000, sock)
    pkt = sim.new_packet(FlowKey(0xAC110002, 0xAC110003, 17, 4000, 5000), 100, 42)
    pkt.core = host.cpus.cores[0]
    nss[0].ip_output(pkt)
    sim.run(1.0)
    assert sock.got == [pkt]
    assert pkt.src_mac == MAC_A and pkt.dst_mac == MAC_B
    fdb = {m: e.port.name for m, e in br.fdb_entries().items()}
    assert fdb == {MAC_A: "h1/veth0", MAC_B: "h1/veth1"}
    assert (br.floods, br.flood_copies, br.forwarded) == (1, 2, 2)  # request; reply + data
    assert br.rx_packets == 1  # the broadcast request also went up docker0's stack
    assert host.stage("bridge_forward").packets == 3
    assert sim.created == sim.delivered + sim.dropped + sim.in_flight()
    assert sim.dropped == 0
