"""The report of ``perfsim run SCENARIO.yaml``: ``latency.png``, ``stages.png`` and ``report.html``.

Built from the per-workload summary and the per-stage CPU frame with the figure functions of
``perfsim compare`` (:func:`~perfsim.reports.figures.latency_figure`: one bar group per
workload; :func:`~perfsim.reports.figures.stage_cpu_figure`: one bar for the scenario's mode)
and the same page style.  The page is self-contained (PNG bytes embedded) and written
atomically; it carries the date, so unlike the result files it is not byte-identical across runs.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from perfsim.errors import ConfigError
from perfsim.reports.figures import latency_figure, stage_cpu_figure
from perfsim.reports.html import CSS, _img, _meta_html, _png, _write, format_value

if TYPE_CHECKING:
    from perfsim.scenario.model import Scenario


def _table(summary: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in summary.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_value(v))}</td>" for v in rec) + "</tr>"
        for rec in summary.itertuples(index=False, name=None)
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def write_scenario_report(out_dir: Path, scenario: Scenario, summary: pd.DataFrame, stages: pd.DataFrame,
                          source: str) -> dict[str, Path]:
    """Write the figures and ``report.html`` into ``out_dir``; returns file name -> path."""
    mode = scenario.network.mode
    lat = summary.rename(columns={"name": "workload"}).assign(mode=mode)
    pngs: dict[str, bytes] = {"latency.png": _png(latency_figure(lat))}
    note = ""
    if len(stages):
        try:
            pngs["stages.png"] = _png(stage_cpu_figure(stages.assign(mode=mode)))
        except ConfigError as exc:
            note = f"The stage figure is skipped: {exc}."
    else:
        note = "No CPU was charged in the measurement window, so the stage figure is skipped."
    if "stages.png" not in pngs:
        (Path(out_dir) / "stages.png").unlink(missing_ok=True)
    paths = {name: _write(Path(out_dir) / name, data) for name, data in pngs.items()}
    title = f"perfsim run: {scenario.name}"
    meta = {"scenario": source, "description": scenario.description or "–", "mode": mode,
            "hosts": scenario.hosts.count, "containers": len(scenario.containers),
            "duration_s": scenario.duration_s, "warmup_s": scenario.warmup_s, "seed": scenario.seed,
            "profile": scenario.profile}
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", _meta_html(meta),
        "<h2>Workloads</h2>", _table(summary),
        ('<p class="caption">One row per workload (all its streams). CPU s/GB is the whole cluster\'s CPU '
         "time over the bytes of all workloads: CPU is not attributed to a workload.</p>"),
        "<h2>Latency</h2>", _img(pngs["latency.png"], "p50 and p99 latency per workload"),
        "<h2>Where the CPU goes</h2>",
        _img(pngs["stages.png"], "share of CPU time per kernel stage") if "stages.png" in pngs
        else f'<p class="note">{html.escape(note)}</p>',
        "</body></html>",
    ]
    paths["report.html"] = _write(Path(out_dir) / "report.html", ("\n".join(parts) + "\n").encode("utf-8"))
    return paths
