"""Netfilter: rule walk cost, filter verdicts, DNAT/MASQUERADE/SNAT through conntrack."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from perfsim.components.conntrack import Conntrack
from perfsim.components.host import Host
from perfsim.components.netfilter import Netfilter, Rule
from perfsim.core.addr import ip
from perfsim.core.packet import ACK, DATA, SYN, SYNACK, FlowKey, Packet
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError

HOST = ip("10.0.0.1")
CLIENT = ip("10.0.0.9")
GW = ip("172.17.0.1")
CTR = ip("172.17.0.2")
CTR2 = ip("172.17.0.3")
CTR3 = ip("172.17.0.4")
DNS = ip("8.8.8.8")
DOCKER_NET = (ip("172.17.0.0"), 16)


@dataclass
class Dev:
    ifname: str
    addrs: list[tuple[int, int]] = field(default_factory=list)


ETH0 = Dev("eth0", [(HOST, 24)])
DOCKER0 = Dev("docker0", [(GW, 16)])


@pytest.fixture
def host(sim: Sim) -> Host:
    return Host(sim, "h1", cores=1)


def make(sim: Sim, host: Host, max_entries: int = 262144) -> Netfilter:
    return Netfilter(host, "nf", Conntrack(sim, "ct", max_entries=max_entries))


def mk(sim: Sim, host: Host, flow: FlowKey, kind: int = DATA) -> Packet:
    p = sim.new_packet(flow, 100, 54, kind=kind)
    p.core = host.cpus.cores[0]
    return p


def cost(sim: Sim, stage: str, p: Packet) -> float:
    return sim.profile.cost(stage).seconds(p.size_bytes)


def forwarded(nf: Netfilter, p: Packet, in_dev: Dev, out_dev: Dev) -> bool:
    """PREROUTING, FORWARD, POSTROUTING as the namespace's forwarding path calls them."""
    return (
        nf.prerouting(p, in_dev) and nf.forward(p, in_dev, out_dev) and nf.postrouting(p, out_dev)
    )


# -- cost of the rule walk ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 5, 20])
def test_forward_chain_costs_hook_plus_one_rule_cost_per_rule_walked(
    sim: Sim, host: Host, n: int
) -> None:
    nf = Netfilter(host, "nf", None)
    for i in range(n):
        nf.append("filter", "FORWARD", Rule(target="DROP", proto=6, dport=1000 + i))
    nf.append("filter", "FORWARD", Rule(target="ACCEPT"))
    p = mk(sim, host, FlowKey(CTR, DNS, 6, 40000, 80))
    assert nf.forward(p, DOCKER0, ETH0)
    expected = cost(sim, "nf_hook", p) + (n + 1) * cost(sim, "nf_rule", p)
    assert p.work_s == pytest.approx(expected, rel=1e-12)
    assert nf.stats()["filter.FORWARD.rules_evaluated"] == n + 1
    assert host.stage("nf_rule").packets == n + 1
    assert host.stage("nf_hook").packets == 1


def test_established_packets_take_the_ctstate_shortcut(sim: Sim, host: Host) -> None:
    """ctstate ESTABLISHED,RELATED ACCEPT first: NEW walks 7 rules, later packets 1."""
    nf = make(sim, host)
    nf.append("filter", "FORWARD", Rule(ctstate={"ESTABLISHED", "RELATED"}))
    for i in range(5):
        nf.append("filter", "FORWARD", Rule(target="DROP", proto=6, dport=1000 + i))
    nf.append("filter", "FORWARD", Rule(target="ACCEPT", in_if="docker0"))
    f = FlowKey(CTR, DNS, 6, 40000, 80)
    walked = []
    r = f.reversed()
    steps = ((f, SYN, DOCKER0, ETH0), (r, SYNACK, ETH0, DOCKER0), (f, ACK, DOCKER0, ETH0))
    for flow, kind, i, o in steps:
        p = mk(sim, host, flow, kind)
        assert nf.prerouting(p, i)
        before = p.work_s
        assert nf.forward(p, i, o)
        rules = (p.work_s - before - cost(sim, "nf_hook", p)) / cost(sim, "nf_rule", p)
        walked.append(round(rules, 9))
    assert walked == [7, 1, 1]
    assert nf.chains[("filter", "FORWARD")].rules_evaluated == 9


