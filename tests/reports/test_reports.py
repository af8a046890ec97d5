"""Report layer: figures drawn from hand-built frames, PNG files, one self-contained HTML page."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from perfsim.errors import ConfigError
from perfsim.reports import headline_figure, latency_figure, stage_cpu_figure, write_report
from perfsim.reports.figures import scale_workload, stage_shares
from perfsim.reports.html import format_value

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODES = [("host", "cross-host"), ("bridge", "same-host"), ("overlay", "cross-host")]
SCALES = [1, 4, 16]
META = {"command": "perfsim compare --modes host,bridge,overlay", "profile": "default: rough estimates",
        "perfsim": "0.1.0", "runs": 9, "wall_s": 3.5, "date": "2026-01-02"}


def make_table(scales: list[int] = SCALES) -> pd.DataFrame:
    """3 modes × len(scales) tcp_stream rows with distinct, hand-chosen values."""
    rows = []
    for k, (mode, placement) in enumerate(MODES):
        for j, n in enumerate(scales):
            rows.append({
                "mode": mode, "placement": placement, "workload": "tcp_stream", "streams": n,
                "message_size": 131072, "throughput_gbps": 5.0 * (k + 1) + j, "pps": 1e5 * (j + 1),
                "transactions_per_s": 0.0, "latency_p50_us": 20.0 + 10 * k + j, "latency_p99_us": 40.0 + 10 * k + j,
                "cpu_s_per_gb": 0.5 + 0.25 * k + 0.125 * j, "drops": 0, "hosts": 2,
                "containers_per_host": n, "nic_gbps": 10.0, "retransmits": j, "cpu_utilisation": 0.1 * (j + 1),
            })
    return pd.DataFrame(rows)


def make_stages() -> pd.DataFrame:
    """host: tcp 0.6 s, copy 0.39 s, arp 0.01 s (split over two hosts); bridge: tcp 0.5, copy 0.5."""
    rows = [("host", "h0", "tcp_rx", 0.4), ("host", "h1", "tcp_rx", 0.2), ("host", "h0", "sock_rx_copy", 0.39),
            ("host", "h1", "arp", 0.01), ("bridge", "h0", "tcp_rx", 0.5), ("bridge", "h0", "sock_rx_copy", 0.5),
            ("bridge", "h0", "arp", 0.0)]
    return pd.DataFrame([{"mode": m, "host": h, "stage": s, "cpu_s": c, "skbs": 10} for m, h, s, c in rows])


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.cells: list[str] = []
        self.tags: list[str] = []
        self._in_td = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"] or "")
        self._in_td = tag == "td"

    def handle_endtag(self, tag: str) -> None:
        self._in_td = False

    def handle_data(self, data: str) -> None:
        if self._in_td:
            self.cells.append(data)


def _parse(path: Path) -> tuple[str, _Collect]:
    text = path.read_text(encoding="utf-8")
    p = _Collect()
    p.feed(text)
    p.close()
    return text, p


def test_report_writes_three_pngs_and_one_self_contained_page(tmp_path: Path) -> None:
    """Each figure is a real PNG and is embedded, byte for byte, in the page; nothing external."""
    paths = write_report(tmp_path, make_table(), make_stages(), META)
    assert sorted(paths) == ["headline.png", "latency.png", "report.html", "stages.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(paths)  # no temporary file left behind
    for name in ("headline.png", "latency.png", "stages.png"):
        data = paths[name].read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 10_000
    text, page = _parse(paths["report.html"])
    embedded = [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in page.imgs]
    assert all(src.startswith("data:image/png;base64,") for src in page.imgs)
    assert embedded == [paths[n].read_bytes() for n in ("headline.png", "latency.png", "stages.png")]
    assert "http://" not in text
    assert "https://" not in text
    assert not {"script", "link", "iframe"} & set(page.tags)
    for mode, _ in MODES:
        assert page.cells.count(mode) == len(SCALES)
    assert "perfsim compare --modes host,bridge,overlay" in text
    assert "default: rough estimates" in text
    assert "0.1.0" in text
    assert "2026-01-02" in text
    assert "cost profile" in text
    assert "calibrate" in text
    # constant extras move to the setup line; varying ones stay columns; numbers are formatted
    assert "hosts = 2" in text
    assert "NIC (Gbit/s) = 10" in text
    assert "<th>containers/host</th>" in text
    assert "131,072" in page.cells


def test_table_rows_put_modes_side_by_side_per_scale(tmp_path: Path) -> None:
    paths = write_report(tmp_path, make_table(), make_stages(), META)
    _, page = _parse(paths["report.html"])
    first_col = [c for c in page.cells if c in ("host", "bridge", "overlay")]
    assert first_col == ["host", "bridge", "overlay"] * 3


def test_headline_lines_per_mode_on_a_log2_axis_with_the_same_colour_in_both_panels() -> None:
    table = make_table()
    fig = headline_figure(table)
    assert isinstance(fig, Figure)
    thr, cpu = fig.axes
    assert thr.get_xscale() == "log"
    assert cpu.get_xscale() == "log"
    assert [t.get_text() for t in thr.get_xticklabels()] == ["1", "4", "16"]
    mode_lines = [ln for ln in thr.lines if ln.get_linestyle() == "-"]
    assert [ln.get_label() for ln in mode_lines] == ["host (cross-host)", "bridge (same-host)", "overlay (cross-host)"]
    assert list(mode_lines[1].get_ydata()) == [10.0, 11.0, 12.0]  # bridge: 5 × 2 + j
    assert list(cpu.lines[2].get_ydata()) == [1.0, 1.125, 1.25]  # overlay: 0.5 + 0.25 × 2 + 0.125 j
    assert [ln.get_color() for ln in mode_lines] == [ln.get_color() for ln in cpu.lines]
    ceiling = [ln for ln in thr.lines if ln.get_linestyle() == "--"]
    assert len(ceiling) == 1
    assert list(ceiling[0].get_ydata()) == [20.0, 20.0]
    assert "tcp_stream" in fig.get_suptitle()
    assert "2 hosts, 10 Gbit/s NIC" in fig.get_suptitle()


def test_single_scale_table_draws_bars(tmp_path: Path) -> None:
    table = make_table([1])
    fig = headline_figure(table)
    thr, cpu = fig.axes
    assert not thr.lines
    assert not cpu.lines
    assert [p.get_height() for p in thr.patches] == [5.0, 10.0, 15.0]
    assert [p.get_height() for p in cpu.patches] == [0.5, 0.75, 1.0]
    paths = write_report(tmp_path, table, make_stages(), META)
    assert paths["headline.png"].read_bytes()[:8] == PNG_MAGIC


def test_scale_workload_is_the_swept_one() -> None:
    rr = make_table([1]).assign(workload="tcp_rr")
    assert scale_workload(pd.concat([rr, make_table()])) == "tcp_stream"
    assert scale_workload(rr) == "tcp_rr"


def test_latency_uses_the_smallest_scale_and_log_axis_only_for_a_large_spread() -> None:
    table = make_table()
    fig = latency_figure(table)
    ax = fig.axes[0]
    heights = sorted(p.get_height() for p in ax.patches)
    # streams == 1 only: p50 20/30/40, p99 40/50/60 (host/bridge/overlay)
    assert heights == [20.0, 30.0, 40.0, 40.0, 50.0, 60.0]
    assert ax.get_yscale() == "linear"
    wide = table.assign(latency_p99_us=np.where(table["mode"] == "host", 5000.0, table["latency_p99_us"]))
    assert latency_figure(wide).axes[0].get_yscale() == "log"


def test_stage_shares_sum_hosts_normalise_per_mode_and_group_small_stages() -> None:
    share = stage_shares(make_stages())
    assert list(share.index) == ["host", "bridge"]
    assert list(share.columns) == ["tcp_rx", "sock_rx_copy", "other"]  # mean share 0.55 > 0.445
    assert share.loc["host"].tolist() == pytest.approx([0.6, 0.39, 0.01], abs=1e-12)
    assert share.loc["bridge"].tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-12)
    fig = stage_cpu_figure(make_stages())
    widths = [p.get_width() for p in fig.axes[0].patches]
    assert widths == pytest.approx([0.6, 0.5, 0.39, 0.5, 0.01, 0.0], abs=1e-12)


def test_empty_stages_skip_the_figure_and_say_so(tmp_path: Path) -> None:
    (tmp_path / "stages.png").write_bytes(b"stale")
    paths = write_report(tmp_path, make_table(), pd.DataFrame(), META)
    assert "stages.png" not in paths
    assert not (tmp_path / "stages.png").exists()
    text, page = _parse(paths["report.html"])
    assert len(page.imgs) == 2
    assert "stage figure is skipped" in text
    paths = write_report(tmp_path, make_table(), None, META)
    assert "stage figure is skipped" in paths["report.html"].read_text(encoding="utf-8")


def test_format_value() -> None:
    assert [format_value(v) for v in (131072, 9.3804, 1911000.4, 0.000436, 0.0, float("nan"), "on")] == [
        "131,072", "9.38", "1,911,000", "0.000436", "0", "–", "on"]
    assert format_value(np.int64(7)) == "7"
    assert format_value(np.float64(12.345)) == "12.3"


def test_bad_frames_raise_config_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^table\.cpu_s_per_gb: "):
        headline_figure(make_table().drop(columns="cpu_s_per_gb"))
    with pytest.raises(ConfigError, match=r"^table: "):
        write_report(tmp_path, make_table().iloc[:0], None, META)
    with pytest.raises(ConfigError, match=r"^stages\.cpu_s: "):
        stage_cpu_figure(make_stages().drop(columns="cpu_s"))
    assert list(tmp_path.iterdir()) == []


def test_report_names_the_runs_that_measured_a_transient(tmp_path: Path) -> None:
    steady = make_table().assign(window_drift=0.01)
    text, _ = _parse(write_report(tmp_path / "a", steady, make_stages(), META)["report.html"])
    assert "transient" not in text
    shaky = steady.copy()
    shaky.loc[shaky.index[-1], "window_drift"] = 0.5
    text, _ = _parse(write_report(tmp_path / "b", shaky, make_stages(), META)["report.html"])
    assert "1 of 9 runs measured a transient" in text
    assert "overlay tcp_stream × 16 (+50%)" in text
