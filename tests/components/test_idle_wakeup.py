"""An idle core wakes up before it starts work handed to it (``idle_wakeup``)."""

from __future__ import annotations

import pytest
import yaml

from perfsim.calibrate.configs import run_spec, simulated_metrics
from perfsim.calibrate.fit import profile_dict, with_constants
from perfsim.core.cpu import Core
from perfsim.core.profile import load_profile
from perfsim.core.sim import reserve
from perfsim.experiment.run import run


def test_idle_core_starts_after_its_wakeup_and_a_busy_one_does_not() -> None:
    core = Core("c", 0, wakeup_s=50e-6)
    assert reserve(core, 1e-3, 10e-6) == pytest.approx(1e-3 + 50e-6 + 10e-6)  # idle: wakes first
    assert core.wakeups == 1
    assert reserve(core, 1.02e-3, 5e-6) == pytest.approx(1.065e-3)  # still busy: queues behind
    assert reserve(core, 1.065e-3, 5e-6) == pytest.approx(1.07e-3)  # the same instant it frees
    assert core.wakeups == 1
    # work done counts only work: the wake-up is latency, not CPU time
    assert core.work_done(1.03e-3) == pytest.approx(0.0)
    assert core.work_done(1.055e-3) == pytest.approx(5e-6)
    assert core.work_done(2e-3) == pytest.approx(20e-6)
    assert core.busy_s == pytest.approx(20e-6)


def test_a_two_core_round_trip_pays_two_wakeups_and_a_one_core_one_none(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """udp_rr on the testbed: with one core the server and client never find it idle; with
    two, the request wakes the server's core and the reply the client's — exactly 2 x w."""
    prior = load_profile("prior")
    rtts = {}
    for w in (0.0, 50e-6):
        path = tmp_path / f"w{w}.yaml"
        path.write_text(yaml.safe_dump(profile_dict(with_constants(prior, {("idle_wakeup", "per_packet_s"): w}))))
        for cores in (1, 2):
            row = {"path": "host", "workload": "udp_rr", "streams": 1, "message_bytes": 64, "offloads": True, "cores": cores}
            r = run(run_spec(row, profile=str(path)))
            rtts[(w, cores)] = simulated_metrics(r)["latency_s"]
            assert r.cores["wakeups"].sum() / r.flows["transactions"].sum() == pytest.approx(0 if cores == 1 else 2, abs=0.01)
    assert rtts[(50e-6, 1)] == pytest.approx(rtts[(0.0, 1)], rel=1e-9)
    assert rtts[(50e-6, 2)] == pytest.approx(rtts[(0.0, 2)] + 100e-6, rel=1e-6)
