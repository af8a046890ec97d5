"""``perfsim calibrate --from-raw`` and ``perfsim validate`` end to end, on stored measurements."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from perfsim.cli import main
from perfsim.core.profile import load_profile


def _raw(path: Path) -> Path:
    """A small long-form raw file: two configurations, three repeats each."""
    rows = []
    for cfg, metric, values in (
        (("host", "udp_rr", 1, 64, True, 1), "transaction_rate", (40000.0, 41000.0, 39000.0)),
        (("host", "udp_rr", 1, 64, True, 1), "latency_s", (24e-6, 25e-6, 26e-6)),
        (("bridge", "tcp_stream", 1, 131072, True, 2), "throughput_bps", (9e9, 10e9, 11e9)),
    ):
        for i, v in enumerate(values):
            rows.append(dict(zip(["path", "workload", "streams", "message_bytes", "offloads", "cores"], cfg, strict=True),
                             metric=metric, repeat=i, value=v))
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_validate_prints_measured_vs_simulated_and_writes_csv_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path / "raw.csv")
    out = tmp_path / "v"
    assert main(["validate", "--testbed", "--profile", "prior", "--raw", str(raw), "--out", str(out), "--workers", "1"]) == 0
    table = pd.read_csv(out / "validate.csv")
    assert set(table["metric"]) == {"transaction_rate", "latency_s", "throughput_bps"}
    rr = table[table["metric"] == "transaction_rate"].iloc[0]
    assert rr["measured"] == 40000.0  # the median of the repeats
    assert rr["spread_pct"] == pytest.approx(5.0)  # (41000 - 39000) / 40000
    assert bool(rr["within_repeats"]) == (39000.0 <= rr["simulated"] <= 41000.0)
    assert bool(rr["training"]) is True and not table[table["cores"] == 2]["training"].any()
    assert rr["error_pct"] == pytest.approx((rr["simulated"] / 40000.0 - 1) * 100)
    assert (out / "validate.png").stat().st_size > 10_000
    text = capsys.readouterr().out
    assert "host/udp_rr/s1/m64/on/c1" in text and "held-out" in text


@pytest.mark.slow
def test_calibrate_from_raw_writes_a_loadable_profile_with_provenance(tmp_path: Path) -> None:
    raw = _raw(tmp_path / "raw.csv")
    out = tmp_path / "fit.yaml"
    assert main(["calibrate", "--from-raw", str(raw), "--out", str(out), "--iterations", "1", "--workers", "1"]) == 0
    prof = load_profile(out)
    data = yaml.safe_load(out.read_text())
    prov = data["provenance"]
    assert prov["raw_measurements"] == "fit.raw.csv" and (tmp_path / "fit.raw.csv").is_file()
    assert [r["config"] for r in prov["residuals"]] == ["host/udp_rr/s1/m64/on/c1"]  # the only training rate
    assert "udp_rx.per_packet_s" in prov["fitted_constants"]
    assert data["stages"]["nic_tx"]["why"].startswith("prior")
    assert prof.cost("nic_tx") == load_profile("prior").cost("nic_tx")


def test_bad_calibrate_and_validate_options_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--raw", str(tmp_path / "missing.csv")]) == 2
    assert "raw measurements: got" in capsys.readouterr().err
    assert main(["calibrate", "--from-raw", str(_raw(tmp_path / "r.csv")), "--out", str(tmp_path / "p.txt")]) == 2
    assert "--out: got" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("path,metric\nhost,throughput_bps\n")
    assert main(["validate", "--profile", "prior", "--raw", str(bad)]) == 2
    assert "measurements: got 'missing column workload'" in capsys.readouterr().err
    header = "path,workload,streams,message_bytes,offloads,cores,metric,repeat,value\n"
    for row, says in (("host,udp_rr,1,64,True,1,transaction_rate,0,abc", "measurements row 1.value: got 'abc'"),
                      ("host,udp_rr,x,64,True,1,transaction_rate,0,5", "measurements row 1.streams: got 'x'"),
                      ("moon,udp_rr,1,64,True,1,transaction_rate,0,5", "measurements row 1.path: got 'moon'"),
                      ("host,udp_rr,1,64,maybe,1,transaction_rate,0,5", "measurements row 1.offloads: got 'maybe'"),
                      ("host,udp_rr,1,64,True,1,bogus,0,5", "measurements: got 'no metric perfsim simulates'")):
        bad.write_text(header + row + "\n")
        assert main(["validate", "--profile", "prior", "--raw", str(bad)]) == 2
        assert says in capsys.readouterr().err
    assert main(["validate", "--profile", "prior", "--raw", str(_raw(tmp_path / "w.csv")), "--workers", "0"]) == 2
    assert "workers: got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_validate_against_a_fresh_real_kernel_measurement(kernel: None, tmp_path: Path) -> None:
    """``perfsim validate --measure --quick``: measure the host, bridge and overlay paths on this
    machine now, simulate them, compare; nothing is left behind."""
    from perfsim.calibrate.testbed import leftovers

    out = tmp_path / "v"
    assert main(["validate", "--measure", "--quick", "--out", str(out), "--workers", "1"]) == 0
    table = pd.read_csv(out / "validate.csv")
    assert set(table["path"]) == {"host", "bridge", "overlay"}
    assert set(table["metric"]) >= {"throughput_bps", "transaction_rate", "connection_rate", "latency_s"}
    assert (table["measured"] > 0).all() and (table["simulated"] > 0).all()
    assert leftovers() == []


def test_a_failing_testbed_command_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from perfsim.calibrate import cli
    from perfsim.calibrate.testbed import CommandError

    def fail(*args: object, **kwargs: object) -> None:
        raise CommandError(["wake", "300"], "exit status 2", "wake: cannot pin to CPU 1")

    monkeypatch.setattr(cli, "_measure", fail)
    assert main(["calibrate", "--out", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["perfsim calibrate: command failed (exit status 2): wake 300: wake: cannot pin to CPU 1"]


def test_add_sessions_marks_what_no_prediction_can_meet() -> None:
    """Two sessions 30 % apart cannot both be within ±10 % of one value ((1.1 / 0.9) = 1.22);
    15 % apart they can, and the simulated value is judged against both."""
    from perfsim.calibrate.validate import accuracy_summary, add_sessions

    cfg = {"path": "host", "workload": "tcp_stream", "streams": 1, "message_bytes": 131072, "offloads": True}
    table = pd.DataFrame([
        {**cfg, "cores": 1, "config_id": "host/tcp_stream/s1/m131072/on/c1", "metric": "throughput_bps",
         "training": False, "measured": 10e9, "simulated": 10.5e9, "error_pct": 5.0, "target_pct": 10.0,
         "within_target": True, "spread_pct": 1.0, "within_repeats": False},
        {**cfg, "cores": 2, "config_id": "host/tcp_stream/s1/m131072/on/c2", "metric": "throughput_bps",
         "training": False, "measured": 10e9, "simulated": 11e9, "error_pct": 10.0, "target_pct": 10.0,
         "within_target": True, "spread_pct": 1.0, "within_repeats": False},
    ])
    other = pd.DataFrame([{**cfg, "cores": 1, "metric": "throughput_bps", "value": 11.5e9},
                          {**cfg, "cores": 2, "metric": "throughput_bps", "value": 13e9}])
    out = add_sessions(table, [other])
    assert list(out["sessions"]) == [2, 2]
    assert list(out["session_ratio"]) == pytest.approx([1.15, 1.3])
    assert list(out["reachable"]) == [True, False]
    assert list(out["within_all_sessions"]) == [True, False]  # 10.5 is within 10 % of 10 and of 11.5
    summary = accuracy_summary(out).iloc[0]
    assert summary["reachable"] == 0.5 and summary["within_target_of_reachable"] == 1.0
    lonely = add_sessions(table, [other.iloc[:0]])  # a session that did not measure them
    assert list(lonely["sessions"]) == [1, 1] and lonely["reachable"].all()


def test_validate_session_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path / "raw.csv")
    other = pd.read_csv(raw)
    other["value"] *= 2.0  # every median twice as large: nothing is reachable
    other.to_csv(tmp_path / "other.csv", index=False)
    out = tmp_path / "v"
    assert main(["validate", "--profile", "prior", "--raw", str(raw), "--session", str(tmp_path / "other.csv"),
                 "--out", str(out), "--workers", "1"]) == 0
    table = pd.read_csv(out / "validate.csv")
    assert list(table["session_ratio"]) == pytest.approx([2.0] * len(table))
    assert not table["reachable"].any()
    assert "reachable" in capsys.readouterr().out
    assert main(["validate", "--profile", "prior", "--raw", str(raw), "--session", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv" in capsys.readouterr().err
