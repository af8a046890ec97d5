"""The flow-level (fluid) engine: the DES's topology and costs reduced to a capacity problem.

Model
-----
1. Flows are grouped into classes (:class:`perfsim.fluid.probe.FlowClass`); one flow of each
   class is run through the packet-level DES (:func:`perfsim.fluid.probe.probe_class`), which
   yields its costs per unit of work by role (application cores, steered cores, NIC links,
   conntrack entries) and its rate alone.
2. Every flow's roles are mapped to *its* resources: its hosts' application cores
   (:func:`perfsim.topology.cluster.app_core_index`), the core its 5-tuples hash to under each
   host's RSS key (:mod:`perfsim.fluid.keys`, the same hash and keys as the DES), its hosts'
   NIC transmit link and switch port.  This gives a sparse ``resources × flows`` demand matrix.
3. Rates are the max-min fair share (:func:`perfsim.fluid.maxmin.maxmin_rates`) with each core
   and link a capacity of 1 busy-second per second, each flow capped by its rate alone.
   A host's conntrack table is a resource too: entries live ``tcp_time_wait_s`` after a
   connection closes, so at most ``nf_conntrack_max / tcp_time_wait_s`` entries per second
   can be created in steady state — or ``nf_conntrack_max / duration_s`` in a run shorter
   than that lifetime, whose table starts empty; beyond that the kernel drops new connections
   ("nf_conntrack: table full, dropping packet").
4. Request/response flows are closed loops: a flow's rate is ``1 / RTT`` where the RTT is the
   lone flow's plus an M/M/1 wait ``d·v/(1-v)`` at each resource it uses (``d`` its demand per
   transaction, ``v`` the utilisation by the other flows), iterated to a fixed point.  Latency
   of every flow is its lone-flow latency plus that wait (stream workloads: per segment).
5. TCP stream senders are CPU-bound and yield: on a core where one flow's receive side meets
   another flow's sending application, the receiving work runs at its flow's rate and the
   senders share what it leaves (:func:`_senders_yield`).  Unpaced UDP senders overrun their
   receivers: softirq work first, at the offered rate (:func:`_greedy_udp`; with such flows
   present TCP senders share max-min).  A host that must reach more peers than
   ``gc_thresh3`` leaves the flows to the last ones without traffic
   (:func:`_neighbour_overflow`).

What it does not have: transients (slow start, socket buffers filling, table fill-up over
time: its results are the steady state), TCP loss and retransmission, latency distributions
(p99 is the lone flow's p99 plus the same wait).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from perfsim.components.conntrack import ConntrackTimeouts
from perfsim.core.rng import RngStreams
from perfsim.errors import ConfigError
from perfsim.fluid.flows import FlowSet
from perfsim.fluid.keys import hash_keys, rss_cores
from perfsim.fluid.maxmin import checked_matrices, maxmin_rates, maxmin_rates_checked
from perfsim.fluid.probe import PROBE_SERVER_PORT, FlowClass, PathProbe, Role, probe_class, validate_size
from perfsim.topology.cluster import FABRIC_NET, ClusterSpec, app_core_index

RR_ITERATIONS = 40
"""At most this many steps of the closed loops' fixed point (matrix products only)."""
GREEDY_ITERATIONS = 5
"""At most this many steps of the greedy UDP senders' fixed point (a max-min solve each)."""
FIXED_POINT_RTOL = 1e-3
"""A fixed point is reached when no flow's rate moves by more than this fraction in a step."""
MAX_UTILISATION = 0.99
"""Utilisation at which the M/M/1 wait is evaluated at most (a saturated resource's wait is
that of 99 %: the fluid model has no queue that grows without bound)."""


