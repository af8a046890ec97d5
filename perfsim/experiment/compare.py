"""``perfsim compare``: the network modes side by side, and how they scale.

A comparison is a list of :class:`RunSpec` built and validated up front (so a bad option
fails before anything runs or is written), run in parallel worker processes (each run is
deterministic, so parallel and serial results are identical), and collected into one table:
one row per (mode, workload, streams, hosts).

By default every mode that can carry a flow runs (all but ``none``).  With no workload given,
every netperf workload runs with one flow per mode.  With no ``streams`` given, the scale
workload (``tcp_stream`` by default) is also swept over :data:`DEFAULT_SCALE` concurrent
flows, each flow in its own container (containers per host grow with the flows) — the
headline figure — and over :data:`DEFAULT_HOST_SCALE` hosts with
:data:`HOST_SWEEP_FLOWS_PER_HOST` flows per host.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd

from perfsim.errors import ConfigError, check_number
from perfsim.experiment.config import WORKLOADS, RunSpec
from perfsim.experiment.run import SUMMARY_COLUMNS, run, run_until_steady
from perfsim.topology.cluster import ClusterSpec
from perfsim.topology.modes import MODES

DEFAULT_SCALE = (1, 4, 16, 64, 256)
DEFAULT_HOST_SCALE = (2, 4, 8)
HOST_SWEEP_FLOWS_PER_HOST = 8
"""The host sweep keeps the load per host fixed: ``8 × hosts`` concurrent flows."""
DEFAULT_DURATION_S = 0.02
FORMATS = ("table", "csv", "json")
EXTRA_COLUMNS = ["engine", "hosts", "containers_per_host", "nic_gbps", "qdisc", "cores", "offloads", "testbed", "scheduler",
                 "retransmits",
                 "cpu_utilisation", "window_drift", "duration_s", "seed", "profile", "wall_s"]


@dataclass(frozen=True)
class CompareOutput:
    """The table plus the per-stage CPU of each mode's single-flow run of the scale workload."""

    table: pd.DataFrame
    stages: pd.DataFrame
    wall_s: float


