"""``perfsim run SCENARIO.yaml`` and ``perfsim check SCENARIO.yaml``.

``run`` validates the whole scenario (:func:`perfsim.scenario.compile.check`), simulates it and
writes, each file atomically, into ``results/<name>/`` (or ``--out``): ``summary.csv`` and
``summary.parquet`` (one row per workload), ``flows.csv``, ``stages.csv``, ``drops.csv``,
``tables.csv`` and ``report.html`` with its PNGs.  Result files hold no wall-clock value, so
the same scenario and seed give byte-identical files; the report carries the date.

``check`` does everything but the simulation and prints ``ok: <name>: N containers, M flows``.
Errors propagate as ConfigError: ``perfsim.cli`` prints them on one line and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfsim.errors import ConfigError
from perfsim.experiment.output import write_frame
from perfsim.experiment.simulate import Simulated, simulate
from perfsim.scenario.compile import check, slots
from perfsim.scenario.load import load_file
from perfsim.scenario.model import Scenario

FORMATS = ("table", "csv", "json")
SUMMARY_COLUMNS = [
    "name", "type", "client", "server", "streams", "message_size", "throughput_gbps", "pps",
    "transactions_per_s", "latency_p50_us", "latency_p99_us", "cpu_s_per_gb", "drops",
]
RESULT_FILES = ("summary.csv", "summary.parquet", "flows.csv", "stages.csv", "drops.csv", "tables.csv")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``perfsim run``."""
    parser.add_argument("scenario", help="scenario YAML file (see docs/scenario-format.md)")
    parser.add_argument("--out", default=None, help="directory for results and report (default: results/<name>)")
    parser.add_argument("--format", default="table", help="table, csv or json (printed summary)")
    parser.add_argument("--testbed", action="store_true",
                        help="simulate the calibration testbed (same as hosts.testbed: true in the file)")
    parser.add_argument("--engine", default="des",
                        help="des (packet level), fluid (flow level) or auto (DES up to 256 flows and 512 "
                             "containers, fluid beyond)")


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``perfsim check``."""
    parser.add_argument("scenario", help="scenario YAML file (see docs/scenario-format.md)")


def summary_frame(scenario: Scenario, out: Simulated) -> pd.DataFrame:
    """One row per workload, in file order (:data:`SUMMARY_COLUMNS`).

    Rates are per second of the measurement window.  Latency percentiles pool the samples of
    the workload's streams.  CPU cannot be attributed to one workload (flows share cores), so
    ``cpu_s_per_gb`` is the whole cluster's CPU time divided by the gigabytes all workloads
    delivered — the same in every row.  ``drops`` counts the workload's flows' own drops.
    """
    window = out.window_s
    cpu_s = float(out.cores["busy_s"].sum()) if len(out.cores) else 0.0
    all_bytes = float(out.flows["bytes"].sum())
    rows: list[dict[str, Any]] = []
    for w in scenario.workloads:
        f = out.flows[out.flows["group"] == w.name]
        lat = out.latencies_s.get(w.name, np.empty(0))
        size = w.message_size
        if size is None:
            from perfsim.experiment.config import DEFAULT_MESSAGE_BYTES
            size = DEFAULT_MESSAGE_BYTES[w.type]
        total = float(f["bytes"].sum())
        rows.append({
            "name": w.name, "type": w.type, "client": w.client, "server": w.server, "streams": w.streams,
            "message_size": size,
            "throughput_gbps": total * 8 / window / 1e9,
            "pps": float(f["packets"].sum()) / window,
            "transactions_per_s": float(f["transactions"].sum()) / window,
            "latency_p50_us": float(np.percentile(lat, 50) * 1e6) if lat.size else float("nan"),
            "latency_p99_us": float(np.percentile(lat, 99) * 1e6) if lat.size else float("nan"),
            "cpu_s_per_gb": cpu_s / (all_bytes / 1e9) if all_bytes > 0 else float("nan"),
            "drops": int(f["drops"].sum()),
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def flows_frame(scenario: Scenario, out: Simulated) -> pd.DataFrame:
    """The per-flow frame with container names instead of ``h<h>c<c>`` slots."""
    names = {f"h{h}c{c}": n for n, (h, c) in slots(scenario).items()}
    df = out.flows.copy()
    if len(df):
        df["client"] = df["client"].map(names)
        df["server"] = df["server"].map(names)
    return df


def write_results(scenario: Scenario, out: Simulated, out_dir: Path, summary: pd.DataFrame) -> dict[str, Path]:
    """Write every result file atomically; returns file name -> path."""
    frames = {
        "summary.csv": summary, "summary.parquet": summary, "flows.csv": flows_frame(scenario, out),
        "stages.csv": out.stages, "drops.csv": out.drops, "tables.csv": out.tables,
    }
    return {name: write_frame(df, out_dir / name) for name, df in frames.items()}


def run_scenario(path: str | Path, out_dir: str | Path | None = None,
                 overrides: dict[str, Any] | None = None,
                 engine: str = "des") -> tuple[Scenario, pd.DataFrame, dict[str, Path]]:
    """Load, check, simulate and write one scenario file; return (scenario, summary, paths).

    ``overrides`` replaces top-level keys of the file (e.g. ``duration_s``) before validation;
    ``engine`` is ``des``, ``fluid`` or ``auto`` (:func:`perfsim.fluid.choose_engine`).
    """
    scenario = load_file(path)
    if overrides:
        import dataclasses

        scenario = dataclasses.replace(scenario, **overrides)
    checked = check(scenario)
    out = simulate_with(checked.experiment, engine)
    target = Path(out_dir) if out_dir is not None else Path("results") / scenario.name
    summary = summary_frame(scenario, out)
    paths = write_results(scenario, out, target, summary)
    from perfsim.reports.scenario_report import write_scenario_report

    paths.update(write_scenario_report(target, scenario, summary, out.stages, str(path)))
    return scenario, summary, paths


def simulate_with(exp: Any, engine: str) -> Simulated:
    """``exp`` on the DES or the fluid engine (``auto``: chosen by its size)."""
    from perfsim.fluid.experiment import engine_of, simulate_fluid

    return simulate(exp) if engine_of(exp, engine) == "des" else simulate_fluid(exp)


def run_main(args: argparse.Namespace) -> int:
    """``perfsim run``: returns the exit status (ConfigError propagates)."""
    if args.format not in FORMATS:
        raise ConfigError("--format", args.format, f"one of {', '.join(FORMATS)}")
    overrides = None
    if args.testbed:
        import dataclasses

        scenario = load_file(args.scenario)
        overrides = {"hosts": dataclasses.replace(scenario.hosts, testbed=True)}
    _, table, paths = run_scenario(args.scenario, args.out, overrides, engine=args.engine)
    if args.format == "csv":
        sys.stdout.write(table.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(table.to_json(orient="records", indent=1) + "\n")
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 500):
            sys.stdout.write(table.to_string(index=False, float_format=lambda x: f"{x:.3g}") + "\n")
    sys.stderr.write(f"results: {paths['summary.csv'].parent}, report: {paths.get('report.html', '')}\n")
    return 0


def check_main(args: argparse.Namespace) -> int:
    """``perfsim check``: validate without simulating; prints one ``ok:`` line."""
    scenario = load_file(args.scenario)
    checked = check(scenario)
    sys.stdout.write(f"ok: {scenario.name}: {checked.containers} containers, {checked.flows} flows\n")
    return 0
