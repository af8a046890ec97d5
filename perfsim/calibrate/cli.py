"""``perfsim calibrate`` and ``perfsim validate``.

``calibrate``: measure the real kernel's datapaths on this machine (or read stored raw
measurements with ``--from-raw``), fit the profile's constants on the training subset, write the
profile YAML with its provenance and the raw measurements beside it (``<profile>.raw.csv``, and
the idle-CPU wake-up samples that set ``idle_wakeup``, ``<profile>.wakeup.csv.gz``).

``validate``: simulate the measured configurations with a profile and print measured vs
simulated with the error in %, held-out and training marked, plus a PNG figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from perfsim.errors import ConfigError, check_number

PRIOR_PROFILE = "prior"
"""The shipped engineering estimates the fit starts from (and keeps where the testbed is blind)."""
EXIT_NO_NAMESPACES = 3


def raw_path_for(profile_path: Path) -> Path:
    """Where a profile's raw measurements live: ``name.yaml`` -> ``name.raw.csv``."""
    return profile_path.with_name(profile_path.stem + ".raw.csv")


def add_calibrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="host, bridge and overlay paths only, short runs (< 2 min)")
    p.add_argument("--out", default="results/calibrate/profile.yaml", help="profile YAML to write (raw CSV beside it)")
    p.add_argument("--from-raw", default=None, help="fit stored raw measurements (CSV) instead of measuring")
    p.add_argument("--paths", default=None, help="comma-separated testbed paths to measure (default: the plan's)")
    p.add_argument("--duration", type=float, default=None, help="seconds per measurement repeat")
    p.add_argument("--repeats", type=int, default=None, help="repeats per measurement (median)")
    p.add_argument("--prior", default=PRIOR_PROFILE, help="profile the fit starts from")
    p.add_argument("--name", default="calibrated", help="name of the written profile")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--lambda", dest="lam", type=float, default=None, help="weight of the pull towards the prior")
    p.add_argument("--workers", type=int, default=None, help="parallel simulations (default: cores)")
    p.add_argument("--fit-wakeup", action="store_true",
                   help="fit idle_wakeup as a constant from the two-core udp_rr rate instead of measuring its "
                        "distribution (the default profile's method)")


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="default", help="built-in profile name or YAML file")
    p.add_argument("--engine", default="des", help="des, fluid or auto: the engine that simulates each configuration")
    p.add_argument("--raw", default=None, help="stored raw measurements (default: the profile's own <name>.raw.csv)")
    p.add_argument("--measure", action="store_true", help="measure the real kernel now instead of using stored data")
    p.add_argument("--quick", action="store_true", help="with --measure: the quick plan")
    p.add_argument("--held-out", action="store_true", help="show held-out configurations only")
    p.add_argument("--session", action="append", default=[], metavar="RAW",
                   help="another session's raw measurements of the same configurations (a CSV, or a built-in "
                        "profile name for its raw data; repeatable): shows how far apart the sessions' medians "
                        "are and which targets no single prediction can meet")
    p.add_argument("--testbed", action="store_true",
                   help="simulate the calibration testbed (always so: measurements come from it; accepted as in "
                        "compare and run)")
    p.add_argument("--out", default="results/validate", help="directory for validate.csv and validate.png")
    p.add_argument("--workers", type=int, default=None)


