"""A scenario's :class:`~perfsim.experiment.simulate.Experiment` on the fluid engine: the same
:class:`~perfsim.experiment.simulate.Simulated` frames ``perfsim run`` and ``perfsim sweep``
report, computed by :func:`perfsim.fluid.engine.solve`.

Differences from the DES a scenario can see: flows with ``start_s``/``stop_s`` count as running
through the whole measurement window (the fluid engine is a steady state); published ports are
applied to the probe topology where their container exists in it (the probe has at most
:data:`perfsim.fluid.probe.PROBE_MAX_HOSTS` hosts); there are no drops; latency samples are one
estimate per flow.
"""

from __future__ import annotations

import pandas as pd

from perfsim.errors import ConfigError
from perfsim.experiment.simulate import Experiment, Simulated


def engine_of(exp: Experiment, engine: str) -> str:
    """``des`` or ``fluid`` for ``engine`` (``auto`` by the size of ``exp``)."""
    from perfsim.experiment.config import ENGINES
    from perfsim.fluid import choose_engine

    if engine not in ENGINES:
        raise ConfigError("engine", engine, f"one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    if scheduled(exp):
        return "des"
    return choose_engine(len(exp.flows), exp.cluster.hosts * exp.containers_per_host)


def scheduled(exp: Experiment) -> bool:
    """Does ``exp`` need the scheduler model the fluid engine lacks?"""
    return any(exp.cluster.schedules(f.workload) for f in exp.flows)


def simulate_fluid(exp: Experiment) -> Simulated:
    """``exp`` on the fluid engine."""
    from perfsim.fluid.engine import solve
    from perfsim.fluid.flows import flows_of_plans

    if exp.count_by_core:
        raise ConfigError("count_by_core", True, "False with the fluid engine (it counts no stages per core)")
    if scheduled(exp):
        from perfsim.topology.cluster import NO_FLUID_SCHEDULER

        raise ConfigError("engine", "fluid", NO_FLUID_SCHEDULER)
    sol = solve(flows_of_plans(exp.flows), cluster=exp.cluster, containers_per_host=exp.containers_per_host,
                mode=exp.mode, mode_options=exp.mode_options, profile=exp.profile, seed=exp.seed,
                duration_s=exp.duration_s, warmup_s=exp.warmup_s, publish=exp.publish)
    f = sol.flows
    flows = pd.DataFrame({
        "flow": f["flow"], "group": f["group"], "mode": exp.mode,
        "client": "h" + f["client_host"].astype(str) + "c" + f["client_container"].astype(str),
        "server": "h" + f["server_host"].astype(str) + "c" + f["server_container"].astype(str),
        "workload": f["workload"], "bytes": f["bytes"], "packets": f["packets"],
        "transactions": f["transactions"], "throughput_bps": f["throughput_bps"],
        "latency_p50_s": f["latency_p50_s"], "latency_p99_s": f["latency_p99_s"],
        "retransmits": 0, "drops": f["drops"],
    })
    latencies = {str(g): grp["latency_p50_s"].to_numpy(dtype=float) for g, grp in flows.groupby("group", sort=False)}
    return Simulated(
        flows=flows, stages=sol.stages, cores=sol.cores, links=sol.links,
        drops=sol.drops,
        tables=sol.conntrack, accounting={}, latencies_s=latencies, window_s=sol.window_s,
        measured_from_s=exp.warmup_s, warm=True, window_drift=0.0, wall_s=sol.wall_s, sim_events=0,
    )


__all__ = ["engine_of", "simulate_fluid"]
