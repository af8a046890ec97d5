"""A sweep killed (SIGKILL) or interrupted (SIGINT, SIGTERM) part-way leaves only whole point
files and no worker process; the same command then resumes without losing or repeating a
point, and the results are byte-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import psutil
import pytest

from perfsim.experiment.sweep import execute
from perfsim.experiment.sweep_spec import load_spec
from tests.sweep.helpers import perfsim_cmd, run_cli, wait_for, write_spec

SPEC = {"name": "killme", "base": "base.yaml", "replications": 4, "modes": ["bridge", "host", "none"],
        "factors": {"workloads.rr.message_size": [64, 512, 4096], "hosts.cores": [1, 2]}}
"""3 x 2 x 3 modes x 4 seeds = 72 points of ~20 ms; the 24 of mode none fail."""
TOTAL = 72
ERRORS = 24


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    d = tmp_path_factory.mktemp("ref")
    path = write_spec(d, SPEC)
    out = execute(load_spec(path), d / "out", workers=0)
    assert (out.points, out.errors) == (TOTAL, ERRORS)
    return path, (d / "out" / "results.csv").read_bytes()


def _files(points: Path) -> list[Path]:
    return sorted(points.glob("*.parquet")) if points.is_dir() else []


@pytest.mark.parametrize(("sig", "workers"), [("SIGKILL", "1"), ("SIGINT", "1"), ("SIGTERM", "0")])
def test_interrupted_sweep_resumes_exactly(sig: str, workers: str, reference: tuple[Path, bytes],
                                           tmp_path: Path) -> None:
    spec, expected = reference
    out = tmp_path / "out"
    points = out / "points"
    cmd = perfsim_cmd("sweep", str(spec), "--workers", workers, "--out", str(out), "--format", "none")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: len(_files(points)) >= 3, 60, "3 finished points")
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if workers != "0":
        assert children, "the LocalCluster's worker processes"
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"worker processes left behind: {alive}"
    stored = _files(points)
    assert 3 <= len(stored) < TOTAL, "the signal must land in the middle of the sweep"
    for f in stored:  # only whole files: each one reads, with its point's rows
        frame = pd.read_parquet(f)
        assert len(frame) == 1
        assert frame["point_id"].iloc[0] == f.name.split(".")[0]
    if sig == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err
        assert not [p for p in points.iterdir() if p.name.startswith(".")]
        assert err.splitlines()[-1] == (f"perfsim sweep: interrupted; {len(stored)} of {TOTAL} points stored in "
                                        f"{points} (run the same command to resume)")
        assert "Traceback" not in err
        assert "KeyboardInterrupt" not in err
    # the same command resumes: only the missing points run
    again = run_cli("sweep", str(spec), "--workers", workers, "--out", str(out), "--format", "none")
    assert again.returncode == 1, again.stderr  # the mode-none points are errors
    assert f"{TOTAL - len(stored)} run now, {len(stored)} already done, {ERRORS} errors" in again.stderr
    assert len(_files(points)) == TOTAL
    assert not [p for p in points.iterdir() if p.name.startswith(".")]
    assert (out / "results.csv").read_bytes() == expected
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == TOTAL
    assert results["point_id"].is_unique
