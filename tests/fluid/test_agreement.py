"""Fluid vs DES throughput on a sample of the small-scenario grid (the whole grid:
``benchmarks/fluid_agreement.py``): every mode in its default placement, both stream workloads,
flows and hosts taken in turn from the grid's values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from perfsim.fluid.agreement import TOLERANCE, compare_point, grid
from perfsim.topology.modes import MODES

SIZES = [(4, 2), (16, 4), (1, 8), (4, 8), (16, 2), (4, 4)]
"""(flows, hosts), taken in turn by the sampled points."""


def _sample() -> list:
    out = []
    cycle = itertools.cycle(SIZES)
    for mode in MODES:
        for wl in ("tcp_stream", "udp_stream"):
            flows, hosts = next(cycle)
            spec = next(s for s in grid([mode], workloads=[wl], flows=[flows], hosts=[hosts])
                        if s.placement == MODES[mode].default_placement)
            out.append(pytest.param(spec, id=f"{mode}-{wl}-{flows}x{hosts}"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("spec", _sample())
def test_fluid_throughput_within_5_percent_of_the_des(spec) -> None:
    row = compare_point(spec)
    assert abs(row["error"]) <= TOLERANCE, row


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "placement", "flows", "hosts"), [
    ("overlay", "same-host", 16, 2),  # streams taking turns on a core: probed two at a time
    ("routed", "cross-host", 64, 4),  # 16 streams per NIC: the DES settles only after 0.4 s
    pytest.param("overlay", "cross-host", 4, 4,  # a ring of hosts: senders yield to arriving work
                 marks=pytest.mark.xfail(strict=True, reason=(
                     "known miss: the fluid ring rule gives -6.4 % since the reader's CPU share entered the fit "
                     "(more receive work per byte); like the grid's other TCP rings (README)"))),
    ("ipip", "cross-host", 64, 2),  # 32 container streams per NIC, decapsulated on one core: fq_codel
                                    # keeps the NIC queue (a 1000-skb tail drop lost bursts: +6 %)
])
def test_points_that_needed_more_than_a_lone_probe_max_min_or_a_short_run(mode: str, placement: str,
                                                                         flows: int, hosts: int) -> None:
    spec = next(s for s in grid([mode], workloads=["tcp_stream"], flows=[flows], hosts=[hosts])
                if s.placement == placement)
    row = compare_point(spec)
    assert abs(row["error"]) <= TOLERANCE, row
    assert abs(row["des_drift"]) <= 0.03, row


def test_flow_errors_compare_flow_by_flow_and_skip_a_flow_the_des_starved() -> None:
    from types import SimpleNamespace

    import pandas as pd

    from perfsim.fluid.agreement import flow_errors

    des = SimpleNamespace(flows=pd.DataFrame({"flow": [0, 1, 2], "throughput_bps": [10e9, 5e9, 0.0]}))
    fluid = SimpleNamespace(flows=pd.DataFrame({"flow": [2, 1, 0], "throughput_bps": [1e9, 7.5e9, 9e9]}))
    err = flow_errors(des, fluid)  # type: ignore[arg-type]
    assert err[0] == pytest.approx(-0.1)
    assert err[1] == pytest.approx(0.5)
    assert np.isnan(err[2])  # nothing to compare a rate with
