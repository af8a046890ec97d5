"""Per-call costs measured directly (perfsim.calibrate.percall): the switch to a woken task,
``select()``, a UDP ``read()`` and the waker's cost of a remote wake-up — measured on this
machine, kept out of the fit, reused by ``--from-raw``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from perfsim.calibrate.fit import MEASURED_STAGES, solve
from perfsim.calibrate.percall import measure_percall, parse_percall, stage_costs
from perfsim.core.profile import load_profile
from perfsim.errors import ConfigError


def test_parse_reads_the_lines_and_rejects_the_implausible() -> None:
    got = parse_percall("read_s 1.1e-06\nselect_s 1.6e-06\nswitch_s 2.9e-06\n")
    assert got == {"read_s": 1.1e-6, "select_s": 1.6e-6, "switch_s": 2.9e-6}
    assert stage_costs(got) == {"task_switch": 2.9e-6, "select": 1.6e-6, "udp_recv": 1.1e-6}
    both = parse_percall("read_s 1.1e-06\nselect_s 1.6e-06\nswitch_s 2.9e-06\nwake_remote_s 1.2e-05\n")
    assert both["wake_remote_s"] == 1.2e-5  # recorded, not (yet) a profile constant
    assert stage_costs(both) == stage_costs(got)
    for bad in ("read_s 1e-6\nselect_s 1e-6\n", "read_s 1e-6\nselect_s 1e-6\nswitch_s 2.0\n",
                "read_s 1e-6\nselect_s x\nswitch_s 1e-6\n", "read_s 1e-6\nselect_s -1e-6\nswitch_s 1e-6\n",
                "read_s 1e-6\nselect_s 1e-6\nswitch_s 1e-6\nwake_remote_s 0\n"):
        with pytest.raises(ConfigError):
            parse_percall(bad)


def test_percall_measures_this_machine() -> None:
    """``select()`` and a switch cost something, less than a millisecond; a switch between two
    processes costs more than the ``read()`` of a queued datagram (it includes a wake-up)."""
    if shutil.which("gcc") is None or shutil.which("taskset") is None:
        pytest.skip("needs gcc and taskset")
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    got = measure_percall(cpu=cpu, rounds=20)
    assert 1e-8 < got["select_s"] < 1e-3
    assert got["switch_s"] > got["read_s"] > 1e-8
    if len(allowed) > 1:  # a remote wake-up costs the waker more than a write() that wakes nobody
        assert 1e-8 < got["wake_remote_s"] < 1e-3
    else:
        assert "wake_remote_s" not in got
    with pytest.raises(ConfigError):
        measure_percall(cpu=4096)
    with pytest.raises(ConfigError):
        measure_percall(cpu=cpu, remote=cpu)


def test_measured_stages_are_never_fitted() -> None:
    prior = load_profile("prior")
    sw, rx = ("task_switch", "per_packet_s"), ("sock_rx_copy", "per_packet_s")
    xs = [{sw: 1.0, rx: 1.0}, {sw: 1.0, rx: 2.0}]
    s = prior.cost("task_switch").per_packet_s
    y = np.array([s + 2e-6, s + 4e-6])
    got = solve(xs, y, prior, lam=0.0)
    assert sw not in got and set(MEASURED_STAGES) == {"task_switch", "select", "udp_recv"}
    assert got[rx] == pytest.approx(2e-6, rel=1e-6)


def test_calibrate_from_raw_keeps_the_per_call_costs_measured_with_the_data(tmp_path: Path) -> None:
    """The profile beside the raw data says what percall.c measured with them: a re-fit keeps
    those values (and says so); without one, the prior's values, marked as such."""
    from perfsim.cli import main

    raw = tmp_path / "w.raw.csv"
    rows = [{"path": "host", "workload": "udp_rr", "streams": 1, "message_bytes": 64, "offloads": True, "cores": 1,
             "metric": "transaction_rate", "repeat": 0, "value": 40000.0}]
    pd.DataFrame(rows).to_csv(raw, index=False)
    out = tmp_path / "fresh.yaml"
    assert main(["calibrate", "--from-raw", str(raw), "--out", str(out), "--iterations", "1", "--workers", "1"]) == 0
    data = yaml.safe_load(out.read_text())
    prior = load_profile("prior")
    assert data["stages"]["task_switch"]["per_packet_s"] == prior.cost("task_switch").per_packet_s
    assert data["stages"]["select"]["why"].startswith("prior")
    assert isinstance(data["provenance"]["percall"], str)
    beside = tmp_path / "w.yaml"
    data["stages"]["task_switch"]["per_packet_s"] = 4.0e-6
    data["stages"]["select"]["per_packet_s"] = 0.5e-6
    data["stages"]["udp_recv"]["per_packet_s"] = 9.0e-6  # percall did not record it: the prior's
    data["provenance"]["percall"] = {"method": "measured by percall.c", "switch_s": 4.0e-6, "select_s": 0.5e-6}
    beside.write_text(yaml.safe_dump(data))
    again = tmp_path / "again.yaml"
    assert main(["calibrate", "--from-raw", str(raw), "--out", str(again), "--iterations", "1", "--workers", "1"]) == 0
    refit = yaml.safe_load(again.read_text())
    assert refit["stages"]["task_switch"]["per_packet_s"] == 4.0e-6
    assert refit["stages"]["select"]["per_packet_s"] == 0.5e-6
    assert refit["stages"]["select"]["why"].startswith("measured")
    assert refit["stages"]["udp_recv"]["per_packet_s"] == prior.cost("udp_recv").per_packet_s
    assert refit["stages"]["udp_recv"]["why"].startswith("prior")
    assert refit["provenance"]["percall"]["from"] == "w.yaml"
    assert "task_switch.per_packet_s" not in refit["provenance"]["fitted_constants"]


def test_a_measured_calibration_measures_the_per_call_costs_and_keeps_them(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``perfsim calibrate`` (measuring, not --from-raw): percall.c's values go into the profile
    as they are, with their provenance, and the fit leaves them alone."""
    import perfsim.calibrate.cli as cli
    import perfsim.calibrate.percall as percall
    from perfsim.cli import main

    raw = pd.DataFrame([{"path": "host", "workload": "udp_rr", "streams": 1, "message_bytes": 64, "offloads": True,
                         "cores": 1, "metric": "transaction_rate", "repeat": 0, "value": 40000.0}])
    monkeypatch.setattr(cli, "_measure", lambda *a, **k: (raw, {"cores": 2}, None))
    monkeypatch.setattr(percall, "measure_percall",
                        lambda *a, **k: {"read_s": 1.0e-6, "select_s": 1.25e-6, "switch_s": 3.5e-6,
                                         "wake_remote_s": 8.0e-6})
    out = tmp_path / "m.yaml"
    assert main(["calibrate", "--out", str(out), "--iterations", "1", "--workers", "1"]) == 0
    data = yaml.safe_load(out.read_text())
    assert data["stages"]["task_switch"]["per_packet_s"] == 3.5e-6
    assert data["stages"]["select"]["per_packet_s"] == 1.25e-6
    assert data["stages"]["udp_recv"]["per_packet_s"] == 1.0e-6
    assert data["provenance"]["percall"]["wake_remote_s"] == 8.0e-6
    assert data["stages"]["task_switch"]["why"].startswith("measured: percall.c")
    assert data["provenance"]["percall"]["switch_s"] == 3.5e-6
    assert not ({f"{s}.per_packet_s" for s in MEASURED_STAGES} & set(data["provenance"]["fitted_constants"]))
