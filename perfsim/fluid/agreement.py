"""Fluid vs DES on a grid of small scenarios: the check that the flow-level engine agrees with
the packet level where both run (used by ``benchmarks/fluid_agreement.py`` and the tests).

The grid: every mode in each placement it allows × ``tcp_stream``/``udp_stream`` × flows ×
hosts.  Containers per host grow with the flows as ``perfsim compare`` grows them (one flow
per client container; a ``none`` container only reaches itself).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np
import pandas as pd

from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import Result, run, run_until_steady
from perfsim.topology.cluster import ClusterSpec
from perfsim.topology.modes import MODES

GRID_WORKLOADS = ("tcp_stream", "udp_stream")
GRID_FLOWS = (1, 4, 16, 64)
GRID_HOSTS = (2, 4, 8)
GRID_DURATION_S = 0.2
"""Simulated seconds per point, the first half warm-up: TCP senders sharing a core take tens of
ms to fill their socket buffers (4 MiB each), a transient the steady-state fluid engine does not
have."""
TOLERANCE = 0.05
"""The issue's bound: fluid throughput within 5 % of the DES."""
MAX_DES_DURATION_S = 1.6
"""Longest DES run :func:`compare_point` extends a point to while it is not in a steady state."""


def grid(
    modes: Iterable[str] | None = None,
    workloads: Iterable[str] = GRID_WORKLOADS,
    flows: Iterable[int] = GRID_FLOWS,
    hosts: Iterable[int] = GRID_HOSTS,
    duration_s: float = GRID_DURATION_S,
    seed: int = 0,
) -> Iterator[RunSpec]:
    """Every (mode, placement, workload, flows, hosts) point, as DES RunSpecs."""
    for mode in modes or MODES:
        for placement in MODES[mode].placements:
            for wl in workloads:
                for n in flows:
                    for h in hosts:
                        if mode == "none":
                            per_host = 1
                        elif placement == "cross-host":
                            per_host = math.ceil(n / h)
                        else:
                            per_host = 2 * math.ceil(n / h)
                        yield RunSpec(mode=mode, placement=placement, workload=wl, streams=n,
                                      containers_per_host=per_host, cluster=ClusterSpec(hosts=h),
                                      duration_s=duration_s, warmup_s=duration_s / 2, seed=seed)


def steady_des(spec: RunSpec, max_duration_s: float = MAX_DES_DURATION_S) -> tuple[Result, float]:
    """The DES on ``spec`` until its window is steady (:func:`run_until_steady`): the fluid
    engine is a steady state, so it is compared with the DES's."""
    return run_until_steady(replace(spec, engine="des"), max_duration_s)


def flow_errors(des: Result, fluid: Result) -> pd.Series:
    """Per flow (by flow id): fluid throughput / DES throughput - 1.  The aggregate can agree
    while the engines share a contended core differently among its flows; this shows that.
    A flow the DES gave nothing has no relative error (NaN)."""
    d = des.flows.set_index("flow")["throughput_bps"].astype(float)
    f = fluid.flows.set_index("flow")["throughput_bps"].astype(float).reindex(d.index)
    return (f / d.where(d > 0) - 1.0).rename("error")


def compare_point(spec: RunSpec) -> dict[str, object]:
    """Both engines on one point: throughputs, relative error (aggregate, and the largest of any
    one flow: :func:`flow_errors`), wall times, and the DES run's length and window drift
    (:func:`steady_des`)."""
    des, des_wall = steady_des(spec)
    fluid = run(replace(spec, engine="fluid"))
    d, f = des.summary()["throughput_gbps"], fluid.summary()["throughput_gbps"]
    per_flow = flow_errors(des, fluid).dropna()
    worst = float(per_flow.iloc[int(np.argmax(per_flow.abs().to_numpy()))]) if len(per_flow) else float("nan")
    return {
        "mode": spec.mode, "placement": spec.placement, "workload": spec.workload, "flows": spec.streams,
        "hosts": spec.cluster.hosts, "des_gbps": d, "fluid_gbps": f, "error": f / d - 1.0 if d > 0 else float("nan"),
        "flow_error": worst,
        "des_duration_s": des.spec.duration_s, "des_drift": des.window_drift,
        "des_wall_s": des_wall, "fluid_wall_s": fluid.wall_s,
    }