@dataclass
class FluidSolution:
    """Per-flow rates and latencies, per-resource utilisation, and the probes behind them."""

    flows: pd.DataFrame
    cores: pd.DataFrame
    links: pd.DataFrame
    conntrack: pd.DataFrame
    stages: pd.DataFrame
    drops: pd.DataFrame
    probes: list[PathProbe]
    window_s: float
    wall_s: float
    timings: dict[str, float] = field(default_factory=dict)


def solve(
    flows: FlowSet,
    *,
    cluster: ClusterSpec,
    containers_per_host: int,
    mode: str,
    mode_options: dict[str, Any] | None = None,
    profile: str = "default",
    seed: int = 0,
    duration_s: float = 0.05,
    warmup_s: float = 0.01,
    publish: tuple[tuple[tuple[int, int], int, int, int], ...] = (),
) -> FluidSolution:
    """Steady-state rates of ``flows`` on ``cluster`` in ``mode`` (see the module docstring).
    ``publish``: published ports ((host, container), host port, container port, protocol),
    applied to every probe topology where their container exists."""
    t0 = time.perf_counter()
    if len(flows) == 0:
        raise ConfigError("flows", 0, "at least one flow")
    mode_options = dict(mode_options or {})
    codes, classes = _flow_classes(flows, bool(publish), cluster)
    validate_size(cluster, containers_per_host, mode, mode_options)
    probes = [probe_class(c, cluster=cluster, containers_per_host=containers_per_host, mode=mode,
                          mode_options=mode_options, profile=profile, seed=seed, duration_s=duration_s,
                          warmup_s=warmup_s, publish=publish) for c in classes]
    t_probe = time.perf_counter()
    lay = _Layout(cluster)
    m = _assemble(flows, probes, codes, cluster, seed, lay)
    blocked, neigh_drops = _neighbour_overflow(flows, cluster, mode)
    m.cap[blocked] = 0.0
    demand = m.matrix("full", "soft", "send", "copy")
    capacity = np.ones(lay.n_res)
    lifetime_s = min((cluster.conntrack_timeouts or ConntrackTimeouts()).tcp_time_wait_s, duration_s)
    capacity[lay.n_timed:] = cluster.nf_conntrack_max / lifetime_s
    t_build = time.perf_counter()
    if m.greedy.any():
        rates, util = _greedy_udp(m.matrix("soft"), m.matrix("full", "send"), m.matrix("copy"), capacity, m.cap,
                                  m.greedy)
        _, wait = _closed_loop(demand, capacity, rates, m.unit_is_byte, probes, codes, lay.n_timed, solve=False)
    else:
        rates, wait = _closed_loop(demand, capacity, m.cap, m.unit_is_byte, probes, codes, lay.n_timed)
        # rr flows keep their closed-loop rates; streams may go up to their lone rate
        rates = _senders_yield(m.matrix("full"), m.matrix("send"), capacity, np.where(m.unit_is_byte, m.cap, rates),
                               rates)
        util = np.asarray(demand @ rates).ravel()
    t_solve = time.perf_counter()
    window = duration_s - warmup_s
    return FluidSolution(
        flows=_flow_frame(flows, probes, codes, rates, wait, window).assign(drops=blocked.astype(np.int64)),
        cores=_core_frame(util[:lay.n_core], cluster, window),
        links=_link_frame(util[lay.n_core:lay.n_timed], cluster, window),
        conntrack=_conntrack_frame(util[lay.n_timed:], cluster, lifetime_s),
        stages=_stage_frame(probes, codes, rates, window),
        drops=neigh_drops,
        probes=probes,
        window_s=window,
        wall_s=time.perf_counter() - t0,
        timings={"probe_s": t_probe - t0, "build_s": t_build - t_probe, "solve_s": t_solve - t_build},
    )


