"""``--network container:`` pods (shared namespace, loopback) and ``--network none``."""

from __future__ import annotations

import pytest

from perfsim.core.addr import ip
from perfsim.core.packet import PROTO_TCP
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import run
from perfsim.topology.cluster import ClusterSpec, build_cluster
from perfsim.topology.container_mode import LoopbackDevice, build_container, build_none

KW = {"placement": "same-host", "duration_s": 0.004, "warmup_s": 0.001,
      "cluster": ClusterSpec(hosts=1, cores=2)}


def test_pairs_share_one_namespace_and_address_on_docker0() -> None:
    sim = Sim(seed=1)
    cl = build_cluster(sim, ClusterSpec(hosts=1, cores=4))
    net = build_container(cl, 4)
    a, b, c = net.endpoint(0, 0), net.endpoint(0, 1), net.endpoint(0, 2)
    assert a.ns is b.ns
    assert a.ip == b.ip == ip("172.17.0.2")
    assert c.ns is not a.ns
    assert c.ip == ip("172.17.0.3")
    assert a.app_core is not b.app_core  # two processes, two cores
    assert sorted(cl.roots[0].devices) == ["docker0", "eth0", "veth-h0c0", "veth-h0c2"]


def test_pod_traffic_goes_over_loopback_and_never_a_veth() -> None:
    r = run(RunSpec(mode="container", workload="tcp_stream", containers_per_host=2, **KW))  # type: ignore[arg-type]
    assert r.flows["bytes"].sum() > 0
    stages = r.stages.set_index("stage")["cpu_s"]
    assert stages["loopback_xmit"] > 0
    assert not {"veth_xmit", "bridge_forward", "backlog_rx", "ip_forward"} & set(stages.index)
    acc = r.accounting
    assert acc["created"] == acc["delivered"] + acc["dropped"] + acc["in_flight"]


def test_container_mode_needs_pairs_and_one_host() -> None:
    sim = Sim(seed=1)
    cl = build_cluster(sim, ClusterSpec(hosts=1))
    with pytest.raises(ConfigError, match=r"^containers_per_host: got 3; allowed: an even number"):
        build_container(cl, 3)
    with pytest.raises(ConfigError, match=r"^placement: got 'cross-host'; allowed: same-host for mode container"):
        RunSpec(mode="container", placement="cross-host")


def test_none_has_only_loopback_and_refuses_a_flow_to_another_container() -> None:
    sim = Sim(seed=1)
    cl = build_cluster(sim, ClusterSpec(hosts=1))
    net = build_none(cl, 2)
    ep = net.endpoint(0, 0)
    assert list(ep.ns.devices) == ["lo"]
    assert isinstance(ep.ns.devices["lo"], LoopbackDevice)
    assert ep.ip == ip("127.0.0.1")
    assert [str(r) for r in ep.ns.routes.routes()] == ["127.0.0.0/8 dev h0c0/lo metric 0 src 127.0.0.1"]
    with pytest.raises(ConfigError, match=r"^mode: got 'none'; allowed: .*only a loopback device and cannot reach h0c1"):
        net.target((0, 0), (0, 1), 5001, PROTO_TCP)
    assert net.target((0, 1), (0, 1), 5001, PROTO_TCP) == (ip("127.0.0.1"), 5001)
    with pytest.raises(ConfigError, match="cannot reach h0c1"):
        run(RunSpec(mode="none", workload="tcp_rr", containers_per_host=2, **KW))  # type: ignore[arg-type]


def test_a_flow_inside_one_none_container_works_over_loopback() -> None:
    r = run(RunSpec(mode="none", workload="tcp_rr", containers_per_host=1, **KW))  # type: ignore[arg-type]
    assert r.flows["transactions"].sum() > 10
    assert "loopback_xmit" in set(r.stages["stage"])
    assert len(r.drops) == 0
