"""Benchmark: the fluid engine at scale.

1. The issue's question as a user asks it, run as a separate process:
   ``perfsim compare --engine fluid --modes overlay --hosts 1000 --containers-per-host 50
   --streams 2 --format csv`` (100,000 flows, every workload): wall time and peak memory
   (the process and its workers).
2. Cost growth with flows: ``tcp_stream`` on the overlay with 1,000 hosts and 1k..100k flows,
   solve time per point (the probe, a fixed cost, printed apart).

    python benchmarks/fluid_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time

from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import run_fluid
from perfsim.topology.cluster import ClusterSpec

COMMAND = ["compare", "--engine", "fluid", "--modes", "overlay", "--hosts", "1000", "--containers-per-host", "50",
           "--streams", "2", "--format", "csv"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the curve only, up to 10k flows")
    args = ap.parse_args(argv)
    if not args.quick:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "perfsim.cli", *COMMAND, "--out", out],
                               capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if p.returncode != 0:
            print(p.stderr, file=sys.stderr)
            return 1
        rows = p.stdout.strip().splitlines()
        print(f"perfsim {' '.join(COMMAND)}")
        print(f"  {len(rows) - 1} rows, wall {wall:.2f} s, peak memory {peak_mb:.0f} MB (largest process)")
        for line in rows:
            print("  " + ",".join(line.split(",")[:12]))
    print("\ncost growth with flows (overlay tcp_stream, 1000 hosts, 50 containers per host):")
    print(f"{'flows':>8} {'probe_s':>8} {'build_s':>8} {'solve_s':>8} {'total_s':>8} {'flows_per_s':>12}")
    for flows in (1000, 3000, 10000) if args.quick else (1000, 3000, 10000, 30000, 100000):
        spec = RunSpec(mode="overlay", workload="tcp_stream", streams=flows, containers_per_host=50,
                       cluster=ClusterSpec(hosts=1000), duration_s=0.02, warmup_s=0.004, engine="fluid")
        t0 = time.perf_counter()
        r = run_fluid(spec)
        total = time.perf_counter() - t0
        t = r.timings
        print(f"{flows:8d} {t['probe_s']:8.2f} {t['build_s']:8.2f} {t['solve_s']:8.2f} {total:8.2f} "
              f"{flows / max(total - t['probe_s'], 1e-9):12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
