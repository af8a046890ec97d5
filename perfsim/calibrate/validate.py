"""Measured vs simulated: run the simulator on measured configurations and report the error.

Accuracy targets (issue 5): rates (throughput, packet rate, transaction and connection rate)
within ±10 %, latency within ±20 %, on every *held-out* configuration (one not used by the fit).

How reproducible the measurement itself is bounds what any model can reach: given the medians
of the same configuration measured in several sessions (:func:`add_sessions`), one predicted
value ``x`` can be within ±t of all of them only if ``max / min ≤ (1 + t) / (1 - t)`` (1.22 for
±10 %, 1.5 for ±20 %); a configuration whose sessions differ by more is *unreachable* on that
machine, whatever the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfsim.calibrate.configs import CONFIG_COLUMNS, DEFAULT_DURATION_S, check_measurements, config_id, default_training
from perfsim.calibrate.fit import records, simulate_many
from perfsim.errors import ConfigError

TARGET_PCT = {"throughput_bps": 10.0, "packet_rate_pps": 10.0, "transaction_rate": 10.0,
              "connection_rate": 10.0, "latency_s": 20.0, "latency_p99_s": 20.0}
"""The largest acceptable |error| in % per metric."""
REPORTED_METRICS = ("throughput_bps", "packet_rate_pps", "transaction_rate", "connection_rate", "latency_s")


def compare_measured(
    measured: pd.DataFrame,
    profile: str,
    duration_s: float | None = DEFAULT_DURATION_S,
    workers: int | None = None,
    progress: bool = False,
    engine: str = "des",
) -> pd.DataFrame:
    """One row per (configuration, metric) of ``measured`` (medians; a ``training`` column
    marks what the fit saw): measured, simulated with ``profile`` on ``engine``, error in %,
    within target."""
    rows = measured[measured["metric"].isin(REPORTED_METRICS)].copy()
    if rows.empty:
        raise ConfigError("measurements", "no metric perfsim simulates", f"rows of metric {', '.join(REPORTED_METRICS)}")
    rows["config_id"] = [config_id(r) for r in records(rows)]
    configs = rows.drop_duplicates("config_id")[CONFIG_COLUMNS + ["config_id"]]
    sims = simulate_many(records(configs[CONFIG_COLUMNS]), profile, duration_s, workers,
                         desc="perfsim validate" if progress else None, engine=engine)
    by_id = {s.config_id: s.metrics for s in sims}
    rows["simulated"] = [by_id[c].get(m, float("nan")) for c, m in zip(rows["config_id"], rows["metric"], strict=True)]
    rows["measured"] = rows["value"].astype(float)
    rows["error_pct"] = (rows["simulated"] / rows["measured"] - 1.0) * 100.0
    rows["target_pct"] = rows["metric"].map(TARGET_PCT)
    rows["within_target"] = rows["error_pct"].abs() <= rows["target_pct"]
    if "training" not in rows.columns:
        rows["training"] = False
    lo = rows["value_min"] if "value_min" in rows.columns else rows["measured"]
    hi = rows["value_max"] if "value_max" in rows.columns else rows["measured"]
    rows["spread_pct"] = (hi - lo) / rows["measured"] * 100.0
    rows["within_repeats"] = (rows["simulated"] >= lo) & (rows["simulated"] <= hi)
    cols = ["config_id", *CONFIG_COLUMNS, "metric", "training", "measured", "simulated", "error_pct", "target_pct",
            "within_target", "spread_pct", "within_repeats"]
    return rows[cols].reset_index(drop=True)


def add_sessions(table: pd.DataFrame, sessions: list[pd.DataFrame]) -> pd.DataFrame:
    """``table`` (from :func:`compare_measured`) with how the same configurations measured in
    other ``sessions`` (frames from :func:`medians`) compare:

    * ``sessions``: how many sessions measured the configuration (this one included);
    * ``session_ratio``: the largest median over the smallest (1.0 with one session);
    * ``reachable``: whether one value can be within the target of every session's median
      (``session_ratio ≤ (1 + t) / (1 - t)``);
    * ``within_all_sessions``: whether the simulated value is.
    """
    if not sessions:
        raise ConfigError("sessions", "none", "at least one other session's measurements")
    out = table.copy()
    key = list(zip(out["config_id"], out["metric"], strict=True))
    values = [[float(v)] for v in out["measured"]]
    for other in sessions:
        o = other[other["metric"].isin(REPORTED_METRICS)]
        by = {(config_id(r), str(r["metric"])): float(r["value"]) for r in records(o)}
        for vs, k in zip(values, key, strict=True):
            v = by.get(k)
            if v is not None and np.isfinite(v) and v > 0:
                vs.append(v)
    t = out["target_pct"].to_numpy(float) / 100.0
    out["sessions"] = [len(vs) for vs in values]
    out["session_ratio"] = [max(vs) / min(vs) for vs in values]
    out["reachable"] = out["session_ratio"].to_numpy(float) <= (1 + t) / (1 - t) * (1 + 1e-12)
    sim = out["simulated"].to_numpy(float)
    out["within_all_sessions"] = [bool(np.all(np.abs(s / np.array(vs) - 1.0) <= tt + 1e-12))
                                  for s, vs, tt in zip(sim, values, t, strict=True)]
    return out


def accuracy_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per metric and split (training / held-out): count, mean and max |error| %, share within
    target, and — how repeatable the measurement itself is — the median spread of its repeats
    ((max - min) / median, %) and the share of simulated values inside that min..max range.
    With other sessions (:func:`add_sessions`) also: the share of configurations a single
    prediction can meet against every session (``reachable``), and among those the share the
    simulation meets against every session (``within_target_of_reachable``)."""
    t = table.assign(abs_err=table["error_pct"].abs(), split=np.where(table["training"], "training", "held-out"))
    g = t.groupby(["split", "metric"])
    cols = {
        "configs": g.size(), "mean_abs_error_pct": g["abs_err"].mean(), "max_abs_error_pct": g["abs_err"].max(),
        "within_target": g["within_target"].mean(), "target_pct": g["target_pct"].first(),
        "repeat_spread_pct": g["spread_pct"].median(), "within_repeats": g["within_repeats"].mean(),
    }
    if "reachable" in t.columns:
        cols["reachable"] = g["reachable"].mean()
        r = t[t["reachable"]].groupby(["split", "metric"])
        cols["within_target_of_reachable"] = r["within_all_sessions"].mean()
    return pd.DataFrame(cols).reset_index()


