"""Workload stop times: a stopped client starts nothing new."""

from __future__ import annotations

import pytest

from perfsim.errors import ConfigError
from perfsim.experiment.simulate import simulate
from perfsim.scenario.compile import compile_scenario
from perfsim.scenario.load import load_text

SCENARIO = """
version: 1
name: stop
duration_s: 0.02
warmup_s: 0.002
network: {mode: host}
containers: [{name: a, host: 0}, {name: b, host: 1}]
workloads:
  - {name: all-along, type: tcp_rr, client: a, server: b, port: 80}
  - {name: stops, type: tcp_rr, client: a, server: b, port: 90, stop_s: %s}
"""


def test_a_stopped_workload_completes_no_transaction_after_its_stop_time() -> None:
    out = simulate(compile_scenario(load_text(SCENARIO % "0.008")))
    tx = out.flows.set_index("group")["transactions"]
    window = out.window_s
    # stopped at 0.008 s: it ran for (0.008 - window start) of the 0.016 s window
    assert 0 < tx["stops"] < 0.6 * tx["all-along"]
    assert out.measured_from_s + window > 0.008


def test_stop_before_start_is_refused_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"^workloads\[1\]\.stop_s: got 0\.0; allowed: a number > start_s"):
        load_text(SCENARIO % "0.0")
