"""What one flow costs, learned from the packet-level model itself.

The fluid engine does not restate the datapath: for each *class* of flows (workload, message
size, whether client and server share a host or a container, offered rate) it runs **one** flow
of that class through the DES — the same mode builder, cluster hardware, cost profile, seed and
run length as the scenario — and reads off, over the measurement window:

* the CPU time each core spent per unit of the flow's work (per payload byte delivered for the
  stream workloads, per transaction for request/response and connect/request/response), by
  *role*: the client's application core, the server's application core, a core chosen by
  receive steering (RSS at a NIC, RPS at a veth) for a given 5-tuple, or a fixed core;
* the transmission time of each NIC link (host transmit, switch port towards a host) per unit;
* conntrack entries the flow creates per unit on each host (connection workloads);
* the flow's own rate alone (its cap: window, pacing, the gaps of a request/response loop) and
  its latency.

To tell the roles apart the probe cluster has :data:`PROBE_CORES` cores per host and every
distinct steered 5-tuple is given its own core (the probe's RSS is replaced by a recorder);
the engine then maps each role to the real core of each real flow (:mod:`perfsim.fluid.keys`).
Costs per unit are assumed not to change when roles share a core or when flows share one
(GSO/GRO batch sizes, ACK ratios are those of the lone flow) — with one exception, measured
rather than assumed: **TCP streams whose client application core serves other flows too**
(:attr:`FlowClass.app_core_shared`).  Where a TCP segment's receive processing runs depends on
timing: if the reading application holds the socket when the segment arrives, the segment
waits in the socket backlog and the reader's core processes it and sends the ACK
(``release_sock``); otherwise the softirq core does, at once.  A lone flow's reader is often
still copying the previous skb when the next arrives; flows that take turns on their sending
core arrive in bursts between which the reader has gone idle, so the work moves to the
softirq core.  Such classes are probed with :data:`SHARED_PROBE_FLOWS` flows sharing their
client and server containers (so their application cores), and take their costs per unit
from that run (their rate cap and latency alone still from the lone flow).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from perfsim.components.link import Link
from perfsim.components.nic import Nic
from perfsim.core.packet import PROTO_TCP, PROTO_UDP, FlowKey
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.components.vxlan import VXLAN_PORT
from perfsim.errors import ConfigError
from perfsim.fluid.keys import KeyTemplate, learn_template
from perfsim.topology.cluster import ClusterSpec, app_core_index, build_cluster
from perfsim.topology.modes import MODES
from perfsim.transport.workloads import start_workload

PROBE_CORES = 16
"""Cores per probe host: two application cores plus one per steered 5-tuple."""
PROBE_MAX_DURATION_S = 0.2
"""A longer run (the fluid engine's steady state may be asked for minutes) probes this long."""
PROBE_MAX_HOSTS = 8
PROBE_MAX_CONTAINERS = 128
FIRST_STEER_CORE = 4
PROBE_SERVER_PORT = 5001
AHEAD_PORT_BASE = 20000
"""Ports the probe publishes ahead of its own (:attr:`FlowClass.ports_ahead`)."""
PROBE_CLIENT_PORT = 32768
STREAM_WORKLOADS = ("tcp_stream", "udp_stream")
NEW_PORT_WORKLOADS = ("tcp_crr",)
"""Workloads whose client takes a new ephemeral port for every transaction: RSS spreads their
connections over all of a host's cores (role kind ``spread``)."""
PACED_FRACTION = 0.97
"""An unpaced UDP probe that lost datagrams is re-run paced at this fraction of its delivered
rate, so the costs per byte are those of datagrams that arrive (the fluid engine assumes a
sender that does not overrun its receiver)."""
MAX_EXTRA_WARMUP_S = 1.0
SHARED_PROBE_FLOWS = 2
"""Flows of a probe that measures the costs of flows taking turns on application cores: two
already interleave their work as many do (the DES's costs per byte with 2 and with 4 TCP
streams per core differ by under 2 %)."""


@dataclass(frozen=True)
class FlowClass:
    """Flows that cost the same: ``relation`` is ``cross-host``, ``same-host`` (two containers
    of one host) or ``same-container`` (loopback)."""

    workload: str
    message_size: int
    relation: str
    rate_bps: float = 0.0
    server_sends: str = "no"
    """Whether the server's container is the client of some flow — ``no``, ``elsewhere``, or
    ``to-client-host`` (towards a container on this flow's client host).  Its own traffic
    teaches its MAC to its host's bridge and, arriving there, to the bridge of that host;
    a one-way stream towards a MAC a bridge has not learned is flooded to every port, as Linux
    does."""
    ports_ahead: int = 0
    """Published ports whose DOCKER-chain rules come before this flow's own on its server's host
    (the scenario's flows publish theirs there too): a packet that conntrack has not yet seen
    answered — every one of a one-way UDP stream — walks them all."""
    server_port: int = 5001
    """The port the probe flow's server listens on: a scenario's own port where published ports
    exist (a DNAT rule's position in the DOCKER chain sets what a new connection pays)."""
    app_core_shared: bool = False
    """Whether the client's application core runs the client of another flow too (see the
    module docstring: TCP streams are then probed :data:`SHARED_PROBE_FLOWS` at a time)."""


@dataclass(frozen=True)
class Role:
    """Where some of a flow's work runs: ``pool`` is ``client``/``server`` (that side's host) or
    ``shared`` (the testbed's one machine); ``kind`` is ``app`` (``side``'s application core),
    ``steer`` (the core RSS/RPS picks for ``template``), ``spread`` (``template`` changes with
    every connection's ephemeral port: evenly over the pool's cores) or ``fixed`` (core
    ``index``)."""

    pool: str
    kind: str
    side: str = ""
    template: KeyTemplate | None = None
    index: int = 0


@dataclass
class PathProbe:
    """The per-unit costs of one flow class (see the module docstring)."""

    cls: FlowClass
    unit: str
    """``byte`` (stream workloads) or ``transaction``."""
    rate_per_s: float
    """Units per second of the lone flow."""
    cores: list[tuple[Role, float]] = field(default_factory=list)
    """(role, CPU seconds per unit)."""
    links: list[tuple[str, str, float]] = field(default_factory=list)
    """(``client``/``server``, ``tx``/``rx``, link busy seconds per unit)."""
    conntrack: list[tuple[str, float]] = field(default_factory=list)
    """(``client``/``server``, conntrack entries inserted per unit) in the hosts' root namespaces."""
    bytes_per_unit: float = 1.0
    packets_per_unit: float = 0.0
    latency_mean_s: float = float("nan")
    latency_p50_s: float = float("nan")
    latency_p99_s: float = float("nan")
    stages: dict[str, float] = field(default_factory=dict)
    """CPU seconds per unit by stage (all hosts)."""
    symbols: dict[str, int] = field(default_factory=dict)
    """The probe flow's identifiers (for the key templates)."""
    addressing: tuple[int, int, int] = (0, 0, 0)
    """Container address = a + b × host + c × container (checked on the probe's 2 × 2 slots)."""
    wall_s: float = 0.0


def probe_class(
    cls: FlowClass,
    *,
    cluster: ClusterSpec,
    containers_per_host: int,
    mode: str,
    mode_options: dict[str, Any],
    profile: str,
    seed: int,
    duration_s: float,
    warmup_s: float,
    publish: tuple[Any, ...] = (),
) -> PathProbe:
    """Run one flow of ``cls`` through the DES, on the scenario's topology cut to
    :func:`probe_size` (with the ``publish`` entries whose container it has), and measure its
    per-unit costs."""
    size = probe_size(cluster, containers_per_host)
    if duration_s > PROBE_MAX_DURATION_S:  # costs per unit settle in tens of ms
        duration_s, warmup_s = PROBE_MAX_DURATION_S, PROBE_MAX_DURATION_S * min(warmup_s / duration_s, 0.5)
    result = _run(cls, cluster, size, mode, mode_options, profile, seed, duration_s, warmup_s, publish)
    if cls.workload not in STREAM_WORKLOADS and cluster.cores < PROBE_CORES:
        # A transaction's round trip depends on which of its steps share a core (an idle core
        # must be woken first): its rate and latency alone come from the real core count.
        alone = _run(cls, cluster, size, mode, mode_options, profile, seed, duration_s, warmup_s, publish,
                     cores=cluster.cores).probe
        p = result.probe
        p.rate_per_s, p.latency_mean_s = alone.rate_per_s, alone.latency_mean_s
        p.latency_p50_s, p.latency_p99_s = alone.latency_p50_s, alone.latency_p99_s
        p.wall_s += alone.wall_s
        return p
    if cls.workload == "tcp_stream" and cls.app_core_shared:
        shared = _run(cls, cluster, size, mode, mode_options, profile, seed, duration_s, warmup_s, publish,
                      cores=PROBE_CORES * SHARED_PROBE_FLOWS, flows=SHARED_PROBE_FLOWS).probe
        p = result.probe
        p.cores, p.links, p.conntrack, p.stages = shared.cores, shared.links, shared.conntrack, shared.stages
        p.packets_per_unit = shared.packets_per_unit
        p.wall_s += shared.wall_s
        return p
    if cls.workload == "udp_stream" and cls.rate_bps == 0.0 and result.lost:
        paced = replace(cls, rate_bps=result.probe.rate_per_s * 8 * PACED_FRACTION)
        again = _run(paced, cluster, size, mode, mode_options, profile, seed, duration_s, warmup_s, publish)
        again.probe.cls = cls
        again.probe.rate_per_s = result.probe.rate_per_s
        again.probe.wall_s += result.probe.wall_s
        return again.probe
    return result.probe


@dataclass
class _Outcome:
    probe: PathProbe
    lost: bool


def probe_size(cluster: ClusterSpec, containers_per_host: int) -> tuple[int, int]:
    """(hosts, containers per host) of the probe topology: the scenario's own, up to
    :data:`PROBE_MAX_HOSTS` hosts and :data:`PROBE_MAX_CONTAINERS` containers in all (a flat
    overlay's static tables grow as containers², see :mod:`perfsim.fluid`)."""
    hosts = min(cluster.hosts, PROBE_MAX_HOSTS)
    return hosts, max(1, min(containers_per_host, PROBE_MAX_CONTAINERS // hosts))


def _slots(cls: FlowClass) -> tuple[tuple[int, int], tuple[int, int]]:
    """(client slot, server slot) of the probe flow."""
    if cls.relation == "cross-host":
        return (0, 0), (1, 0)
    if cls.relation == "same-host":
        return (0, 0), (0, 1)
    return (0, 0), (0, 0)


def _run(
    cls: FlowClass, cluster: ClusterSpec, size: tuple[int, int], mode: str, mode_options: dict[str, Any], profile: str,
    seed: int, duration_s: float, warmup_s: float, publish: tuple[Any, ...] = (), cores: int = PROBE_CORES,
    flows: int = 1,
) -> _Outcome:
    """The probe run: ``flows`` flows of ``cls`` between the same two containers (client and
    server ports :data:`PROBE_CLIENT_PORT` + i and ``cls.server_port`` + i).  With ``cores`` of
    at least :data:`PROBE_CORES` every steered 5-tuple gets a core of its own; the costs per
    unit are those of all the flows together, the latency that of the first."""
    import time

    from perfsim.experiment.simulate import cluster_profile

    wall0 = time.perf_counter()
    client, server = _slots(cls)
    spec = replace(cluster, hosts=size[0], cores=cores)
    sim = Sim(seed=seed, profile=cluster_profile(cluster, load_profile(profile)))
    cl = build_cluster(sim, spec)
    net = MODES[mode].build(cl, size[1], **mode_options)
    for slot, host_port, container_port, proto_ in publish:
        if slot[0] < size[0] and slot[1] < size[1]:
            net.publish(slot[0], slot[1], host_port, container_port, proto_)  # type: ignore[attr-defined]
    pools = _unique_pools(cl)
    steered: dict[tuple[str, FlowKey], int] = {}
    proto = PROTO_TCP if cls.workload.startswith("tcp") else PROTO_UDP
    if cls.relation == "cross-host" and hasattr(net, "publish"):
        for j in range(cls.ports_ahead):
            net.publish(server[0], server[1], AHEAD_PORT_BASE + j, AHEAD_PORT_BASE + j, proto)
    targets = [net.target(client, server, cls.server_port + i, proto) for i in range(flows)]
    connect_port = targets[0][1]
    fixed_ports = {cls.server_port, connect_port, VXLAN_PORT}
    for pool in pools if cores >= PROBE_CORES else ():
        pool.rss = _recorder(pool, steered, fixed_ports if cls.workload in NEW_PORT_WORKLOADS else None)  # type: ignore[method-assign]
    cep, sep = net.endpoint(*client), net.endpoint(*server)
    started = [start_workload(
        sim, cls.workload, cep, sep, cls.message_size, server_port=cls.server_port + i,
        client_port=PROBE_CLIENT_PORT + i, connect_ip=targets[i][0], connect_port=targets[i][1],
        rate_bps=cls.rate_bps, measure_from_s=0.0,
    ) for i in range(flows)]
    learner = _learning_peer(cls, client, server, size)
    if learner is not None:
        # one datagram from the server's container before the window: what its own flows teach
        start_workload(sim, "udp_stream", sep, net.endpoint(*learner), 64, server_port=cls.server_port + 1,
                       client_port=PROBE_CLIENT_PORT + 1, rate_bps=64 * 8 / (warmup_s / 2), stop_s=warmup_s / 2,
                       measure_from_s=0.0)
    links = _links(cl, client[0], server[0])
    cts = {side: cl.roots[h].nf.conntrack for side, h in (("client", client[0]), ("server", server[0]))
           if cl.roots[h].nf is not None and cl.roots[h].nf.conntrack is not None}
    if client[0] == server[0]:
        cts.pop("server", None)

    def snap() -> dict[str, Any]:
        now = sim.now
        return {
            "cores": {(p.host, c.index): c.work_done(now) for p in pools for c in p.cores},
            "links": {k: link.work_done(now) for k, link in links.items()},
            "ct": {k: ct.inserted for k, ct in cts.items()},
            "stages": {s: st.cpu_s for h in cl.hosts for s, st in h.stages.items()},
            "dropped": sim.dropped,
        }

    t = warmup_s
    sim.run(t)
    tick = max(warmup_s / 4, 1e-3)
    while not all(f.stats.progressed for f in started) and t < warmup_s + MAX_EXTRA_WARMUP_S:
        t += tick
        sim.run(t)
    if not all(f.stats.progressed for f in started):
        raise ConfigError("mode", mode, f"a mode that carries a {cls.workload} flow ({cls.relation}): "
                          "the fluid engine's probe flow delivered nothing")
    for f in started:
        f.stats.restart(t)
    before = snap()
    window = duration_s - warmup_s
    sim.run(t + window)
    after = snap()
    rows = [f.summary(t + window) for f in started]
    row = rows[0]
    unit = "byte" if cls.workload in STREAM_WORKLOADS else "transaction"
    units = float(sum(r["bytes"] if unit == "byte" else r["transactions"] for r in rows))
    if units <= 0:
        raise ConfigError("duration_s", duration_s, f"long enough for one {cls.workload} transaction of the "
                          "fluid engine's probe flow in the measurement window")
    probe = PathProbe(cls=cls, unit=unit, rate_per_s=units / flows / window)
    sides = {("h%d" % client[0]): "client", ("h%d" % server[0]): "server"} if client[0] != server[0] else {
        f"h{client[0]}": "client"}
    app = {("client", app_core_index(spec, *client)): "client", ("server", app_core_index(spec, *server)): "server"}
    symbols = _symbols(cl, net, client, server, connect_port)
    templates = _templates(steered, [dict(symbols, cport=PROBE_CLIENT_PORT + i, sport=targets[i][1])
                                     for i in range(flows)], proto)
    for (pool_name, index), work in after["cores"].items():
        spent = work - before["cores"][(pool_name, index)]
        if spent <= 0:
            continue
        pool_role = "shared" if cluster.testbed else sides[pool_name]
        role = _role(pool_role, pool_name, index, app, templates, client, server,
                     cls.workload in NEW_PORT_WORKLOADS)
        probe.cores.append((role, spent / units))
    probe.cores = _merged(probe.cores)
    for (side, direction), busy in after["links"].items():
        spent = busy - before["links"][(side, direction)]
        if spent > 0:
            probe.links.append((side, direction, spent / units))
    for side, n in after["ct"].items():
        created = n - before["ct"][side]
        if created > 0:
            probe.conntrack.append((side, created / units))
    probe.stages = {s: (after["stages"][s] - before["stages"][s]) / units for s in after["stages"]
                    if after["stages"][s] > before["stages"][s]}
    probe.bytes_per_unit = 1.0 if unit == "byte" else float(sum(r["bytes"] for r in rows)) / units
    probe.packets_per_unit = float(sum(r["packets"] for r in rows)) / units
    probe.latency_mean_s = float(row["latency_mean_s"])
    probe.latency_p50_s = float(row["latency_p50_s"])
    probe.latency_p99_s = float(row["latency_p99_s"])
    probe.symbols = symbols
    probe.addressing = addressing(cluster, mode, mode_options)
    probe.wall_s = time.perf_counter() - wall0
    return _Outcome(probe, lost=after["dropped"] > before["dropped"])


def _learning_peer(cls: FlowClass, client: tuple[int, int], server: tuple[int, int],
                   size: tuple[int, int]) -> tuple[int, int] | None:
    """Where the probe's server container sends its one datagram (None: it sends nothing): to
    the client for ``to-client-host``; for ``elsewhere``, to a third host or, lacking one, to
    another container of its own host."""
    if cls.server_sends == "no" or server == client:
        return None
    if cls.server_sends == "to-client-host" or cls.relation != "cross-host":
        return client
    hosts, per_host = size
    if hosts >= 3:
        return (2, 0)
    return (server[0], (server[1] + 1) % per_host) if per_host >= 2 else None


def _unique_pools(cl: Any) -> list[Any]:
    seen: dict[int, Any] = {}
    for h in cl.hosts:
        seen.setdefault(id(h.cpus), h.cpus)
    return list(seen.values())


def _recorder(pool: Any, steered: dict[tuple[str, FlowKey], int], fixed_ports: set[int] | None) -> Any:
    """A replacement for ``pool.rss`` giving each distinct 5-tuple a core of its own.  With
    ``fixed_ports`` (a workload that opens a connection per transaction from the next ephemeral
    port), every other port is read as the client's port: one role for all the connections."""
    n = len(pool.cores)

    def rss(key: FlowKey) -> Any:
        if fixed_ports is not None:
            key = FlowKey(key.src_ip, key.dst_ip, key.proto,
                          key.sport if key.sport in fixed_ports or key.sport == 0 else PROBE_CLIENT_PORT,
                          key.dport if key.dport in fixed_ports or key.dport == 0 else PROBE_CLIENT_PORT)
        idx = steered.get((pool.host, key))
        if idx is None:
            used = sum(1 for (p, _k) in steered if p == pool.host)
            idx = FIRST_STEER_CORE + used
            if idx >= n:
                raise ConfigError("fluid probe", f"{used} steered 5-tuples on {pool.host}",
                                  f"at most {n - FIRST_STEER_CORE} per host")
            steered[(pool.host, key)] = idx
        return pool.cores[idx]

    return rss


def _links(cl: Any, client_host: int, server_host: int) -> dict[tuple[str, str], Link]:
    if cl.switch is None:
        return {}
    out: dict[tuple[str, str], Link] = {}
    for side, h in (("client", client_host), ("server", server_host)):
        nic = cl.nics[h]
        if isinstance(nic, Nic):
            out[(side, "tx")] = nic.tx_link
            out[(side, "rx")] = cl.switch.links[h]
    return out


def _symbols(cl: Any, net: Any, client: tuple[int, int], server: tuple[int, int], connect_port: int) -> dict[str, int]:
    return {
        "cip": net.endpoint(*client).ip, "sip": net.endpoint(*server).ip,
        "chip": cl.host_ip(client[0]), "ship": cl.host_ip(server[0]),
        "cport": PROBE_CLIENT_PORT, "sport": connect_port,
    }


def _templates(steered: dict[tuple[str, FlowKey], int], symbols: list[dict[str, int]],
               proto: int) -> dict[tuple[str, int], KeyTemplate]:
    """The template of every steered 5-tuple, explained by the identifiers of the probe flow it
    belongs to: the first flow whose client port it uses (a 5-tuple no client port explains —
    an IP-in-IP outer header — is the same for all of them)."""
    out = {}
    for (pool, key), idx in steered.items():
        learned = [learn_template(key, s, proto) for s in symbols]
        out[(pool, idx)] = next((t for t in learned if t.uses("cport")), learned[0])
    return out


def _merged(cores: list[tuple[Role, float]]) -> list[tuple[Role, float]]:
    """One entry per role (the probe flows' steered 5-tuples of one template add up)."""
    total: dict[Role, float] = {}
    for role, cost in cores:
        total[role] = total.get(role, 0.0) + cost
    return list(total.items())


def _role(pool_role: str, pool_name: str, index: int, app: dict[tuple[str, int], str],
          templates: dict[tuple[str, int], KeyTemplate], client: tuple[int, int], server: tuple[int, int],
          spread: bool) -> Role:
    t = templates.get((pool_name, index))
    if t is not None:
        return Role(pool_role, "spread" if spread and t.uses("cport") else "steer", template=t)
    # the application cores: on a cluster the side's own host; on the testbed the shared pool
    for side in ("client", "server"):
        if (side, index) in app and (pool_role in ("shared", side) or client[0] == server[0]):
            return Role(pool_role, "app", side=side)
    return Role(pool_role, "fixed", index=index)


def validate_size(cluster: ClusterSpec, containers_per_host: int, mode: str, mode_options: dict[str, Any]) -> None:
    """The checks the mode's builder makes on the full cluster, without building it: the
    overlay's and the routed modes' address room for every host, containers per host."""
    from types import SimpleNamespace

    from perfsim.errors import check_number
    from perfsim.topology.overlay_mode import overlay_subnet
    from perfsim.topology.routed_mode import MAX_CONTAINERS, pod_subnet

    if mode == "overlay":
        overlay_subnet(cluster.hosts, mode_options.get("subnet"))
        check_number("containers_per_host", containers_per_host, low=1, high=253, integer=True)
    elif mode in ("routed", "ipip"):
        pod_subnet(SimpleNamespace(hosts=range(cluster.hosts)), mode, mode_options.get("pod_cidr"))  # type: ignore[arg-type]
        check_number("containers_per_host", containers_per_host, low=1, high=MAX_CONTAINERS, integer=True)
    else:  # no table grows with the hosts: one host with every container is cheap to build
        cl = build_cluster(Sim(), replace(cluster, hosts=1, cores=1, testbed=False))
        MODES[mode].build(cl, containers_per_host, **mode_options)


def addressing(cluster: ClusterSpec, mode: str, mode_options: dict[str, Any]) -> tuple[int, int, int]:
    """(a, b, c) with container address = a + b·host + c·container, read from the mode's
    builder on two hosts of two containers (checked on the fourth)."""
    hosts = min(cluster.hosts, 2)
    cl = build_cluster(Sim(), replace(cluster, hosts=hosts, cores=1))
    eps = MODES[mode].build(cl, 2, **mode_options).endpoints
    a = eps[(0, 0)].ip
    c = eps[(0, 1)].ip - a if (0, 1) in eps else 0
    b = eps[(1, 0)].ip - a if (1, 0) in eps else 0
    if (1, 1) in eps and eps[(1, 1)].ip != a + b + c:
        raise ConfigError("engine", "fluid", f"a mode whose container addresses grow by a fixed step per host and "
                          f"per container (mode {mode} does not; use --engine des)")
    return int(a), int(b), int(c)

