"""The run core shared by ``perfsim.run`` (a :class:`RunSpec`) and scenario files: build the
cluster and the mode, start an explicit list of flows, warm up, measure, collect frames.

Measurement: the window has a fixed length (``duration_s - warmup_s``) and starts at
``warmup_s`` or, if some flow has not delivered anything yet, at the first tick after every
flow has (so the ARP storm and handshakes of a large start-up stay out of it), at most
:data:`MAX_EXTRA_WARMUP_S` later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from perfsim.components.link import Link
from perfsim.core.packet import PROTO_TCP, PROTO_UDP
from perfsim.core.profile import Profile, load_profile
from perfsim.core.sim import Sim
from perfsim.metrics.frames import (
    TableSampler,
    core_frame,
    drop_frame,
    link_frame,
    stage_core_frame,
    stage_frame,
)
from perfsim.topology.base import Slot
from perfsim.topology.cluster import ClusterSpec, build_cluster
from perfsim.topology.modes import MODES
from perfsim.transport.workloads import Flow, StreamThread, start_workload

MAX_EXTRA_WARMUP_S = 1.0
"""Simulated seconds the warm-up may be extended while flows are still starting up."""
TABLE_SAMPLES = 20
"""Table occupancy is sampled this many times per run."""


@dataclass(frozen=True, slots=True)
class FlowPlan:
    """One flow to start: a netperf workload from ``client`` to ``server`` (host, container)."""

    workload: str
    client: Slot
    server: Slot
    message_size: int
    server_port: int
    client_port: int
    start_s: float = 0.0
    stop_s: float | None = None
    rate_bps: float = 0.0
    group: str = ""
    """The name of the workload entry this flow belongs to (scenario files)."""
    thread: str = ""
    """Flows with the same non-empty ``thread`` (unpaced ``tcp_stream`` between the same two
    slots) are served by one application thread per side
    (:class:`~perfsim.transport.workloads.StreamThread`); by default each flow has its own."""
    iperf3: bool = False
    """A ``udp_stream`` whose ends loop as iperf3's do (``select()`` around the reads and writes)."""


@dataclass(frozen=True)
class Experiment:
    """Everything :func:`simulate` needs; built from a RunSpec or a scenario file."""

    cluster: ClusterSpec
    mode: str
    containers_per_host: int
    flows: tuple[FlowPlan, ...]
    duration_s: float
    warmup_s: float
    seed: int = 0
    profile: str = "default"
    mode_options: dict[str, Any] = field(default_factory=dict)
    publish: tuple[tuple[Slot, int, int, int], ...] = ()
    count_by_core: bool = False
    """Count which core did each stage's work (``Simulated.stage_cores``; for calibration)."""
    """Published ports: ((host, container), host_port, container_port, proto)."""


@dataclass
class Simulated:
    """Raw frames of one simulation (``Result`` and scenario reports are built from these)."""

    flows: pd.DataFrame
    stages: pd.DataFrame
    cores: pd.DataFrame
    links: pd.DataFrame
    drops: pd.DataFrame
    tables: pd.DataFrame
    accounting: dict[str, int]
    latencies_s: dict[str, np.ndarray]
    """Latency samples of the window, by flow group."""
    window_s: float
    measured_from_s: float
    warm: bool
    wall_s: float
    sim_events: int
    stage_cores: pd.DataFrame | None = None
    """With ``count_by_core``: units and bytes per (host, stage, core) over the whole run."""
    window_drift: float = float("nan")
    """How far the window is from a steady state (:func:`window_drift`): near 0 in one; far
    from 0 the run measured a transient (slow start, buffers filling, loss recovery) and a
    longer run is needed.  NaN if the window's first half delivered nothing."""


def cluster_profile(cluster: ClusterSpec, profile: Profile) -> Profile:
    """The profile for this cluster's hardware: scaled to its clock and with its cores' idle
    wake-up latency, when it states them."""
    if cluster.cpu_ghz is not None:
        profile = profile.at_clock(cluster.cpu_ghz)
    if cluster.idle_wakeup_s is not None:
        profile = profile.with_idle_wakeup(cluster.idle_wakeup_s)
    return profile


def unread_bytes(flows: list[Flow]) -> tuple[int, int]:
    """Bytes TCP stream clients have written that their server has not read yet, summed: all of
    them (send buffers, bytes in flight, receive and out-of-order queues), and those already
    handed to the network (from the highest sequence sent: in flight and received)."""
    written = sent = 0
    for f in flows:
        if f.workload == "tcp_stream" and f.server_conn is not None:
            read = f.server_conn.bytes_read
            written += f.client_sock.write_end - 1 - read
            sent += f.client_sock.snd_max - 1 - read
    return written, sent


def window_drift(first_half_bytes: int, second_half_bytes: int, *unread_growth_bytes: int) -> float:
    """The largest (in magnitude) sign of a transient in a measurement window: the change of
    delivered bytes from its first half to its second (``second / first - 1``), and the growth
    of each count of bytes written but not yet read (:func:`unread_bytes`) relative to those
    delivered.  Buffers filling at a constant rate look steady by the first sign alone; the
    backlog of a loss recovery draining (data held out of order behind a hole, released when
    the hole is filled, while send buffers refill) shows only in the bytes already sent."""
    if first_half_bytes <= 0:
        return float("nan")
    delivered = first_half_bytes + second_half_bytes
    signs = [second_half_bytes / first_half_bytes - 1.0, *(g / delivered for g in unread_growth_bytes)]
    return max(signs, key=abs)


