"""User-defined bridges: isolation between networks, attach to both, embedded DNS cost."""

from __future__ import annotations

import pytest

from perfsim.components.netfilter import Rule
from perfsim.core.addr import ip
from perfsim.core.packet import PROTO_TCP, PROTO_UDP
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import run
from perfsim.topology.cluster import ClusterSpec, build_cluster
from perfsim.topology.modes import MODES
from perfsim.topology.user_bridge_mode import build_user_bridge

EST = frozenset({"RELATED", "ESTABLISHED"})
KW = {"mode": "user-bridge", "placement": "same-host", "containers_per_host": 2, "duration_s": 0.004,
      "warmup_s": 0.001, "cluster": ClusterSpec(hosts=1, cores=2)}


def _cluster(hosts: int = 1, cores: int = 2):  # type: ignore[no-untyped-def]
    sim = Sim(seed=2)
    return sim, build_cluster(sim, ClusterSpec(hosts=hosts, cores=cores))


def test_two_networks_alternate_and_forward_has_isolation_then_one_block_per_bridge() -> None:
    _sim, cl = _cluster()
    net = build_user_bridge(cl, 3, networks=2)
    assert [net.endpoint(0, c).ip for c in range(3)] == [ip("172.18.0.2"), ip("172.19.0.3"), ip("172.18.0.4")]
    assert sorted(net.endpoint(0, 1).ns.devices) == ["eth0"]
    nf = cl.roots[0].nf
    assert nf is not None
    a, b = "br-net1", "br-net2"
    assert nf.chain("filter", "FORWARD").rules == [
        Rule("DROP", in_if=a, out_if=b),
        Rule("DROP", in_if=b, out_if=a),
        Rule("ACCEPT", out_if=a, ctstate=EST),
        Rule("ACCEPT", in_if=a, out_if=f"!{a}"),
        Rule("ACCEPT", in_if=a, out_if=a),
        Rule("ACCEPT", out_if=b, ctstate=EST),
        Rule("ACCEPT", in_if=b, out_if=f"!{b}"),
        Rule("ACCEPT", in_if=b, out_if=b),
    ]
    assert nf.chain("nat", "POSTROUTING").rules == [
        Rule("MASQUERADE", src=(ip("172.18.0.0"), 16), out_if=f"!{a}"),
        Rule("MASQUERADE", src=(ip("172.19.0.0"), 16), out_if=f"!{b}"),
    ]
    net.publish(0, 1, 8080, 80, PROTO_TCP)  # lands in br-net2's block
    rules = nf.chain("filter", "FORWARD").rules
    assert len(rules) == 9
    assert rules[5] == Rule("ACCEPT", out_if=b, ctstate=EST)
    assert rules[6] == Rule("ACCEPT", proto=PROTO_TCP, dst=(ip("172.19.0.3"), 32), dport=80, in_if=f"!{b}", out_if=b)


def test_isolation_drops_a_flow_between_two_user_bridges_with_an_iptables_reason() -> None:
    r = run(RunSpec(workload="udp_rr", mode_options={"networks": 2}, **KW))  # type: ignore[arg-type]
    assert r.flows["transactions"].sum() == 0
    assert r.drops[["site", "reason", "count"]].to_dict("records") == [{"site": "h0.iptables", "reason": "iptables_drop", "count": 1}]
    acc = r.accounting
    assert acc["created"] == acc["delivered"] + acc["dropped"] + acc["in_flight"]


def test_attach_both_reaches_the_server_on_the_shared_network_directly() -> None:
    _sim, cl = _cluster()
    net = build_user_bridge(cl, 2, networks=2, attach_both=True)
    assert sorted(net.endpoint(0, 1).ns.devices) == ["eth0", "eth1"]
    # h0c0's own network is br-net1, where h0c1 is 172.18.0.3 (its eth1)
    assert net.target((0, 0), (0, 1), 5001, PROTO_UDP) == (ip("172.18.0.3"), 5001)
    assert net.target((0, 1), (0, 0), 5001, PROTO_UDP) == (ip("172.19.0.2"), 5001)
    r = run(RunSpec(workload="udp_rr", mode_options={"networks": 2, "attach_both": True}, **KW))  # type: ignore[arg-type]
    assert r.flows["transactions"].sum() > 10
    assert len(r.drops) == 0
    stages = set(r.stages["stage"])
    assert "ip_forward" not in stages  # bridged on br-net1, never routed


def test_embedded_dns_is_charged_once_per_client_and_name() -> None:
    _sim, cl = _cluster(cores=4)
    net = build_user_bridge(cl, 4)
    stage = cl.hosts[0].stage("dns_lookup")
    cost = stage.per_packet_s
    assert cost > 0
    for _ in range(3):
        net.target((0, 0), (0, 1), 5001, PROTO_TCP)
    assert stage.packets == 1
    assert stage.cpu_s == pytest.approx(cost)
    net.target((0, 0), (0, 1), 5002, PROTO_UDP)  # same name: cached
    net.target((0, 2), (0, 3), 5003, PROTO_TCP)  # another client
    net.target((0, 0), (0, 3), 5004, PROTO_TCP)  # another name
    assert stage.packets == 3
    assert net.dns_lookups == 3
    cores = cl.hosts[0].cpus.cores
    assert cores[0].busy_s == pytest.approx(2 * cost)  # h0c0's app core: two names
    assert cores[0].busy_until_s == pytest.approx(2 * cost)
    assert cores[2].busy_s == pytest.approx(cost)  # h0c2's
    assert cores[1].busy_s == 0.0
    assert cores[3].busy_s == 0.0


def test_cross_host_user_bridge_publishes_and_resolves_the_host_name_once() -> None:
    _sim, cl = _cluster(hosts=2)
    net = build_user_bridge(cl, 1)
    assert net.target((0, 0), (1, 0), 5001, PROTO_TCP) == (ip("10.0.0.2"), 5001)
    assert net.target((0, 0), (1, 0), 5001, PROTO_TCP) == (ip("10.0.0.2"), 5001)
    assert net.published == {(1, PROTO_TCP, 5001): (0, 5001)}
    assert net.dns_cache == {("h0c0", "h1"): ip("10.0.0.2")}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"networks": 0}, r"^mode_options.networks: got 0; allowed: an integer >= 1 and <= 14"),
        ({"networks": 2, "attach_both": "yes"}, r"^mode_options.attach_both: got 'yes'; allowed: True or False"),
        ({"attach_both": True}, r"^mode_options.attach_both: got True; allowed: False unless networks >= 2"),
        ({"learning": True}, r"^mode_options.learning: got True; allowed: one of networks, attach_both, subnets, mtu_bytes for mode user-bridge"),
    ],
)
def test_bad_options_name_the_field(options: dict, message: str) -> None:
    _sim, cl = _cluster()
    with pytest.raises(ConfigError, match=message):
        MODES["user-bridge"].build(cl, 2, **options)
