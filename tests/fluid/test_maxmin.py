"""Max-min fair rates: hand-computed cases, the max-min optimality condition, bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from perfsim.errors import ConfigError
from perfsim.fluid import maxmin_rates

ROOT = Path(__file__).parent.parent.parent
NS = 1e-9  # 1 ns of CPU per byte: 1 GB/s on one core


def test_one_flow_one_core_gets_the_core() -> None:
    # 1 core-s/s / 2 ns per byte = 5e8 B/s
    assert maxmin_rates(np.array([[2 * NS]]), np.array([1.0])) == pytest.approx([5e8], rel=1e-15)


def test_one_flow_one_link_gets_the_link_rate_in_bytes() -> None:
    assert maxmin_rates(np.array([[8.0]]), np.array([10e9])) == pytest.approx([1.25e9], rel=1e-15)


def test_two_equal_flows_split_a_core_equally() -> None:
    rates = maxmin_rates(np.array([[NS, NS]]), np.array([1.0]))
    assert rates == pytest.approx([5e8, 5e8], rel=1e-15)


def test_link_limited_flow_gets_the_link_rate_and_the_other_the_rest_of_the_core() -> None:
    """DESIGN's case (the module docstring's worked example): B 125 MB/s, A 875 MB/s."""
    demand = np.array([[NS, NS], [0.0, 8.0]])
    rates = maxmin_rates(demand, np.array([1.0, 1e9]))
    assert rates == pytest.approx([8.75e8, 1.25e8], rel=1e-12)
    assert NS * rates.sum() == pytest.approx(1.0, rel=1e-12)


def test_costlier_flow_gets_equal_rate_by_default_and_uses_twice_the_cpu() -> None:
    # equal rates x: 1 ns·x + 2 ns·x = 1 s/s -> x = 1/3 GB/s each
    rates = maxmin_rates(np.array([[NS, 2 * NS]]), np.array([1.0]))
    assert rates == pytest.approx([1e9 / 3, 1e9 / 3], rel=1e-12)


def test_costlier_flow_gets_half_the_rate_with_cpu_time_fair_weights() -> None:
    # weight = 1 / cost: each gets half the core -> 0.5 / 1 ns and 0.5 / 2 ns
    demand = np.array([[NS, 2 * NS]])
    rates = maxmin_rates(demand, np.array([1.0]), weight=np.array([1.0, 0.5]))
    assert rates == pytest.approx([5e8, 2.5e8], rel=1e-12)


def test_cap_limits_a_flow_and_the_others_share_what_is_left() -> None:
    # three flows on 1 GB/s of core; flow 0 capped at 100 MB/s -> the others get 450 MB/s
    demand = np.array([[NS, NS, NS]])
    rates = maxmin_rates(demand, np.array([1.0]), np.array([1e8, np.inf, np.inf]))
    assert rates == pytest.approx([1e8, 4.5e8, 4.5e8], rel=1e-12)


def test_cap_above_the_fair_share_does_not_bind() -> None:
    rates = maxmin_rates(np.array([[NS, NS]]), np.array([1.0]), np.array([6e8, 7e8]))
    assert rates == pytest.approx([5e8, 5e8], rel=1e-12)


def test_flow_with_a_cap_and_no_resource_gets_its_cap() -> None:
    demand = np.array([[NS, 0.0]])
    rates = maxmin_rates(demand, np.array([1.0]), np.array([np.inf, 3e6]))
    assert rates == pytest.approx([1e9, 3e6], rel=1e-15)


def test_chain_of_links_classic_maxmin() -> None:
    """Links L0 (1 Gbit/s) and L1 (2 Gbit/s); flow 0 on both, flow 1 on L0, flow 2 on L1.

    L0 saturates first at 62.5 MB/s each (flows 0, 1); L1 then has 2e9 - 8·62.5e6 = 1.5e9 bit/s
    for flow 2 alone: 187.5 MB/s.
    """
    demand = np.array([[8.0, 8.0, 0.0], [8.0, 0.0, 8.0]])
    rates = maxmin_rates(demand, np.array([1e9, 2e9]))
    assert rates == pytest.approx([6.25e7, 6.25e7, 1.875e8], rel=1e-12)


def test_zero_capacity_resource_stops_its_flows() -> None:
    demand = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert maxmin_rates(demand, np.array([0.0, 4.0])) == pytest.approx([0.0, 4.0], abs=1e-12)


def test_no_flows_gives_an_empty_result() -> None:
    assert maxmin_rates(np.zeros((3, 0)), np.ones(3)).shape == (0,)


def test_dense_and_every_sparse_format_give_the_same_rates() -> None:
    rng = np.random.default_rng(7)
    dense = rng.uniform(0.5, 2.0, (20, 60)) * (rng.random((20, 60)) < 0.2)
    dense[0] += 0.1  # every flow crosses resource 0
    capacity = rng.uniform(1.0, 10.0, 20)
    caps = np.where(rng.random(60) < 0.3, rng.uniform(0.01, 1.0, 60), np.inf)
    ref = maxmin_rates(dense, capacity, caps)
    for fmt in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.csr_array):
        np.testing.assert_array_equal(maxmin_rates(fmt(dense), capacity, caps), ref)
    _assert_maxmin(dense, capacity, caps, np.ones(60), ref)


def _assert_maxmin(
    dense: np.ndarray, capacity: np.ndarray, caps: np.ndarray, w: np.ndarray, rates: np.ndarray
) -> None:
    """Feasible, and every flow has its cap or a saturated resource where its rate/weight is
    the largest among the flows crossing it (the max-min optimality condition)."""
    tol = 1e-9
    used = dense @ rates
    assert np.all(used <= capacity * (1 + tol) + 1e-300)
    assert np.all(rates >= 0)
    assert np.all(rates <= caps * (1 + tol))
    saturated = used >= capacity * (1 - tol)
    level = rates / w
    for f in range(dense.shape[1]):
        if rates[f] >= caps[f] * (1 - tol):
            continue
        crossed = np.flatnonzero((dense[:, f] > 0) & saturated)
        assert any(level[f] >= level[dense[r] > 0].max() * (1 - tol) for r in crossed), (
            f"flow {f} is not bottlenecked: rate {rates[f]}"
        )


@st.composite
def instances(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_res = draw(st.integers(1, 5))
    n_flows = draw(st.integers(1, 7))
    entry = st.one_of(st.just(0.0), st.floats(0.1, 10.0))
    dense = np.array(draw(st.lists(entry, min_size=n_res * n_flows, max_size=n_res * n_flows)))
    dense = dense.reshape(n_res, n_flows)
    capacity = np.array(draw(st.lists(st.floats(0.5, 10.0), min_size=n_res, max_size=n_res)))
    # caps are rates (bytes/s): 0 or a normal float; a subnormal cap (5e-324) would only test
    # the solver's float underflow, not the max-min condition
    cap = st.one_of(st.just(np.inf), st.just(0.0), st.floats(1e-6, 5.0))
    caps = np.array(draw(st.lists(cap, min_size=n_flows, max_size=n_flows)))
    w = np.array(draw(st.lists(st.floats(0.25, 4.0), min_size=n_flows, max_size=n_flows)))
    return dense, capacity, caps, w


@settings(max_examples=300, deadline=None)
@given(instances())
def test_random_instances_satisfy_the_maxmin_condition(
    inst: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    dense, capacity, caps, w = inst
    assume(np.all((dense > 0).any(axis=0) | np.isfinite(caps)))
    rates = maxmin_rates(dense, capacity, caps, weight=w)
    _assert_maxmin(dense, capacity, caps, w, rates)
    np.testing.assert_array_equal(
        maxmin_rates(sp.csr_matrix(dense), capacity, caps, weight=w), rates
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"demand": np.array([[1.0, -1.0]])}, "demand[0, 1]"),
        ({"demand": np.array([[1.0], [np.nan]])}, "demand[1, 0]"),
        ({"demand": sp.csr_matrix(np.array([[0.0, 1.0], [np.inf, 0.0]]))}, "demand[1, 0]"),
        ({"demand": np.ones(3)}, "demand.shape"),
        ({"demand": "fast"}, "demand"),
        ({"capacity": np.ones(3)}, "capacity.shape"),
        ({"capacity": np.array([1.0, -2.0])}, "capacity[1]"),
        ({"capacity": np.array([np.nan, 1.0])}, "capacity[0]"),
        ({"capacity": np.array([1.0, np.inf])}, "capacity[1]"),
        ({"cap_per_flow": np.ones(2)}, "cap_per_flow.shape"),
        ({"cap_per_flow": np.array([1.0, np.nan, 1.0])}, "cap_per_flow[1]"),
        ({"cap_per_flow": np.array([1.0, 1.0, -np.inf])}, "cap_per_flow[2]"),
        ({"weight": np.array([1.0, 0.0, 1.0])}, "weight[1]"),
        ({"weight": np.array([1.0, 1.0, np.inf])}, "weight[2]"),
    ],
)
def test_bad_inputs_raise_config_error_naming_the_field(kwargs: dict, field: str) -> None:
    args = {"demand": np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]), "capacity": np.ones(2)}
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        maxmin_rates(**args)
    assert info.value.field == field


def test_flow_without_resource_or_cap_is_refused_by_index() -> None:
    demand = np.array([[1.0, 0.0, 1.0]])
    with pytest.raises(ConfigError, match="flow 1 crosses no resource and has no cap"):
        maxmin_rates(demand, np.ones(1), np.array([np.inf, np.inf, 2.0]))
    # an explicit zero in a sparse matrix does not count as crossing
    explicit = sp.csr_matrix(
        (np.array([1.0, 0.0]), (np.array([0, 0]), np.array([0, 1]))), shape=(1, 2)
    )
    with pytest.raises(ConfigError, match="flow 1 crosses"):
        maxmin_rates(explicit, np.ones(1))


@pytest.mark.slow
def test_benchmark_quick_prints_the_required_lines() -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/maxmin.py", "--quick"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for n, m in ((1000, 100), (10000, 1000)):
        assert f"maxmin flows={n} resources={m} solve_s=" in proc.stdout
    assert "memory max_rss_mb=" in proc.stdout