def _measure(quick: bool, paths: str | None, duration: float | None, repeats: int | None,
             wakeups: bool = False) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame | None]:
    """Measure the plan on the testbed; with ``wakeups`` also the wake-up samples
    (:func:`perfsim.calibrate.wakeup.measure_wakeups`; None on a machine with one CPU)."""
    from perfsim.calibrate import measure as m
    from perfsim.calibrate.testbed import can_create_namespaces, cleanup_stale, missing_tools

    ok, why = can_create_namespaces()
    missing = missing_tools(("iperf3", "sockperf", "gcc")) if ok else []
    if not ok or missing:
        why = why if not ok else f"missing tools: {', '.join(missing)} (make kernel-tools installs them)"
        print(f"perfsim: cannot build the testbed here: {why}", file=sys.stderr)
        raise SystemExit(EXIT_NO_NAMESPACES)
    removed = cleanup_stale()
    if removed:
        print(f"perfsim: removed {len(removed)} namespaces left by an interrupted run", file=sys.stderr)
    plan = m.quick_plan() if quick else m.full_plan()
    if paths:
        wanted = [p.strip() for p in paths.split(",") if p.strip()]
        from perfsim.calibrate.configs import PATHS

        for p in wanted:
            if p not in PATHS:
                raise ConfigError("--paths", p, f"one of {', '.join(PATHS)}")
        plan = [c for c in plan if c.path in wanted]
    kwargs: dict[str, Any] = {"progress": True}
    if duration is not None:
        kwargs["duration_s"] = check_number("--duration", duration, low=0.2, high=600)
    elif quick:
        kwargs["duration_s"] = 1.0
    if repeats is not None:
        kwargs["repeats"] = check_number("--repeats", repeats, low=1, high=100, integer=True)
    elif quick:
        kwargs["repeats"] = 1
    two_cpus = len(os.sched_getaffinity(0)) >= 2
    if wakeups and two_cpus:
        from perfsim.calibrate.wakeup import WAKE_SAMPLES

        kwargs["wakeup_samples"] = WAKE_SAMPLES
    raw = m.measure(plan, **kwargs)
    delays = raw.attrs.pop("wakeups", None)
    if wakeups and two_cpus and delays is None:  # a plan without two-core round trips
        from perfsim.calibrate.wakeup import measure_wakeups

        delays = measure_wakeups(10 * WAKE_SAMPLES)
    return raw, m.machine_info(), delays


