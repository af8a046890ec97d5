"""``--network host``: containers share their host's namespace and stack.

::

    h0: app -- TCP/IP -- eth0 ==\\                  /== eth0 -- TCP/IP -- app :h1
                                 switch (fabric)
"""

from __future__ import annotations

from perfsim.topology.base import ModeNetwork, make_endpoint
from perfsim.topology.cluster import Cluster


def build_host(cl: Cluster, containers_per_host: int) -> ModeNetwork:
    """Every container of host ``h`` is the host's root namespace at the host's address;
    flows between containers of one host use loopback."""
    net = ModeNetwork("host", cl)
    mtu = cl.spec.mtu_bytes
    for h, root in enumerate(cl.roots):
        for c in range(containers_per_host):
            net.endpoints[(h, c)] = make_endpoint(cl, root, cl.host_ip(h), h, c, mtu)
    return net
