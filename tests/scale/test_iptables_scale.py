"""Issue 6, iptables rule count: with P published ports on a host, every *new* connection to
it walks the per-port rules linearly — once in nat PREROUTING (the DNAT rules of Docker's
DOCKER chain) and once in filter FORWARD (the ACCEPT rules of its filter DOCKER chain) — so
its ``nf_rule`` units grow by exactly 2 per published port ahead of its own, and the
connection rate falls by 2 × ``nf_rule`` seconds per port on the serial handshake path.
Packets of established connections, and the containers' own traffic, never enter those
chains (``-m addrtype --dst-type LOCAL -j DOCKER``, ``-o docker0 -j DOCKER``): their cost does
not depend on P.
"""

from __future__ import annotations

import pytest

from perfsim.components.conntrack import Conntrack
from perfsim.components.host import Host
from perfsim.components.netfilter import Netfilter, Rule
from perfsim.core.addr import ip
from perfsim.core.packet import PROTO_TCP, FlowKey
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.experiment.simulate import Experiment, FlowPlan, simulate
from perfsim.topology.cluster import ClusterSpec
from tests.scale.helpers import start

SERVER_PORT = 5001
RULES_WALKED_PER_PORT = 2
"""nat PREROUTING (one DNAT per port) + filter FORWARD (one ACCEPT per port), for the SYN."""


def published(p: int) -> tuple[tuple[tuple[int, int], int, int, int], ...]:
    """P published ports on host 1, the workload's own (5001) published last: its SYN walks
    all P of them."""
    fill = tuple(((1, 0), 20000 + k, 20000 + k, PROTO_TCP) for k in range(p - 1))
    return (*fill, ((1, 0), SERVER_PORT, SERVER_PORT, PROTO_TCP))


def experiment(workload: str, p: int, duration_s: float, stop_s: float | None = None) -> Experiment:
    flow = FlowPlan(workload, (0, 0), (1, 0), 1, server_port=SERVER_PORT, client_port=40000, stop_s=stop_s)
    return Experiment(cluster=ClusterSpec(hosts=2, cores=2), mode="bridge", containers_per_host=1, flows=(flow,),
                      duration_s=duration_s, warmup_s=0.005, publish=published(p))


def rule_units_per_connection(p: int) -> float:
    """nf_rule units charged on the server host per tcp_crr connection, over whole, completed
    connections: the client stops at 12 ms, the run goes on until every one is closed."""
    live = start(experiment("tcp_crr", p, 1.0, stop_s=0.012))
    live.sim.run(0.02)
    units = live.cluster.hosts[1].stage("nf_rule").packets
    return units / live.iptables(1).conntrack.inserted  # type: ignore[union-attr]


def rule_units_per_transaction(p: int) -> float:
    """nf_rule units on the server host per tcp_rr transaction once the connection is up."""
    live = start(experiment("tcp_rr", p, 1.0))
    live.sim.run(0.004)
    stage = live.cluster.hosts[1].stage("nf_rule")
    u0, t0 = stage.packets, sum(f.stats.transactions for f in live.flows)
    live.sim.run(0.044)  # 40 ms: a transaction cut by the window's ends counts for little
    return (stage.packets - u0) / (sum(f.stats.transactions for f in live.flows) - t0)


@pytest.mark.parametrize("p", [1, 301, 1001])
def test_a_new_connection_walks_two_rules_per_published_port(p: int) -> None:
    base = rule_units_per_connection(1)
    assert rule_units_per_connection(p) == pytest.approx(base + RULES_WALKED_PER_PORT * (p - 1), abs=1e-9)


def test_established_traffic_does_not_pay_for_published_ports() -> None:
    """tcp_rr on one long connection: the same nf_rule units per transaction with 1 or 1001
    published ports (the replies of the container skip the DOCKER rules for one rule)."""
    one = rule_units_per_transaction(1)
    assert rule_units_per_transaction(1001) == pytest.approx(one, rel=0.02)
    assert one < 6  # a handful of rules per request and response, not hundreds


def test_connection_rate_falls_by_the_cost_of_the_rules_walked() -> None:
    """1/rate grows by 2 × nf_rule × (P - 1): the SYN's walk is on the serial path of every
    connection.  And the rate of established round trips does not move."""
    rule_s = load_profile("default").cost("nf_rule").per_packet_s
    rates = {}
    for p in (1, 2001):
        out = simulate(experiment("tcp_crr", p, 0.05))
        rates[p] = float(out.flows["connections"].sum()) / out.window_s
    predicted = RULES_WALKED_PER_PORT * 2000 * rule_s
    assert 1 / rates[2001] - 1 / rates[1] == pytest.approx(predicted, rel=0.2)
    assert rates[2001] < 0.85 * rates[1]
    rr = {p: float(simulate(experiment("tcp_rr", p, 0.02)).flows["transactions"].sum()) for p in (1, 2001)}
    assert rr[2001] == pytest.approx(rr[1], abs=1)  # the same round trips, +-1 at the window edge


def test_rules_behind_a_jump_cost_one_rule_to_packets_the_jump_does_not_match() -> None:
    """The netfilter mechanism on its own: 500 ACCEPTs behind ``-o docker0 -j DOCKER``."""
    sim = Sim(seed=0)
    host = Host(sim, "h", cores=1)
    nf = Netfilter(host, "nf", Conntrack(sim, "ct"))
    for k in range(500):
        nf.append("filter", "FORWARD", Rule("ACCEPT", proto=PROTO_TCP, dport=20000 + k, out_if="docker0"),
                  jump=Rule(out_if="docker0"))
    nf.append("filter", "FORWARD", Rule("ACCEPT", in_if="docker0"))
    chain = nf.chain("filter", "FORWARD")

    def walk(dport: int, in_if: str, out_if: str) -> int:
        before = chain.rules_evaluated
        pkt = sim.new_packet(FlowKey(ip("10.0.0.1"), ip("172.17.0.2"), PROTO_TCP, 40000, dport), 0, 66)
        pkt.core = host.cpus.cores[0]
        assert nf.forward(pkt, _Dev(in_if), _Dev(out_if))
        return chain.rules_evaluated - before

    assert walk(20499, "eth0", "docker0") == 500  # enters the chain, matches its last rule
    assert walk(20000, "eth0", "docker0") == 1
    assert walk(20499, "docker0", "eth0") == 2  # the jump (not taken) + the rule after it


class _Dev:
    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