def plan(
    modes: Sequence[str] | None = None,
    *,
    workload: str | None = None,
    streams: int | None = None,
    scale: Sequence[int] | None = None,
    host_scale: Sequence[int] | None = None,
    message_size: int | None = None,
    hosts: int = 2,
    containers_per_host: int | None = None,
    placement: str | None = None,
    nic_gbps: float = 10.0,
    cores: int = 4,
    mtu: int = 1500,
    offloads: bool = True,
    qdisc: str = "fq_codel",
    duration_s: float = DEFAULT_DURATION_S,
    profile: str = "default",
    seed: int = 0,
    testbed: bool = False,
    cpu_ghz: float | None = None,
    idle_wakeup_s: float | None = None,
    engine: str = "des",
    scheduler: str | None = None,
) -> list[RunSpec]:
    """Every run of the comparison, validated. Raises ConfigError naming the bad option.

    ``testbed``: simulate the calibration testbed (two namespaces on one machine sharing
    ``cores``, joined by a veth wire); there is no host sweep, and each flow runs between one
    client and one server container, as ``iperf3 -P`` does.  ``cpu_ghz`` scales the profile;
    ``idle_wakeup_s`` replaces its idle-core wake-up latency.  ``qdisc``: every host NIC's
    queueing discipline (:mod:`perfsim.components.codel`).  ``scheduler``: ``eevdf`` or
    ``fifo`` (:attr:`perfsim.topology.cluster.ClusterSpec.scheduler`; ``None``: eevdf on the
    testbed, fifo elsewhere).

    ``streams`` with ``containers_per_host``: every client container runs ``streams`` flows
    (cross-host every container of every host, to the same container of the next host;
    same-host every other container, to its neighbour), so the run has ``streams × hosts ×
    containers_per_host`` flows (half that same-host).  Without ``containers_per_host``,
    ``streams`` is the number of flows and containers grow with it.  ``engine``: ``des``,
    ``fluid`` or ``auto`` (:func:`perfsim.fluid.choose_engine`)."""
    modes = [m for m in MODES if m != "none"] if modes is None else list(modes)
    if not modes:
        raise ConfigError("modes", "", f"one or more of {', '.join(MODES)}")
    for m in modes:
        if m not in MODES:
            raise ConfigError("modes", m, f"one of {', '.join(MODES)}")
    if workload is not None and workload not in WORKLOADS:
        raise ConfigError("workload", workload, f"one of {', '.join(WORKLOADS)}")
    check_number("nic_gbps", nic_gbps, low=0, low_inclusive=False, high=10000)
    from perfsim.experiment.config import ENGINES

    if engine not in ENGINES:
        raise ConfigError("engine", engine, f"one of {', '.join(ENGINES)}")
    if streams is not None:
        check_number("streams", streams, low=1, high=1_000_000, integer=True)
    points = [streams] if streams is not None else list(scale or DEFAULT_SCALE)
    for s in points:
        check_number("scale", s, low=1, high=1_000_000, integer=True)
    host_points = [] if streams is not None or testbed else list(host_scale if host_scale is not None else DEFAULT_HOST_SCALE)
    for n_hosts in host_points:
        check_number("host_scale", n_hosts, low=1, high=65000, integer=True)
    workloads = [workload] if workload is not None else list(WORKLOADS)
    scale_workload = workload or "tcp_stream"
    def cluster_of(n_hosts: int) -> ClusterSpec:
        return ClusterSpec(hosts=n_hosts, cores=cores, nic_rate_bps=nic_gbps * 1e9, mtu_bytes=mtu, offloads=offloads,
                           nic_qdisc=qdisc, testbed=testbed, cpu_ghz=cpu_ghz, idle_wakeup_s=idle_wakeup_s,
                           scheduler=scheduler)

    cluster_of(hosts)  # validate the base cluster before anything else
    specs: list[RunSpec] = []
    seen: set[tuple[str, str, int, int]] = set()
    for mode in modes:
        pl = placement or MODES[mode].default_placement
        if pl not in MODES[mode].placements:
            raise ConfigError("placement", pl, f"{' or '.join(MODES[mode].placements)} for mode {mode}")
        first = points[0] if streams is not None else 1
        if streams is not None and containers_per_host is not None and not testbed:
            clients = containers_per_host if pl == "cross-host" else max(containers_per_host // 2, 1)
            first = streams * hosts * clients
            points = [first]
        cells = [(wl, first, hosts) for wl in workloads]
        cells += [(scale_workload, s, hosts) for s in points]
        cells += [(scale_workload, HOST_SWEEP_FLOWS_PER_HOST * h, h) for h in host_points]
        for wl, n, n_hosts in cells:
            if (mode, wl, n, n_hosts) in seen:
                continue
            seen.add((mode, wl, n, n_hosts))
            if testbed:
                per_host = 1 if pl == "cross-host" else 2
            else:
                per_host = math.ceil(n / n_hosts) if pl == "cross-host" else 2 * math.ceil(n / n_hosts)
            specs.append(
                RunSpec(
                    mode=mode, workload=wl, streams=n, message_size=message_size, placement=pl,
                    containers_per_host=per_host if containers_per_host is None else containers_per_host, cluster=cluster_of(n_hosts),
                    duration_s=duration_s, warmup_s=duration_s * 0.2, seed=seed, profile=profile, engine=engine,
                )
            )
    return specs


def _run_one(spec: RunSpec, until_steady_s: float | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    if until_steady_s is None:
        result, wall = run(spec), None
    else:
        result, wall = run_until_steady(spec, until_steady_s)
        spec = result.spec
    row = result.summary()
    c = spec.cluster
    row.update(hosts=c.hosts, containers_per_host=spec.containers_per_host, nic_gbps=c.nic_rate_bps / 1e9,
               qdisc=c.nic_qdisc, cores=c.cores, offloads="on" if c.offloads else "off", testbed=c.testbed,
               scheduler=c.app_scheduler, duration_s=spec.duration_s,
               seed=spec.seed, profile=spec.profile, wall_s=result.wall_s if wall is None else wall)
    stages = result.stages.assign(mode=spec.mode, workload=spec.workload, streams=spec.streams)
    return row, stages


def execute(specs: list[RunSpec], workers: int | None = None, progress: bool = False,
            until_steady_s: float | None = None) -> CompareOutput:
    """Run ``specs`` (in ``workers`` processes; default: one per core) and collect the table.
    With ``until_steady_s`` a DES run whose window is not a steady state is run again twice as
    long, up to that many simulated seconds (:func:`perfsim.experiment.run.run_until_steady`)."""
    if until_steady_s is not None:
        longest = max((s.duration_s for s in specs), default=0.0)
        check_number("until_steady_s", until_steady_s, low=longest, high=3600.0)
    t0 = time.perf_counter()
    workers = workers or min(len(specs), os.cpu_count() or 1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), file=sys.stderr, unit="run", desc="perfsim compare")
    results: list[tuple[dict[str, Any], pd.DataFrame]] = []
    try:
        if workers <= 1:
            for spec in specs:
                results.append(_run_one(spec, until_steady_s))
                if bar is not None:
                    bar.set_postfix_str(f"{spec.mode} {spec.workload} x{spec.streams}")
                    bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                runs = pool.map(_run_one, specs, [until_steady_s] * len(specs))
                for spec, res in zip(specs, runs, strict=True):
                    results.append(res)
                    if bar is not None:
                        bar.set_postfix_str(f"{spec.mode} {spec.workload} x{spec.streams}")
                        bar.update()
    finally:
        if bar is not None:
            bar.close()
    table = pd.DataFrame([r for r, _ in results])
    table = table[SUMMARY_COLUMNS + [c for c in EXTRA_COLUMNS if c in table.columns]]
    scale_wl = specs[-1].workload if specs else "tcp_stream"  # the sweeps come last
    base_hosts = specs[0].cluster.hosts if specs else 0
    stages = [s for (row, s) in results
              if row["streams"] == 1 and row["workload"] == scale_wl and row["hosts"] == base_hosts]
    stage_frame = pd.concat(stages, ignore_index=True) if stages else pd.DataFrame()
    return CompareOutput(table, stage_frame, time.perf_counter() - t0)


def compare(
    modes: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Python API: run the comparison and return its table (columns :data:`SUMMARY_COLUMNS`
    first). ``options`` are those of :func:`plan` (``workload``, ``streams``, ``hosts`` ...)."""
    return execute(plan(modes, **options), workers, progress).table