def test_drop_rule_drops_and_counts(sim: Sim, host: Host) -> None:
    nf = make(sim, host)
    nf.append("filter", "FORWARD", Rule(target="DROP", proto=17, in_if="eth0"))
    p = mk(sim, host, FlowKey(DNS, CTR, 17, 53, 5000))
    assert not forwarded(nf, p, ETH0, DOCKER0)
    q = mk(sim, host, FlowKey(CTR, DNS, 17, 5000, 53))
    assert forwarded(nf, q, DOCKER0, ETH0)
    assert sim.drops[("nf", "iptables_drop")] == 1
    assert sim.dropped == 1
    assert nf.stats()["filter.FORWARD.drops"] == 1


def test_interface_negation_prefix_and_policy(sim: Sim, host: Host) -> None:
    nf = Netfilter(host, "nf", None)
    nf.set_policy("filter", "FORWARD", "DROP")
    nf.append("filter", "FORWARD", Rule(in_if="veth+", out_if="!docker0"))
    veth = Dev("veth12ab")
    ok = mk(sim, host, FlowKey(CTR, DNS, 17, 1, 2))
    assert nf.forward(ok, veth, ETH0)
    to_bridge = mk(sim, host, FlowKey(CTR, DNS, 17, 1, 2))
    assert not nf.forward(to_bridge, veth, DOCKER0)
    from_eth = mk(sim, host, FlowKey(CTR, DNS, 17, 1, 2))
    assert not nf.forward(from_eth, ETH0, Dev("eth1"))
    assert sim.drops[("nf", "iptables_policy")] == 2


def test_insert_puts_the_rule_first(sim: Sim, host: Host) -> None:
    nf = Netfilter(host, "nf", None)
    nf.append("filter", "INPUT", Rule(target="DROP"))
    nf.insert("filter", "INPUT", Rule(target="ACCEPT", proto=6))
    assert nf.rule_count("filter", "INPUT") == 2
    assert nf.input(mk(sim, host, FlowKey(CLIENT, HOST, 6, 1, 22)), ETH0)
    assert not nf.input(mk(sim, host, FlowKey(CLIENT, HOST, 17, 1, 53)), ETH0)


def test_return_ends_the_chain_with_the_policy(sim: Sim, host: Host) -> None:
    nf = Netfilter(host, "nf", None)
    nf.set_policy("filter", "OUTPUT", "DROP")
    nf.append("filter", "OUTPUT", Rule(target="RETURN", proto=17))
    nf.append("filter", "OUTPUT", Rule(target="ACCEPT"))
    assert not nf.output(mk(sim, host, FlowKey(HOST, DNS, 17, 1, 53)), ETH0)
    assert nf.output(mk(sim, host, FlowKey(HOST, DNS, 6, 1, 80)), ETH0)
    assert nf.chains[("filter", "OUTPUT")].rules_evaluated == 1 + 2
    assert sim.drops[("nf", "iptables_policy")] == 1


# -- NAT ---------------------------------------------------------------------------------------
def publish(nf: Netfilter) -> None:
    """``docker run -p 8080:80``: DNAT 10.0.0.1:8080 -> 172.17.0.2:80."""
    rule = Rule(target="DNAT", proto=6, dst=(HOST, 32), dport=8080, to_ip=CTR, to_port=80)
    nf.append("nat", "PREROUTING", rule)


