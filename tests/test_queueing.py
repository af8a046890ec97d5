"""Theory layer: Poisson traffic into one Link must behave like the textbook single-server queue.

One :class:`Link` with no propagation delay is a FIFO single server whose service time is the
serialization time ``S = size × 8 / rate``; fed by a :class:`PoissonSource` it is M/G/1, and
its mean sojourn is Pollaczek–Khinchine's ``W = E[S] + λ·E[S²] / (2(1 − ρ))``:

* fixed sizes (M/D/1): ``W = S + ρ·S / (2(1 − ρ))``;
* exponential sizes (M/M/1): ``W = S / (1 − ρ)``.  perfsim's exponential sizes have a 64 B floor
  (:class:`FlooredExpSize`), which lowers ``E[S²]`` by 0.4 %; the test uses the exact moments,
  and checks that they are within 0.5 % of M/M/1.

Every comparison is a 99 % batch-means confidence interval: the first packets (the queue
starts empty) are discarded, the rest split into 30 consecutive batches whose means are
treated as i.i.d. normal (batches of thousands of packets, far longer than the queue's
relaxation time of about a hundred service times at ρ = 0.8), and the theory value must lie
in ``mean ± t(0.995, 29) · s / √30``.  Checked by hand: with the service time in the formula
off by 5 % (either way) every test below fails — the CI half-width is 1.4–6 % of W on
average, the error 9–31 % (5 % for Little's law, whose interval is 1.3 % of L).  Coverage,
also by hand: over 100 other seeds per test none of the intervals missed; with 40 000 packets
per run (shorter batches) 4/300 (M/D/1) and 2/300 (M/M/1) missed, about the nominal 1 %.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from typing import Any

import numpy as np
import pytest

from perfsim.components.link import Link
from perfsim.components.source import FlooredExpSize, MeasuringSink, PoissonSource
from perfsim.core.element import connect
from perfsim.core.rng import ExpSampler
from perfsim.core.sim import Sim

RATE_BPS = 1e9
SIZE_BYTES = 1000
S = SIZE_BYTES * 8 / RATE_BPS
"""Mean service time: 8 µs for a 1000 B frame at 1 Gbit/s."""
BATCHES = 30
T_995_29 = 2.7563859036706
"""Student t quantile 0.995 with 29 degrees of freedom (two-sided 99 % interval)."""
WARMUP = 2000


def batch_means_ci(x: np.ndarray, batches: int = BATCHES) -> tuple[float, float]:
    """Grand mean and 99 % half-width from ``batches`` consecutive batch means."""
    m = len(x) // batches
    assert m >= 100, "too few samples per batch"
    means = x[: m * batches].reshape(batches, m).mean(axis=1)
    return float(means.mean()), T_995_29 * float(means.std(ddof=1)) / batches**0.5


class Run:
    """One Poisson → Link → sink experiment, with an optional independent queue-length probe."""

    def __init__(
        self,
        seed: int,
        rho: float,
        n_packets: int,
        size_dist: str | None = None,
        probe_rate_pps: float = 0.0,
    ) -> None:
        self.sim = sim = Sim(seed=seed)
        self.link = Link(sim, "link", rate_bps=RATE_BPS, queue_packets=10**6, mtu_bytes=65535)
        self.sink = MeasuringSink(sim, "sink")
        connect(self.link, self.sink)
        self.lam = rho / S
        self.src = PoissonSource(
            sim, "src", self.link, self.lam, SIZE_BYTES, count=n_packets, size_dist=size_dist
        )
        self.probe_t: list[float] = []
        self.probe_n: list[int] = []
        if probe_rate_pps > 0:
            sim.env.process(self._probe(ExpSampler(sim.rng.stream("probe"), 1 / probe_rate_pps)))
        sim.env.run()
        assert sim.delivered == sim.created == n_packets, "no packet may be dropped"

    def _probe(self, gaps: ExpSampler) -> Generator[Any, Any, None]:
        """Sample the number in system at Poisson epochs (PASTA: a time average)."""
        env = self.sim.env
        while self.src.process.is_alive:
            yield env.timeout(gaps.next())
            self.probe_t.append(env.now)
            self.probe_n.append(self.link.queue_len())

    def sojourn_ci(self) -> tuple[float, float]:
        return batch_means_ci(self.sink.samples[WARMUP:])


def pk_mean_sojourn(lam: float, es: float, es2: float) -> float:
    """Pollaczek–Khinchine mean sojourn of M/G/1: ``E[S] + λ E[S²] / (2 (1 − λ E[S]))``."""
    return es + lam * es2 / (2 * (1 - lam * es))


@pytest.fixture(scope="module")
def md1_08() -> Run:
    return Run(seed=11, rho=0.8, n_packets=150_000, probe_rate_pps=0.25 * 0.8 / S)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_fixed_sizes_match_md1_mean_sojourn(rho: float, md1_08: Run) -> None:
    """M/D/1: W = S + ρS / (2(1 − ρ)) — 3 S at ρ = 0.8, 1.5 S at ρ = 0.5."""
    run = md1_08 if rho == 0.8 else Run(seed=12, rho=0.5, n_packets=60_000)
    mean, half = run.sojourn_ci()
    expected = S + rho * S / (2 * (1 - rho))
    assert abs(mean - expected) <= half, (mean / S, half / S, expected / S)
    # informative: narrower than the 8.7 % (ρ = 0.5) or 27 % (ρ = 0.8) a 5 % error in S makes
    assert half < (0.04 if rho == 0.5 else 0.10) * expected


def test_exponential_sizes_match_mm1_mean_sojourn() -> None:
    """M/M/1 (with the 64 B floor): W = E[S] + λE[S²]/(2(1 − ρ)) ≈ S / (1 − ρ) = 5 S."""
    rho = 0.8
    run = Run(seed=13, rho=rho, n_packets=150_000, size_dist="exp")
    sizes = run.src.sizes
    assert isinstance(sizes, FlooredExpSize)
    s_per_byte = 8 / RATE_BPS
    expected = pk_mean_sojourn(
        run.lam, sizes.mean_bytes * s_per_byte, sizes.second_moment_bytes2 * s_per_byte**2
    )
    mm1 = S / (1 - rho)
    assert abs(expected - mm1) < 0.005 * mm1
    mean, half = run.sojourn_ci()
    assert abs(mean - expected) <= half, (mean / S, half / S, expected / S)
    assert half < 0.15 * expected  # a 5 % error in S moves W by 31 %


def test_littles_law_queue_length_equals_rate_times_sojourn(md1_08: Run) -> None:
    """L = λW, with L from an independent Poisson probe of ``queue_len()`` (PASTA).

    Per time window (30 windows after warm-up): D = L̂ − λ̂·Ŵ, where L̂ averages the probe,
    λ̂ counts arrivals and Ŵ averages their sojourns; the 99 % CI of mean(D) must contain 0.
    """
    run = md1_08
    created = run.sink.created_s  # FIFO: sink order == arrival order
    sojourn = run.sink.samples
    t_probe = np.asarray(run.probe_t)
    n_probe = np.asarray(run.probe_n, dtype=np.float64)
    edges = np.linspace(created[WARMUP], created[-1], BATCHES + 1)
    diffs = []
    for a, b in itertools.pairwise(edges):
        arr = (created >= a) & (created < b)
        prb = (t_probe >= a) & (t_probe < b)
        lam_w = arr.sum() / (b - a) * sojourn[arr].mean()
        diffs.append(n_probe[prb].mean() - lam_w)
    d = np.asarray(diffs)
    half = T_995_29 * d.std(ddof=1) / BATCHES**0.5
    assert abs(d.mean()) <= half, (d.mean(), half)
    big_l = n_probe[t_probe >= edges[0]].mean()
    assert half < 0.04 * big_l  # L ≈ λW = 2.4 at ρ = 0.8; the test resolves 5 %


def test_same_seed_same_samples_other_seed_different() -> None:
    a = Run(seed=5, rho=0.8, n_packets=3000, size_dist="exp").sink.samples
    b = Run(seed=5, rho=0.8, n_packets=3000, size_dist="exp").sink.samples
    c = Run(seed=6, rho=0.8, n_packets=3000, size_dist="exp").sink.samples
    assert np.array_equal(a, b)
    assert len(a) == len(c) == 3000
    assert not np.array_equal(a, c)
