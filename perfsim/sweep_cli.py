"""``perfsim sweep SPEC.yaml``: a grid of scenario parameters x seeds, on Dask, resumable.

Exit status: 0 when every point ran; 1 when the sweep finished but some points are stored as
errors (their ``error`` column says why); 2 for a bad spec or option (one line, nothing run);
130 when interrupted (Ctrl-C or SIGTERM: the finished points are kept, run the same command
to resume).  The spec format and the Dask set-up are in ``docs/sweep.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

FORMATS = ("table", "csv", "none")
EXIT_POINT_ERRORS = 1
EXIT_INTERRUPTED = 130


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer >= 0") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer >= 0")
    return n


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``perfsim sweep``."""
    parser.add_argument("spec", help="sweep spec YAML file (see docs/sweep.md)")
    parser.add_argument("--out", default=None, help="output directory (default: results/sweep/<spec name>)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_workers, default=None,
                       help="worker processes of the embedded Dask LocalCluster on 127.0.0.1 (default: one per "
                            "core); 0 runs every point in this process, without Dask")
    where.add_argument("--scheduler", default=None,
                       help="address of a running Dask scheduler, e.g. tcp://10.1.2.3:8786, whose workers run "
                            "the points (see docs/sweep.md)")
    parser.add_argument("--restart", action="store_true", help="discard the results already in --out and start over")
    parser.add_argument("--retry-errors", action="store_true",
                        help="run again the points stored as errors (by default they are kept and skipped)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--format", default="table", help="summary printed on stdout: table, csv or none")


def sweep_main(args: argparse.Namespace) -> int:
    """``perfsim sweep``: returns the exit status (ConfigError propagates: exit 2)."""
    from perfsim.errors import ConfigError
    from perfsim.experiment.parquet_store import PointStore
    from perfsim.experiment.sweep import default_out_dir, execute
    from perfsim.experiment.sweep_spec import load_spec

    if args.format not in FORMATS:
        raise ConfigError("--format", args.format, f"one of {', '.join(FORMATS)}")
    spec = load_spec(args.spec)
    out_dir = Path(args.out) if args.out is not None else default_out_dir(spec)
    try:
        out = execute(spec, out_dir, workers=args.workers, scheduler=args.scheduler, restart=args.restart,
                      retry_errors=args.retry_errors, progress=not args.no_progress, handle_sigterm=True)
    except KeyboardInterrupt:
        status = PointStore(out_dir).status()
        stored = sum(1 for p in spec.points if p.point_id in status)
        sys.stderr.write(f"perfsim sweep: interrupted; {stored} of {len(spec.points)} points stored in "
                         f"{out_dir / 'points'} (run the same command to resume)\n")
        return EXIT_INTERRUPTED
    if args.format == "csv":
        sys.stdout.write(out.summary.to_csv(index=False))
    elif args.format == "table" and len(out.summary):
        table = summary_table(out.summary, spec.factor_names)
        with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_rows", 1000):
            sys.stdout.write(table.to_string(index=False) + "\n")
    sys.stdout.flush()
    sys.stderr.write(
        f"sweep {spec.name}: {out.points} points ({spec.configurations} configurations x {len(spec.seeds)} seeds): "
        f"{out.ran} run now, {out.skipped} already done, {out.errors} errors; {out.wall_s:.1f} s\n"
        f"results: {out.paths['results.parquet']}, summary: {out.paths['summary.csv']}\n")
    if out.errors:
        first = out.results.loc[out.results["error"].notna(), "error"].iloc[0]
        sys.stderr.write(f"perfsim sweep: {out.errors} points failed (error column of results; first: {first})\n")
        return EXIT_POINT_ERRORS
    return 0


def summary_table(summary: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """The printed summary: the varying parameters, the workload, n, and each metric that has
    a value as ``mean ±half-width`` of its 95 % confidence interval."""
    from perfsim.experiment.sweep import METRICS

    cols: dict[str, Any] = {f: summary[f] for f in factors if f in summary.columns}
    cols["workload"] = summary["workload"]
    cols["n"] = summary["n"]
    if summary["errors"].any():
        cols["errors"] = summary["errors"]
    for m in METRICS:
        mean = summary[f"{m}_mean"]
        if mean.notna().any():
            half = (summary[f"{m}_ci95_high"] - summary[f"{m}_ci95_low"]) / 2
            cols[m] = [_cell(a, b) for a, b in zip(mean, half, strict=True)]
    return pd.DataFrame(cols)


def _cell(mean: float, half: float) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    if half is None or math.isnan(half):
        return f"{mean:.4g}"
    if half <= 1e-9 * abs(mean):  # every seed gave the same value (up to rounding)
        half = 0.0
    return f"{mean:.4g} ±{half:.2g}"
