"""A cross-host client reaches a published container port through its host port."""

from __future__ import annotations

from perfsim.core.packet import PROTO_TCP, PROTO_UDP
from perfsim.core.sim import Sim
from perfsim.topology.bridge_mode import build_bridge
from perfsim.topology.cluster import ClusterSpec, build_cluster


def test_target_uses_an_existing_publication_and_publishes_nothing_more() -> None:
    sim = Sim(seed=1)
    cl = build_cluster(sim, ClusterSpec(hosts=2))
    net = build_bridge(cl, 2)
    net.publish(1, 0, 8080, 80, PROTO_TCP)  # docker run -p 8080:80
    assert net.target((0, 0), (1, 0), 80, PROTO_TCP) == (cl.host_ip(1), 8080)
    assert sorted(net.published) == [(1, PROTO_TCP, 8080)]
    # no publication for UDP port 80 yet: one is made on first use, as the same number
    assert net.target((0, 0), (1, 0), 80, PROTO_UDP) == (cl.host_ip(1), 80)
    assert sorted(net.published) == [(1, PROTO_TCP, 8080), (1, PROTO_UDP, 80)]
