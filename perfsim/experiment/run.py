"""One run: build the cluster and mode, start the workload's flows, simulate, collect frames.

``run(spec)`` is the lower-level Python API (``perfsim.run``); ``Result.summary()`` is the row
``perfsim compare`` prints.  Flows are placed by :meth:`RunSpec.slots`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from perfsim.core.rng import RngStreams
from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.experiment.simulate import Experiment, FlowPlan, simulate

START_JITTER_S = 50e-6
"""Flows start at a random time in [0, 50 µs), as separately launched netperf processes do."""
SERVER_PORT_BASE = 5001
CLIENT_PORT_BASE = 32768

EPHEMERAL_PORTS = 61000 - CLIENT_PORT_BASE
"""Linux's default ``ip_local_port_range`` 32768..60999."""
SERVER_PORTS = 60000


def client_port(i: Any) -> Any:
    """Client port of flow ``i`` (int or numpy array): ``32768 + 97 i``, wrapped in the
    ephemeral range (97 is prime to its size: distinct for 28232 consecutive flows)."""
    return CLIENT_PORT_BASE + (97 * i) % EPHEMERAL_PORTS


def server_port(i: Any) -> Any:
    """Server port of flow ``i``: ``5001 + i``, wrapped below 65001."""
    return SERVER_PORT_BASE + i % SERVER_PORTS


SUMMARY_COLUMNS = [
    "mode", "placement", "workload", "streams", "message_size", "throughput_gbps", "pps",
    "transactions_per_s", "latency_p50_us", "latency_p99_us", "cpu_s_per_gb", "drops",
]


STEADY_DRIFT = 0.03
"""Largest ``|window_drift|`` that still counts as a steady state (TCP's sawtooth and
scheduling noise stay well inside it)."""


@dataclass
class Result:
    """Everything one run measured, as tidy frames."""

    spec: RunSpec
    flows: pd.DataFrame
    stages: pd.DataFrame
    cores: pd.DataFrame
    links: pd.DataFrame
    drops: pd.DataFrame
    tables: pd.DataFrame
    """Occupancy of every conntrack, neighbour and FDB table over time."""
    accounting: dict[str, int]
    """Packets created, delivered, dropped and still in flight at the end (counted where they are)."""
    latencies_s: np.ndarray
    wall_s: float
    sim_events: int
    measured_from_s: float = 0.0
    """Simulated time the measurement window started (warm-up end)."""
    warm: bool = True
    """False when some flow had delivered nothing when the warm-up limit ran out."""
    stage_cores: pd.DataFrame | None = None
    """With ``run(spec, count_by_core=True)``: units and bytes per (host, stage, core)."""
    engine: str = "des"
    """The engine that produced the result: ``des`` or ``fluid``."""
    latency_quantiles_s: tuple[float, float] | None = None
    """Fluid engine: (p50, p99) latency over flows (it has per-flow estimates, not samples)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Fluid engine: wall seconds of its phases (probe, build, solve)."""
    window_drift: float = float("nan")
    """DES: how far the window is from a steady state — the largest of the change of delivered
    bytes from its first half to its second and the changes of unread bytes relative to those
    delivered (:func:`perfsim.experiment.simulate.window_drift`); near 0 in a steady state (see
    :data:`STEADY_DRIFT`).  The fluid engine is a steady state (0)."""

    @property
    def steady(self) -> bool:
        """Did the window measure a steady state (``|window_drift| <= STEADY_DRIFT``)?"""
        return abs(self.window_drift) <= STEADY_DRIFT

    def summary(self) -> dict[str, Any]:
        """One row in :data:`SUMMARY_COLUMNS` (plus a few extras) for ``perfsim compare``."""
        spec = self.spec
        dur = spec.duration_s - spec.warmup_s
        total_bytes = float(self.flows["bytes"].sum())
        cpu_s = float(self.cores["busy_s"].sum())
        lat = self.latencies_s
        p50, p99 = self.latency_quantiles_s or (
            (float(np.percentile(lat, 50)), float(np.percentile(lat, 99))) if lat.size else (float("nan"),) * 2)
        return {
            "mode": spec.mode,
            "placement": spec.placement,
            "workload": spec.workload,
            "streams": spec.streams,
            "message_size": spec.message_bytes,
            "throughput_gbps": total_bytes * 8 / dur / 1e9,
            "pps": float(self.flows["packets"].sum()) / dur,
            "transactions_per_s": float(self.flows["transactions"].sum()) / dur,
            "latency_p50_us": p50 * 1e6,
            "latency_p99_us": p99 * 1e6,
            "cpu_s_per_gb": cpu_s / (total_bytes / 1e9) if total_bytes > 0 else float("nan"),
            "drops": int(self.drops["window_count"].sum()) if len(self.drops) else 0,
            "retransmits": int(self.flows["retransmits"].sum()),
            "cpu_utilisation": cpu_s / dur / max(len(self.cores), 1),
            "measured_from_s": self.measured_from_s,
            "window_drift": self.window_drift,
            "engine": self.engine,
        }


