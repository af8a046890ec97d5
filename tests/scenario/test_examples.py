"""Every shipped example passes ``check``, runs, and gives byte-identical result files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from perfsim.scenario import check, load_file
from perfsim.scenario.cli import (
    RESULT_FILES,
    add_check_arguments,
    add_run_arguments,
    check_main,
    run_main,
    run_scenario,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
REQUIRED = {"minimal.yaml", "three_tier_user_bridge.yaml", "overlay_16_hosts.yaml", "nat_churn_published_port.yaml"}
SHORT = {"duration_s": 0.006, "warmup_s": 0.002}
"""Overrides that keep the whole file fast; the examples' own durations are 10-20 ms."""


def test_required_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= REQUIRED


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_checks_runs_and_is_reproducible(path: Path, tmp_path: Path) -> None:
    scenario = load_file(path)
    checked = check(scenario)
    assert checked.containers == len(scenario.containers)
    assert checked.flows == sum(w.streams for w in scenario.workloads)
    _, summary, paths = run_scenario(path, tmp_path / "a", SHORT)
    assert list(summary["name"]) == [w.name for w in scenario.workloads]
    # every workload moved data in the window
    assert (summary["throughput_gbps"] > 0).all()
    assert {"report.html", "latency.png", *RESULT_FILES} <= set(paths)
    run_scenario(path, tmp_path / "b", SHORT)
    for name in RESULT_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    flows = pd.read_csv(tmp_path / "a" / "flows.csv")
    assert "wall_s" not in flows.columns
    assert "wall_s" not in summary.columns
    assert set(flows["client"]) <= {c.name for c in scenario.containers}


def test_other_seed_changes_results(tmp_path: Path) -> None:
    path = next(p for p in EXAMPLES if p.name == "three_tier_user_bridge.yaml")
    run_scenario(path, tmp_path / "a", SHORT)
    run_scenario(path, tmp_path / "b", {**SHORT, "seed": 7})
    assert (tmp_path / "a" / "flows.csv").read_bytes() != (tmp_path / "b" / "flows.csv").read_bytes()


def _args(add: Any, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add(p)
    return p.parse_args(argv)


def test_check_main_prints_ok(capsys: pytest.CaptureFixture[str]) -> None:
    path = next(p for p in EXAMPLES if p.name == "overlay_16_hosts.yaml")
    assert check_main(_args(add_check_arguments, [str(path)])) == 0
    assert capsys.readouterr().out == "ok: overlay-16-hosts: 16 containers, 16 flows\n"


def test_run_main_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = next(p for p in EXAMPLES if p.name == "minimal.yaml")
    assert run_main(_args(add_run_arguments, [str(path), "--out", str(tmp_path), "--format", "csv"])) == 0
    out = capsys.readouterr().out
    assert out == (tmp_path / "summary.csv").read_text()
    assert out.splitlines()[0] == ("name,type,client,server,streams,message_size,throughput_gbps,pps,"
                                  "transactions_per_s,latency_p50_us,latency_p99_us,cpu_s_per_gb,drops")


def test_interrupted_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = next(p for p in EXAMPLES if p.name == "minimal.yaml")

    def broken(self: pd.DataFrame, p: Any, **kw: Any) -> None:
        Path(p).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(KeyboardInterrupt):
        run_scenario(path, tmp_path, SHORT)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["summary.csv"]  # written before, complete; no parquet, no temp file
    assert pd.read_csv(tmp_path / "summary.csv")["name"].tolist() == ["rr"]
