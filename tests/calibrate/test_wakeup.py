"""The idle-CPU wake-up measured directly (``wake.c``): samples, the idle part, its shape, the
file beside a profile's raw data, and ``perfsim calibrate`` using them instead of fitting."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from perfsim.calibrate import measure as m
from perfsim.calibrate.fit import solve
from perfsim.calibrate.wakeup import (
    check_samples,
    idle_wakeups,
    measure_wakeups,
    read_wakeups,
    shape_atoms,
    wakeup_path_for,
    write_wakeups,
)
from perfsim.core.profile import load_profile
from perfsim.errors import ConfigError


def _samples(remote_us: list[float], local_us: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"kind": ["remote"] * len(remote_us) + ["local"] * len(local_us),
                         "delay_s": np.array(remote_us + local_us) * 1e-6})


def test_the_idle_wakeup_is_each_remote_sample_minus_the_local_median() -> None:
    s = _samples([50.0, 60.0, 4.0, 200.0], [5.0, 6.0, 100.0])
    assert idle_wakeups(s) * 1e6 == pytest.approx([44.0, 54.0, 0.0, 194.0])


def test_shape_atoms_are_band_means_over_the_mean() -> None:
    atoms = shape_atoms(np.arange(1.0, 201.0), atoms=100)
    assert atoms == pytest.approx([(2 * i + 1.5) / 100.5 for i in range(100)])
    assert np.mean(atoms) == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        shape_atoms(np.arange(50.0), atoms=100)


@pytest.mark.parametrize("bad", [
    pd.DataFrame({"kind": ["remote"], "delay": [1e-5]}),
    pd.DataFrame({"kind": ["remote", "local"], "delay_s": [1e-5, -1e-6]}),
    pd.DataFrame({"kind": ["remote", "local"], "delay_s": [1e-5, float("nan")]}),
    pd.DataFrame({"kind": ["remote", "remote"], "delay_s": [1e-5, 2e-5]}),
    pd.DataFrame({"kind": ["remote", "local", "far"], "delay_s": [1e-5, 2e-5, 3e-5]}),
])
def test_bad_samples_are_config_errors(bad: pd.DataFrame) -> None:
    with pytest.raises(ConfigError):
        check_samples(bad)


def test_samples_round_trip_through_the_file_beside_the_raw_data(tmp_path: Path) -> None:
    s = _samples([52.84, 61.0], [5.46]).assign(config_id="host/udp_rr/s1/m64/on/c2", repeat=0)
    path = wakeup_path_for(tmp_path / "p.raw.csv")
    assert path.name == "p.wakeup.csv.gz"
    write_wakeups(s, path)
    back = read_wakeups(path)
    assert back["delay_s"].to_numpy() * 1e6 == pytest.approx([52.8, 61.0, 5.5])
    assert list(back["config_id"]) == ["host/udp_rr/s1/m64/on/c2"] * 3
    (tmp_path / "bad.csv").write_text("kind,delay_s\nremote,1e-5\n")
    with pytest.raises(ConfigError, match="delay_us"):
        read_wakeups(tmp_path / "bad.csv")
    (tmp_path / "cut.csv.gz").write_bytes(path.read_bytes()[:30])  # a truncated download
    with pytest.raises(ConfigError, match="readable CSV"):
        read_wakeups(tmp_path / "cut.csv.gz")


def test_a_measured_constant_is_not_fitted() -> None:
    prior = load_profile("prior")
    wake, rx = ("idle_wakeup", "per_packet_s"), ("udp_rx", "per_packet_s")
    xs = [{wake: 2.0, rx: 1.0}, {rx: 2.0}]
    y = np.array([2 * prior.cost("idle_wakeup").per_packet_s + 3e-6, 6e-6])
    got = solve(xs, y, prior, lam=0.0, fixed={wake})
    assert wake not in got
    assert got[rx] == pytest.approx(3e-6, rel=1e-6)


def _two_cpus() -> None:
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("gcc") is None:
        pytest.skip("needs two CPUs and gcc")


def test_wake_measures_remote_and_local_wakeups_on_this_machine() -> None:
    _two_cpus()
    s = measure_wakeups(samples=200, local_samples=50)
    assert (s["kind"] == "remote").sum() == 200
    assert (s["kind"] == "local").sum() == 50
    assert (s["delay_s"] > 0).all()
    assert (s["delay_s"] < 0.1).all()
    med = s.groupby("kind")["delay_s"].median()
    # waking an idle CPU (an IPI; in a VM, the halted vCPU's resumption) takes longer than a
    # switch to a task on the waker's own CPU
    assert med["remote"] > med["local"]
    with pytest.raises(ConfigError):
        measure_wakeups(samples=10, cpus=(0, 0))


@pytest.mark.usefixtures("kernel")
def test_measure_samples_wakeups_before_each_two_core_round_trip() -> None:
    configs = [m.MeasureConfig("host", "udp_rr", cores=2), m.MeasureConfig("host", "udp_rr")]
    df = m.measure(configs, duration_s=1.0, repeats=1, progress=False, wakeup_samples=50)
    w = df.attrs["wakeups"]
    assert set(w["config_id"]) == {"host/udp_rr/s1/m64/on/c2"}  # not before the one-core test
    assert (w["kind"] == "remote").sum() == 50
    assert (w["repeat"] == 0).all()


@pytest.mark.slow
def test_calibrate_from_raw_takes_idle_wakeup_from_the_samples(tmp_path: Path) -> None:
    from perfsim.cli import main

    raw = tmp_path / "w.raw.csv"
    rows = [{"path": "host", "workload": "udp_rr", "streams": 1, "message_bytes": 64, "offloads": True, "cores": c,
             "metric": "transaction_rate", "repeat": 0, "value": v} for c, v in ((1, 40000.0), (2, 6000.0))]
    pd.DataFrame(rows).to_csv(raw, index=False)
    rng = np.random.default_rng(3)
    remote = list(rng.lognormal(np.log(45.0), 0.5, 400) + 6.0)
    write_wakeups(_samples(remote, [6.0] * 50), wakeup_path_for(raw))
    out = tmp_path / "w.yaml"
    assert main(["calibrate", "--from-raw", str(raw), "--out", str(out), "--iterations", "1", "--workers", "1"]) == 0
    prof = load_profile(out)
    wake = prof.cost("idle_wakeup")
    idle = np.round(np.array(remote), 1) - 6.0  # the file keeps 0.1 µs
    assert wake.per_packet_s == pytest.approx(idle.mean() * 1e-6, rel=1e-3)
    assert wake.shape is not None
    assert len(wake.shape) == 100
    assert max(wake.shape) > 2 * min(wake.shape)
    data = yaml.safe_load(out.read_text())
    assert "idle_wakeup.per_packet_s" not in data["provenance"]["fitted_constants"]
    assert data["provenance"]["idle_wakeup"]["samples"] == 400
    assert data["stages"]["idle_wakeup"]["why"].startswith("measured")
    assert (tmp_path / "w.wakeup.csv.gz").is_file()  # written beside the profile's raw data (here: in place)
    # --fit-wakeup: the same data, the samples ignored, the wake-up fitted as a constant
    fitted = tmp_path / "f.yaml"
    assert main(["calibrate", "--from-raw", str(raw), "--out", str(fitted), "--iterations", "1", "--workers", "1",
                 "--fit-wakeup"]) == 0
    assert load_profile(fitted).cost("idle_wakeup").shape is None
    assert "idle_wakeup.per_packet_s" in yaml.safe_load(fitted.read_text())["provenance"]["fitted_constants"]


def test_the_shipped_wakeup_measured_profile_is_its_samples() -> None:
    """``wakeup-measured``: the committed wake-up samples are what its ``idle_wakeup`` says."""
    from importlib import resources

    prof = load_profile("wakeup-measured")
    files = resources.files("perfsim.profiles")
    samples = read_wakeups(Path(str(files.joinpath("wakeup-measured.wakeup.csv.gz"))))
    idle = idle_wakeups(samples)
    wake = prof.cost("idle_wakeup")
    assert wake.per_packet_s == pytest.approx(idle.mean(), rel=1e-9)
    assert wake.shape == pytest.approx(tuple(shape_atoms(idle)), abs=2e-4)  # 4 decimals in the YAML
    prov = yaml.safe_load(files.joinpath("wakeup-measured.yaml").read_text())["provenance"]
    assert "idle_wakeup.per_packet_s" not in prov["fitted_constants"]
    assert prov["idle_wakeup"]["samples"] == int((samples["kind"] == "remote").sum())
    # and the default profile keeps a fitted, constant wake-up
    assert load_profile("default").cost("idle_wakeup").shape is None
