"""The shipped ``examples/scale_*.yaml`` show their effect at their full length, at the size
their comments (and docs/scale_effects.md) predict from the configured limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfsim.core.profile import load_profile
from perfsim.experiment.simulate import Simulated, simulate
from perfsim.scenario import load_file
from perfsim.scenario.compile import compile_scenario
from perfsim.scenario.model import Scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str) -> tuple[Scenario, Simulated]:
    scenario = load_file(EXAMPLES / name)
    return scenario, simulate(compile_scenario(scenario))


def drops(out: Simulated, reason: str) -> dict[str, int]:
    d = out.drops[out.drops["reason"] == reason]
    return dict(zip(d["site"], d["count"], strict=True))


def test_conntrack_example_fills_both_tables_and_drops_one_syn_per_stream() -> None:
    scenario, out = run("scale_conntrack_full.yaml")
    n_max = scenario.hosts.nf_conntrack_max
    t = out.tables[out.tables["table"] == "conntrack"]
    assert t.groupby("name")["entries"].max().to_dict() == {"h0.conntrack": n_max, "h1.conntrack": n_max}
    assert drops(out, "conntrack_full") == {"h0.conntrack": sum(w.streams for w in scenario.workloads)}


def test_neighbour_example_drops_the_flood_copies_beyond_gc_thresh3() -> None:
    scenario, out = run("scale_neighbour_overflow.yaml")
    remote_vteps = scenario.hosts.count - 1
    assert drops(out, "neigh_table_full") == {"h0.neigh": remote_vteps - scenario.hosts.gc_thresh3}
    assert (out.flows["transactions"] > 0).all()  # the unicast traffic goes on


def test_published_ports_example_late_port_pays_its_rule_walk_per_connection() -> None:
    scenario, out = run("scale_published_ports.yaml")
    rate = (out.flows.groupby("group")["connections"].sum() / out.window_s).to_dict()
    ports_between = len(scenario.network.publish) - 1  # "late" is published that many after "early"
    per_rule = load_profile(scenario.profile).cost("nf_rule").per_packet_s
    predicted = 2 * ports_between * per_rule  # nat PREROUTING + filter FORWARD, once per SYN
    assert 1 / rate["churn-late"] - 1 / rate["churn-early"] == pytest.approx(predicted, rel=0.3)


def test_overlay_nic_example_fills_the_nic() -> None:
    scenario, out = run("scale_overlay_nic.yaml")
    mss = 1500 - 50 - 52
    predicted = scenario.hosts.nic_gbps * 1e9 * mss / (mss + 66 + 50 + 24)
    assert float(out.flows["bytes"].sum()) * 8 / out.window_s == pytest.approx(predicted, rel=0.02)
