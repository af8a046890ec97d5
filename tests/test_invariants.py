"""Properties that must hold for any topology and load (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfsim.components.codel import QDISCS
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import run
from perfsim.topology.cluster import ClusterSpec
from perfsim.topology.modes import MODES


@st.composite
def specs(draw: st.DrawFn) -> RunSpec:
    mode = draw(st.sampled_from([m for m in MODES if m != "none"]))
    placement = draw(st.sampled_from(MODES[mode].placements))
    cluster = ClusterSpec(
        hosts=draw(st.integers(2, 3)),
        cores=draw(st.integers(1, 3)),
        nic_rate_bps=draw(st.sampled_from([1e8, 1e9, 1e10])),
        nic_qdisc=draw(st.sampled_from(QDISCS)),
        nic_queue_packets=draw(st.integers(2, 64)),
        offloads=draw(st.booleans()),
        fabric_delay_s=draw(st.sampled_from([0.0, 5e-6, 1e-4])),
    )
    return RunSpec(
        mode=mode,
        workload=draw(st.sampled_from(["tcp_stream", "udp_stream", "tcp_rr", "udp_rr", "tcp_crr"])),
        streams=draw(st.integers(1, 4)),
        placement=placement,
        containers_per_host=draw(st.sampled_from([2, 4])),
        cluster=cluster,
        duration_s=draw(st.sampled_from([0.002, 0.004])),
        warmup_s=0.001,
        seed=draw(st.integers(0, 2**32)),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_packets_are_conserved_and_no_resource_is_used_more_than_100_percent(spec: RunSpec) -> None:
    r = run(spec)
    acc = r.accounting
    assert acc["created"] == acc["delivered"] + acc["dropped"] + acc["in_flight"], acc
    assert acc["dropped"] == int(r.drops["count"].sum())
    assert 0 <= int(r.drops["window_count"].sum()) <= acc["dropped"]
    assert (r.cores["utilisation"] <= 1.0 + 1e-9).all(), r.cores
    assert (r.links["utilisation"] <= 1.0 + 1e-9).all(), r.links
    assert (r.cores["busy_s"] >= -1e-12).all()