def format_table(table: pd.DataFrame) -> str:
    """Measured vs simulated side by side, in engineering units."""
    unit = {"throughput_bps": (1e-9, "Gbit/s"), "packet_rate_pps": (1e-3, "kpps"), "transaction_rate": (1e-3, "k/s"),
            "connection_rate": (1e-3, "k/s"), "latency_s": (1e6, "us"), "latency_p99_s": (1e6, "us")}
    sessions = "session_ratio" in table.columns
    lines = [f"{'configuration':42s} {'metric':17s} {'split':8s} {'measured':>10s} {'simulated':>10s} {'unit':7s} "
             f"{'error':>8s} {'spread':>7s}" + (f" {'sessions':>8s}" if sessions else "")]
    for r in table.itertuples():
        f, u = unit[str(r.metric)]
        mark = "" if r.within_target else "  !"
        measured, simulated, err = float(r.measured) * f, float(r.simulated) * f, float(r.error_pct)  # type: ignore[arg-type]
        spread = float(r.spread_pct)  # type: ignore[arg-type]
        extra = ""
        if sessions:  # how far apart the sessions' medians are; "x" marks a target no prediction can meet
            extra = f" {float(r.session_ratio):7.2f}{'x' if not r.reachable else ' '}"  # type: ignore[arg-type]
        lines.append(f"{r.config_id:42s} {r.metric:17s} {'train' if r.training else 'held':8s} "
                     f"{measured:10.3g} {simulated:10.3g} {u:7s} {err:+7.1f}% {spread:6.0f}%{extra}{mark}")
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: str | Path, title: str = "perfsim validate") -> Path:
    """Simulated vs measured on log axes, one panel per metric, ±target bands; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    metrics = [m for m in REPORTED_METRICS if m in set(table["metric"])]
    ncols = min(3, len(metrics))
    nrows = (len(metrics) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, m in zip(axes.flat, metrics, strict=False):
        t = table[table["metric"] == m]
        lo = float(min(t["measured"].min(), t["simulated"].min())) * 0.7
        hi = float(max(t["measured"].max(), t["simulated"].max())) * 1.4
        xs = np.array([lo, hi])
        tgt = TARGET_PCT[m] / 100
        ax.plot(xs, xs, color="0.3", lw=1)
        ax.fill_between(xs, xs * (1 - tgt), xs * (1 + tgt), color="0.85", label=f"±{TARGET_PCT[m]:.0f} %")
        for split, marker, color in ((True, "o", "tab:blue"), (False, "^", "tab:orange")):
            s = t[t["training"] == split]
            ax.scatter(s["measured"], s["simulated"], marker=marker, color=color, s=22,
                       label="training" if split else "held-out")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(m)
        ax.set_xlabel("measured")
        ax.set_ylabel("simulated")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def medians(raw: pd.DataFrame, training: Any = None) -> pd.DataFrame:
    """Long raw measurements (one row per repeat) -> one median per (configuration, metric),
    with ``repeats`` and ``training`` (from ``training(row)``; default the default split)."""
    rule = training or default_training
    raw = check_measurements(raw)
    g = raw.groupby([*CONFIG_COLUMNS, "metric"], sort=False)["value"]
    out = (g.median().rename("value").to_frame().join(g.size().rename("repeats"))
           .join(g.min().rename("value_min")).join(g.max().rename("value_max")).reset_index())
    out["training"] = [bool(rule(r)) for r in records(out)]
    return out