def _read_raw(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("raw measurements", str(p), "an existing CSV written by perfsim calibrate")
    try:
        return pd.read_csv(p, comment="#")
    except (ValueError, OSError) as exc:
        raise ConfigError("raw measurements", str(p), f"a readable CSV ({exc.__class__.__name__})") from None


def calibrate_main(args: argparse.Namespace) -> int:
    from perfsim import __version__
    from perfsim.calibrate.fit import (
        DEFAULT_LAMBDA,
        MEASURED_STAGES,
        fit,
        profile_dict,
        records,
        with_constants,
    )
    from perfsim.calibrate.percall import measure_percall, stage_costs
    from perfsim.calibrate.validate import accuracy_summary, compare_measured, format_table, medians
    from perfsim.calibrate.wakeup import (
        WAKE_GAP_S,
        idle_wakeups,
        read_wakeups,
        shape_atoms,
        wakeup_path_for,
        write_wakeups,
    )
    from perfsim.core.profile import load_profile
    from perfsim.experiment.output import write_atomic, write_frame

    out = Path(args.out)
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError("--out", args.out, "a path ending in .yaml")
    prior = load_profile(args.prior)
    lam = DEFAULT_LAMBDA if args.lam is None else check_number("--lambda", args.lam, low=0, high=1e6)
    check_number("--iterations", args.iterations, low=1, high=50, integer=True)
    delays: pd.DataFrame | None = None
    if args.from_raw:
        raw = _read_raw(args.from_raw)
        machine: dict[str, Any] = {}
        prov_path = Path(args.from_raw)
        prior_yaml = prov_path.with_name(prov_path.name.removesuffix(".raw.csv") + ".yaml")
        if prior_yaml.is_file():  # reuse the machine description stored with the data
            machine = dict((yaml.safe_load(prior_yaml.read_text()) or {}).get("provenance", {}).get("machine", {}))
        if wakeup_path_for(prov_path).is_file() and not args.fit_wakeup:
            delays = read_wakeups(wakeup_path_for(prov_path))
        percall, percall_note = _stored_percall(prior_yaml)
    else:
        raw, machine, delays = _measure(args.quick, args.paths, args.duration, args.repeats,
                                        wakeups=not args.fit_wakeup)
        measured = measure_percall()
        percall = stage_costs(measured)
        percall_note = {"method": "measured by percall.c (perfsim.calibrate.percall), pinned to cpu0"
                                  + (" (its remote partner to another CPU)" if "wake_remote_s" in measured else ""),
                        **{k: float(f"{v:.4g}") for k, v in measured.items()}}
    if percall:
        prior = with_constants(prior, {(s, "per_packet_s"): v for s, v in percall.items()}, name=prior.name)
    wake_note: dict[str, Any] | str = "not measured: fitted (no wake-up samples)"
    fixed: set[tuple[str, str]] = set()
    if delays is not None:
        idle = idle_wakeups(delays)
        prior = prior.with_wake_shape(shape_atoms(idle), mean_s=float(idle.mean()))
        fixed.add(("idle_wakeup", "per_packet_s"))

        def us(x: np.ndarray, q: float | None = None) -> float:
            return round(float(np.mean(x) if q is None else np.percentile(x, q)) * 1e6, 2)

        remote = delays.loc[delays["kind"] == "remote", "delay_s"].to_numpy()
        local = delays.loc[delays["kind"] == "local", "delay_s"].to_numpy()
        wake_note = {"method": "measured by wake.c (perfsim.calibrate.wakeup): remote samples minus the local median",
                     "file": wakeup_path_for(raw_path_for(out)).name, "samples": int(remote.size), "gap_s": WAKE_GAP_S,
                     "remote_mean_us": us(remote), "remote_p50_us": us(remote, 50), "remote_p99_us": us(remote, 99),
                     "local_p50_us": us(local, 50), "idle_wakeup_mean_us": us(idle), "idle_wakeup_p50_us": us(idle, 50),
                     "idle_wakeup_p99_us": us(idle, 99)}
    table = medians(raw)
    print(f"perfsim calibrate: {table['training'].sum()} training and {(~table['training']).sum()} held-out "
          f"medians; fitting {args.iterations} iterations", file=sys.stderr)
    result = fit(table, prior, iterations=args.iterations, lam=lam, workers=args.workers, progress=True, fixed=fixed)
    raw_out = raw_path_for(out)
    write_frame(raw, raw_out)
    if delays is not None:
        write_wakeups(delays, wakeup_path_for(raw_out))
    free = result.params[result.params["free"]]
    provenance = {
        "source": "perfsim calibrate: least-squares fit to real-kernel measurements on this machine",
        "method": ("regularised bounded linear least squares over simulated design rows (perfsim.calibrate.fit), "
                   f"lambda={lam}, {args.iterations} iterations; training subset (perfsim.calibrate.configs."
                   "default_training): one stream on one core on every path but routed (TCP stream with offloads "
                   "on and off, tcp_rr, udp_rr, tcp_crr), plus the host path's TCP stream, UDP stream and "
                   "udp_rr on two cores; everything else is held out for perfsim validate"
                   + ("; idle_wakeup measured (wake.c), not fitted" if fixed else "")),
        "machine": machine,
        "date": dt.date.today().isoformat(),
        "perfsim": __version__,
        "prior": prior.name,
        "raw_measurements": raw_out.name,
        "fitted_constants": [f"{s}.{k}" for s, k in zip(free["stage"], free["kind"], strict=True)],
        "idle_wakeup": wake_note,
        "percall": percall_note,
        "residuals": [
            {"config": str(r["config_id"]), "metric": str(r["metric"]), "measured": float(f"{float(r['measured']):.6g}"),
             "simulated": float(f"{float(r['simulated']):.6g}"), "error_pct": round(float(r["error_pct"]), 2)}
            for r in records(result.residuals)
        ],
    }
    data = profile_dict(result.profile, provenance, name=args.name)
    fitted = {(s, k) for s, k in zip(free["stage"], free["kind"], strict=True)}
    for stage, spec in data["stages"].items():
        kinds = [k for k in ("per_packet_s", "per_byte_s") if (stage, k) in fitted]
        spec["why"] = (f"fitted ({', '.join(kinds)})" if kinds else "prior: not exercised by the testbed's training set")
        if (stage, "per_packet_s") in fixed:
            spec["why"] = "measured: wake.c (perfsim.calibrate.wakeup), mean and shape; see provenance.idle_wakeup"
        if stage in MEASURED_STAGES:
            spec["why"] = ("measured: percall.c (perfsim.calibrate.percall); see provenance.percall"
                           if stage in percall else "prior (measured on the prior's machine); not fitted")
    header = (f"# perfsim cost profile '{args.name}', written by perfsim calibrate on {provenance['date']}.\n"
              f"# Raw measurements: {raw_out.name} (one row per repeat)"
              + (f", wake-up samples: {wakeup_path_for(raw_out).name}" if delays is not None else "")
              + ". Provenance, residuals below.\n")
    text = header + yaml.safe_dump(data, sort_keys=False, width=120)

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    write_atomic(out, write)
    print(result.residuals.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"profile: {out}  raw measurements: {raw_out}", file=sys.stderr)
    val = compare_measured(table, str(out), workers=args.workers, progress=True)
    print(format_table(val[~val["training"]]))
    print(accuracy_summary(val).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    return 0


def validate_main(args: argparse.Namespace) -> int:
    from perfsim.calibrate.validate import (
        accuracy_summary,
        add_sessions,
        compare_measured,
        format_table,
        medians,
        plot,
    )
    from perfsim.core.profile import load_profile
    from perfsim.experiment.output import write_frame

    prof = load_profile(args.profile)
    if args.measure:
        raw, _, _ = _measure(args.quick, None, None, None)
    else:
        raw_file = args.raw or _default_raw(args.profile)
        raw = _read_raw(raw_file)
    from perfsim.experiment.config import ENGINES

    if args.engine not in ENGINES:
        raise ConfigError("--engine", args.engine, f"one of {', '.join(ENGINES)}")
    sessions = [medians(_read_raw(_session_raw(f))) for f in args.session]
    table = compare_measured(medians(raw), args.profile, workers=args.workers, progress=True, engine=args.engine)
    if sessions:
        table = add_sessions(table, sessions)
    shown = table[~table["training"]] if args.held_out else table
    print(format_table(shown))
    print()
    print(accuracy_summary(table).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    out = Path(args.out)
    write_frame(table, out / "validate.csv")
    png = plot(table, out / "validate.png", title=f"perfsim validate: profile {prof.name}")
    print(f"results: {out / 'validate.csv'}, figure: {png}", file=sys.stderr)
    return 0


def _stored_percall(profile_yaml: Path) -> tuple[dict[str, float], dict[str, Any] | str]:
    """``--from-raw``: the per-call costs measured with the raw data, from the profile written
    beside it (its stages, for each value its ``provenance.percall`` records); none if it has no
    measured ones.  A stage measured then but not recorded keeps the prior's value."""
    from perfsim.calibrate.percall import MEASURED

    if not profile_yaml.is_file():
        return {}, "not measured with these raw data: the prior's values"
    data = yaml.safe_load(profile_yaml.read_text()) or {}
    note = (data.get("provenance") or {}).get("percall")
    stages = data.get("stages") or {}
    if not isinstance(note, dict):
        return {}, "not measured with these raw data: the prior's values"
    values: dict[str, float] = {}
    for stage, key in MEASURED.items():
        if key not in note:
            continue
        try:
            values[stage] = float(stages[stage]["per_packet_s"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(str(profile_yaml), "stages", f"per_packet_s of {stage}") from None
    return values, {**note, "from": profile_yaml.name}


def _session_raw(name: str) -> Path:
    """``--session``: a raw CSV, or a built-in profile's raw data by the profile's name."""
    p = Path(name)
    if p.is_file() or p.suffix == ".csv":
        return p
    return _default_raw(name)


def _default_raw(profile: str) -> Path:
    from importlib import resources

    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        return raw_path_for(p)
    builtin = resources.files("perfsim.profiles").joinpath(f"{profile}.raw.csv")
    if not builtin.is_file():
        raise ConfigError("--raw", None, f"a raw measurements CSV (profile {profile} has none beside it)")
    return Path(str(builtin))
