"""Figures of ``perfsim compare``, drawn from its DataFrames only.

Every function takes tidy frames (the compare table, or the per-stage CPU frame) and returns a
:class:`matplotlib.figure.Figure` built without pyplot, so no global figure state is created or
leaked: the caller saves it (``fig.savefig(path)``) and drops it.  Nothing here runs a
simulation or reads a file.

The compare table has one row per (mode, workload, streams).  The *scale workload* is the one
swept over the most ``streams`` values (``tcp_stream`` by default); the headline figure shows it
against scale.  Each series is one mode; when the modes of a table use different placements
(e.g. ``bridge`` same-host beside ``overlay`` cross-host) the placement is named in the legend,
since the two are not the same path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from perfsim.errors import ConfigError

TABLE_COLUMNS = ("mode", "workload", "streams", "throughput_gbps", "cpu_s_per_gb")
LATENCY_COLUMNS = ("mode", "workload", "streams", "latency_p50_us", "latency_p99_us")
STAGE_COLUMNS = ("mode", "stage", "cpu_s")
OTHER_SHARE = 0.03
"""Stages below this share of CPU in every mode are drawn together as ``other``."""
LOG_SPREAD = 30.0
"""A y axis turns logarithmic when its largest positive value exceeds the smallest by this factor."""
_MODE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf")
_STAGE_CMAP = "tab20"


def _require(df: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(name, type(df).__name__, "a pandas DataFrame")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConfigError(f"{name}.{missing[0]}", "missing column", f"a frame with columns {', '.join(columns)}")
    if df.empty:
        raise ConfigError(name, "an empty frame", "at least one row")


def mode_colours(modes: Sequence[str]) -> dict[str, str]:
    """One colour per mode, in the order given (the table's order), so that a mode has the
    same colour in every figure of one report."""
    return {m: _MODE_COLOURS[i % len(_MODE_COLOURS)] for i, m in enumerate(dict.fromkeys(modes))}


def scale_workload(table: pd.DataFrame) -> str:
    """The workload swept over the most ``streams`` values; ties go to ``tcp_stream``, then to
    the first in the table."""
    _require(table, "table", ("workload", "streams"))
    counts = table.groupby("workload", sort=False)["streams"].nunique()
    best = counts[counts == counts.max()].index.tolist()
    return "tcp_stream" if "tcp_stream" in best else str(best[0])


def _series_labels(table: pd.DataFrame) -> dict[str, str]:
    """Legend label per mode: the mode, plus its placement when placements differ."""
    modes = list(dict.fromkeys(table["mode"]))
    if "placement" not in table.columns or table["placement"].nunique() <= 1:
        return {m: m for m in modes}
    places = table.groupby("mode", sort=False)["placement"].agg(lambda s: "/".join(dict.fromkeys(s)))
    return {m: f"{m} ({places[m]})" for m in modes}


def _unique(table: pd.DataFrame, column: str) -> object | None:
    if column not in table.columns:
        return None
    values = table[column].dropna().unique()
    return values[0] if len(values) == 1 else None


def cluster_text(table: pd.DataFrame) -> str:
    """``2 hosts, 10 Gbit/s NIC, 4 cores, offloads on`` from whichever columns are constant
    (and ``fluid engine`` when every run used it)."""
    parts = []
    hosts = _unique(table, "hosts")
    if hosts is not None:
        parts.append(f"{int(hosts)} host" + ("s" if int(hosts) != 1 else ""))  # type: ignore[call-overload]
    nic = _unique(table, "nic_gbps")
    if nic is not None:
        parts.append(f"{float(nic):g} Gbit/s NIC")  # type: ignore[arg-type]
    cores = _unique(table, "cores")
    if cores is not None:
        parts.append(f"{int(cores)} cores")  # type: ignore[call-overload]
    offloads = _unique(table, "offloads")
    if offloads is not None:
        parts.append(f"offloads {offloads}")
    if _unique(table, "engine") == "fluid":
        parts.append("fluid engine")
    return ", ".join(parts)


def _bytes_text(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def _cross_host_limit(table: pd.DataFrame) -> tuple[int, float] | None:
    """(hosts, NIC Gbit/s): hosts × NIC rate is the most that cross-host flows placed
    round-robin on a ring of hosts can move in aggregate (each host's NIC transmits to the
    next).  None when no series is cross-host or the table has no hosts/nic_gbps columns."""
    hosts, nic = _unique(table, "hosts"), _unique(table, "nic_gbps")
    if hosts is None or nic is None or "placement" not in table.columns:
        return None
    if not (table["placement"] == "cross-host").any():
        return None
    return int(hosts), float(nic)  # type: ignore[call-overload, arg-type]


def _log_if_spread(ax: object, values: np.ndarray) -> bool:
    pos = values[np.isfinite(values) & (values > 0)]
    if pos.size >= 2 and pos.max() / pos.min() > LOG_SPREAD:
        ax.set_yscale("log")  # type: ignore[attr-defined]
        return True
    return False


def _mode_lines(
    ax: Any, values: pd.Series, labels: dict[str, str], colours: dict[str, str], xs: list[int],
    xlabel: str, ylabel: str,
) -> None:
    """One line with markers per mode of ``values`` (indexed by mode, then x) on a log2 x axis
    with a tick at each of ``xs``."""
    for m, label in labels.items():
        s = values.xs(m, level="mode").sort_index()
        ax.plot(s.index.to_numpy(dtype=float), s.to_numpy(dtype=float), marker="o", color=colours[m],
                label=label, linewidth=1.8, markersize=5)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator([float(x) for x in xs]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def base_hosts_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows run on the comparison's base cluster: when the table also holds a host sweep
    (a ``hosts`` column with several values), keep the host count of its single-stream rows."""
    if "hosts" not in table.columns or table["hosts"].nunique() <= 1:
        return table
    smallest = table[table["streams"] == table["streams"].min()]
    base = smallest["hosts"].mode().iloc[0]
    rows: pd.DataFrame = table[table["hosts"] == base]
    return rows


def hosts_figure(table: pd.DataFrame, flows_per_host: int) -> Figure | None:
    """Aggregate throughput and CPU seconds per GB against the number of hosts, one line per
    mode, for the scale workload's host sweep (``flows_per_host × hosts`` flows). ``None``
    when the table holds no host sweep."""
    if "hosts" not in table.columns or table["hosts"].nunique() <= 1:
        return None
    wl = scale_workload(base_hosts_rows(table))
    sub = table[(table["workload"] == wl) & (table["streams"] == table["hosts"] * flows_per_host)]
    if sub["hosts"].nunique() <= 1:
        return None
    labels = _series_labels(sub)
    colours = mode_colours(list(table["mode"]))
    cells = sub.groupby(["mode", "hosts"], sort=False)[["throughput_gbps", "cpu_s_per_gb"]].mean()
    hosts = sorted(int(h) for h in sub["hosts"].unique())
    fig = Figure(figsize=(11.0, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (("throughput_gbps", "aggregate throughput (Gbit/s)"), ("cpu_s_per_gb", "CPU seconds per GB"))
    for ax, (col, ylabel) in zip(axes, panels, strict=True):
        _mode_lines(ax, cells[col], labels, colours, hosts, f"hosts (log2), {flows_per_host} flows per host", ylabel)
        ax.set_ylim(bottom=0)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4), frameon=False)
    fig.suptitle(f"{wl} by number of hosts", fontsize=11)
    return fig


def headline_figure(table: pd.DataFrame) -> Figure:
    """Aggregate throughput (Gbit/s) and CPU seconds per GB against the number of concurrent
    streams, one line per mode, for the scale workload.

    The x axis is log2 with a tick at each measured scale.  With a single scale point the two
    panels become bars per mode.  Rows of one (mode, streams) cell are averaged (there is one
    per cell in a compare table).  Missing values (NaN, e.g. CPU per GB of a run that moved no
    bytes) leave a gap rather than a zero.
    """
    _require(table, "table", TABLE_COLUMNS)
    table = base_hosts_rows(table)
    wl = scale_workload(table)
    sub = table[table["workload"] == wl]
    labels = _series_labels(sub)
    colours = mode_colours(list(table["mode"]))
    cells = sub.groupby(["mode", "streams"], sort=False)[["throughput_gbps", "cpu_s_per_gb"]].mean()
    scales = sorted(int(s) for s in sub["streams"].unique())
    fig = Figure(figsize=(11.0, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (("throughput_gbps", "aggregate throughput (Gbit/s)"), ("cpu_s_per_gb", "CPU seconds per GB"))
    if len(scales) == 1:
        modes = list(labels)
        x = np.arange(len(modes))
        for ax, (col, ylabel) in zip(axes, panels, strict=True):
            vals = np.array([cells.loc[(m, scales[0]), col] for m in modes], dtype=float)
            bars = ax.bar(x, np.nan_to_num(vals), color=[colours[m] for m in modes], width=0.6)
            ax.bar_label(bars, labels=[f"{v:.3g}" if math.isfinite(v) else "n/a" for v in vals], padding=2, fontsize=9)
            ax.set_xticks(x, [labels[m] for m in modes])
            ax.set_ylabel(ylabel)
            ax.margins(y=0.15)
            ax.grid(axis="y", alpha=0.3)
        scale_txt = f"{scales[0]} stream" + ("s" if scales[0] != 1 else "")
    else:
        for ax, (col, ylabel) in zip(axes, panels, strict=True):
            _mode_lines(ax, cells[col], labels, colours, scales, "concurrent streams (log2)", ylabel)
            if not _log_if_spread(ax, cells[col].to_numpy(dtype=float)):
                ax.set_ylim(bottom=0)
        limit = _cross_host_limit(sub)
        if limit is not None:
            hosts, nic = limit
            axes[0].axhline(hosts * nic, color="0.45", linestyle="--", linewidth=1.0,
                            label=f"cross-host ceiling: {hosts} NICs × {nic:g} Gbit/s")
            axes[0].set_ylim(top=max(axes[0].get_ylim()[1], hosts * nic * 1.08))
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4), frameon=False)
        scale_txt = "by scale"
    axes[0].set_title("throughput")
    axes[1].set_title("CPU cost (all cores of all hosts)")
    msg = _unique(sub, "message_size")
    wl_txt = f"{wl}" + (f", {_bytes_text(int(msg))} messages" if msg is not None else "")  # type: ignore[call-overload]
    cluster = cluster_text(sub)
    fig.suptitle(f"{wl_txt}, {scale_txt}" + (f" — {cluster}" if cluster else ""), fontsize=12)
    return fig


def latency_figure(table: pd.DataFrame) -> Figure:
    """p50 (solid bar) and p99 (lighter bar behind it) latency in µs per mode, for every workload
    at its smallest scale (usually one stream, where latency is not queueing behind other flows).

    Workloads are groups on the x axis, modes the bars inside a group.  The y axis is
    logarithmic when the values span more than :data:`LOG_SPREAD` × (a stream workload's
    per-message latency can be 100× a request-response one).  Cells without latency samples
    (NaN) are left empty.
    """
    _require(table, "table", LATENCY_COLUMNS)
    table = base_hosts_rows(table)
    smallest = table.groupby("workload", sort=False)["streams"].transform("min")
    sub = table[table["streams"] == smallest]
    cells = sub.groupby(["workload", "mode"], sort=False)[["latency_p50_us", "latency_p99_us"]].mean()
    workloads = list(dict.fromkeys(sub["workload"]))
    labels = _series_labels(sub)
    modes = list(labels)
    colours = mode_colours(list(table["mode"]))
    fig = Figure(figsize=(max(8.0, min(11.0, 4.5 + 0.45 * len(workloads) * len(modes))), 4.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(modes)
    values = cells.to_numpy(dtype=float)
    if not np.isfinite(values).any():
        ax.text(0.5, 0.5, "no latency samples in this table", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    for i, m in enumerate(modes):
        x = np.arange(len(workloads)) - 0.4 + width * (i + 0.5)
        p50 = np.array([cells["latency_p50_us"].get((w, m), np.nan) for w in workloads], dtype=float)
        p99 = np.array([cells["latency_p99_us"].get((w, m), np.nan) for w in workloads], dtype=float)
        ax.bar(x, p99, width=width * 0.9, color=colours[m], alpha=0.35, linewidth=0)
        ax.bar(x, p50, width=width * 0.9, color=colours[m], label=labels[m])
    ax.set_xticks(np.arange(len(workloads)), workloads)
    ax.set_ylabel("latency (µs)")
    log = _log_if_spread(ax, values)
    ax.grid(axis="y", alpha=0.3, which="both" if log else "major")
    handles = [Patch(color=colours[m], label=labels[m]) for m in modes]
    handles += [Patch(color="0.3", label="p50"), Patch(color="0.3", alpha=0.35, label="p99")]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    n = sorted({int(s) for s in sub["streams"]})
    streams_txt = ", ".join(map(str, n)) + " stream" + ("s" if n != [1] else "")
    fig.suptitle(f"latency at the smallest scale ({streams_txt}): p50 solid, p99 light"
                 + (" — log scale" if log else ""), fontsize=11)
    return fig


def stage_shares(stages: pd.DataFrame) -> pd.DataFrame:
    """Share of each mode's CPU spent in each kernel stage (rows: modes, columns: stages).

    ``cpu_s`` is summed over hosts; when the frame holds several scales of a mode, only its
    smallest ``streams`` is used.  Stages under :data:`OTHER_SHARE` in every mode are summed
    into ``other`` (last column); the rest are ordered by their mean share, largest first.
    Rows of a mode sum to 1; a mode that spent no CPU is left out.
    """
    _require(stages, "stages", STAGE_COLUMNS)
    df = stages
    if "streams" in df.columns:
        df = df[df["streams"] == df.groupby("mode", sort=False)["streams"].transform("min")]
    cpu = df.assign(cpu_s=df["cpu_s"].clip(lower=0.0)).pivot_table(
        index="mode", columns="stage", values="cpu_s", aggfunc="sum", fill_value=0.0, sort=False)
    cpu = cpu.reindex(list(dict.fromkeys(df["mode"])))
    total = cpu.sum(axis=1)
    cpu = cpu[total > 0]
    if cpu.empty:
        raise ConfigError("stages.cpu_s", "0 in every mode", "some CPU time in at least one mode")
    share = cpu.div(cpu.sum(axis=1), axis=0)
    small = [c for c in share.columns if (share[c] < OTHER_SHARE).all()]
    big = share.drop(columns=small)
    big = big[big.mean().sort_values(ascending=False).index]
    if small:
        big = big.assign(other=share[small].sum(axis=1))
    big.columns.name = "stage"
    return big


def stage_cpu_figure(stages: pd.DataFrame) -> Figure:
    """Stacked horizontal bars, one per mode: the share of its CPU time spent in each kernel
    stage (from :func:`stage_shares`), with the percentage written on segments of 5 % or more."""
    share = stage_shares(stages)
    names = list(share.columns)
    cmap = colormaps[_STAGE_CMAP]
    # The strong tab20 hues first, then their light twins, so neighbouring segments differ.
    colours = {s: ("#c8c8c8" if s == "other" else cmap((2 * i) % 20 + (i // 10) % 2)) for i, s in enumerate(names)}
    fig = Figure(figsize=(11.0, 1.6 + 0.55 * len(share) + 0.3 * math.ceil(len(names) / 5)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(share))[::-1]
    left = np.zeros(len(share))
    for s in names:
        w = share[s].to_numpy(dtype=float)
        bars = ax.barh(y, w, left=left, color=colours[s], label=s, height=0.65, edgecolor="white", linewidth=0.5)
        ax.bar_label(bars, labels=[f"{v:.0%}" if v >= 0.05 else "" for v in w], label_type="center", fontsize=8)
        left += w
    ax.set_yticks(y, list(share.index))
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_xlabel("share of the mode's CPU time (all hosts)")
    ax.set_title(f"where the CPU goes: kernel stages (stages under {OTHER_SHARE:.0%} everywhere are 'other')",
                 fontsize=11)
    fig.legend(loc="outside lower center", ncols=min(len(names), 6), frameon=False, fontsize=9)
    return fig