def flow_plans(spec: RunSpec) -> tuple[FlowPlan, ...]:
    """The flows of a RunSpec: ``streams`` copies of its workload placed by
    :meth:`RunSpec.slots`, each starting at a random time in [0, :data:`START_JITTER_S`).

    On the testbed a ``tcp_stream``'s flows between the same two slots share one thread per
    side, as the streams of one ``iperf3 -P`` test do (its measurements are iperf3's), and a
    ``udp_stream``'s ends select as iperf3's do."""
    starts = RngStreams(spec.seed).stream("flows.start").uniform(0.0, START_JITTER_S, spec.streams)
    plans = []
    shared = spec.cluster.testbed and spec.workload == "tcp_stream"
    for i in range(spec.streams):
        ch, cc, sh, sc = spec.slots(i)
        plans.append(FlowPlan(spec.workload, (ch, cc), (sh, sc), spec.message_bytes,
                              server_port=int(server_port(i)), client_port=int(client_port(i)),
                              start_s=float(starts[i]), group=spec.workload,
                              thread=f"iperf3 h{ch}c{cc} h{sh}c{sc}" if shared else "",
                              iperf3=spec.cluster.testbed and spec.workload == "udp_stream"))
    return tuple(plans)


def run(spec: RunSpec, count_by_core: bool = False) -> Result:
    """Simulate ``spec`` with its engine and return its frames. Raises ConfigError on an
    impossible spec.  ``count_by_core`` (DES only) also records which core did each stage's
    work (slower; for calibration)."""
    if spec.resolved_engine == "fluid":
        if count_by_core:
            raise ConfigError("count_by_core", True, "False with the fluid engine (it counts no stages per core)")
        return run_fluid(spec)
    out = simulate(Experiment(
        cluster=spec.cluster, mode=spec.mode, containers_per_host=spec.containers_per_host,
        flows=flow_plans(spec), duration_s=spec.duration_s, warmup_s=spec.warmup_s,
        seed=spec.seed, profile=spec.profile, mode_options=spec.mode_options, count_by_core=count_by_core,
    ))
    return Result(
        spec=spec, flows=out.flows, stages=out.stages, cores=out.cores, links=out.links,
        drops=out.drops, tables=out.tables, accounting=out.accounting,
        latencies_s=out.latencies_s.get(spec.workload, np.empty(0)), wall_s=out.wall_s,
        sim_events=out.sim_events, measured_from_s=out.measured_from_s, warm=out.warm,
        stage_cores=out.stage_cores, window_drift=out.window_drift,
    )


def run_fluid(spec: RunSpec) -> Result:
    """``spec`` on the flow-level engine (:mod:`perfsim.fluid.engine`): frames of the same
    shape as the DES's (per-flow rows, per-core busy time, per-link utilisation), no drops."""
    from perfsim.fluid.engine import solve
    from perfsim.fluid.flows import flows_of_spec

    sol = solve(flows_of_spec(spec), cluster=spec.cluster, containers_per_host=spec.containers_per_host, mode=spec.mode, mode_options=spec.mode_options,
                profile=spec.profile, seed=spec.seed, duration_s=spec.duration_s, warmup_s=spec.warmup_s)
    f = sol.flows
    flows = f.assign(mode=spec.mode, client="h" + f["client_host"].astype(str) + "c" + f["client_container"].astype(str),
                     server="h" + f["server_host"].astype(str) + "c" + f["server_container"].astype(str))
    drops = sol.drops
    return Result(
        spec=spec, flows=flows, stages=sol.stages, cores=sol.cores, links=sol.links, drops=drops,
        tables=sol.conntrack, accounting={}, latencies_s=np.empty(0), wall_s=sol.wall_s,
        sim_events=0, engine="fluid", window_drift=0.0, timings=sol.timings, measured_from_s=spec.warmup_s,
        latency_quantiles_s=(float(np.nanmedian(f["latency_p50_s"])), float(np.nanpercentile(f["latency_p99_s"], 99))),
    )


def run_until_steady(spec: RunSpec, max_duration_s: float) -> tuple[Result, float]:
    """``run(spec)``, and again twice as long (same warm-up share) while its measurement window
    is not a steady state (:attr:`Result.steady`) and ``max_duration_s`` allows.  Returns the
    last result (its ``spec.duration_s`` is the length used) and the wall seconds of all runs.

    Many TCP streams through one NIC or core take 0.4–1.6 s to settle (slow-start losses,
    socket buffers filling, RTTs of tens of ms behind a full transmit queue).  The fluid
    engine is a steady state: it runs once."""
    duration, wall = spec.duration_s, 0.0
    while True:
        res = run(replace(spec, duration_s=duration, warmup_s=duration * spec.warmup_s / spec.duration_s))
        wall += res.wall_s
        if res.engine == "fluid" or res.steady or 2 * duration > max_duration_s:
            return res, wall
        duration *= 2
