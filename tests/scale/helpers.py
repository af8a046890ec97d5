"""A steppable simulation: what :func:`perfsim.experiment.simulate.simulate` builds, kept open.

``simulate`` runs an :class:`Experiment` to its end and returns frames; the scale tests also
need to look at the kernel tables *while* the run goes on (when did the first drop happen,
how many entries are live now).  :func:`start` builds the same cluster, mode, published ports
and flows from the same public pieces, and leaves the stepping to the test.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.components.conntrack import Conntrack
from perfsim.components.netfilter import Netfilter
from perfsim.core.packet import PROTO_TCP, PROTO_UDP
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.experiment.simulate import Experiment, FlowPlan, cluster_profile
from perfsim.topology.base import ModeNetwork
from perfsim.topology.cluster import Cluster, build_cluster
from perfsim.topology.modes import MODES
from perfsim.transport.workloads import Flow, start_workload


@dataclass
class Live:
    """A built, running experiment."""

    sim: Sim
    cluster: Cluster
    net: ModeNetwork
    flows: list[Flow]

    def conntrack(self, h: int) -> Conntrack:
        nf = self.cluster.roots[h].nf
        assert nf is not None
        assert nf.conntrack is not None
        return nf.conntrack

    def iptables(self, h: int) -> Netfilter:
        nf = self.cluster.roots[h].nf
        assert nf is not None
        return nf

    def connections(self) -> int:
        """Connections the clients have completed the handshake of, since the start."""
        return sum(f.stats.connections for f in self.flows)

    def drops(self, reason: str) -> dict[str, int]:
        """Drops so far with ``reason``, by site."""
        return {site: n for (site, r), n in self.sim.drops.items() if r == reason}


def build(exp: Experiment) -> tuple[Sim, Cluster, ModeNetwork]:
    """The cluster and mode of ``exp`` (published ports included), nothing started."""
    sim = Sim(seed=exp.seed, profile=cluster_profile(exp.cluster, load_profile(exp.profile)))
    cl = build_cluster(sim, exp.cluster)
    net = MODES[exp.mode].build(cl, exp.containers_per_host, **exp.mode_options)
    for slot, host_port, container_port, proto in exp.publish:
        net.publish(slot[0], slot[1], host_port, container_port, proto)  # type: ignore[attr-defined]
    return sim, cl, net


def start(exp: Experiment) -> Live:
    """Build ``exp`` and start its flows, as ``simulate`` does; nothing has run yet."""
    sim, cl, net = build(exp)
    flows = []
    for plan in exp.flows:
        proto = PROTO_TCP if plan.workload.startswith("tcp") else PROTO_UDP
        ip, port = net.target(plan.client, plan.server, plan.server_port, proto)
        flows.append(start_workload(
            sim, plan.workload, net.endpoint(*plan.client), net.endpoint(*plan.server), plan.message_size,
            server_port=plan.server_port, client_port=plan.client_port, connect_ip=ip, connect_port=port,
            start_s=plan.start_s, stop_s=plan.stop_s, rate_bps=plan.rate_bps,
        ))
    return Live(sim, cl, net, flows)


def one_to_one(workload: str, n: int, message_size: int, start_s: float = 0.0,
               stop_s: float | None = None) -> tuple[FlowPlan, ...]:
    """``n`` flows, container ``c`` of host 0 to container ``c`` of host 1 (port 5001 + c)."""
    return tuple(
        FlowPlan(workload, (0, c), (1, c), message_size, server_port=5001 + c, client_port=33000 + 2000 * c,
                 start_s=start_s, stop_s=stop_s)
        for c in range(n)
    )
