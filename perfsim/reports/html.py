"""The ``perfsim compare`` report: PNG figures and one self-contained HTML page.

:func:`write_report` renders each figure once to PNG bytes, writes those bytes to
``<name>.png`` and embeds the same bytes in ``report.html`` as a ``data:image/png;base64`` URI.
The page has inline CSS and no external reference (no script, font or image URL), so it can be
mailed or archived as a single file.  Every file is written atomically (a temporary file in
the same directory, then ``os.replace``): a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from perfsim.errors import ConfigError
from perfsim.experiment.output import write_atomic
from perfsim.reports.figures import headline_figure, hosts_figure, latency_figure, stage_cpu_figure

DPI = 120
SUMMARY = ["mode", "placement", "workload", "streams", "message_size", "throughput_gbps", "pps",
           "transactions_per_s", "latency_p50_us", "latency_p99_us", "cpu_s_per_gb", "drops"]
"""Columns always shown in the HTML table (the others are shown only when they vary)."""
HIDDEN = {"wall_s"}
"""Columns of the table left out of the page (simulator cost, not a result; it stays in the CSV)."""
HEADERS = {
    "message_size": "message (B)", "throughput_gbps": "throughput (Gbit/s)", "pps": "packets/s",
    "transactions_per_s": "transactions/s", "latency_p50_us": "p50 latency (µs)",
    "latency_p99_us": "p99 latency (µs)", "cpu_s_per_gb": "CPU s/GB", "containers_per_host": "containers/host",
    "nic_gbps": "NIC (Gbit/s)", "cpu_utilisation": "CPU utilisation", "duration_s": "duration (s)",
}
META_LABELS = {"command": "command line", "profile": "cost profile", "date": "date", "perfsim": "perfsim version",
               "runs": "runs", "wall_s": "wall time (s)"}
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;font-size:.92em}
dl.meta dt{color:#666}dl.meta dd{margin:0}code{background:#f4f4f4;padding:0 .25em}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #e4e4e4;white-space:nowrap}
th{background:#f4f4f4;text-align:left;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fbf8e9;border-left:4px solid #e0c650;padding:.6em 1em}.caption{color:#555;font-size:.9em}
.scroll{overflow-x:auto}
"""


def format_value(value: Any) -> str:
    """A table cell: integers with thousands separators, floats to 3 significant digits
    (whole numbers from 1000 up), missing values as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return f"{int(value):,}"
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        v = float(value)
        if v == 0:
            return "0"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(value)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No Software tag: it carries matplotlib's URL, and the page must hold no external reference.
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _sorted_table(table: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by workload (first-seen order), then streams, then mode, so modes sit side by side."""
    order = {k: i for i, k in enumerate(dict.fromkeys(table["workload"]))} if "workload" in table else {}
    modes = {k: i for i, k in enumerate(dict.fromkeys(table["mode"]))} if "mode" in table else {}
    keys = [c for c in ("workload", "streams", "mode") if c in table.columns]

    def key(col: pd.Series) -> pd.Series:
        return col.map(order) if col.name == "workload" else col.map(modes) if col.name == "mode" else col

    return table.sort_values(keys, key=key, kind="stable") if keys else table


