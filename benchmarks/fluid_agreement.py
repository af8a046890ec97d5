"""Benchmark: fluid vs DES throughput on the whole small-scenario grid
(:mod:`perfsim.fluid.agreement`: every mode × placement × tcp/udp stream × 1–64 flows × 2–8
hosts). Prints every point's error — the aggregate's and its worst flow's — and the summary; the
issue's bound (5 %) is on the aggregate.

    python benchmarks/fluid_agreement.py [--modes overlay,bridge] [--quick]
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from concurrent.futures import ProcessPoolExecutor

from perfsim.fluid.agreement import GRID_DURATION_S, GRID_FLOWS, GRID_HOSTS, TOLERANCE, compare_point, grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=None, help="comma-separated modes (default: all)")
    ap.add_argument("--quick", action="store_true", help="1 and 16 flows on 2 and 8 hosts only")
    ap.add_argument("--duration", type=float, default=GRID_DURATION_S,
                    help="simulated seconds per point (a DES run not yet steady is doubled, up to 1.6 s)")
    ap.add_argument("--workers", type=int, default=1, help="points run in parallel processes")
    args = ap.parse_args(argv)
    modes = args.modes.split(",") if args.modes else None
    flows, hosts = ((1, 16), (2, 8)) if args.quick else (GRID_FLOWS, GRID_HOSTS)
    rows = []
    specs = list(grid(modes, flows=flows, hosts=hosts, duration_s=args.duration))
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        results = pool.map(compare_point, specs) if args.workers > 1 else map(compare_point, specs)
        for row in results:
            rows.append(row)
            print(f"{row['mode']:12s} {row['placement']:10s} {row['workload']:10s} flows={row['flows']:3d} "
                  f"hosts={row['hosts']} des={row['des_gbps']:8.3f} fluid={row['fluid_gbps']:8.3f} Gbit/s "
                  f"error={100 * row['error']:+6.1f}% (DES {row['des_duration_s']:g} s, drift {100 * row['des_drift']:+.1f}%) "
                  f"worst flow {100 * row['flow_error']:+.1f}%",
                  flush=True)
    table = pd.DataFrame(rows)
    err = table["error"].abs()
    print(f"\n{len(table)} points: mean |error| {100 * err.mean():.2f}%, max {100 * err.max():.2f}%, "
          f"within {100 * TOLERANCE:.0f}%: {int((err <= TOLERANCE).sum())} of {len(table)} "
          f"({100 * (err <= TOLERANCE).mean():.1f}%)")
    ferr = table["flow_error"].abs()
    print(f"per flow: the worst flow of each point within {100 * TOLERANCE:.0f}% in "
          f"{int((ferr <= TOLERANCE).sum())} of {len(table)} points, max {100 * ferr.max():.1f}%")
    print(f"wall: DES {table['des_wall_s'].sum():.1f} s, fluid {table['fluid_wall_s'].sum():.1f} s")
    print(table.groupby(["mode", "workload"])["error"].agg(lambda e: f"max {100 * e.abs().max():.1f}%").to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
