"""Is a run's measurement window a steady state?  ``window_drift`` (second half of the window
over the first), the note ``perfsim compare`` prints, and the agreement check's extension of
DES runs that are still in their transient."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import STEADY_DRIFT, run
from perfsim.experiment.simulate import window_drift
from perfsim.fluid.agreement import steady_des


def _host_stream(duration_s: float) -> RunSpec:
    return RunSpec(mode="host", workload="tcp_stream", streams=1, duration_s=duration_s, warmup_s=duration_s / 2)


def test_a_steady_stream_has_small_drift_and_slow_start_a_large_one() -> None:
    steady = run(_host_stream(0.05))
    assert abs(steady.window_drift) <= STEADY_DRIFT and steady.steady
    assert steady.summary()["window_drift"] == steady.window_drift
    # 1.5-3 ms after the connection opens the window is still doubling every round trip
    ramp = run(_host_stream(0.003))
    assert ramp.window_drift > 0.3 and not ramp.steady
    # nothing delivered in the first half yet: no drift to speak of, and not steady
    cold = run(_host_stream(0.0006))
    assert cold.window_drift != cold.window_drift and not cold.steady


def test_drift_is_the_largest_sign_of_a_transient() -> None:
    """Delivered 100 then 110 bytes (+10 %); written-but-unread grew by 21 (+10 % of 210);
    bytes already sent but unread shrank by 42 (-20 %): a recovery's out-of-order backlog
    draining while send buffers refill, invisible in the sum of the two."""
    assert window_drift(100, 110, 21, -42) == pytest.approx(-0.2)
    assert window_drift(100, 110, 0, 0) == pytest.approx(0.1)
    assert window_drift(100, 100, 0, 0) == 0.0
    assert window_drift(0, 100, 0, 0) != window_drift(0, 100, 0, 0)  # nothing in the first half: nan


def test_the_fluid_engine_is_a_steady_state() -> None:
    from dataclasses import replace

    res = run(replace(_host_stream(0.05), engine="fluid"))
    assert res.window_drift == 0.0 and res.steady


def test_steady_des_doubles_the_run_until_the_window_is_steady() -> None:
    res, wall = steady_des(_host_stream(0.002), max_duration_s=0.2)
    d = res.spec.duration_s
    assert res.steady and d > 0.002
    assert d / 0.002 in (4, 8, 16, 32, 64)  # doubled past the 4 ms still in slow start, never beyond the bound
    assert res.spec.warmup_s == pytest.approx(d / 2)  # the spec's warm-up share is kept
    assert wall >= res.wall_s
    # a run that is steady already is not extended, and the bound is never passed
    assert steady_des(_host_stream(0.05))[0].spec.duration_s == 0.05
    capped, _ = steady_des(_host_stream(0.002), max_duration_s=0.003)
    assert capped.spec.duration_s == 0.002 and not capped.steady


def _compare(duration_s: float, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perfsim.cli", "compare", "--modes", "host", "--workload",
                           "tcp_stream", "--streams", "1", "--duration", str(duration_s), "--format", "csv",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)


def test_compare_notes_runs_that_measured_a_transient(tmp_path: Path) -> None:
    short = _compare(0.002, tmp_path / "short")
    assert short.returncode == 0, short.stderr
    drift = pd.read_csv(io.StringIO(short.stdout))["window_drift"]
    assert drift.iloc[0] > STEADY_DRIFT
    assert "note: 1 of 1 runs not in a steady state" in short.stderr
    assert "a longer --duration or --until-steady MAX_S measures the steady state" in short.stderr
    long = _compare(0.05, tmp_path / "long")
    assert long.returncode == 0, long.stderr
    assert abs(pd.read_csv(io.StringIO(long.stdout))["window_drift"].iloc[0]) <= STEADY_DRIFT
    assert "steady state" not in long.stderr


def test_compare_until_steady_lengthens_a_run_until_its_window_is_steady(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "perfsim.cli", "compare", "--modes", "host", "--workload",
                           "tcp_stream", "--streams", "1", "--duration", "0.002", "--until-steady", "0.1",
                           "--format", "csv", "--out", str(tmp_path / "u")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    row = pd.read_csv(io.StringIO(proc.stdout)).iloc[0]
    assert row["duration_s"] in (0.004, 0.008, 0.016, 0.032, 0.064)
    assert abs(row["window_drift"]) <= STEADY_DRIFT
    assert "steady state" not in proc.stderr