def table_html(table: pd.DataFrame) -> tuple[str, dict[str, Any]]:
    """The compare table as an HTML ``<table>``, and the columns left out because they hold
    the same value in every row (returned as ``{column: value}`` for the setup line)."""
    constant: dict[str, Any] = {}
    shown = []
    for c in table.columns:
        if c in HIDDEN:
            continue
        if c not in SUMMARY and len(table) > 0 and table[c].nunique(dropna=False) == 1:
            constant[c] = table[c].iloc[0]
            continue
        shown.append(c)
    rows = _sorted_table(table)
    numeric = {c for c in shown if pd.api.types.is_numeric_dtype(table[c])}
    head = "".join(f"<th>{html.escape(HEADERS.get(c, c.replace('_', ' ')))}</th>" for c in shown)
    body = []
    for rec in rows[shown].itertuples(index=False, name=None):
        cells = "".join(
            f'<td class="num">{format_value(v)}</td>' if c in numeric else f"<td>{html.escape(format_value(v))}</td>"
            for c, v in zip(shown, rec, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>', constant


def _meta_html(meta: Mapping[str, Any]) -> str:
    items = dict(meta)
    items.setdefault("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    out = []
    for k, v in items.items():
        label = META_LABELS.get(k, k.replace("_", " "))
        text = html.escape(format_value(v) if isinstance(v, int | float) else str(v))
        out.append(f"<dt>{html.escape(label)}</dt><dd>{'<code>' + text + '</code>' if k == 'command' else text}</dd>")
    return f'<dl class="meta">{"".join(out)}</dl>'


def _write(path: Path, data: bytes) -> Path:
    def write(tmp: Path) -> None:
        tmp.write_bytes(data)
        tmp.chmod(0o644)  # mkstemp creates 0600; a report is meant to be shared

    return write_atomic(path, write)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


HOW_TO_READ = (
    "Every number on this page is an output of the simulation: each mode's packets cross a "
    "different chain of kernel stages (veth, bridge, netfilter and conntrack, VXLAN, ...) and each "
    "stage is charged CPU time per packet and per byte by the <em>cost profile</em> named above. "
    "No throughput, latency or CPU figure is written down per mode; they emerge from the path, "
    "the cores it lands on and the links. The default profile is a first, rough set of "
    "order-of-magnitude estimates until <code>perfsim calibrate</code> fits one on a real kernel, "
    "so read the page as a comparison between modes (which is cheaper, where the CPU goes, how "
    "each scales) rather than as absolute predictions for a given machine. Throughput is the "
    "sum over all streams after warm-up; CPU s/GB is the CPU time of every core of every host "
    "divided by the gigabytes delivered; latency is per message or transaction."
)


def write_report(out_dir: Path, table: pd.DataFrame, stages: pd.DataFrame | None,
                 meta: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``headline.png``, ``latency.png``, ``stages.png`` and ``report.html`` into ``out_dir``.

    Parameters
    ----------
    out_dir
        Directory for the files (created if missing).
    table
        The compare table (one row per mode, workload and streams).
    stages
        Per-stage CPU frame (``mode, host, stage, cpu_s``), or None/empty: then the stage figure
        is skipped, the page says why, and a ``stages.png`` left by an earlier report in
        ``out_dir`` is removed so that it cannot be mistaken for this run's.
    meta
        Shown at the top of the page, in order: ``command``, ``profile`` (name and provenance
        source), ``perfsim`` (version), ``runs``, ``wall_s``, any other key.  ``date`` defaults
        to now (UTC).

    Returns
    -------
    dict
        File name -> path of every file written.
    """
    if not isinstance(table, pd.DataFrame) or table.empty:
        raise ConfigError("table", "an empty or missing table", "a compare table with at least one row")
    out_dir = Path(out_dir)
    figures: list[tuple[str, str, Callable[[], Figure]]] = [
        ("headline.png", "throughput and CPU per GB by scale", lambda: headline_figure(table)),
        ("latency.png", "p50 and p99 latency per mode", lambda: latency_figure(table)),
    ]
    flows_per_host = int(meta.get("host_sweep_flows_per_host", 0) or 0)
    if flows_per_host and hosts_figure(table, flows_per_host) is not None:
        figures.append(("hosts.png", "throughput and CPU per GB by number of hosts",
                        lambda: hosts_figure(table, flows_per_host)))  # type: ignore[arg-type,return-value]
    stage_note = ""
    if stages is None or len(stages) == 0:
        stage_note = "No per-stage CPU frame was given for this comparison, so the stage figure is skipped."
    else:
        figures.append(("stages.png", "share of CPU time per kernel stage", lambda: stage_cpu_figure(stages)))
    pngs: dict[str, bytes] = {}
    for name, _, make in figures:
        try:
            pngs[name] = _png(make())
        except ConfigError as exc:
            if name != "stages.png":
                raise
            stage_note = f"The stage figure is skipped: {html.escape(str(exc))}."
    paths: dict[str, Path] = {name: _write(out_dir / name, data) for name, data in pngs.items()}
    if "stages.png" not in pngs:
        (out_dir / "stages.png").unlink(missing_ok=True)
    alts = {name: alt for name, alt, _ in figures}
    page = _page(table, meta, {n: _img(b, alts[n]) for n, b in pngs.items()}, stage_note)
    paths["report.html"] = _write(out_dir / "report.html", page.encode("utf-8"))
    return paths


def _unsteady_note(table: pd.DataFrame) -> str:
    """A warning naming the runs whose measurement window was not a steady state (empty if none
    or if the table has no ``window_drift``)."""
    from perfsim.experiment.run import STEADY_DRIFT

    if "window_drift" not in table:
        return ""
    bad = table[table["window_drift"].abs() > STEADY_DRIFT]
    if bad.empty:
        return ""
    where = "hosts" in table and table["hosts"].nunique() > 1
    runs = "; ".join(f"{r.mode} {r.workload} × {r.streams}{f' on {r.hosts} hosts' if where else ''} "
                     f"({r.window_drift:+.0%})" for r in bad.itertuples())
    return (f'<p class="note">{len(bad)} of {len(table)} runs measured a transient, not a steady state '
            f"(delivered bytes or unread buffers changed by more than {STEADY_DRIFT:.0%} within the "
            f"measurement window): {html.escape(runs)}. Their figures are those of the ramp-up; a longer "
            "<code>--duration</code> or <code>--until-steady MAX_S</code> measures the steady state.</p>")


def _page(table: pd.DataFrame, meta: Mapping[str, Any], imgs: dict[str, str], stage_note: str) -> str:
    modes = ", ".join(dict.fromkeys(str(m) for m in table["mode"]))
    title = f"perfsim compare: {modes}"
    tbl, constant = table_html(table)
    setup = ", ".join(f"{HEADERS.get(k, k.replace('_', ' '))} = {format_value(v)}" for k, v in constant.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _meta_html(meta),
        "<h2>Throughput and CPU cost by scale</h2>",
        imgs["headline.png"],
        ('<p class="caption">Aggregate throughput of all streams, and CPU seconds (all cores, all hosts) '
         "per GB delivered, for the workload swept over scale.</p>"),
        _unsteady_note(table),
        ("<h2>Throughput and CPU cost by number of hosts</h2>" + imgs["hosts.png"]
         + '<p class="caption">The same workload with a fixed number of flows per host, on more hosts.</p>')
        if "hosts.png" in imgs else "",
        "<h2>Results</h2>",
        f'<p class="caption">Same in every run: {html.escape(setup)}.</p>' if setup else "",
        tbl,
        "<h2>Latency</h2>",
        imgs["latency.png"],
        ('<p class="caption">Per message (stream workloads) or per transaction (request-response), '
         "for every workload at its smallest number of streams.</p>"),
        "<h2>Where the CPU goes</h2>",
        (imgs["stages.png"] + '<p class="caption">Share of each mode\'s CPU time (all hosts) spent in each '
         "kernel stage, in its single-stream run of the scale workload.</p>")
        if "stages.png" in imgs else f'<p class="note">{stage_note}</p>',
        "<h2>How to read this</h2>",
        f'<p class="note">{HOW_TO_READ}</p>',
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
