"""Benchmark: how fast the packet-level engine simulates each mode's real datapath.

For every mode (its default placement), one ``tcp_stream`` and one ``tcp_rr`` run on the
default two-host cluster; prints, per run, simulated seconds per wall second, SimPy events and
packets (skbs created, including ACKs, ARP and retransmissions) per wall second.

    python benchmarks/modes.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import run
from perfsim.topology.modes import MODES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    args = ap.parse_args(argv)
    duration = 0.005 if args.quick else 0.05
    total_events = total_wall = 0.0
    for mode, info in MODES.items():
        if mode == "none":
            continue
        for workload in ("tcp_stream", "tcp_rr"):
            spec = RunSpec(mode=mode, workload=workload, placement=info.default_placement,
                           containers_per_host=2, duration_s=duration, warmup_s=duration / 5)
            t0 = time.perf_counter()
            r = run(spec)
            wall = time.perf_counter() - t0
            packets = r.accounting["created"]
            total_events += r.sim_events
            total_wall += wall
            print(f"{mode:12s} {workload:10s} sim_s_per_wall_s={duration / wall:.4f} "
                  f"events_per_s={r.sim_events / wall:.0f} packets_per_s={packets / wall:.0f}")
    print(f"all events_per_s={total_events / total_wall:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
