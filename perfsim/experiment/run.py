"""One run: build the cluster and mode, start the workload's flows, simulate, collect frames.

``run(spec)`` is the lower-level Python API (``perfsim.run``); ``Result.summary()`` is the row
``perfsim compare`` prints.  Flows are placed by :meth:`RunSpec.slots`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from perfsim.components.link import Link
from perfsim.core.packet import PROTO_TCP, PROTO_UDP
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.experiment.config import RunSpec
from perfsim.metrics.frames import TableSampler, core_frame, drop_frame, link_frame, stage_frame
from perfsim.topology.cluster import build_cluster
from perfsim.topology.modes import MODES
from perfsim.transport.workloads import Flow, start_workload

START_JITTER_S = 50e-6
"""Flows start at a random time in [0, 50 µs), as separately launched netperf processes do."""
MAX_EXTRA_WARMUP_S = 1.0
"""Simulated seconds the warm-up may be extended while flows are still starting up."""
TABLE_SAMPLES = 20
"""Table occupancy is sampled this many times per run."""
SERVER_PORT_BASE = 5001
CLIENT_PORT_BASE = 32768

SUMMARY_COLUMNS = [
    "mode", "placement", "workload", "streams", "message_size", "throughput_gbps", "pps",
    "transactions_per_s", "latency_p50_us", "latency_p99_us", "cpu_s_per_gb", "drops",
]


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

    def summary(self) -> dict[str, Any]:
        """One row in :data:`SUMMARY_COLUMNS` (plus a few extras) for ``perfsim compare``."""
        spec = self.spec
        dur = spec.duration_s - spec.warmup_s
        total_bytes = float(self.flows["bytes"].sum())
        cpu_s = float(self.cores["busy_s"].sum())
        lat = self.latencies_s
        return {
            "mode": spec.mode,
            "placement": spec.placement,
            "workload": spec.workload,
            "streams": spec.streams,
            "message_size": spec.message_bytes,
            "throughput_gbps": total_bytes * 8 / dur / 1e9,
            "pps": float(self.flows["packets"].sum()) / dur,
            "transactions_per_s": float(self.flows["transactions"].sum()) / dur,
            "latency_p50_us": float(np.percentile(lat, 50) * 1e6) if lat.size else float("nan"),
            "latency_p99_us": float(np.percentile(lat, 99) * 1e6) if lat.size else float("nan"),
            "cpu_s_per_gb": cpu_s / (total_bytes / 1e9) if total_bytes > 0 else float("nan"),
            "drops": int(self.drops["window_count"].sum()) if len(self.drops) else 0,
            "retransmits": int(self.flows["retransmits"].sum()),
            "cpu_utilisation": cpu_s / dur / max(len(self.cores), 1),
            "measured_from_s": self.measured_from_s,
        }


def run(spec: RunSpec) -> Result:
    """Simulate ``spec`` and return its frames. Raises ConfigError on an impossible spec."""
    wall0 = time.perf_counter()
    sim = Sim(seed=spec.seed, profile=load_profile(spec.profile))
    cl = build_cluster(sim, spec.cluster)
    net = MODES[spec.mode].build(cl, spec.containers_per_host, **spec.mode_options)
    flows: list[Flow] = []
    for i in range(spec.streams):
        ch, cc, sh, sc = spec.slots(i)
        port = SERVER_PORT_BASE + i
        proto = PROTO_TCP if spec.workload.startswith("tcp") else PROTO_UDP
        connect_ip, connect_port = net.target((ch, cc), (sh, sc), port, proto)
        flows.append(
            start_workload(
                sim, spec.workload, net.endpoint(ch, cc), net.endpoint(sh, sc), spec.message_bytes,
                server_port=port, client_port=CLIENT_PORT_BASE + 97 * i,
                connect_ip=connect_ip, connect_port=connect_port,
                start_s=float(sim.rng.stream(f"flow{i}.start").uniform(0.0, START_JITTER_S)),
                measure_from_s=0.0,
            )
        )
    links = [el for el in sim.elements.values() if isinstance(el, Link)]
    snapshot: dict[str, Any] = {}

    def take_snapshot(_: Any) -> None:
        now = sim.now
        snapshot["cores"] = {c.name: c.work_done(now) for h in cl.hosts for c in h.cpus.cores}
        snapshot["stages"] = {(h.name, s): st.cpu_s for h in cl.hosts for s, st in h.stages.items()}
        snapshot["links"] = {link.name: link.work_done(now) for link in links}
        snapshot["drops"] = dict(sim.drops)

    sampler = TableSampler(sim, spec.duration_s / TABLE_SAMPLES)
    window_s = spec.duration_s - spec.warmup_s
    t = spec.warmup_s
    sim.run(t)
    # Warm-up ends once every flow has delivered something (ARP, handshakes and table
    # misses of a large start-up are over), at the earliest at warmup_s.
    tick = max(spec.warmup_s / 4, 1e-3)
    while not all(f.stats.progressed for f in flows) and t < spec.warmup_s + MAX_EXTRA_WARMUP_S:
        t += tick
        sim.run(t)
    warm = all(f.stats.progressed for f in flows)
    for f in flows:
        f.stats.restart(t)
    take_snapshot(None)
    end = t + window_s
    sim.run(end)
    dur = window_s
    rows = []
    for i, f in enumerate(flows):
        row = {"flow": i, "mode": spec.mode, **f.summary(end)}
        rows.append(row)
    lat = np.concatenate([np.asarray(f.stats.latencies_s, dtype=float) for f in flows]) if flows else np.empty(0)
    return Result(
        spec=spec,
        flows=pd.DataFrame(rows),
        stages=stage_frame(cl.hosts, snapshot.get("stages")),
        cores=core_frame(cl.hosts, end, dur, snapshot.get("cores")),
        links=link_frame(links, end, dur, snapshot.get("links")),
        drops=drop_frame(sim, snapshot.get("drops")),
        tables=sampler.frame(),
        accounting={
            "created": sim.created, "delivered": sim.delivered,
            "dropped": sim.dropped, "in_flight": sim.in_flight(),
        },
        latencies_s=lat,
        wall_s=time.perf_counter() - wall0,
        measured_from_s=t,
        warm=warm,
        sim_events=next(sim._eid),
    )