def _flow_classes(flows: FlowSet, by_port: bool, cluster: ClusterSpec) -> tuple[np.ndarray, list[FlowClass]]:
    """(class index of every flow, the classes).  ``by_port``: the server port is part of the
    class (published ports: a DNAT rule's position in the chain sets what a connection pays)."""
    n = len(flows)
    # TCP streams whose client's application core runs another flow's client (FlowClass.app_core_shared)
    app_core = app_core_index(cluster, flows.client_host, flows.client_container)
    pool = np.zeros(n, dtype=np.int64) if cluster.testbed else flows.client_host
    _, where, count = np.unique(pool * cluster.cores + app_core, return_inverse=True, return_counts=True)
    shared = (count[where] > 1) & (flows.workload == "tcp_stream")
    relation = np.where(flows.client_host != flows.server_host, "cross-host",
                        np.where(flows.client_container != flows.server_container, "same-host", "same-container"))
    span = int(max(flows.client_container.max(), flows.server_container.max())) + 1
    hosts = int(max(flows.client_host.max(), flows.server_host.max())) + 1
    server_slot = flows.server_host * span + flows.server_container
    client_slot = flows.client_host * span + flows.client_container
    # does the server's container send (as a client), and to a container on our client's host?
    to_client_host = np.isin(server_slot * hosts + flows.client_host, client_slot * hosts + flows.server_host)
    server_sends = np.where(to_client_host, "to-client-host", np.where(np.isin(server_slot, client_slot),
                                                                       "elsewhere", "no"))
    keys = pd.DataFrame({"workload": flows.workload, "message_size": flows.message_size,
                         "relation": relation, "rate_bps": flows.rate_bps, "server_sends": server_sends,
                         "server_port": flows.server_port if by_port else np.full(n, PROBE_SERVER_PORT),
                         "app_core_shared": shared})
    codes, uniques = pd.MultiIndex.from_frame(keys).factorize()
    ahead = _ports_ahead(flows)
    classes = [FlowClass(str(w), int(m), str(r), float(b), str(ss), ahead if r == "cross-host" else 0, int(port),
                         bool(sh))
               for (w, m, r, b, ss, port, sh) in uniques]
    return np.asarray(codes), classes


