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


def stage_frame(
    hosts: Iterable[Host], since: dict[tuple[str, str], tuple[float, int, int]] | None = None
) -> pd.DataFrame:
    """Per (host, stage): CPU seconds, the units its per-packet cost was charged for (``skbs``)
    and the bytes its per-byte cost was charged for; ``since`` subtracts a warm-up snapshot of
    ``(cpu_s, packets, bytes)``."""
    rows = []
    for h in hosts:
        for name, st in h.stages.items():
            c0, p0, b0 = since.get((h.name, name), (0.0, 0, 0)) if since else (0.0, 0, 0)
            if st.packets - p0 or st.cpu_s - c0:
                rows.append({"host": h.name, "stage": name, "cpu_s": st.cpu_s - c0,
                             "skbs": st.packets - p0, "bytes": st.bytes - b0})
    return pd.DataFrame(rows, columns=["host", "stage", "cpu_s", "skbs", "bytes"])


def stage_core_frame(hosts: Iterable[Host]) -> pd.DataFrame:
    """Units and bytes each (host, stage) charged on each core over the whole run (only for
    hosts built with ``Sim(count_by_core=True)``)."""
    rows = [
        {"host": h.name, "stage": name, "core": core, "skbs": acc[0], "bytes": acc[1]}
        for h in hosts for name, st in h.stages.items()
        for core, acc in getattr(st, "by_core", {}).items()
    ]
    return pd.DataFrame(rows, columns=["host", "stage", "core", "skbs", "bytes"])


def core_frame(
    hosts: Iterable[Host], now_s: float, elapsed_s: float, since: dict[str, float] | None = None,
    wakeups_since: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Seconds of work each core completed in the last ``elapsed_s`` before ``now_s``, its
    utilisation (not capped: a value above 1 would be an accounting bug) and how many times
    work had to wake it from idle."""
    rows = []
    seen: set[int] = set()
    for h in hosts:
        if id(h.cpus) in seen:  # the testbed's hosts share one machine's cores
            continue
        seen.add(id(h.cpus))
        for c in h.cpus.cores:
            busy = c.work_done(now_s) - (since.get(c.name, 0.0) if since else 0.0)
            util = busy / elapsed_s if elapsed_s > 0 else 0.0
            woken = c.wakeups - (wakeups_since.get(c.name, 0) if wakeups_since else 0)
            rows.append({"host": h.cpus.host, "core": c.index, "busy_s": busy, "utilisation": util, "wakeups": woken})
    return pd.DataFrame(rows, columns=["host", "core", "busy_s", "utilisation", "wakeups"])


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


def drop_frame(sim: Sim, since: dict[tuple[str, str], int] | None = None) -> pd.DataFrame:
    """Drops by site and reason over the whole run (``count``) and in the measurement window
    (``window_count``: minus the warm-up snapshot ``since``)."""
    base = since or {}
    rows = [
        {"site": s, "reason": r, "count": n, "window_count": n - base.get((s, r), 0)}
        for (s, r), n in sorted(sim.drops.items())
    ]
    return pd.DataFrame(rows, columns=["site", "reason", "count", "window_count"])


def percentile_us(samples_s: Any, q: float) -> float:
    """The ``q``-th percentile of latency samples (seconds) in µs; NaN when there are none."""
    if len(samples_s) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(samples_s, dtype=float), q) * 1e6)


class TableSampler:
    """Samples the occupancy of every kernel table (conntrack, neighbour, bridge FDB) at a
    fixed interval: the "table occupancy over time" frame. Costs one event per interval."""

    def __init__(self, sim: Sim, interval_s: float) -> None:
        from perfsim.components.bridge import Bridge
        from perfsim.components.conntrack import Conntrack
        from perfsim.components.neighbour import NeighbourTable

        self.sim = sim
        self.interval_s = interval_s
        self.rows: list[tuple[float, str, str, int, int]] = []
        self._tables: list[tuple[str, str, Any, int]] = []
        for name, el in sim.elements.items():
            if isinstance(el, Conntrack):
                self._tables.append(("conntrack", name, el.count, el.max_entries))
            elif isinstance(el, NeighbourTable):
                self._tables.append(("neighbour", name, el.__len__, el.gc_thresh3))
            elif isinstance(el, Bridge):
                self._tables.append(("fdb", name, el.fdb_size, el.fdb_max_learned))
        sim.call_at(sim.now, self._sample, None)

    def _sample(self, _: Any) -> None:
        now = self.sim.now
        for kind, name, count, limit in self._tables:
            self.rows.append((now, kind, name, int(count()), int(limit)))
        self.sim.call_in(self.interval_s, self._sample, None)

    def frame(self) -> pd.DataFrame:
        """One row per (time, table): ``t_s, table, name, entries, limit`` (limit 0 = none)."""
        return pd.DataFrame(self.rows, columns=["t_s", "table", "name", "entries", "limit"])