def _thread(threads: dict[str, StreamThread], key: str, sim: Sim) -> StreamThread | None:
    """The application thread pair named ``key`` (created on first use); None for ``""``."""
    if not key:
        return None
    if key not in threads:
        threads[key] = StreamThread(sim)
    return threads[key]


def simulate(exp: Experiment) -> Simulated:
    """Run ``exp``. Raises ConfigError when the mode cannot carry a flow."""
    wall0 = time.perf_counter()
    sim = Sim(seed=exp.seed, profile=cluster_profile(exp.cluster, load_profile(exp.profile)), count_by_core=exp.count_by_core)
    cl = build_cluster(sim, exp.cluster)
    net = MODES[exp.mode].build(cl, exp.containers_per_host, **exp.mode_options)
    for slot, host_port, container_port, proto in exp.publish:
        net.publish(slot[0], slot[1], host_port, container_port, proto)  # type: ignore[attr-defined]
    flows: list[Flow] = []
    threads: dict[str, StreamThread] = {}
    for plan in exp.flows:
        proto = PROTO_TCP if plan.workload.startswith("tcp") else PROTO_UDP
        connect_ip, connect_port = net.target(plan.client, plan.server, plan.server_port, proto)
        flow = start_workload(
            sim, plan.workload, net.endpoint(*plan.client), net.endpoint(*plan.server), plan.message_size,
            server_port=plan.server_port, client_port=plan.client_port,
            connect_ip=connect_ip, connect_port=connect_port, start_s=plan.start_s,
            rate_bps=plan.rate_bps, stop_s=plan.stop_s, measure_from_s=0.0,
            thread=_thread(threads, plan.thread, sim), iperf3=plan.iperf3,
        )
        flows.append(flow)
    links = [el for el in sim.elements.values() if isinstance(el, Link)]
    snapshot: dict[str, Any] = {}

    def take_snapshot() -> None:
        now = sim.now
        snapshot["cores"] = {c.name: c.work_done(now) for h in cl.hosts for c in h.cpus.cores}
        snapshot["wakeups"] = {c.name: c.wakeups for h in cl.hosts for c in h.cpus.cores}
        snapshot["stages"] = {(h.name, s): (st.cpu_s, st.packets, st.bytes) for h in cl.hosts for s, st in h.stages.items()}
        snapshot["links"] = {link.name: link.work_done(now) for link in links}
        snapshot["drops"] = dict(sim.drops)

    sampler = TableSampler(sim, exp.duration_s / TABLE_SAMPLES)
    window_s = exp.duration_s - exp.warmup_s
    t = exp.warmup_s
    sim.run(t)
    tick = max(exp.warmup_s / 4, 1e-3)
    # a flow that starts late (scenario start_s) does not hold the window back
    waiting = [f for f, p in zip(flows, exp.flows, strict=True) if p.start_s <= exp.warmup_s]
    while not all(f.stats.progressed for f in waiting) and t < exp.warmup_s + MAX_EXTRA_WARMUP_S:
        t += tick
        sim.run(t)
    warm = all(f.stats.progressed for f in waiting)
    for f in flows:
        f.stats.restart(t)
    take_snapshot()
    unread_at_start = unread_bytes(flows)
    end = t + window_s
    sim.run(t + window_s / 2)
    first_half = sum(f.stats.bytes for f in flows)
    sim.run(end)
    second_half = sum(f.stats.bytes for f in flows) - first_half
    rows = [
        {"flow": i, "group": p.group, "mode": exp.mode, "client": f"h{p.client[0]}c{p.client[1]}",
         "server": f"h{p.server[0]}c{p.server[1]}", **f.summary(end)}
        for i, (f, p) in enumerate(zip(flows, exp.flows, strict=True))
    ]
    lat: dict[str, list[np.ndarray]] = {}
    for f, p in zip(flows, exp.flows, strict=True):
        lat.setdefault(p.group, []).append(np.asarray(f.stats.latencies_s, dtype=float))
    return Simulated(
        flows=pd.DataFrame(rows),
        stages=stage_frame(cl.hosts, snapshot.get("stages")),
        cores=core_frame(cl.hosts, end, window_s, snapshot.get("cores"), snapshot.get("wakeups")),
        links=link_frame(links, end, window_s, snapshot.get("links")),
        drops=drop_frame(sim, snapshot.get("drops")),
        tables=sampler.frame(),
        accounting={
            "created": sim.created, "delivered": sim.delivered,
            "dropped": sim.dropped, "in_flight": sim.in_flight(),
        },
        latencies_s={g: np.concatenate(v) if v else np.empty(0) for g, v in lat.items()},
        window_s=window_s,
        measured_from_s=t,
        warm=warm,
        wall_s=time.perf_counter() - wall0,
        sim_events=next(sim._eid),
        stage_cores=stage_core_frame(cl.hosts) if exp.count_by_core else None,
        window_drift=window_drift(first_half, second_half,
                                  *(b - a for a, b in zip(unread_at_start, unread_bytes(flows), strict=True))),
    )
