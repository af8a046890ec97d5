"""Every registered mode builds and carries every workload in every placement it allows."""

from __future__ import annotations

import pytest

from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.experiment.config import WORKLOADS, RunSpec
from perfsim.experiment.run import run
from perfsim.topology.cluster import ClusterSpec, build_cluster
from perfsim.topology.modes import MODES, PLACEMENTS

CARRYING = [(m, p, w) for m, info in MODES.items() if m != "none" for p in info.placements for w in WORKLOADS]


def test_the_registry_lists_every_mode_with_its_placements_and_options() -> None:
    assert list(MODES) == ["host", "bridge", "user-bridge", "container", "none", "overlay", "routed", "ipip"]
    same = ("same-host",)
    assert {m: (i.placements, i.default_placement) for m, i in MODES.items()} == {
        "host": (PLACEMENTS, "cross-host"),
        "bridge": (PLACEMENTS, "same-host"),
        "user-bridge": (PLACEMENTS, "cross-host"),
        "container": (same, "same-host"),
        "none": (same, "same-host"),
        "overlay": (PLACEMENTS, "cross-host"),
        "routed": (PLACEMENTS, "cross-host"),
        "ipip": (PLACEMENTS, "cross-host"),
    }
    assert {m: i.options for m, i in MODES.items() if i.options} == {
        "bridge": ("subnet", "mtu_bytes"),
        "user-bridge": ("networks", "attach_both", "subnets", "mtu_bytes"),
        "container": ("subnet", "mtu_bytes"),
        "overlay": ("vni", "learning", "subnet", "mtu_bytes"),
        "routed": ("pod_cidr",),
        "ipip": ("pod_cidr", "mtu_bytes"),
    }
    assert all(i.datapath and "\n" not in i.datapath for i in MODES.values())


@pytest.mark.parametrize("mode", [m for m, i in MODES.items() if not i.options])
def test_a_mode_without_options_refuses_one_by_name(mode: str) -> None:
    cl = build_cluster(Sim(seed=1), ClusterSpec(hosts=2))
    with pytest.raises(ConfigError, match=rf"^mode_options.learning: got True; allowed: no options for mode {mode}$"):
        MODES[mode].build(cl, 2, learning=True)


@pytest.mark.parametrize(("mode", "placement", "workload"), CARRYING)
def test_mode_carries_workload(mode: str, placement: str, workload: str) -> None:
    r = run(RunSpec(mode=mode, workload=workload, placement=placement, containers_per_host=2,
                    duration_s=0.004, warmup_s=0.001))
    flows = r.flows
    if workload.endswith("stream"):
        assert flows["bytes"].sum() > 0
    else:
        assert flows["transactions"].sum() > 0
    acc = r.accounting
    assert acc["created"] == acc["delivered"] + acc["dropped"] + acc["in_flight"]
    assert acc["created"] > 0


@pytest.mark.parametrize("workload", WORKLOADS)
def test_none_refuses_every_workload_between_two_containers(workload: str) -> None:
    with pytest.raises(ConfigError, match=r"^mode: got 'none'; allowed: .*cannot reach h0c1"):
        run(RunSpec(mode="none", workload=workload, placement="same-host", containers_per_host=2,
                    duration_s=0.004, warmup_s=0.001))
    with pytest.raises(ConfigError, match=r"^placement: got 'cross-host'; allowed: same-host for mode none"):
        RunSpec(mode="none", workload=workload, placement="cross-host")


def test_the_cross_host_cpu_cost_ordering_emerges() -> None:
    """Host networking is cheapest per byte; VXLAN costs more than plain routing.  Orderings
    only: the values come from the stages each path crosses, not from a written ratio."""
    cost = {}
    for mode, info in MODES.items():
        if "cross-host" in info.placements:
            r = run(RunSpec(mode=mode, workload="tcp_stream", placement="cross-host", containers_per_host=2,
                            duration_s=0.01, warmup_s=0.002, cluster=ClusterSpec(hosts=2, cores=2)))
            cost[mode] = r.summary()["cpu_s_per_gb"]
    assert set(cost) == {"host", "bridge", "user-bridge", "overlay", "routed", "ipip"}
    assert min(cost, key=cost.__getitem__) == "host"
    assert all(cost[m] > cost["host"] for m in cost if m != "host")
    assert cost["overlay"] > cost["routed"]
    assert cost["ipip"] > cost["routed"]


def test_the_round_trip_latency_ordering_emerges(awake_prior: str) -> None:
    """tcp_rr: fewer stages on the path, shorter round trip. Orderings only, never ratios.
    (Cores that never sleep: with idle wake-ups, the count of idle cores a transaction wakes
    — one per core hand-off — decides instead; see tests/components/test_idle_wakeup.py.)"""
    p50: dict[str, float] = {}
    for mode, placement in [("container", "same-host"), ("bridge", "same-host"), ("host", "cross-host"),
                            ("routed", "cross-host"), ("overlay", "cross-host")]:
        r = run(RunSpec(mode=mode, placement=placement, workload="tcp_rr", containers_per_host=2,
                        duration_s=0.01, warmup_s=0.002, profile=awake_prior))
        p50[mode] = r.summary()["latency_p50_us"]
    assert p50["container"] < p50["bridge"] < p50["host"] < p50["routed"] < p50["overlay"]