def _ports_ahead(flows: FlowSet) -> int:
    """How many other published ports precede a flow's own on its server's host, on average:
    a NAT mode publishes a port for every server reached across hosts ((n - 1) / 2 of a host's
    n come first)."""
    cross = flows.client_host != flows.server_host
    if not cross.any():
        return 0
    per_host = pd.DataFrame({"host": flows.server_host[cross], "c": flows.server_container[cross],
                             "port": flows.server_port[cross]}).drop_duplicates().groupby("host").size()
    return int((per_host.mean() - 1) // 2)


class _Layout:
    """Resource rows: every core of every CPU pool, then each host's NIC transmit link and
    switch port (none on the testbed), then each host's conntrack table."""

    k: int
    n_core: int
    n_link: int
    n_timed: int
    n_res: int

    def __init__(self, cluster: ClusterSpec) -> None:
        self.k = cluster.cores
        self.n_core = (1 if cluster.testbed else cluster.hosts) * self.k
        self.n_link = 2 * cluster.hosts if not cluster.testbed and cluster.hosts > 1 else 0
        self.n_timed = self.n_core + self.n_link
        self.n_res = self.n_timed + cluster.hosts


@dataclass
class _Demands:
    """The demand matrix's entries, each tagged with the part of a flow's work it is — for a
    greedy UDP flow ``soft``, ``send`` or ``copy`` (:func:`_part`), for a TCP stream ``send``
    on its client's application core and ``full`` elsewhere, ``full`` for every other flow —
    and per-flow caps, units and kinds."""

    rows: np.ndarray
    cols: np.ndarray
    data: np.ndarray
    part: np.ndarray
    n_res: int
    cap: np.ndarray
    unit_is_byte: np.ndarray
    greedy: np.ndarray

    def matrix(self, *parts: str) -> sp.csr_matrix:
        sel = np.isin(self.part, parts)
        return sp.csr_matrix((self.data[sel], (self.rows[sel], self.cols[sel])), shape=(self.n_res, len(self.cap)))


def _assemble(flows: FlowSet, probes: Sequence[PathProbe], codes: np.ndarray, cluster: ClusterSpec, seed: int,
              lay: _Layout) -> _Demands:
    """Every flow's probe costs placed on its own cores, links and conntrack tables."""
    n = len(flows)
    values = _symbol_values(flows, probes[0].addressing)
    rss_keys = _rss_keys(cluster, seed)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    data: list[np.ndarray] = []
    part: list[str] = []

    def add(row: np.ndarray, idx: np.ndarray, value: float, kind: str) -> None:
        rows.append(np.broadcast_to(row, idx.shape))
        cols.append(idx)
        data.append(np.full(idx.size, value))
        part.append(kind)

    cap, unit_is_byte, greedy = np.empty(n), np.empty(n, dtype=bool), np.zeros(n, dtype=bool)
    for ci, probe in enumerate(probes):
        idx = np.flatnonzero(codes == ci)
        cap[idx] = probe.rate_per_s
        unit_is_byte[idx] = probe.unit == "byte"
        is_greedy = probe.cls.workload == "udp_stream" and probe.cls.rate_bps == 0.0
        greedy[idx] = is_greedy
        sub = {s: v[idx] for s, v in values.items()}
        for role, demand in probe.cores:
            if role.kind == "spread":
                base = _pool_of(role, flows, idx) * lay.k
                for core in range(lay.k):
                    add(base + core, idx, demand / lay.k, "soft" if is_greedy else "full")
            else:
                sends = probe.cls.workload == "tcp_stream" and role.kind == "app" and role.side == "client"
                add(_core_resource(role, flows, idx, sub, cluster, rss_keys), idx, demand,
                    _part(role) if is_greedy else "send" if sends else "full")
        for side, direction, demand in probe.links if lay.n_link else ():
            host = flows.client_host[idx] if side == "client" else flows.server_host[idx]
            add(lay.n_core + 2 * host + (0 if direction == "tx" else 1), idx, demand, "soft" if is_greedy else "full")
        for side, entries in probe.conntrack:
            host = flows.client_host[idx] if side == "client" else flows.server_host[idx]
            add(lay.n_timed + host, idx, entries, "soft" if is_greedy else "full")
    return _Demands(
        rows=np.concatenate(rows), cols=np.concatenate(cols), data=np.concatenate(data),
        part=np.repeat(np.array(part), [d.size for d in data]), n_res=lay.n_res,
        cap=cap, unit_is_byte=unit_is_byte, greedy=greedy,
    )


DYNAMIC_UNDERLAY_NEIGHBOURS = ("host", "bridge", "user-bridge", "overlay", "routed")
"""Modes whose hosts resolve each other's fabric address with ARP (``ipip`` makes the remote
hosts' entries permanent; ``container`` and ``none`` never leave the host)."""


def _neighbour_overflow(flows: FlowSet, cluster: ClusterSpec, mode: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Flows that cannot start because a host's neighbour table is full.

    Every cross-host flow needs an entry for the other host on both hosts (to send, to
    answer).  A host that must reach more than ``gc_thresh3`` peers at once gets entries for
    the first ``gc_thresh3`` (in flow order; forced gc frees none of them, all being in use)
    and none for the rest: their flows are dropped at the first packet (``neigh_table_full``)
    and carry nothing.  Returns (blocked flow mask, drop frame: one drop per blocked flow)."""
    n = len(flows)
    blocked = np.zeros(n, dtype=bool)
    empty = pd.DataFrame(columns=["site", "reason", "count", "window_count"])
    cross = flows.client_host != flows.server_host
    if mode not in DYNAMIC_UNDERLAY_NEIGHBOURS or cluster.testbed or not cross.any():
        return blocked, empty
    idx = np.flatnonzero(cross)
    pairs = pd.DataFrame({
        "host": np.concatenate([flows.client_host[idx], flows.server_host[idx]]),
        "peer": np.concatenate([flows.server_host[idx], flows.client_host[idx]]),
        "flow": np.concatenate([idx, idx]),
    })
    first = pairs.groupby(["host", "peer"], sort=False)["flow"].min().reset_index()
    first["rank"] = first.sort_values("flow").groupby("host").cumcount()
    full = first[first["rank"] >= cluster.gc_thresh3]
    if full.empty:
        return blocked, empty
    hit = pairs.merge(full[["host", "peer"]], on=["host", "peer"])
    blocked[hit["flow"].to_numpy()] = True
    lost = hit.drop_duplicates("flow").groupby("host").size()
    drops = pd.DataFrame({"site": [f"h{h}.neigh" for h in lost.index], "reason": "neigh_table_full",
                          "count": lost.to_numpy(), "window_count": lost.to_numpy()})
    return blocked, drops


def _conntrack_frame(entries_per_s: np.ndarray, cluster: ClusterSpec, lifetime_s: float) -> pd.DataFrame:
    """Occupancy of each host's conntrack table at the end of the run: insert rate × entry
    lifetime (or × the run, if shorter)."""
    occupancy = entries_per_s * lifetime_s
    return pd.DataFrame({
        "host": [f"h{i}" for i in range(cluster.hosts)],
        "entries_per_s": entries_per_s,
        "occupancy": np.minimum(occupancy, cluster.nf_conntrack_max),
        "limit": cluster.nf_conntrack_max,
        "full": occupancy >= cluster.nf_conntrack_max * (1 - 1e-9),
    })


def _symbol_values(flows: FlowSet, addressing: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Per-flow identifiers the key templates are made of: container address = a + b·host +
    c·container (the mode's addressing, :func:`perfsim.fluid.probe.addressing`), host address
    as :meth:`perfsim.topology.cluster.Cluster.host_ip`, ports."""
    base, per_host, per_container = addressing

    def ip(h: np.ndarray, k: np.ndarray) -> np.ndarray:
        return ((base + per_host * h + per_container * k) & 0xFFFFFFFF).astype(np.uint64)

    return {
        "cip": ip(flows.client_host, flows.client_container), "sip": ip(flows.server_host, flows.server_container),
        "chip": (flows.client_host + FABRIC_NET + 1).astype(np.uint64),
        "ship": (flows.server_host + FABRIC_NET + 1).astype(np.uint64),
        "cport": flows.client_port.astype(np.uint64), "sport": flows.server_port.astype(np.uint64),
    }


def _rss_keys(cluster: ClusterSpec, seed: int) -> np.ndarray:
    """Each host's RSS key, drawn exactly as :func:`perfsim.topology.cluster.build_cluster`
    and :class:`perfsim.components.host.Host` draw them."""
    rng = RngStreams(seed)
    if cluster.testbed:
        return np.array([int(rng.stream("testbed.rss_key").integers(0, 1 << 32))], dtype=np.uint64)
    return np.array([int(rng.stream(f"h{i}.rss_key").integers(0, 1 << 32)) for i in range(cluster.hosts)],
                    dtype=np.uint64)


def _pool_of(role: Role, flows: FlowSet, idx: np.ndarray) -> np.ndarray:
    """The CPU pool (host; the testbed's one machine) of ``role`` for flows ``idx``."""
    if role.pool == "shared":
        return np.zeros(idx.size, dtype=np.int64)
    return (flows.client_host if role.pool == "client" else flows.server_host)[idx]


def _core_resource(role: Role, flows: FlowSet, idx: np.ndarray, values: dict[str, np.ndarray],
                   cluster: ClusterSpec, rss_keys: np.ndarray) -> np.ndarray:
    k = cluster.cores
    pool = _pool_of(role, flows, idx)
    if role.kind == "app":
        h = (flows.client_host if role.side == "client" else flows.server_host)[idx]
        c = (flows.client_container if role.side == "client" else flows.server_container)[idx]
        core = app_core_index(cluster, h, c)
    elif role.kind == "steer":
        assert role.template is not None
        hashes = hash_keys(*role.template.instantiate(values, idx.size))
        core = rss_cores(hashes, rss_keys[pool], k)
    else:
        core = np.full(idx.size, role.index % k)
    return pool * k + core


def _part(role: Role) -> str:
    """Which part of a greedy UDP flow's work ``role`` is: the sender's ``sendmsg`` (its
    application core, up to the NIC or, on one host, through veth and bridge to the receiving
    socket), the receiver's ``recv`` copy, or softirq receive work (steered cores)."""
    if role.kind == "app":
        return "send" if role.side == "client" else "copy"
    return "soft"


def _greedy_udp(soft: sp.csr_matrix, jobs: sp.csr_matrix, copy: sp.csr_matrix, capacity: np.ndarray,
                cap: np.ndarray, greedy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rates with unpaced UDP senders, which send as fast as their core lets them.

    Softirq work (a NIC's receive path on the steered core, the wire) is done first, at the
    rate datagrams are *offered*: on Linux it runs before the interrupted process resumes, and
    in the DES it queues ahead of the application's next call.  What it leaves of each core is
    shared max-min among the applications' calls: the senders' ``sendmsg`` (which sets the
    offered rate) and the receivers' ``recv`` copies (which set the delivered rate) — and every
    other flow's whole demand.  A receiver that copies slower than datagrams arrive drops the
    rest at its full socket after the kernel has paid for them; a softirq core offered more
    than it can do drops at its backlog before doing the work.  Iterated to a fixed point of
    the offered rates.  Returns (delivered rates, resource utilisation)."""
    n = len(cap)
    soft_csc = soft.tocsc()
    joint = sp.hstack([jobs, copy], format="csr")
    joint_csr, joint_csc = checked_matrices(joint)
    # start from the max-min answer with every part at one rate: near the fixed point
    offered = np.where(greedy, maxmin_rates(soft + jobs + copy, capacity, cap), 0.0)
    for _ in range(GREEDY_ITERATIONS):
        load = np.asarray(soft @ offered).ravel()
        scale = np.where(load > capacity, capacity / np.maximum(load, 1e-300), 1.0)
        processed = offered * _column_min(soft_csc, scale)
        residual = np.maximum(capacity - np.minimum(load, capacity), 0.0)
        x = maxmin_rates_checked(joint_csr, joint_csc, residual, np.concatenate([np.where(greedy & (cap > 0), np.inf, cap),
                                                          np.where(greedy, processed, 0.0)]))
        new = np.where(greedy, x[:n], 0.0)
        done = np.max(np.abs(new - offered) / np.maximum(offered, 1e-300)) < FIXED_POINT_RTOL
        offered = 0.5 * (offered + new)
        if done:
            break
    rates = np.where(greedy, np.minimum(x[n:], processed), x[:n])
    load = np.minimum(np.asarray(soft @ offered).ravel(), capacity)
    return rates, load + np.asarray(joint @ x).ravel()


SENDER_ITERATIONS = 20
"""At most this many steps of the TCP senders' fixed point (a max-min solve each)."""


def _senders_yield(rest: sp.csr_matrix, send: sp.csr_matrix, capacity: np.ndarray, cap: np.ndarray,
                   start: np.ndarray) -> np.ndarray:
    """Rates when TCP stream senders share only what the rest of each core's work leaves.

    A stream's sending application is CPU-bound: its next ``write`` is always ready.  Work that
    *arrives* does not wait for it: softirq receive processing, a reader woken by data, a
    request/response handler.  In Linux softirq runs before the interrupted task resumes and
    CFS runs a woken sleeper ahead of a task that has used its share; in the DES's
    first-come-first-served core the writer has one 128 KiB call queued at a time while
    arrivals queue as they come and a reader copies all that has queued.  So on a core where a
    flow's receive side meets another flow's sender, the receiving flow keeps (nearly) its rate
    and the sender gets the rest — where max-min would split the core equally (a ring of hosts,
    each container receiving one flow and sending the next: −6 … −10 % of the DES's throughput
    before this rule, within 2 % with it).

    ``rest``: every demand but the senders' application cores (``full``); ``send``: those.
    Fixed point of: the rest's load at the current rates leaves ``residual`` of each core; one
    max-min solve over the rest's rows (full capacity) and the senders' rows (the residual)
    gives the next rates (half steps).  ``start`` is the max-min answer with one rate for all
    work; if no saturated core has both kinds of work it is the answer already."""
    rest_rows = np.diff(rest.indptr) > 0
    send_rows = np.diff(send.indptr) > 0
    load = np.asarray((rest + send) @ start).ravel()
    contested = rest_rows & send_rows & (load >= capacity * (1.0 - FIXED_POINT_RTOL))
    if not contested.any():
        return start
    joint_csr, joint_csc = checked_matrices(sp.vstack([rest, send], format="csr"))
    rates = start
    for _ in range(SENDER_ITERATIONS):
        residual = np.maximum(capacity - np.asarray(rest @ rates).ravel(), 1e-9 * capacity)
        new = maxmin_rates_checked(joint_csr, joint_csc, np.concatenate([capacity, residual]), cap)
        done = np.max(np.abs(new - rates) / np.maximum(rates, 1e-300)) < FIXED_POINT_RTOL
        rates = rates + 0.5 * (new - rates)
        if done:
            break
    return rates


def _column_min(csc: sp.csc_matrix, values: np.ndarray) -> np.ndarray:
    """For each column, the smallest ``values[row]`` over its non-zero rows (1 if none)."""
    out = np.ones(csc.shape[1])
    lens = np.diff(csc.indptr)
    has = lens > 0
    if csc.nnz:
        v = values[csc.indices]
        out[has] = np.minimum.reduceat(v, csc.indptr[:-1][has])
    return out


def _closed_loop(demand: sp.csr_matrix, capacity: np.ndarray, cap: np.ndarray, unit_is_byte: np.ndarray,
                 probes: Sequence[PathProbe], codes: np.ndarray, n_timed: int,
                 solve: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Max-min rates, request/response flows capped by ``1 / (RTT alone + wait)``.

    The wait of a flow is ``sum_r d_rf · v / (1 - v)`` over the cores and links (the first
    ``n_timed`` resources; a conntrack table is a limit, not a queue), where ``v`` is the
    utilisation of ``r`` by the *other* flows (a closed loop does not queue behind itself: the
    arrival theorem of mean-value analysis).  The closed loops' fixed
    point is found first with matrix products only (damped iteration), then one max-min solve
    enforces every capacity.  Returns (rates, wait per flow in seconds per unit)."""
    timed = demand[:n_timed].tocoo()
    cap_timed = capacity[:n_timed]
    n = len(cap)

    def wait_at(rates: np.ndarray) -> np.ndarray:
        # what the flow finds at each resource: the others' load (it does not wait for itself)
        u = np.bincount(timed.row, weights=timed.data * rates[timed.col], minlength=n_timed) / cap_timed
        others = np.clip(u[timed.row] - timed.data * rates[timed.col] / cap_timed[timed.row], 0.0, MAX_UTILISATION)
        return np.bincount(timed.col, weights=timed.data * others / (1.0 - others), minlength=n)

    rr = ~unit_is_byte
    if rr.any():
        live = cap > 0  # a flow that cannot start (cap 0) stays at 0
        rtt0 = np.where(rr & live, 1.0 / np.where(live, cap, 1.0), 0.0)
        rates = cap.copy()
        for step in range(RR_ITERATIONS):
            target = np.where(rr & live, 1.0 / np.maximum(rtt0 + wait_at(rates), 1e-300), cap)
            # the map is decreasing (more rate, more wait): shrinking steps damp its oscillation
            new = rates + (target - rates) / (2.0 + 0.25 * step)
            done = np.max(np.abs(new - rates) / np.maximum(rates, 1e-300)) < FIXED_POINT_RTOL
            rates = new
            if done:
                break
        cap = np.where(rr, rates, cap)
    rates = maxmin_rates(demand, capacity, cap) if solve else cap
    wait = wait_at(rates)
    seg = np.array([1.0 / p.packets_per_unit if p.unit == "byte" and p.packets_per_unit > 0 else 1.0
                    for p in probes])[codes]
    return rates, wait * seg


def _flow_frame(flows: FlowSet, probes: Sequence[PathProbe], codes: np.ndarray, rates: np.ndarray,
                wait: np.ndarray, window: float) -> pd.DataFrame:
    bpu = np.array([p.bytes_per_unit for p in probes])[codes]
    ppu = np.array([p.packets_per_unit for p in probes])[codes]
    is_byte = np.array([p.unit == "byte" for p in probes])[codes]
    lat50 = np.array([p.latency_p50_s for p in probes])[codes] + wait
    lat99 = np.array([p.latency_p99_s for p in probes])[codes] + wait
    units = rates * window
    return pd.DataFrame({
        "flow": np.arange(len(flows)),
        "group": flows.group,
        "workload": flows.workload,
        "client_host": flows.client_host, "client_container": flows.client_container,
        "server_host": flows.server_host, "server_container": flows.server_container,
        "bytes": units * bpu,
        "throughput_bps": rates * bpu * 8.0,
        "packets": units * ppu,
        "datagrams": np.where(np.asarray(flows.workload == "udp_stream"), units * ppu, 0.0),
        "transactions": np.where(is_byte, 0.0, units),
        "transactions_per_s": np.where(is_byte, 0.0, rates),
        "latency_p50_s": lat50,
        "latency_p99_s": lat99,
        "retransmits": 0,
    })


def _core_frame(util: np.ndarray, cluster: ClusterSpec, window: float) -> pd.DataFrame:
    k = cluster.cores
    pools = 1 if cluster.testbed else cluster.hosts
    u = np.minimum(util, 1.0)
    return pd.DataFrame({
        "host": np.repeat(["testbed"] if cluster.testbed else [f"h{i}" for i in range(pools)], k),
        "core": np.tile(np.arange(k), pools),
        "busy_s": u * window,
        "utilisation": u,
        "wakeups": 0,
    })


def _link_frame(util: np.ndarray, cluster: ClusterSpec, window: float) -> pd.DataFrame:
    if util.size == 0:
        return pd.DataFrame(columns=["link", "packets", "bytes", "utilisation", "max_queue"])
    names = [f"h{i}/eth0.tx" if d == 0 else f"switch.port{i}" for i in range(cluster.hosts) for d in (0, 1)]
    u = np.minimum(util, 1.0)
    return pd.DataFrame({"link": names, "packets": np.nan, "bytes": u * window * cluster.nic_rate_bps / 8,
                         "utilisation": u, "max_queue": np.nan})


def _stage_frame(probes: Sequence[PathProbe], codes: np.ndarray, rates: np.ndarray, window: float) -> pd.DataFrame:
    per_class = np.bincount(codes, weights=rates, minlength=len(probes)) * window
    rows = []
    for probe, units in zip(probes, per_class, strict=True):
        for stage, cpu in probe.stages.items():
            rows.append({"host": "all", "stage": stage, "cpu_s": cpu * units, "skbs": np.nan, "bytes": np.nan})
    frame = pd.DataFrame(rows, columns=["host", "stage", "cpu_s", "skbs", "bytes"])
    return frame.groupby(["host", "stage"], as_index=False).sum(min_count=1) if len(frame) else frame
