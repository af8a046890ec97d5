"""Docker's default bridge across hosts: Docker's iptables layout, published ports, DNAT."""

from __future__ import annotations

import pytest

from perfsim.components.netfilter import Rule
from perfsim.core.addr import ip
from perfsim.core.packet import PROTO_TCP, PROTO_UDP, FlowKey, Packet
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.topology.base import make_endpoint
from perfsim.topology.bridge_mode import build_bridge
from perfsim.topology.cluster import ClusterSpec, build_cluster
from perfsim.transport.workloads import start_workload

AWAKE = load_profile("prior").awake()
"""The engineering-estimate profile, with cores that never sleep: these tests check mechanisms
and time the path itself (not idle wake-ups), independent of what calibration measured."""

EST = frozenset({"RELATED", "ESTABLISHED"})


def _cluster(seed: int = 1, hosts: int = 2):  # type: ignore[no-untyped-def]
    sim = Sim(seed=seed, profile=AWAKE)
    return sim, build_cluster(sim, ClusterSpec(hosts=hosts, cores=2))


def test_docker_rules_in_docker_order_and_publish_adds_dnat_and_the_docker_chain_accept() -> None:
    _sim, cl = _cluster()
    net = build_bridge(cl, 2)
    nf = cl.roots[1].nf
    assert nf is not None
    assert nf.chain("filter", "FORWARD").policy_drop
    assert nf.chain("nat", "POSTROUTING").rules == [
        Rule("MASQUERADE", src=(ip("172.17.0.0"), 16), out_if="!docker0"),
    ]
    net.publish(1, 1, 8080, 80, PROTO_TCP)
    assert nf.chain("nat", "PREROUTING").rules == [
        Rule("DNAT", proto=PROTO_TCP, dst=(ip("10.0.0.2"), 32), dport=8080, in_if="!docker0",
             to_ip=ip("172.17.0.3"), to_port=80),
    ]
    assert nf.chain("filter", "FORWARD").rules == [
        Rule("ACCEPT", out_if="docker0", ctstate=EST),
        Rule("ACCEPT", proto=PROTO_TCP, dst=(ip("172.17.0.3"), 32), dport=80, in_if="!docker0", out_if="docker0"),
        Rule("ACCEPT", in_if="docker0", out_if="!docker0"),
        Rule("ACCEPT", in_if="docker0", out_if="docker0"),
    ]
    other = cl.roots[0].nf
    assert other is not None
    assert other.rule_count("nat", "PREROUTING") == 0


def test_publishing_a_host_port_twice_is_refused_like_docker() -> None:
    _sim, cl = _cluster()
    net = build_bridge(cl, 2)
    net.publish(1, 0, 8080, 80, PROTO_TCP)
    with pytest.raises(ConfigError, match=r"^publish: got 8080; allowed: .*port is already allocated"):
        net.publish(1, 1, 8080, 81, PROTO_TCP)
    net.publish(1, 1, 8080, 80, PROTO_UDP)  # another protocol: a different port
    net.publish(0, 0, 8080, 80, PROTO_TCP)  # another host
    assert sorted(net.published) == [(0, PROTO_TCP, 8080), (1, PROTO_TCP, 8080), (1, PROTO_UDP, 8080)]
    with pytest.raises(ConfigError, match=r"^publish.proto: got 1"):
        net.publish(1, 1, 9000, 80, 1)
    with pytest.raises(ConfigError, match=r"^publish.host_port: got 0"):
        net.publish(1, 1, 0, 80, PROTO_TCP)
    with pytest.raises(ConfigError, match=r"^container: got 'h1c5'"):
        net.publish(1, 5, 9000, 80, PROTO_TCP)


def test_target_same_host_is_the_container_and_cross_host_a_published_host_port() -> None:
    _sim, cl = _cluster()
    net = build_bridge(cl, 2)
    assert net.target((0, 0), (0, 1), 5001, PROTO_TCP) == (ip("172.17.0.3"), 5001)
    assert net.published == {}
    assert net.target((0, 0), (1, 1), 5001, PROTO_TCP) == (ip("10.0.0.2"), 5001)
    assert net.target((0, 1), (1, 1), 5001, PROTO_TCP) == (ip("10.0.0.2"), 5001)  # reused
    assert net.published == {(1, PROTO_TCP, 5001): (1, 5001)}
    with pytest.raises(ConfigError, match="port is already allocated"):
        net.target((0, 0), (1, 0), 5001, PROTO_TCP)  # the host port belongs to h1c1


def test_cross_host_flow_through_a_published_port_is_masqueraded_and_dnatted() -> None:
    sim, cl = _cluster()
    net = build_bridge(cl, 1)
    connect = net.target((0, 0), (1, 0), 5001, PROTO_TCP)
    flow = start_workload(sim, "tcp_rr", net.endpoint(0, 0), net.endpoint(1, 0), 1, server_port=5001,
                          client_port=40000, connect_ip=connect[0], connect_port=connect[1])
    sim.run(0.003)
    assert flow.stats.transactions > 10
    assert sim.dropped == 0
    ctr, h0, h1 = ip("172.17.0.2"), ip("10.0.0.1"), ip("10.0.0.2")
    ct1 = cl.roots[1].nf.conntrack  # type: ignore[union-attr]
    found = ct1.lookup(Packet(0, FlowKey(h0, h1, PROTO_TCP, 40000, 5001), 0, 54))
    assert found is not None
    entry, is_reply = found
    assert not is_reply
    assert entry.nat_dst
    assert not entry.nat_src
    assert entry.reply == FlowKey(ctr, h0, PROTO_TCP, 5001, 40000)  # the DNAT binding
    ct0 = cl.roots[0].nf.conntrack  # type: ignore[union-attr]
    found0 = ct0.lookup(Packet(0, FlowKey(ctr, h1, PROTO_TCP, 40000, 5001), 0, 54))
    assert found0 is not None
    assert found0[0].nat_src
    assert found0[0].reply == FlowKey(h1, h0, PROTO_TCP, 5001, 40000)


def test_an_unpublished_container_is_unreachable_from_another_host() -> None:
    """Routed straight to the container's address (a static route on h0), the packet dies in
    h1's FORWARD chain on its DROP policy."""
    sim, cl = _cluster()
    net = build_bridge(cl, 1)
    root0 = cl.roots[0]
    root0.add_route("172.17.0.2/32", via="10.0.0.2")
    client = make_endpoint(cl, root0, cl.host_ip(0), 0, 0, 1500)
    server = net.endpoint(1, 0)
    flow = start_workload(sim, "udp_rr", client, server, 100, server_port=5001, client_port=40000)
    sim.run(0.003)
    assert flow.stats.transactions == 0
    assert dict(sim.drops) == {("h1.iptables", "iptables_policy"): 1}
    assert cl.roots[1].nf.chain("filter", "FORWARD").drops == 1  # type: ignore[union-attr]


def test_container_addresses_are_host_local_a_cross_host_flow_to_one_stays_on_its_host() -> None:
    """Every host has 172.17.0.0/16: h1c1's address is h0c1's on h0; nothing reaches h1."""
    sim, cl = _cluster()
    net = build_bridge(cl, 2)
    server = net.endpoint(1, 1)
    flow = start_workload(sim, "udp_rr", net.endpoint(0, 0), server, 100, server_port=5001,
                          client_port=40000, connect_ip=server.ip)
    sim.run(0.003)
    assert flow.stats.transactions == 0
    assert dict(sim.drops) == {("h0c1", "no_socket"): 1}
    assert cl.nics[0].tx_packets == 0
    assert cl.nics[1].rx_packets == 0