def test_dnat_of_a_published_port_and_its_reply(sim: Sim, host: Host) -> None:
    nf = make(sim, host)
    publish(nf)
    syn = mk(sim, host, FlowKey(CLIENT, HOST, 6, 40000, 8080), SYN)
    assert nf.prerouting(syn, ETH0)
    assert syn.flow == FlowKey(CLIENT, CTR, 6, 40000, 80)  # rewritten before routing
    pre = cost(sim, "nf_hook", syn) + cost(sim, "conntrack_new", syn) + cost(sim, "nf_rule", syn)
    assert syn.work_s == pytest.approx(pre + cost(sim, "nat_rewrite", syn), rel=1e-12)
    assert nf.forward(syn, ETH0, DOCKER0)
    assert nf.postrouting(syn, DOCKER0)
    assert syn.flow == FlowKey(CLIENT, CTR, 6, 40000, 80)

    synack = mk(sim, host, FlowKey(CTR, CLIENT, 6, 80, 40000), SYNACK)
    assert forwarded(nf, synack, DOCKER0, ETH0)
    assert synack.flow == FlowKey(HOST, CLIENT, 6, 8080, 40000)

    ack = mk(sim, host, FlowKey(CLIENT, HOST, 6, 40000, 8080), ACK)
    assert nf.prerouting(ack, ETH0)
    assert ack.flow == FlowKey(CLIENT, CTR, 6, 40000, 80)
    est = sum(cost(sim, s, ack) for s in ("nf_hook", "conntrack_lookup", "nat_rewrite"))
    assert ack.work_s == pytest.approx(est, rel=1e-12)  # no nat table walk

    entry = ack.ct.entry
    assert entry.orig == FlowKey(CLIENT, HOST, 6, 40000, 8080)
    assert entry.reply == FlowKey(CTR, CLIENT, 6, 80, 40000)
    assert (entry.state_name, entry.assured) == ("ESTABLISHED", True)
    stats = nf.stats()
    assert stats["nat.PREROUTING.packets"] == 1
    assert stats["nat.POSTROUTING.packets"] == 1
    assert stats["nat_rewrites"] == 3
    assert host.stage("nat_rewrite").packets == 3


def test_unpublished_port_is_not_translated(sim: Sim, host: Host) -> None:
    nf = make(sim, host)
    publish(nf)
    p = mk(sim, host, FlowKey(CLIENT, HOST, 6, 40000, 22), SYN)
    assert nf.prerouting(p, ETH0)
    assert nf.input(p, ETH0)
    assert p.flow == FlowKey(CLIENT, HOST, 6, 40000, 22)
    assert nf.nat_rewrites == 0


def test_nat_tables_are_walked_once_per_connection_even_while_new(sim: Sim, host: Host) -> None:
    """Unreplied UDP stays NEW, yet its binding is decided by the first packet only."""
    nf = make(sim, host)
    nf.append("nat", "PREROUTING", Rule(target="DNAT", proto=17, dport=53, to_ip=CTR))
    nf.append("nat", "POSTROUTING", Rule(target="MASQUERADE", out_if="docker0"))
    for _ in range(3):
        p = mk(sim, host, FlowKey(CLIENT, HOST, 17, 5000, 53))
        assert forwarded(nf, p, ETH0, DOCKER0)
        assert p.flow == FlowKey(GW, CTR, 17, 5000, 53)
    stats = nf.stats()
    assert (stats["nat.PREROUTING.packets"], stats["nat.POSTROUTING.packets"]) == (1, 1)
    assert (stats["nat_bindings"], stats["nat_rewrites"]) == (2, 6)


def test_masquerade_rewrites_source_and_reply_destination(sim: Sim, host: Host) -> None:
    nf = make(sim, host)
    nf.append("nat", "POSTROUTING", Rule(target="MASQUERADE", src=DOCKER_NET, out_if="!docker0"))
    out = mk(sim, host, FlowKey(CTR, DNS, 17, 5000, 53))
    assert forwarded(nf, out, DOCKER0, ETH0)
    assert out.flow == FlowKey(HOST, DNS, 17, 5000, 53)
    reply = mk(sim, host, FlowKey(DNS, HOST, 17, 53, 5000))
    assert nf.prerouting(reply, ETH0)
    assert reply.flow == FlowKey(DNS, CTR, 17, 53, 5000)  # before routing
    assert nf.forward(reply, ETH0, DOCKER0)
    assert nf.postrouting(reply, DOCKER0)
    assert reply.flow == FlowKey(DNS, CTR, 17, 53, 5000)
    assert reply.ct.is_reply


