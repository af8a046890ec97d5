"""A measured spread of idle wake-ups (``idle_wakeup.shape``): each wake-up draws its own delay,
the mean stays the profile's, and the median round trip falls below the mean as in a VM."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from perfsim.calibrate.configs import run_spec, simulated_metrics
from perfsim.calibrate.fit import profile_dict, with_constants
from perfsim.core.cpu import Core, CpuPool
from perfsim.core.profile import Profile, load_profile, normalised_shape
from perfsim.core.rng import ShapeSampler
from perfsim.core.sim import reserve
from perfsim.errors import ConfigError
from perfsim.experiment.run import run


def _gen(seed: int = 1) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_shape_is_normalised_to_mean_one_and_bad_shapes_are_errors() -> None:
    assert normalised_shape([1, 3]) == (0.5, 1.5)
    for bad in ([1.0], [0, 0], [1, -1], "1,2", [1, "x"], list(range(1, 1002))):
        with pytest.raises(ConfigError):
            normalised_shape(bad)
    data = profile_dict(load_profile("prior"))
    data["stages"]["udp_rx"]["shape"] = [1, 2]
    with pytest.raises(ConfigError, match="only idle_wakeup"):
        Profile.from_dict(data)


def test_a_shape_survives_the_yaml_round_trip_and_clock_scaling_but_not_a_given_wakeup() -> None:
    prof = load_profile("prior").with_wake_shape([1, 1, 4])
    again = Profile.from_dict(yaml.safe_load(yaml.safe_dump(profile_dict(prof))))
    assert again.cost("idle_wakeup").shape == pytest.approx((0.5, 0.5, 2.0), abs=1e-4)
    scaled = prof.at_clock(2 * prof.cpu_ghz) if prof.cpu_ghz else prof
    assert scaled.cost("idle_wakeup").shape == prof.cost("idle_wakeup").shape
    assert prof.with_idle_wakeup(20e-6).cost("idle_wakeup").shape is None  # another machine's: constant
    assert with_constants(prof, {("idle_wakeup", "per_packet_s"): 7e-5}).cost("idle_wakeup").shape == prof.cost("idle_wakeup").shape


def test_sampler_draws_only_atoms_times_the_mean_and_keeps_the_mean() -> None:
    s = ShapeSampler(_gen(), 10e-6, (0.5, 1.5))
    draws = np.array([s.next() for _ in range(20_000)])
    assert set(np.round(draws * 1e6, 9)) == {5.0, 15.0}
    # a fair coin between 5 and 15 µs: the mean of 20 000 draws is 10 µs ± 4 standard errors
    assert abs(draws.mean() - 10e-6) < 4 * 5e-6 / np.sqrt(draws.size)
    again = ShapeSampler(_gen(), 10e-6, (0.5, 1.5))
    assert [again.next() for _ in range(100)] == draws[:100].tolist()


def test_an_idle_core_waits_its_drawn_wakeup() -> None:
    core = Core("c", 0, wakeup_s=10e-6, wake_sampler=ShapeSampler(_gen(), 10e-6, (0.0, 2.0)))
    t, waits = 0.0, []
    for _ in range(200):
        t += 1e-3  # long idle before each piece of work
        waits.append(reserve(core, t, 1e-6) - t - 1e-6)
    assert set(np.round(np.array(waits) * 1e6, 6)) == {0.0, 20.0}
    assert core.wakeups == 200


def test_cores_without_a_wakeup_or_without_a_shape_draw_nothing() -> None:
    assert all(c.wake_sampler is None for c in CpuPool("h", 2, wakeup_s=0.0, wake_shape=(1.0, 1.0), rng=_gen()).cores)
    assert all(c.wake_sampler is None for c in CpuPool("h", 2, wakeup_s=5e-5).cores)
    with pytest.raises(ConfigError):
        CpuPool("h", 2, wakeup_s=5e-5, wake_shape=(1.0, 1.0))


def _rr(tmp_path, shape, seed: int = 0):  # type: ignore[no-untyped-def]
    prof = with_constants(load_profile("prior"), {("idle_wakeup", "per_packet_s"): 50e-6})
    if shape is not None:
        prof = prof.with_wake_shape(shape)
    path = tmp_path / f"p{len(shape or ())}.yaml"
    path.write_text(yaml.safe_dump(profile_dict(prof)))
    row = {"path": "host", "workload": "udp_rr", "streams": 1, "message_bytes": 64, "offloads": True, "cores": 2}
    return run(run_spec(row, profile=str(path), duration_s=0.2, seed=seed))


def test_a_skewed_wakeup_keeps_the_rate_and_moves_the_median_round_trip_below_the_mean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two wake-ups per transaction on two cores: with atoms 0.25 (3 in 4) and 3.25 (1 in 4)
    the mean wake-up is still 50 µs, so the rate stays; a round trip's two draws are both
    short with probability 9/16, so its median is the constant case's minus 2 × 37.5 µs."""
    const, skew = _rr(tmp_path, None), _rr(tmp_path, [0.25, 0.25, 0.25, 3.25])
    mc, ms = simulated_metrics(const), simulated_metrics(skew)
    n = skew.flows["transactions"].sum()
    assert n > 1000
    # the rate is 1 / mean round trip: the two wake-ups' mean is unchanged, within the
    # sampling error of n transactions' 2n draws (sd of one draw 65 µs)
    mean_rtt_c, mean_rtt_s = 1 / mc["transaction_rate"], 1 / ms["transaction_rate"]
    assert abs(mean_rtt_s - mean_rtt_c) < 4 * 65e-6 * np.sqrt(2 / n) + 1e-6
    assert ms["latency_s"] == pytest.approx(mc["latency_s"] - 75e-6, abs=1e-6)
    assert ms["latency_p99_s"] > mc["latency_s"] + 2 * 100e-6
    again = _rr(tmp_path, [0.25, 0.25, 0.25, 3.25])
    assert again.flows["transactions"].sum() == n
    assert simulated_metrics(again) == ms
    other = _rr(tmp_path, [0.25, 0.25, 0.25, 3.25], seed=1)
    assert simulated_metrics(other) != ms
