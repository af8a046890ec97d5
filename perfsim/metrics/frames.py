"""Turn a finished simulation into tidy DataFrames (one row per flow / stage / core / drop).

Counters live in the elements (kept cheap on the hot path); this module only reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from perfsim.components.host import Host
from perfsim.core.sim import Sim


def stage_frame(hosts: Iterable[Host], since: dict[tuple[str, str], float] | None = None) -> pd.DataFrame:
    """CPU seconds and skbs per (host, stage); ``since`` subtracts a warm-up snapshot."""
    rows = []
    for h in hosts:
        for name, st in h.stages.items():
            base = since.get((h.name, name), 0.0) if since else 0.0
            if st.packets or st.cpu_s:
                rows.append({"host": h.name, "stage": name, "cpu_s": st.cpu_s - base, "skbs": st.packets})
    return pd.DataFrame(rows, columns=["host", "stage", "cpu_s", "skbs"])


def core_frame(
    hosts: Iterable[Host], now_s: float, elapsed_s: float, since: dict[str, float] | None = None
) -> pd.DataFrame:
    """Seconds of work each core completed in the last ``elapsed_s`` before ``now_s``, and
    its utilisation (not capped: a value above 1 would be an accounting bug)."""
    rows = []
    for h in hosts:
        for c in h.cpus.cores:
            busy = c.work_done(now_s) - (since.get(c.name, 0.0) if since else 0.0)
            util = busy / elapsed_s if elapsed_s > 0 else 0.0
            rows.append({"host": h.name, "core": c.index, "busy_s": busy, "utilisation": util})
    return pd.DataFrame(rows, columns=["host", "core", "busy_s", "utilisation"])


def link_frame(links: Iterable[Any], now_s: float, elapsed_s: float, since: dict[str, float] | None = None) -> pd.DataFrame:
    """Per link: packets and bytes sent, utilisation over the window, deepest queue."""
    rows = []
    for link in links:
        busy = link.work_done(now_s) - (since.get(link.name, 0.0) if since else 0.0)
        rows.append({
            "link": link.name, "packets": link.sent_packets, "bytes": link.sent_bytes,
            "utilisation": busy / elapsed_s if elapsed_s > 0 else 0.0, "max_queue": link.max_queue,
        })
    return pd.DataFrame(rows, columns=["link", "packets", "bytes", "utilisation", "max_queue"])


def drop_frame(sim: Sim) -> pd.DataFrame:
    """Drops by site and reason."""
    rows = [{"site": s, "reason": r, "count": n} for (s, r), n in sorted(sim.drops.items())]
    return pd.DataFrame(rows, columns=["site", "reason", "count"])


def percentile_us(samples_s: Any, q: float) -> float:
    """The ``q``-th percentile of latency samples (seconds) in µs; NaN when there are none."""
    if len(samples_s) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(samples_s, dtype=float), q) * 1e6)