def test_masquerade_port_clash_picks_the_next_free_port(sim: Sim, host: Host) -> None:
    nf = make(sim, host)
    nf.append("nat", "POSTROUTING", Rule(target="MASQUERADE", src=DOCKER_NET, out_if="eth0"))
    got = []
    for src in (CTR, CTR2, CTR3):
        p = mk(sim, host, FlowKey(src, DNS, 17, 5000, 53))
        assert forwarded(nf, p, DOCKER0, ETH0)
        got.append(p.flow.sport)
        assert p.flow.src_ip == HOST
    assert got == [5000, 32768, 32769]
    back = []
    for port in got:
        r = mk(sim, host, FlowKey(DNS, HOST, 17, 53, port))
        assert forwarded(nf, r, ETH0, DOCKER0)
        back.append((r.flow.dst_ip, r.flow.dport))
    assert back == [(CTR, 5000), (CTR2, 5000), (CTR3, 5000)]


def test_hairpin_dnat_plus_snat_translates_both_directions(sim: Sim, host: Host) -> None:
    """Container 172.17.0.3 reaches the published port of 172.17.0.2 through the host."""
    nf = make(sim, host)
    publish(nf)
    nf.append("nat", "POSTROUTING", Rule(target="SNAT", src=DOCKER_NET, out_if="docker0", to_ip=GW))
    p = mk(sim, host, FlowKey(CTR2, HOST, 6, 40000, 8080), SYN)
    assert forwarded(nf, p, DOCKER0, DOCKER0)
    assert p.flow == FlowKey(GW, CTR, 6, 40000, 80)
    r = mk(sim, host, FlowKey(CTR, GW, 6, 80, 40000), SYNACK)
    assert nf.prerouting(r, DOCKER0)
    assert r.flow == FlowKey(CTR, CTR2, 6, 80, 40000)
    assert nf.forward(r, DOCKER0, DOCKER0) and nf.postrouting(r, DOCKER0)
    assert r.flow == FlowKey(HOST, CTR2, 6, 8080, 40000)


def test_output_dnat_and_input_reverse_for_a_local_client(sim: Sim, host: Host) -> None:
    nf = make(sim, host)
    rule = Rule(target="DNAT", proto=6, dst=(HOST, 32), dport=8080, to_ip=CTR, to_port=80)
    nf.append("nat", "OUTPUT", rule)
    p = mk(sim, host, FlowKey(HOST, HOST, 6, 40000, 8080), SYN)
    assert nf.output(p, None)
    assert p.flow == FlowKey(HOST, CTR, 6, 40000, 80)
    assert nf.postrouting(p, DOCKER0)
    r = mk(sim, host, FlowKey(CTR, HOST, 6, 80, 40000), SYNACK)
    assert nf.prerouting(r, DOCKER0)
    assert r.flow == FlowKey(CTR, HOST, 6, 80, 40000)
    assert nf.input(r, DOCKER0)
    assert r.flow == FlowKey(HOST, HOST, 6, 8080, 40000)


def test_full_conntrack_table_drops_at_the_first_hook(sim: Sim, host: Host) -> None:
    nf = make(sim, host, max_entries=1)
    f = FlowKey(CTR, DNS, 17, 5000, 53)
    assert forwarded(nf, mk(sim, host, f), DOCKER0, ETH0)
    assert forwarded(nf, mk(sim, host, f.reversed()), ETH0, DOCKER0)  # assured now
    assert not nf.prerouting(mk(sim, host, FlowKey(CTR2, DNS, 17, 5000, 53)), DOCKER0)
    assert sim.drops[("ct", "conntrack_full")] == 1
    assert forwarded(nf, mk(sim, host, f), DOCKER0, ETH0)


