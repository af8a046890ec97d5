"""Sweep specs: the grid they expand to, stable point ids, one-line errors for bad files."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from perfsim.cli import main
from perfsim.errors import ConfigError
from perfsim.experiment.sweep import mean_ci, run_point, summarize
from perfsim.experiment.sweep_spec import load_spec, stable_hash
from tests.sweep.helpers import BASE, write_spec

SPEC = {"base": "base.yaml", "replications": 2, "modes": ["bridge", "host"],
        "factors": {"workloads.0.message_size": [64, 1024], "hosts.cores": [1, 2, 4]}}


def test_grid_order_labels_and_seeds(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, {**SPEC, "base": "base.yaml"}, {**BASE, "seed": 5}))
    assert spec.kind == "scenario"
    assert spec.seeds == (5, 6)  # replications count from the base's seed
    assert len(spec.points) == 2 * 3 * 2 * 2 == spec.configurations * 2
    assert spec.factor_names == ["mode", "workloads.0.message_size", "hosts.cores"]
    # the first factor varies slowest, then the others, then the modes, then the seeds
    first = [(p.labels["workloads.0.message_size"], p.labels["hosts.cores"], p.labels["mode"], p.seed)
             for p in spec.points[:6]]
    assert first == [(64, 1, "bridge", 5), (64, 1, "bridge", 6), (64, 1, "host", 5), (64, 1, "host", 6),
                     (64, 2, "bridge", 5), (64, 2, "bridge", 6)]
    assert [p.index for p in spec.points] == list(range(24))
    assert len({p.point_id for p in spec.points}) == 24
    assert len({p.config_id for p in spec.points}) == 12
    p = spec.points[-1]
    # the resolved parameters are complete: defaults filled in, the factors applied
    scenario = p.params["scenario"]
    assert scenario["network"]["mode"] == "host"
    assert scenario["hosts"] == {"count": 2, "cores": 4, "nic_gbps": 10.0, "mtu_bytes": 1500, "offloads": True,
                                 "rps": False, "qdisc": "fq_codel", "nf_conntrack_max": 262144, "gc_thresh3": 1024,
                                 "testbed": False, "scheduler": "auto"}
    assert scenario["workloads"][0]["message_size"] == 1024
    assert "seed" not in scenario
    assert p.labels["hosts.count"] == 2
    assert p.labels["duration_s"] == 0.006


def test_point_ids_are_stable(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "a", {"base": "base.yaml", "factors": {"workloads.0.streams": [1, 2]}}))
    # three spellings of one path
    for path in ("workloads[0].streams", "workloads.rr.streams"):
        other = load_spec(write_spec(tmp_path / "b", {"base": "base.yaml", "factors": {path: [1, 2]}}))
        assert [p.point_id for p in other.points] == [p.point_id for p in spec.points]
    # defaults written out, 10 for 10.0, key order and the description change nothing
    explicit = copy.deepcopy(BASE)
    explicit["hosts"] = {"cores": 2, "count": 2, "nic_gbps": 10, "mtu_bytes": 1500}
    explicit["description"] = "same simulation, other words"
    explicit["workloads"][0]["port"] = 5001
    same = load_spec(write_spec(tmp_path / "c", {"base": "base.yaml", "factors": {"workloads.0.streams": [1, 2]}},
                                explicit))
    assert [p.point_id for p in same.points] == [p.point_id for p in spec.points]
    # a parameter, the seed or the engine changes the id
    changed = copy.deepcopy(BASE)
    changed["hosts"]["nic_gbps"] = 25
    other = load_spec(write_spec(tmp_path / "d", {"base": "base.yaml", "factors": {"workloads.0.streams": [1, 2]}},
                                 changed))
    assert not {p.point_id for p in other.points} & {p.point_id for p in spec.points}
    seeds = load_spec(write_spec(tmp_path / "e", {"base": "base.yaml", "seeds": [1],
                                                  "factors": {"workloads.0.streams": [1, 2]}}))
    assert not {p.point_id for p in seeds.points} & {p.point_id for p in spec.points}
    fluid = load_spec(write_spec(tmp_path / "f", {"base": "base.yaml", "engine": "fluid",
                                                  "factors": {"workloads.0.streams": [1, 2]}}))
    assert not {p.point_id for p in fluid.points} & {p.point_id for p in spec.points}
    # across processes and versions: SHA-256 of canonical JSON, not Python's hash()
    assert stable_hash({"b": [1, 2.0], "a": (3,)}) == stable_hash({"a": [3.0], "b": (1.0, 2)})
    assert stable_hash({"a": 1}) == "015abd7f5cc57a2d"


def test_switching_mode_leaves_out_the_base_options(tmp_path: Path) -> None:
    base = copy.deepcopy(BASE)
    base["network"] = {"mode": "overlay", "options": {"learning": False, "vni": 42}}
    base["containers"][1]["host"] = 1
    spec = load_spec(write_spec(tmp_path, {"base": "base.yaml", "modes": ["overlay", "bridge", "routed"]}, base))
    nets = [p.params["scenario"]["network"] for p in spec.points]
    assert nets[0]["options"] == {"learning": False, "vni": 42}
    assert nets[1]["options"] == {}
    assert nets[2]["options"] == {}
    # an option set explicitly is kept, and checked
    bad = {"base": "base.yaml", "modes": ["overlay", "bridge"], "set": {"network.options.vni": 7}}
    with pytest.raises(ConfigError, match=r"point mode=bridge: network\.options\.vni: got 7"):
        load_spec(write_spec(tmp_path, bad, base))


def test_run_base(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, {
        "base": {"workload": "tcp_rr", "message_size": 64, "duration_s": 0.005, "seed": 3},
        "modes": ["host", "overlay"], "factors": {"streams": [1, 4]}}))
    assert spec.kind == "run"
    assert spec.seeds == (3,)
    p = spec.points[-1]
    run = p.params["run"]
    assert (run["mode"], run["streams"], run["placement"], run["containers_per_host"], run["warmup_s"]) == \
        ("overlay", 4, "cross-host", 2, 0.001)
    assert p.labels["mode"] == "overlay"
    assert p.labels["streams"] == 4


def test_fluid_and_auto_engines_run_points(tmp_path: Path) -> None:
    rows = {}
    for engine in ("des", "fluid", "auto"):
        spec = load_spec(write_spec(tmp_path, {"base": "base.yaml", "engine": engine}))
        assert spec.engine == engine
        rows[engine] = run_point(spec.points[0].params, 0, engine)
        assert all(r["throughput_gbps"] > 0 or r["transactions_per_s"] > 0 for r in rows[engine])
    assert rows["auto"] == rows["des"]  # a small scenario: auto picks the DES
    assert rows["fluid"] != rows["des"]


def test_mean_and_student_t_interval() -> None:
    mean, std, n, low, high = mean_ci([1.0, 2.0, 3.0, float("nan")])
    assert (mean, std, n) == (2.0, 1.0, 3)
    # Student's t with 2 degrees of freedom has CDF 1/2 + t / (2 sqrt(2 + t^2)): its 97.5 % quantile
    # is a sqrt(2 / (1 - a^2)) with a = 0.95
    t975 = 0.95 * math.sqrt(2 / (1 - 0.95**2))
    half = t975 * 1.0 / math.sqrt(3)
    assert low == pytest.approx(2.0 - half, rel=1e-12)
    assert high == pytest.approx(2.0 + half, rel=1e-12)
    assert mean_ci([7.0])[:3] == (7.0, pytest.approx(float("nan"), nan_ok=True), 1)
    assert mean_ci([])[2] == 0


def test_summary_counts_seeds_and_errors() -> None:
    import pandas as pd

    def row(config: str, seed: int, value: float | None, error: str | None = None) -> dict[str, object]:
        metrics = dict.fromkeys(["throughput_gbps", "pps", "transactions_per_s", "latency_p50_us",
                                 "latency_p99_us", "cpu_s_per_gb", "drops"], value)
        return {"point_id": f"{config}{seed}", "config_id": config, "seed": seed, "mode": config,
                "workload": None if error else "rr", "type": "tcp_rr", "client": "c", "server": "s", "streams": 1,
                "message_size": 64, **metrics, "error": error}

    results = pd.DataFrame([row("a", 0, 1.0), row("a", 1, 3.0), row("a", 2, None, "Boom: x"),
                            row("b", 0, None, "RoutingError: no"), row("b", 1, None, "RoutingError: no")])
    s = summarize(results)
    assert list(s["config_id"]) == ["a", "b"]
    assert list(s["n"]) == [2, 0]
    assert list(s["errors"]) == [1, 2]
    assert s.loc[0, "pps_mean"] == 2.0
    assert s.loc[0, "pps_std"] == pytest.approx(math.sqrt(2))
    assert s.loc[0, "error"] == "Boom: x"
    assert s.loc[1, "error"] == "RoutingError: no"
    assert math.isnan(s.loc[1, "pps_mean"])


BAD = [
    ({"base": "base.yaml", "factor": {}}, "factor: got {}; allowed: one of the keys version, name"),
    ({"factors": {}}, "base: got 'nothing (missing)'"),
    ({"base": "nope.yaml"}, "base: got 'nope.yaml'; allowed: a readable scenario file"),
    ({"base": 3}, "base: got 3; allowed: a scenario file path or a run mapping"),
    ({"base": "base.yaml", "factors": {"hosts.cnt": [1, 2]}}, "hosts.cnt: got 1; allowed: one of the keys count"),
    ({"base": "base.yaml", "factors": {"hosts.count": [0, 2]}}, "point hosts.count=0: hosts.count: got 0"),
    ({"base": "base.yaml", "factors": {"hosts.count": 2}}, "factors.hosts.count: got 2; allowed: a non-empty list"),
    ({"base": "base.yaml", "factors": {"hosts.count": [2, 2]}}, "allowed: a list without repeated values"),
    ({"base": "base.yaml", "factors": {"workloads.3.streams": [1]}}, "an index 0 .. 0 or a name (rr)"),
    ({"base": "base.yaml", "factors": {"hosts..count": [1]}}, "factors.hosts..count: got 'hosts..count'"),
    ({"base": "base.yaml", "factors": {"duration_s.x": [1]}}, "(duration_s is a single value)"),
    ({"base": "base.yaml", "engine": "warp"}, "engine: got 'warp'; allowed: one of des, fluid, auto"),
    ({"base": "base.yaml", "replications": 0}, "replications: got 0; allowed: an integer >= 1"),
    ({"base": "base.yaml", "replications": 2, "seeds": [1]}, "either seeds or replications"),
    ({"base": "base.yaml", "seeds": [1, 1]}, "seeds: got [1, 1]; allowed: a list without repeated seeds"),
    ({"base": "base.yaml", "modes": ["bridge", "warp"]}, "modes: got 'warp'; allowed: one of host"),
    ({"base": "base.yaml", "modes": ["bridge"], "factors": {"network.mode": ["host"]}}, "no second mode parameter"),
    ({"base": "base.yaml", "factors": {"workloads.0.streams": [1, 2], "workloads.rr.streams": [1, 2]}},
     "configurations that differ"),
    ({"base": "base.yaml", "set": {"profile": "nope"}}, "profile: got 'nope'"),
    ({"base": "base.yaml", "name": "a b"}, "name: got 'a b'"),
    ({"base": "base.yaml", "version": 2}, "version: got 2; allowed: exactly 1"),
    ({"base": {"mode": "host", "bogus": 1}}, "base.bogus: got 1; allowed: one of the keys mode, workload"),
    ({"base": {"mode": "host", "streams": 0}}, "base.streams: got 0"),
    ("base: [unclosed", "malformed YAML"),
    ("- a list", "<document>: got ['a list']"),
]


@pytest.mark.parametrize(("spec", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_spec_is_one_line_exit_2(spec: dict[str, object] | str, message: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write_spec(tmp_path, spec)
    assert main(["sweep", str(path), "--workers", "0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("perfsim sweep: "), err
    assert message in err
    assert not (tmp_path / "out" / "points").exists()  # nothing ran


def test_bad_base_scenario_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = copy.deepcopy(BASE)
    base["workloads"][0]["server"] = "nobody"
    path = write_spec(tmp_path, {"base": "base.yaml"}, base)
    assert main(["sweep", str(path)]) == 2
    assert capsys.readouterr().err == ("perfsim sweep: base base.yaml: workloads[0].server: got 'nobody'; allowed: "
                                       "one of the containers: client, server\n")


@pytest.mark.parametrize("argv", [["--workers", "-1"], ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
                                  ["--bogus"]])
def test_bad_options_exit_2(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_spec(tmp_path, {"base": "base.yaml"})
    with pytest.raises(SystemExit) as exc:  # argparse's own one-line error
        main(["sweep", str(path), *argv])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("perfsim: error: ")


def test_bad_format_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_spec(tmp_path, {"base": "base.yaml"})
    assert main(["sweep", str(path), "--format", "xml"]) == 2
    assert capsys.readouterr().err == "perfsim sweep: --format: got 'xml'; allowed: one of table, csv, none\n"


def test_missing_spec_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "spec: got" in capsys.readouterr().err


def test_example_spec_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "sweeps" / "sweep_overlay.yaml"
    spec = load_spec(path)
    assert len(spec.points) == 36
    assert spec.seeds == (0, 1, 2)
    assert {p.labels["mode"] for p in spec.points} == {"host", "overlay", "routed", "ipip"}
    assert yaml.safe_load(path.read_text())["name"] == spec.name == "sweep-overlay"
