"""Sources and the measuring sink: exact timelines on deterministic input, rates within a CI."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from perfsim.components.link import Link
from perfsim.components.source import (
    DEFAULT_FLOW,
    ConstantSource,
    FlooredExpSize,
    MeasuringSink,
    PoissonSource,
)
from perfsim.core.element import CaptureSink, connect
from perfsim.core.packet import FlowKey
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError

Z99 = 2.5758293035489
"""Standard normal quantile 0.995 (two-sided 99 % interval)."""


def test_constant_source_creates_3_packets_at_0_10_20_us(sim: Sim) -> None:
    sink = CaptureSink(sim)
    src = ConstantSource(sim, "cbr", sink, interval_s=10e-6, size_bytes=1000, count=3)
    sim.run(1.0)
    assert sink.times == [0.0, pytest.approx(10e-6, abs=1e-18), pytest.approx(20e-6, abs=1e-18)]
    assert [p.t_created for _, p in sink.log] == sink.times
    assert [p.id for _, p in sink.log] == [1, 2, 3]
    pkt = sink.log[0][1]
    assert (pkt.size_bytes, pkt.payload_bytes, pkt.hdr_bytes, pkt.segs) == (1000, 958, 42, 1)
    assert pkt.flow == DEFAULT_FLOW
    assert src.sent == 3
    assert src.sent_bytes == 3000
    assert sim.created == sim.delivered == 3


def test_constant_source_start_and_inclusive_stop(sim: Sim) -> None:
    """Packets at start + k·interval while that instant is <= stop_s."""
    sink = CaptureSink(sim)
    flow = FlowKey(1, 2, 17, 3, 4)
    ConstantSource(
        sim, "cbr", sink, interval_s=10e-6, size_bytes=64, flow=flow, start_s=5e-6, stop_s=35e-6
    )
    sim.run(1.0)
    assert sink.times == pytest.approx([5e-6, 15e-6, 25e-6, 35e-6], abs=1e-18)
    assert {p.flow for _, p in sink.log} == {flow}


def test_constant_source_does_not_accumulate_rounding(sim: Sim) -> None:
    """Instants come from k·interval, not from summing intervals (0.1 µs is not a binary float)."""
    sink = MeasuringSink(sim)
    ConstantSource(sim, "cbr", sink, interval_s=1e-7, size_bytes=64, count=100_001)
    sim.run(1.0)
    assert sink.created_s[-1] == pytest.approx(100_000 * 1e-7, rel=1e-15)
    assert sink.received == 100_001


def test_poisson_count_is_exact_and_packets_are_handed_on_at_creation(sim: Sim) -> None:
    sink = CaptureSink(sim)
    src = PoissonSource(sim, "p", sink, rate_pps=1e6, size_bytes=1500, count=500)
    sim.run(1.0)
    assert src.sent == len(sink.log) == 500
    assert all(t == p.t_created for t, p in sink.log)
    assert sim.created == sim.delivered + sim.dropped + sim.in_flight() == 500


def test_poisson_count_in_window_is_within_99pct_ci(sim: Sim) -> None:
    """N(T) ~ Poisson(λT): λ = 100 kpps, T = 0.2 s → 20 000 ± 2.576·√20 000 (364)."""
    sink = MeasuringSink(sim)
    PoissonSource(sim, "p", sink, rate_pps=1e5, size_bytes=100, stop_s=0.2)
    sim.run(1.0)
    assert abs(sink.received - 20_000) <= Z99 * math.sqrt(20_000)
    assert sink.created_s[-1] <= 0.2


def test_poisson_gaps_are_exponential_not_regular(sim: Sim) -> None:
    """P(gap > mean) = 1/e for an exponential (0 or 1/2 for regular or symmetric gaps)."""
    sink = MeasuringSink(sim)
    PoissonSource(sim, "p", sink, rate_pps=1e5, size_bytes=100, count=20_001)
    sim.run(1.0)
    gaps = np.diff(np.concatenate([[0.0], sink.created_s]))
    p = float(np.mean(gaps > 1e-5))
    assert abs(p - math.exp(-1)) <= Z99 * math.sqrt(math.exp(-1) * (1 - math.exp(-1)) / len(gaps))


def test_poisson_start_delays_the_process(sim: Sim) -> None:
    sink = CaptureSink(sim)
    PoissonSource(sim, "p", sink, rate_pps=1e6, size_bytes=100, count=10, start_s=1e-3)
    sim.run(1.0)
    assert len(sink.times) == 10
    assert min(sink.times) > 1e-3


def test_same_seed_same_instants_and_sizes_do_not_shift_arrivals() -> None:
    def instants(seed: int, size_dist: str | None) -> np.ndarray:
        sim = Sim(seed=seed)
        sink = MeasuringSink(sim)
        PoissonSource(sim, "p", sink, 1e5, 1000, count=1000, size_dist=size_dist)
        sim.run(1.0)
        return sink.created_s

    a = instants(7, None)
    assert np.array_equal(a, instants(7, None))
    assert np.array_equal(a, instants(7, "exp"))  # sizes use their own stream
    assert not np.array_equal(a, instants(8, None))


def test_floored_exp_sizes_mean_floor_and_second_moment(sim: Sim) -> None:
    dist = FlooredExpSize(sim.rng.stream("sizes"), 1000)
    # the scale solves 64 + s·exp(-64/s) = 1000
    assert 64 + dist.scale_bytes * math.exp(-64 / dist.scale_bytes) == pytest.approx(1000, 1e-12)
    assert dist.scale_bytes == pytest.approx(997.99, abs=0.01)
    n = 200_000
    x = np.array([dist.next() for _ in range(n)], dtype=np.float64)
    assert x.min() == 64
    assert abs(x.mean() - 1000) <= Z99 * x.std() / math.sqrt(n)
    assert abs((x**2).mean() - dist.second_moment_bytes2) <= Z99 * (x**2).std() / math.sqrt(n)
    assert dist.second_moment_bytes2 == pytest.approx(2e6 * (1 - 0.0039), rel=1e-3)


def test_source_exposes_size_moments(sim: Sim) -> None:
    sink = MeasuringSink(sim)
    fixed = PoissonSource(sim, "a", sink, 1e3, 1000, count=1)
    expo = PoissonSource(sim, "b", sink, 1e3, 1000, count=1, size_dist="exp")
    assert (fixed.mean_size_bytes, fixed.size_second_moment_bytes2) == (1000.0, 1e6)
    assert expo.mean_size_bytes == 1000.0
    assert expo.sizes is not None
    assert expo.size_second_moment_bytes2 == expo.sizes.second_moment_bytes2


def test_measuring_sink_records_exact_sojourns_behind_a_link(sim: Sim) -> None:
    """1000 B every 4 µs into 1 Gbit/s (8 µs each) + 2 µs wire: sojourns 10, 14, 18 µs."""
    link = Link(sim, "l", rate_bps=1e9, delay_s=2e-6)
    sink = MeasuringSink(sim)
    connect(link, sink)
    ConstantSource(sim, "cbr", link, interval_s=4e-6, size_bytes=1000, count=3)
    assert math.isnan(sink.mean_sojourn_s)
    sim.run(1.0)
    assert sink.samples == pytest.approx([10e-6, 14e-6, 18e-6], abs=1e-15)
    assert sink.created_s == pytest.approx([0.0, 4e-6, 8e-6], abs=1e-15)
    assert sink.mean_sojourn_s == pytest.approx(14e-6, abs=1e-15)
    assert (sink.received, sink.received_bytes) == (3, 3000)
    assert sim.delivered == 3
    assert sink.held_packets() == 0


@pytest.mark.parametrize(
    ("cls", "kw", "field"),
    [
        (PoissonSource, {"rate_pps": 0}, "rate_pps"),
        (PoissonSource, {"rate_pps": -5.0}, "rate_pps"),
        (PoissonSource, {"rate_pps": "fast"}, "rate_pps"),
        (PoissonSource, {"size_bytes": 41}, "size_bytes"),
        (PoissonSource, {"size_bytes": 70_000}, "size_bytes"),
        (PoissonSource, {"size_bytes": 100.5}, "size_bytes"),
        (PoissonSource, {"size_dist": "pareto"}, "size_dist"),
        (PoissonSource, {"size_dist": "exp", "size_bytes": 64}, "size_bytes"),
        (PoissonSource, {"size_dist": "exp", "size_bytes": 9000}, "size_bytes"),
        (PoissonSource, {"stop_s": -1.0}, "stop_s"),
        (PoissonSource, {"count": 0}, "count"),
        (PoissonSource, {"count": 2.5}, "count"),
        (PoissonSource, {"start_s": -1e-6}, "start_s"),
        (PoissonSource, {"flow": (1, 2, 17, 3, 4)}, "flow"),
        (PoissonSource, {"out": object()}, "out"),
        (ConstantSource, {"interval_s": 0}, "interval_s"),
        (ConstantSource, {"interval_s": float("nan")}, "interval_s"),
        (ConstantSource, {"count": -1}, "count"),
    ],
)
def test_bad_parameters_name_the_field(sim: Sim, cls: type, kw: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"out": CaptureSink(sim), "size_bytes": 1000}
    args["rate_pps" if cls is PoissonSource else "interval_s"] = 1e3
    args.update(kw)
    with pytest.raises(ConfigError, match=rf"^src\.{field}: got .*; allowed: "):
        cls(sim, "src", **args)
    assert "src" not in sim.elements  # nothing half-built is registered