def test_bridge_hook_sees_the_bridge_as_in_and_out_device(sim: Sim, host: Host) -> None:
    @dataclass
    class Port:
        ifname: str
        master: Dev

    nf = make(sim, host)
    telnet = Rule(target="DROP", in_if="docker0", out_if="docker0", proto=6, dport=23)
    nf.append("filter", "FORWARD", telnet)
    a, b = Port("vethA", DOCKER0), Port("vethB", DOCKER0)
    assert nf.bridge_hook(mk(sim, host, FlowKey(CTR, CTR2, 6, 40000, 80), SYN), a, b)
    assert not nf.bridge_hook(mk(sim, host, FlowKey(CTR, CTR2, 6, 40001, 23), SYN), a, b)
    assert host.stage("nf_hook").packets == 3 + 2


# -- configuration errors ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"target": "REJECT"}, "rule.target"),
        ({"proto": 300}, "rule.proto"),
        ({"proto": 6, "dport": 70000}, "rule.dport"),
        ({"dport": 80}, "rule.proto"),
        ({"src": (0, 33)}, r"rule.src.plen"),
        ({"dst": "10.0.0.0/8"}, "rule.dst"),
        ({"in_if": ""}, "rule.in_if"),
        ({"out_if": "!" + "x" * 16}, "rule.out_if"),
        ({"ctstate": {"BOGUS"}}, "rule.ctstate"),
        ({"ctstate": "NEW"}, "rule.ctstate"),
        ({"target": "DNAT"}, "rule.to_ip"),
        ({"target": "ACCEPT", "to_ip": 1}, "rule.to_ip"),
        ({"target": "SNAT", "to_ip": 1, "to_port": 80}, "rule.to_port"),
        ({"target": "DNAT", "to_ip": 1, "proto": 6, "to_port": 0}, "rule.to_port"),
    ],
)
def test_bad_rules_name_the_field(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: got "):
        Rule(**kw)


@pytest.mark.parametrize(
    ("table", "chain", "rule", "field"),
    [
        ("mangle", "PREROUTING", Rule(), "nf.table"),
        ("filter", "PREROUTING", Rule(), "nf.filter.chain"),
        ("filter", "FORWARD", Rule(target="MASQUERADE"), "nf.filter.FORWARD.target"),
        ("nat", "PREROUTING", Rule(target="SNAT", to_ip=1), "nf.nat.PREROUTING.target"),
        ("nat", "POSTROUTING", Rule(target="DNAT", to_ip=1), "nf.nat.POSTROUTING.target"),
        ("nat", "POSTROUTING", Rule(target="MASQUERADE", in_if="eth0"), "nf.nat.POSTROUTING.in_if"),
        ("filter", "INPUT", Rule(out_if="eth0"), "nf.filter.INPUT.out_if"),
    ],
)
def test_bad_placement_names_the_field(
    sim: Sim, host: Host, table: str, chain: str, rule: Rule, field: str
) -> None:
    nf = make(sim, host)
    with pytest.raises(ConfigError, match=rf"^{field}: got "):
        nf.append(table, chain, rule)


def test_nat_without_conntrack_and_bad_policy_are_rejected(sim: Sim, host: Host) -> None:
    nf = Netfilter(host, "nf", None)
    with pytest.raises(ConfigError, match=r"^nf\.conntrack: got "):
        nf.append("nat", "POSTROUTING", Rule(target="MASQUERADE"))
    with pytest.raises(ConfigError, match=r"^nf\.filter\.INPUT\.policy: got "):
        nf.set_policy("filter", "INPUT", "REJECT")
    with pytest.raises(ConfigError, match=r"^nf\.filter\.INPUT\.index: got "):
        nf.insert("filter", "INPUT", Rule(), index=1)
