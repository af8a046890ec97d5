"""Sweeps run in this process (``workers=0``): rows, errors, resume, retry, restart, summary."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from perfsim.cli import main
from perfsim.errors import PerfsimError
from perfsim.experiment.parquet_store import PointStore
from perfsim.experiment.sweep import METRICS, execute
from perfsim.experiment.sweep_spec import load_spec
from perfsim.scenario.cli import run_scenario
from tests.sweep.helpers import BASE, write_spec

SPEC = {"name": "inline", "base": "base.yaml", "replications": 2, "modes": ["bridge", "none"],
        "factors": {"workloads.rr.message_size": [64, 1024]}}
"""2 sizes x 2 modes x 2 seeds = 8 points; mode none cannot reach the other container."""


def test_rows_errors_and_the_same_numbers_as_perfsim_run(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, SPEC))
    out = execute(spec, tmp_path / "out", workers=0)
    r = out.results
    assert (out.points, out.ran, out.skipped, out.errors) == (8, 8, 0, 4)
    assert len(r) == 8
    assert r["point_id"].is_unique
    assert list(r["point_id"]) == [p.point_id for p in spec.points]  # plan order
    failed = r[r["error"].notna()]
    assert set(failed["mode"]) == {"none"}
    assert len(failed) == 4
    assert failed["error"].str.startswith("ConfigError: workloads[0].server: got 'server'").all()
    assert failed["error"].str.contains("cannot reach").all()
    assert failed["throughput_gbps"].isna().all()
    ran = r[r["error"].isna()]
    assert set(ran["mode"]) == {"bridge"}
    assert (ran["transactions_per_s"] > 0).all()
    assert list(ran["workloads.rr.message_size"]) == [64, 64, 1024, 1024] == list(ran["message_size"])
    # one point, against `perfsim run` of the same scenario and seed
    point = next(p for p in spec.points if p.labels["mode"] == "bridge" and p.seed == 1
                 and p.labels["workloads.rr.message_size"] == 1024)
    scenario = copy.deepcopy(point.params["scenario"])
    scenario["seed"] = 1
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(scenario))
    _, summary, _ = run_scenario(tmp_path / "one.yaml", tmp_path / "one")
    mine = r[r["point_id"] == point.point_id].iloc[0]
    for m in METRICS:
        assert mine[m] == summary.loc[0, m], m
    # the summary: per configuration, over the 2 seeds
    s = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert len(s) == 4
    assert list(s["n"]) == [2, 0, 2, 0]
    assert list(s["errors"]) == [0, 2, 0, 2]
    bridge = ran[ran["message_size"] == 1024]["transactions_per_s"]
    assert s.loc[2, "transactions_per_s_mean"] == pytest.approx(bridge.mean(), rel=1e-12)
    assert s.loc[2, "transactions_per_s_std"] == pytest.approx(bridge.std(ddof=1), rel=1e-12, abs=1e-9)
    low, high = s.loc[2, "transactions_per_s_ci95_low"], s.loc[2, "transactions_per_s_ci95_high"]
    assert low <= bridge.mean() <= high
    assert math.isnan(s.loc[1, "transactions_per_s_mean"])
    assert "cannot reach" in s.loc[1, "error"]
    assert (tmp_path / "out" / "results.csv").read_text().count("\n") == 9
    assert (tmp_path / "out" / "spec.yaml").read_text() == (tmp_path / "spec.yaml").read_text()


def test_resume_retry_and_restart(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, SPEC))
    out_dir = tmp_path / "out"
    first = execute(spec, out_dir, workers=0)
    csv = (out_dir / "results.csv").read_bytes()
    again = execute(spec, out_dir, workers=0)
    assert (again.ran, again.skipped, again.errors) == (0, 8, 4)  # errors are kept, not re-run
    assert (out_dir / "results.csv").read_bytes() == csv
    # a lost point (and a temporary file a killed writer left) -> exactly that point runs
    lost = spec.points[5]
    store = PointStore(out_dir)
    store.path(lost.point_id, False).unlink()
    (store.dir / ".x.parquet.abc.tmp").write_bytes(b"half a file")
    resumed = execute(spec, out_dir, workers=0)
    assert (resumed.ran, resumed.skipped) == (1, 7)
    assert not list(store.dir.glob(".*"))
    assert (out_dir / "results.csv").read_bytes() == csv
    # --retry-errors runs the failed points again (they fail again: deterministic)
    retried = execute(spec, out_dir, workers=0, retry_errors=True)
    assert (retried.ran, retried.skipped, retried.errors) == (4, 4, 4)
    assert (out_dir / "results.csv").read_bytes() == csv
    # a point that ran replaces its error file
    ok = next(p for p in spec.points if p.labels["mode"] == "bridge")
    store.path(ok.point_id, False).rename(store.path(ok.point_id, True))
    assert store.status()[ok.point_id] is False
    execute(spec, out_dir, workers=0, retry_errors=True)
    assert store.status()[ok.point_id] is True
    assert not store.path(ok.point_id, True).exists()
    # --restart runs everything again
    restarted = execute(spec, out_dir, workers=0, restart=True)
    assert (restarted.ran, restarted.skipped) == (8, 0)
    assert (out_dir / "results.csv").read_bytes() == csv
    assert len(first.results) == 8


def test_points_of_another_spec_are_left_out(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    execute(load_spec(write_spec(tmp_path, {**SPEC, "replications": 1})), out_dir, workers=0)
    grown = execute(load_spec(write_spec(tmp_path, {**SPEC, "replications": 2})), out_dir, workers=0)
    assert (grown.ran, grown.skipped) == (4, 4)  # seed 0 was done; seed 1 is new
    shrunk = execute(load_spec(write_spec(tmp_path, {**SPEC, "modes": ["bridge"]})), out_dir, workers=0)
    assert (shrunk.ran, len(shrunk.results)) == (0, 4)
    assert len(list((out_dir / "points").glob("*.parquet"))) == 8  # kept on disk


def test_run_base_gives_the_numbers_of_perfsim_run(tmp_path: Path) -> None:
    import perfsim

    spec = load_spec(write_spec(tmp_path, {"base": {"workload": "tcp_rr", "message_size": 64, "duration_s": 0.005},
                                           "modes": ["host", "overlay"]}))
    out = execute(spec, tmp_path / "out", workers=0)
    assert list(out.results["mode"]) == ["host", "overlay"]
    assert out.errors == 0
    ref = perfsim.run(perfsim.RunSpec(mode="overlay", workload="tcp_rr", message_size=64, duration_s=0.005,
                                      warmup_s=0.001)).summary()
    row = out.results.iloc[1]
    for m in METRICS:
        assert row[m] == ref[m], m
    assert row["placement"] == "cross-host"
    assert row["hosts"] == 2
    assert row["workload"] == "tcp_rr"


def test_one_sweep_per_directory(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, SPEC))
    holder = PointStore(tmp_path / "out")
    holder.lock()
    try:
        with pytest.raises(PerfsimError, match="another perfsim sweep is writing there"):
            execute(spec, tmp_path / "out", workers=0)
    finally:
        holder.unlock()


def test_cli_exit_1_when_points_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_spec(tmp_path, {**SPEC, "replications": 1})
    assert main(["sweep", str(path), "--workers", "0", "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    cap = capsys.readouterr()
    assert "4 points (4 configurations x 1 seeds): 4 run now, 0 already done, 2 errors" in cap.err
    assert "2 points failed (error column of results; first: ConfigError: workloads[0].server" in cap.err
    table = cap.out.splitlines()
    assert table[0].split()[:5] == ["mode", "workloads.rr.message_size", "workload", "n", "errors"]
    assert len(table) == 5
    ok = write_spec(tmp_path, {**SPEC, "modes": ["bridge"], "replications": 1}, name="ok.yaml")
    assert main(["sweep", str(ok), "--workers", "0", "--out", str(tmp_path / "ok"), "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert csv.splitlines()[0].startswith("config_id,engine,mode,")
    assert csv.count("\n") == 3


def test_base_seed_and_engine_columns(tmp_path: Path) -> None:
    base = {**BASE, "seed": 11}
    spec = load_spec(write_spec(tmp_path, {"base": "base.yaml", "replications": 2}, base))
    out = execute(spec, tmp_path / "out", workers=0)
    assert list(out.results["seed"]) == [11, 12]
    assert set(out.results["engine"]) == {"des"}
    assert out.results["config_id"].nunique() == 1
    assert out.results["point_id"].is_unique
