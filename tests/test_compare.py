"""`perfsim compare`: the CSV contract, results on disk, the report, and no output on bad input."""

from __future__ import annotations

import io
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import perfsim
from perfsim.experiment.compare import plan
from perfsim.experiment.run import SUMMARY_COLUMNS

REQUIRED = ["mode", "placement", "workload", "streams", "message_size", "throughput_gbps", "pps",
            "transactions_per_s", "latency_p50_us", "latency_p99_us", "cpu_s_per_gb", "drops"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perfsim.cli", *args], capture_output=True, text=True, timeout=600)


def test_summary_columns_are_the_documented_ones() -> None:
    assert SUMMARY_COLUMNS == REQUIRED


@pytest.mark.slow
def test_compare_csv_parses_with_the_columns_and_writes_results_and_report(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = _cli("compare", "--modes", "host,overlay", "--workload", "tcp_rr", "--streams", "2",
                "--duration", "0.005", "--format", "csv", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(io.StringIO(proc.stdout))
    assert list(df.columns[: len(REQUIRED)]) == REQUIRED
    assert list(df["mode"]) == ["host", "overlay"]
    assert (df["workload"] == "tcp_rr").all() and (df["streams"] == 2).all()
    assert (df["transactions_per_s"] > 0).all()
    on_disk = pd.read_parquet(out / "compare.parquet")
    pd.testing.assert_frame_equal(on_disk.reset_index(drop=True), pd.read_csv(out / "compare.csv"), check_dtype=False)
    html = (out / "report.html").read_text()
    images = [p for p in out.glob("*.png")]
    assert images
    assert html.count("data:image/png;base64,") >= len(images)
    parser = HTMLParser()
    parser.feed(html)
    assert "perfsim compare" in proc.stderr  # the progress bar


def test_bad_option_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = _cli("compare", "--modes", "host", "--cores", "0", "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["perfsim compare: cores: got 0; allowed: an integer >= 1 and <= 4096"]
    assert not out.exists()


def test_python_api_returns_the_same_columns() -> None:
    df = perfsim.compare(["host"], workload="udp_rr", streams=1, duration_s=0.004, workers=1)
    assert list(df.columns[: len(REQUIRED)]) == REQUIRED
    assert df.loc[0, "transactions_per_s"] > 0


def test_default_plan_covers_every_workload_and_the_scale_sweep() -> None:
    specs = plan(["host", "overlay"])
    cells = {(s.mode, s.workload, s.streams, s.cluster.hosts) for s in specs}
    for mode in ("host", "overlay"):
        for wl in ("tcp_stream", "udp_stream", "tcp_rr", "udp_rr", "tcp_crr"):
            assert (mode, wl, 1, 2) in cells
        for n in (1, 4, 16, 64, 256):
            assert (mode, "tcp_stream", n, 2) in cells
        for hosts in (2, 4, 8):  # the host sweep: 8 flows per host
            assert (mode, "tcp_stream", 8 * hosts, hosts) in cells
    assert len(specs) == len(cells)
    assert all(s.containers_per_host * s.cluster.hosts >= s.streams for s in specs)
