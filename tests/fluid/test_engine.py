"""The fluid engine: what it takes from the DES, the limits it enforces, how users reach it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from perfsim.components.conntrack import ConntrackTimeouts
from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import flow_plans, run
from perfsim.fluid import AUTO_DES_MAX_FLOWS, choose_engine
from perfsim.fluid.flows import flows_of_plans, flows_of_spec
from perfsim.fluid.probe import FlowClass, probe_class
from perfsim.topology.cluster import ClusterSpec

FIELDS = ("client_host", "client_container", "server_host", "server_container", "client_port", "server_port")


@pytest.mark.parametrize("placement", ["cross-host", "same-host"])
@pytest.mark.parametrize("testbed", [False, True])
def test_vectorised_flows_are_the_des_flow_plans(placement: str, testbed: bool) -> None:
    spec = RunSpec(streams=37 if not testbed else 7, containers_per_host=5, placement=placement,
                   cluster=ClusterSpec(hosts=3 if not testbed else 2, testbed=testbed))
    a, b = flows_of_spec(spec), flows_of_plans(flow_plans(spec))
    for f in FIELDS:
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_ports_stay_in_their_ranges_and_distinct_for_many_flows() -> None:
    f = flows_of_spec(RunSpec(streams=20000, containers_per_host=100, cluster=ClusterSpec(hosts=100)))
    assert f.client_port.min() >= 32768 and f.client_port.max() <= 60999
    assert f.server_port.max() <= 65000
    assert len(np.unique(f.client_port)) == 20000


def test_the_probe_learns_roles_and_the_vxlan_outer_key() -> None:
    p = probe_class(FlowClass("tcp_stream", 131072, "cross-host"), cluster=ClusterSpec(), containers_per_host=2,
                    mode="overlay", mode_options={}, profile="default", seed=0, duration_s=0.02, warmup_s=0.004)
    kinds = sorted((r.pool, r.kind) for r, _ in p.cores)
    assert kinds == [("client", "app"), ("client", "steer"), ("server", "app"), ("server", "steer")]
    steer = {r.pool: r.template for r, _ in p.cores if r.kind == "steer"}
    assert steer["server"].describe() == "(chip, ship, 17, vxlan_sport((cip, sip, 6, cport, sport)), 4789)"
    assert steer["client"].describe() == "(ship, chip, 17, vxlan_sport((sip, cip, 6, sport, cport)), 4789)"
    # the data crosses each NIC link once: one payload byte costs 8 bits plus headers on the wire
    # (a 1398 B segment in a 1538 B frame with preamble and gap: +10 %), plus up to 2 % for the
    # bytes on the wire at the window's edges
    tx = dict(((s, d), v) for s, d, v in p.links)[("client", "tx")]
    assert 8 / 10e9 * 1538 / 1398 * 0.98 < tx < 8 / 10e9 * 1538 / 1398 * 1.02


def test_ipip_receive_work_of_all_flows_between_two_hosts_lands_on_one_core_overlay_spreads() -> None:
    """RSS imbalance: an IP-in-IP outer header has no ports, a VXLAN one has a source port per
    inner flow; the fluid engine finds the same receive core as the DES (same hash, same keys)."""
    cl = ClusterSpec(hosts=2, nic_rate_bps=100e9)
    spec = RunSpec(mode="ipip", streams=16, containers_per_host=8, cluster=cl, duration_s=0.02, warmup_s=0.004,
                   engine="fluid")
    fluid, des = run(spec), run(replace(spec, engine="des"))
    hot = set(fluid.cores.query("utilisation > 0.999")[["host", "core"]].itertuples(index=False, name=None))
    assert len(hot) == 2  # one receive core per host does every flow's decapsulation
    # the DES's busiest core on each host is the same one, 1.5 times as busy as any other
    # (its 20 ms run is not steady enough to say "saturated" on both hosts)
    for host, cores in des.cores.groupby("host"):
        util = cores.set_index("core")["utilisation"].sort_values(ascending=False)
        assert (host, int(util.index[0])) in hot
        assert util.iloc[0] > 1.5 * util.iloc[1]
    overlay = run(replace(spec, mode="overlay"))
    assert (overlay.cores["utilisation"] > 0.999).sum() > 2
    assert overlay.summary()["throughput_gbps"] > 1.4 * fluid.summary()["throughput_gbps"]


def test_the_nic_becomes_the_bottleneck_and_overlay_still_costs_more_cpu_per_gb() -> None:
    rows = {}
    for mode in ("host", "overlay"):
        r = run(RunSpec(mode=mode, streams=32, containers_per_host=16, engine="fluid",
                        cluster=ClusterSpec(hosts=2, cores=16, nic_rate_bps=10e9)))
        assert r.links["utilisation"].max() == pytest.approx(1.0)
        assert r.cores["utilisation"].max() < 1.0
        rows[mode] = r.summary()
    # host: 1448 B of payload per 1538 B on the wire (MSS, TCP/IP + Ethernet + preamble/gap)
    assert rows["host"]["throughput_gbps"] == pytest.approx(2 * 10 * 1448 / 1538, rel=0.01)
    assert rows["overlay"]["throughput_gbps"] < rows["host"]["throughput_gbps"]
    assert rows["overlay"]["cpu_s_per_gb"] > rows["host"]["cpu_s_per_gb"]


def test_conntrack_limits_connection_rate_to_table_size_over_entry_lifetime() -> None:
    """4 tcp_crr flows between 2 hosts (each host client of 2, server of 2): host mode tracks a
    connection once per host, entries live TIME_WAIT = 1 s, so over a run of 2 s a 1000-entry
    table admits 1000 connections/s per host in steady state: 250/s per flow, far below what
    the CPU allows.  In a 0.5 s run (shorter than the lifetime) the empty table takes 1000
    entries in 0.5 s: 2000/s per host, 500/s per flow."""
    cl = ClusterSpec(hosts=2, nf_conntrack_max=1000, conntrack_timeouts=ConntrackTimeouts(tcp_time_wait_s=1.0))
    spec = RunSpec(mode="host", workload="tcp_crr", streams=4, containers_per_host=2, cluster=cl, engine="fluid",
                   duration_s=2.0, warmup_s=0.5)
    r = run(spec)
    # (entries per connection are counted in the probe's window: 1 within its edge effects)
    assert r.flows["transactions_per_s"].to_numpy() == pytest.approx([250.0] * 4, rel=0.01)
    assert r.tables["full"].all()
    short = run(replace(spec, duration_s=0.5, warmup_s=0.1))
    assert short.flows["transactions_per_s"].to_numpy() == pytest.approx([500.0] * 4, rel=0.01)
    free = run(replace(spec, cluster=replace(cl, nf_conntrack_max=262144)))
    assert free.flows["transactions_per_s"].min() > 1000
    assert not free.tables["full"].any()


def test_same_seed_same_result_and_auto_picks_by_size() -> None:
    spec = RunSpec(mode="bridge", placement="cross-host", streams=8, containers_per_host=4, engine="fluid")
    a, b = run(spec), run(spec)
    assert a.flows["bytes"].tolist() == b.flows["bytes"].tolist()
    assert choose_engine(AUTO_DES_MAX_FLOWS, 10) == "des"
    assert choose_engine(AUTO_DES_MAX_FLOWS + 1, 10) == "fluid"
    assert choose_engine(10, 10_000) == "fluid"
    assert RunSpec(streams=4, engine="auto").resolved_engine == "des"
    big = RunSpec(streams=1000, containers_per_host=10, cluster=ClusterSpec(hosts=100), engine="auto")
    assert big.resolved_engine == "fluid"


def test_bad_engine_and_too_large_overlay_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="engine"):
        RunSpec(engine="warp")
    spec = RunSpec(mode="overlay", streams=10, containers_per_host=1, cluster=ClusterSpec(hosts=20000), engine="fluid")
    with pytest.raises(ConfigError, match="hosts"):
        run(spec)


def _perfsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perfsim.cli", *args], capture_output=True, text=True, timeout=300)


def test_compare_engine_fluid_with_flows_per_container(tmp_path) -> None:
    p = _perfsim("compare", "--engine", "fluid", "--modes", "overlay", "--hosts", "10", "--containers-per-host", "5",
                 "--streams", "2", "--workload", "tcp_stream", "--format", "csv", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    import io

    import pandas as pd

    table = pd.read_csv(io.StringIO(p.stdout))
    assert table["streams"].tolist() == [100]
    assert table["engine"].tolist() == ["fluid"]
    assert table["throughput_gbps"].iloc[0] > 0
    bad = _perfsim("compare", "--engine", "warp", "--out", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "engine" in bad.stderr


def test_scenario_file_runs_on_the_fluid_engine(tmp_path) -> None:
    p = _perfsim("run", "examples/overlay_16_hosts.yaml", "--engine", "fluid", "--format", "csv", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "summary.csv").exists()
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 17  # header + 16 ring workloads


def test_sweep_point_runs_on_the_fluid_engine() -> None:
    from perfsim.experiment.sweep import run_point
    from perfsim.experiment.sweep_spec import RUN_DEFAULTS

    params = {**RUN_DEFAULTS, "mode": "overlay", "workload": "tcp_stream", "streams": 4, "hosts": 2, "containers_per_host": 2, "warmup_s": 0.004,
              "placement": "cross-host"}
    fluid = run_point({"run": params}, 0, "fluid")
    des = run_point({"run": params}, 0, "des")
    assert fluid[0]["throughput_gbps"] > 0
    assert fluid[0]["throughput_gbps"] != des[0]["throughput_gbps"]  # really another engine


@pytest.mark.parametrize("mode", ["host", "overlay"])
def test_neighbour_overflow_blocks_the_flows_past_gc_thresh3_as_in_the_des(mode: str) -> None:
    """Host 0 talks to 6 peers with gc_thresh3 = 4: the two flows to the peers resolved last
    carry nothing, on both engines (the DES's own fan-out test: tests/scale)."""
    from perfsim.experiment.simulate import Experiment, FlowPlan, simulate
    from perfsim.fluid.experiment import simulate_fluid

    flows = tuple(FlowPlan("udp_rr", (0, 0), (h, 0), 64, server_port=5001, client_port=40000 + h, start_s=0.001 + h * 1e-5)
                  for h in range(1, 7))
    exp = Experiment(cluster=ClusterSpec(hosts=7, cores=2, gc_thresh3=4), mode=mode, containers_per_host=1, flows=flows,
                     duration_s=0.004, warmup_s=0.0005)
    des, fluid = simulate(exp), simulate_fluid(exp)
    dead = {"des": set(des.flows.loc[des.flows["transactions"] == 0, "flow"]),
            "fluid": set(fluid.flows.loc[fluid.flows["transactions"] == 0, "flow"])}
    assert dead["fluid"] == dead["des"] == {4, 5}
    assert fluid.drops.set_index("site")["count"].to_dict() == {"h0.neigh": 2}
    ipip = simulate_fluid(replace(exp, mode="ipip"))  # remote hosts' entries are permanent there
    assert (ipip.flows["transactions"] > 0).all()


def test_streams_taking_turns_on_an_application_core_are_probed_together() -> None:
    """A lone stream's reader often holds its socket when the next skb arrives (the reader's
    core processes it from the backlog and sends the ACK); streams that take turns on their
    sending core arrive in bursts the reader has finished with, so that work moves to the
    softirq core — here the sending core itself (a veth delivers on the CPU that sent)."""
    from perfsim.fluid.engine import _flow_classes

    one_per_core = RunSpec(mode="overlay", placement="same-host", streams=4, containers_per_host=4,
                           cluster=ClusterSpec(hosts=2))
    two_per_core = replace(one_per_core, streams=8, containers_per_host=8)
    for spec, shared in ((one_per_core, False), (two_per_core, True)):
        _, classes = _flow_classes(flows_of_spec(spec), False, spec.cluster)
        assert [c.app_core_shared for c in classes] == [shared]
    udp = replace(two_per_core, workload="udp_stream")
    assert not _flow_classes(flows_of_spec(udp), False, udp.cluster)[1][0].app_core_shared

    kw = dict(cluster=ClusterSpec(hosts=2), containers_per_host=8, mode="overlay", mode_options={},
              profile="default", seed=0, duration_s=0.1, warmup_s=0.05)
    lone = probe_class(FlowClass("tcp_stream", 131072, "same-host"), **kw)
    turns = probe_class(FlowClass("tcp_stream", 131072, "same-host", app_core_shared=True), **kw)
    cost = {p: {r.side: c for r, c in probe.cores if r.kind == "app"} for p, probe in (("lone", lone), ("turns", turns))}
    assert turns.rate_per_s == lone.rate_per_s  # the cap is still the lone flow's
    # a few % of the work: the ACKs of data a reader finds unread leave from the reader's core
    # (tcp_cleanup_rbuf) either way; what moves is the backlog processing, and how often each
    # side sleeps and is switched in again.  The direction depends on the profile's constants
    # (default profile: client -6.6 %, server +15.8 %; before task_switch was costed: +2.6 %,
    # +1.8 %; the fit before that: +2.6 %, -3.4 %): what holds is that probing the pair
    # together changes the per-unit costs
    for side in ("client", "server"):
        assert cost["turns"][side] != pytest.approx(cost["lone"][side], rel=0.01)
    # the fluid engine now finds what the DES does with two streams per sending core
    fluid, des = run(replace(two_per_core, engine="fluid")), run(two_per_core)
    assert fluid.summary()["throughput_gbps"] == pytest.approx(des.summary()["throughput_gbps"], rel=0.03)


def test_a_tcp_sender_gets_what_the_receiving_work_on_its_core_leaves() -> None:
    """Hand-computed: one core; flow A's receive work costs 0.5 s per unit there (its rate
    alone: 1.2 units/s), flow B's sending application 0.5 s per unit.  Max-min: 1 unit/s each.
    The sender yields: A runs at 1.2 (0.6 of the core), B gets the 0.4 left: 0.8."""
    import scipy.sparse as sp

    from perfsim.fluid.engine import _senders_yield
    from perfsim.fluid.maxmin import maxmin_rates

    rest = sp.csr_matrix(np.array([[0.5, 0.0]]))
    send = sp.csr_matrix(np.array([[0.0, 0.5]]))
    cap, capacity = np.array([1.2, np.inf]), np.ones(1)
    start = maxmin_rates(rest + send, capacity, cap)
    assert start == pytest.approx([1.0, 1.0])
    assert _senders_yield(rest, send, capacity, cap, start) == pytest.approx([1.2, 0.8], rel=2e-3)
    # a core that is not saturated, or holds only one kind of work, changes nothing
    capped = np.array([1.2, 1.0])
    idle = maxmin_rates(rest + send, np.array([2.0]), capped)
    assert _senders_yield(rest, send, np.array([2.0]), capped, idle) is idle
    alone = sp.csr_matrix(np.array([[0.5, 0.5]]))
    assert _senders_yield(sp.csr_matrix((1, 2)), alone, capacity, cap, start) is start


def test_in_a_ring_of_hosts_the_receiving_flow_keeps_its_rate_as_in_the_des() -> None:
    """Overlay, 4 flows on 4 hosts: each host's container receives one flow and sends the next.
    On hosts where RSS puts the receive softirq on the application core, the flow arriving
    there keeps nearly its lone rate and the one leaving gets the rest — in both engines."""
    spec = RunSpec(mode="overlay", streams=4, containers_per_host=1, cluster=ClusterSpec(hosts=4),
                   duration_s=0.2, warmup_s=0.1)
    des, fluid = run(spec), run(replace(spec, engine="fluid"))
    d = des.flows["bytes"].to_numpy()
    f = fluid.flows["bytes"].to_numpy()
    # the total against the agreement grid's 5 % bound: tests/fluid/test_agreement.py
    # (overlay, cross-host, 4 x 4 — a known miss at -6.4 % with the default profile)
    assert f.sum() == pytest.approx(d.sum(), rel=0.08)
    slowest = int(np.argmin(d))
    assert int(np.argmin(f)) == slowest
    # how much slower depends on the profile's split of send and receive work (default: DES
    # 0.75 of the others)
    assert f[slowest] < 0.85 * np.delete(f, slowest).min()
    assert d[slowest] < 0.85 * np.delete(d, slowest).min()
