"""Scenario -> :class:`~perfsim.experiment.simulate.Experiment`, and the pre-flight check.

Placement: the containers of host ``h`` get container indices ``0, 1, ...`` in file order;
``containers_per_host`` is the largest count over the hosts (at least 1, rounded up to an even
number for mode ``container``, whose consecutive containers ``2k, 2k+1`` of a host share one
namespace, like a pod).  Hosts with fewer named containers get unnamed, idle ones.

Flows: workload ``w`` with ``streams = n`` becomes ``n`` :class:`FlowPlan` (group ``w.name``),
server ports ``port .. port + n - 1``, client ports ``32768 + (97 k mod 32768)`` for the
``k``-th flow of the scenario (unique), each starting at ``start_s`` plus a random offset in
[0, 50 µs) drawn from the seed, as separately launched netperf processes do.

:func:`check` validates what the model alone cannot: it loads the profile, builds the topology
(the mode's builder validates its options) and asks the mode for every flow's target — a mode
that cannot carry a flow (``none``, isolated user bridges, a host port allocated twice) raises
there, and the error is re-raised with the path of the offending entry in the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.core.packet import PROTO_TCP, PROTO_UDP
from perfsim.core.profile import load_profile
from perfsim.core.rng import RngStreams
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.experiment.config import DEFAULT_MESSAGE_BYTES
from perfsim.experiment.run import CLIENT_PORT_BASE, START_JITTER_S
from perfsim.experiment.simulate import Experiment, FlowPlan
from perfsim.scenario.model import Scenario
from perfsim.topology.base import ModeNetwork, Slot
from perfsim.topology.cluster import ClusterSpec, build_cluster
from perfsim.topology.modes import MODES
from perfsim.topology.user_bridge_mode import UserBridgeNetwork

PROTO_NUMBERS = {"tcp": PROTO_TCP, "udp": PROTO_UDP}
_GLOBAL_FIELDS = {"hosts": "hosts.count", "mtu_bytes": "hosts.mtu_bytes", "containers_per_host": "containers"}


@dataclass(frozen=True, slots=True)
class Checked:
    """What :func:`check` found: the compiled experiment and its size."""

    experiment: Experiment
    containers: int
    flows: int


def slots(scenario: Scenario) -> dict[str, Slot]:
    """Container name -> (host, container index)."""
    per_host: dict[int, int] = {}
    out: dict[str, Slot] = {}
    for c in scenario.containers:
        k = per_host.get(c.host, 0)
        out[c.name] = (c.host, k)
        per_host[c.host] = k + 1
    return out


def containers_per_host(scenario: Scenario) -> int:
    counts: dict[int, int] = {}
    for c in scenario.containers:
        counts[c.host] = counts.get(c.host, 0) + 1
    n = max(counts.values(), default=1)
    if scenario.network.mode == "container" and n % 2:
        n += 1
    return n


def cluster_spec(scenario: Scenario) -> ClusterSpec:
    h = scenario.hosts
    try:
        return ClusterSpec(
            hosts=h.count, cores=h.cores, nic_rate_bps=h.nic_gbps * 1e9, fabric_delay_s=scenario.fabric.delay_us * 1e-6,
            mtu_bytes=h.mtu_bytes, offloads=h.offloads, rps=h.rps, nic_qdisc=h.qdisc,
            nic_queue_packets=scenario.fabric.queue_packets,
            nf_conntrack_max=h.nf_conntrack_max, gc_thresh3=h.gc_thresh3, testbed=h.testbed,
            scheduler=None if h.scheduler == "auto" else h.scheduler,
        )
    except ConfigError as exc:  # the model's limits are the same; kept as a safety net
        raise ConfigError(f"hosts.{exc.field}", exc.value, exc.allowed) from None


def flow_plans(scenario: Scenario) -> tuple[tuple[int, FlowPlan], ...]:
    """(workload index, plan) of every flow, in file order."""
    where = slots(scenario)
    total = sum(w.streams for w in scenario.workloads)
    starts = RngStreams(scenario.seed).stream("scenario.start").uniform(0.0, START_JITTER_S, total)
    out: list[tuple[int, FlowPlan]] = []
    k = 0
    for i, w in enumerate(scenario.workloads):
        size = w.message_size if w.message_size is not None else DEFAULT_MESSAGE_BYTES[w.type]
        for s in range(w.streams):
            out.append((i, FlowPlan(
                w.type, where[w.client], where[w.server], size, server_port=w.port + s,
                client_port=CLIENT_PORT_BASE + (97 * k) % 32768, start_s=float(w.start_s + starts[k]),
                stop_s=None if w.stop_s is None else float(w.stop_s), rate_bps=float(w.rate_bps), group=w.name,
            )))
            k += 1
    return tuple(out)


def compile_scenario(scenario: Scenario) -> Experiment:
    """The Experiment that :func:`perfsim.experiment.simulate.simulate` runs (no topology check)."""
    where = slots(scenario)
    publish = tuple(
        (where[p.container], p.host_port, p.container_port, PROTO_NUMBERS[p.proto]) for p in scenario.network.publish
    )
    return Experiment(
        cluster=cluster_spec(scenario), mode=scenario.network.mode, containers_per_host=containers_per_host(scenario),
        flows=tuple(p for _, p in flow_plans(scenario)), duration_s=float(scenario.duration_s),
        warmup_s=float(scenario.warmup_s), seed=scenario.seed, profile=scenario.profile,
        mode_options=dict(scenario.network.options), publish=publish,
    )


def _check_isolation(net: ModeNetwork, client: Slot, server: Slot, path: str, name: str) -> None:
    """User bridges on one host are isolated (DOCKER-ISOLATION): the mode would build the
    flow and drop every packet; refuse it up front instead.  Across hosts the flow goes through
    a published port and is not affected."""
    if not isinstance(net, UserBridgeNetwork) or client[0] != server[0] or client == server:
        return
    mine = {a.bridge for a in net.attachments[client]}
    theirs = [a.bridge for a in net.attachments[server]]
    if mine.isdisjoint(theirs):
        raise ConfigError(path, name, f"a container on a network the client is attached to (client on "
                          f"{', '.join(sorted(mine))}, server on {', '.join(theirs)}; Docker's isolation rules "
                          "drop traffic between user networks: set network.options.attach_both: true)")


def check(scenario: Scenario) -> Checked:
    """Validate ``scenario`` completely without simulating; return the compiled experiment.

    Raises ConfigError naming the path in the file: ``profile``, ``network.options.<key>``,
    ``network.publish[i].host_port``, ``workloads[i].server`` (unreachable), ``workloads[i].port``
    (a server port already bound in the same namespace).
    """
    try:
        load_profile(scenario.profile)
    except ConfigError as exc:
        raise ConfigError("profile", scenario.profile, exc.allowed) from None
    exp = compile_scenario(scenario)
    cl = build_cluster(Sim(seed=scenario.seed), exp.cluster)
    try:
        net = MODES[exp.mode].build(cl, exp.containers_per_host, **exp.mode_options)
    except ConfigError as exc:
        name = exc.field.replace("mode_options.", "network.options.") if exc.field.startswith("mode_options.") \
            else _GLOBAL_FIELDS.get(exc.field, f"network.{exc.field}")
        raise ConfigError(name, exc.value, exc.allowed) from None
    for i, (slot, host_port, container_port, proto) in enumerate(exp.publish):
        try:
            net.publish(slot[0], slot[1], host_port, container_port, proto)  # type: ignore[attr-defined]
        except ConfigError as exc:
            raise ConfigError(f"network.publish[{i}].host_port", host_port, exc.allowed) from None
    bound: dict[tuple[str, int, int], int] = {}
    plans = flow_plans(scenario)
    for i, plan in plans:
        w = scenario.workloads[i]
        proto = PROTO_TCP if plan.workload.startswith("tcp") else PROTO_UDP
        key = (net.endpoint(*plan.server).ns.name, proto, plan.server_port)
        if bound.setdefault(key, i) != i:
            raise ConfigError(f"workloads[{i}].port", w.port, f"a port range not overlapping that of "
                              f"workloads[{bound[key]}] on the same network namespace ({key[0]})")
        try:
            net.target(plan.client, plan.server, plan.server_port, proto)
        except ConfigError as exc:
            raise ConfigError(f"workloads[{i}].server", w.server,
                              f"a server {w.client} can reach in mode {exp.mode}: {exc.field}: {exc.allowed}") from None
        _check_isolation(net, plan.client, plan.server, f"workloads[{i}].server", w.server)
    return Checked(exp, len(scenario.containers), len(plans))
