"""The ``perfsim`` command line.

Every bad option exits with status 2 and one line on stderr naming the option, the value and
what is allowed; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from perfsim.errors import PerfsimError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"perfsim: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a number") from None


def build_parser() -> argparse.ArgumentParser:
    from perfsim.experiment.config import WORKLOADS
    from perfsim.topology.modes import MODES, PLACEMENTS

    p = _Parser(prog="perfsim", description="Discrete-event simulator of container networking datapaths.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("compare", help="compare network modes side by side")
    c.add_argument("--modes", default=None,
                   help=f"comma-separated, from {', '.join(MODES)} (default: all that carry a flow)")
    c.add_argument("--workload", default=None, help=f"one of {', '.join(WORKLOADS)} (default: all)")
    c.add_argument("--streams", type=_positive_int, default=None,
                   help="concurrent flows (default: sweep 1, 4, 16, 64, 256); with --containers-per-host, "
                        "flows per client container")
    c.add_argument("--message-size", type=_positive_int, default=None)
    c.add_argument("--hosts", type=_positive_int, default=2)
    c.add_argument("--containers-per-host", type=_positive_int, default=None)
    c.add_argument("--placement", default=None, help=f"one of {', '.join(PLACEMENTS)}")
    c.add_argument("--nic-gbps", type=_number, default=10.0)
    c.add_argument("--cores", type=_positive_int, default=4)
    c.add_argument("--mtu", type=_positive_int, default=1500)
    c.add_argument("--offloads", default="on", help="on or off")
    c.add_argument("--qdisc", default="fq_codel",
                   help="queueing discipline of every host NIC: fq_codel (Linux's default) or pfifo (1000-packet tail drop)")
    c.add_argument("--duration", type=_number, default=0.02, help="simulated seconds per run")
    c.add_argument("--until-steady", type=_number, default=None, metavar="MAX_S",
                   help="run a DES run whose measurement window is not a steady state again twice as long, "
                        "up to MAX_S simulated seconds (the duration used is in the duration_s column)")
    c.add_argument("--profile", default="default", help="built-in profile name or YAML file")
    c.add_argument("--seed", type=_positive_int, default=0)
    c.add_argument("--format", default="table", help="table, csv or json")
    c.add_argument("--out", default="results/compare", help="directory for results and report")
    c.add_argument("--workers", type=_positive_int, default=None, help="parallel runs (default: cores)")
    c.add_argument("--testbed", action="store_true",
                   help="simulate the calibration testbed: hosts are namespaces on one machine sharing --cores, "
                        "joined by a veth wire")
    c.add_argument("--engine", default="des",
                   help="des (packet level), fluid (flow level: max-min shares of cores and links) or auto "
                        "(DES up to 256 flows and 512 containers, fluid beyond)")
    c.add_argument("--cpu-ghz", type=_number, default=None,
                   help="clock of the simulated cores; scales the profile from its own machine's clock")
    c.add_argument("--scheduler", default=None,
                   help="how application tasks pinned to one core share it: eevdf (Linux's scheduler; the udp_stream "
                        "sender and reader take part) or fifo (work in arrival order); default: eevdf with "
                        "--testbed, fifo otherwise (the fluid engine has no scheduler model)")
    c.add_argument("--idle-wakeup-us", type=_number, default=None,
                   help="latency before an idle core starts work (default: the profile's, measured on its machine: "
                        "a VM's vCPU wake-up for the default profile; a few us on bare metal)")
    from perfsim.trace import add_trace_arguments

    t = sub.add_parser("trace", help="walk one packet through a mode hop by hop")
    add_trace_arguments(t)
    from perfsim.scenario.cli import add_check_arguments, add_run_arguments

    add_run_arguments(sub.add_parser("run", help="run a scenario file (YAML)"))
    add_check_arguments(sub.add_parser("check", help="validate a scenario file without running it"))
    from perfsim.calibrate.cli import add_calibrate_arguments, add_validate_arguments

    add_calibrate_arguments(sub.add_parser("calibrate", help="measure the real kernel here and fit a cost profile"))
    add_validate_arguments(sub.add_parser("validate", help="measured vs simulated, with the error in %%"))
    from perfsim.sweep_cli import add_sweep_arguments

    add_sweep_arguments(sub.add_parser("sweep", help="a grid of scenario parameters x seeds on Dask, resumable"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "compare":
            return _compare(args, argv)
        if args.command == "trace":
            from perfsim.trace import trace_main

            return trace_main(args)
        if args.command in ("run", "check"):
            from perfsim.scenario.cli import check_main, run_main

            return run_main(args) if args.command == "run" else check_main(args)
        if args.command in ("calibrate", "validate"):
            from perfsim.calibrate.cli import calibrate_main, validate_main

            return calibrate_main(args) if args.command == "calibrate" else validate_main(args)
        if args.command == "sweep":
            from perfsim.sweep_cli import sweep_main

            return sweep_main(args)
    except PerfsimError as exc:
        if args.debug:
            raise
        print(f"perfsim {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perfsim: interrupted", file=sys.stderr)
        return 130
    return 0


def _compare(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Validate every option, run, print in the chosen format, write results and report."""
    from pathlib import Path

    import pandas as pd

    from perfsim.core.profile import load_profile
    from perfsim.errors import ConfigError
    from perfsim.experiment.compare import FORMATS, HOST_SWEEP_FLOWS_PER_HOST, execute, plan
    from perfsim.experiment.output import write_frame

    if args.format not in FORMATS:
        raise ConfigError("--format", args.format, f"one of {', '.join(FORMATS)}")
    if args.offloads not in ("on", "off"):
        raise ConfigError("--offloads", args.offloads, "on or off")
    from perfsim.components.codel import QDISCS

    if args.qdisc not in QDISCS:
        raise ConfigError("--qdisc", args.qdisc, " or ".join(QDISCS))
    if args.idle_wakeup_us is not None:
        from perfsim.errors import check_number

        check_number("--idle-wakeup-us", args.idle_wakeup_us, low=0.0, high=1e5)
    modes = None if args.modes is None else [m.strip() for m in args.modes.split(",") if m.strip()]
    specs = plan(
        modes, workload=args.workload, streams=args.streams, message_size=args.message_size,
        hosts=args.hosts, containers_per_host=args.containers_per_host, placement=args.placement,
        nic_gbps=args.nic_gbps, cores=args.cores, mtu=args.mtu, offloads=args.offloads == "on",
        qdisc=args.qdisc, duration_s=args.duration, profile=args.profile, seed=args.seed, testbed=args.testbed, cpu_ghz=args.cpu_ghz,
        idle_wakeup_s=None if args.idle_wakeup_us is None else args.idle_wakeup_us * 1e-6, engine=args.engine,
        scheduler=args.scheduler,
    )
    if args.until_steady is not None:
        from perfsim.errors import check_number

        check_number("--until-steady", args.until_steady, low=args.duration, high=3600.0)
    profile = load_profile(args.profile)
    out = execute(specs, workers=args.workers, progress=True, until_steady_s=args.until_steady)
    table = out.table
    out_dir = Path(args.out)
    write_frame(table, out_dir / "compare.csv")
    write_frame(table, out_dir / "compare.parquet")
    if len(out.stages):
        write_frame(out.stages, out_dir / "stages.csv")
    from perfsim import __version__
    from perfsim.reports.html import write_report

    meta = {
        "command": "perfsim " + " ".join(sys.argv[1:] if argv is None else argv),
        "profile": f"{profile.name}: {profile.provenance.get('source', '')}",
        "perfsim": __version__,
        "runs": len(specs),
        "host_sweep_flows_per_host": HOST_SWEEP_FLOWS_PER_HOST,
        "wall_s": round(out.wall_s, 1),
    }
    paths = write_report(out_dir, table, out.stages if len(out.stages) else None, meta)
    if args.format == "csv":
        sys.stdout.write(table.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(table.to_json(orient="records", indent=1) + "\n")
    else:
        cols = ["mode", "placement", "workload", "streams", "throughput_gbps", "transactions_per_s",
                "latency_p50_us", "latency_p99_us", "cpu_s_per_gb", "drops"]
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 500):
            print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    _note_unsteady(table)
    print(f"results: {out_dir / 'compare.csv'}, report: {paths.get('report.html', out_dir)}", file=sys.stderr)
    return 0


def _note_unsteady(table: Any) -> None:
    """Say on stderr which packet-level runs measured a transient rather than a steady state."""
    from perfsim.experiment.run import STEADY_DRIFT

    drift = table["window_drift"].abs()
    unsteady = table[drift > STEADY_DRIFT]
    if len(unsteady):
        worst = unsteady.loc[drift[drift > STEADY_DRIFT].idxmax()]
        print(f"note: {len(unsteady)} of {len(table)} runs not in a steady state (window drift up to "
              f"{worst['window_drift']:+.0%}, {worst['mode']} {worst['workload']} x{worst['streams']}: delivered bytes "
              "changed between the halves of the measurement window, or unread bytes grew or drained); a longer --duration "
              "or --until-steady MAX_S measures the steady state", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
