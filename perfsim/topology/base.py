"""The interface every mode builder returns.

A builder ``build(cluster, containers_per_host, **options) -> ModeNetwork`` wires one Docker
network mode on every host of a :class:`~perfsim.topology.cluster.Cluster`.  The returned
network answers two questions for the run layer:

* ``endpoint(h, c)``: where container ``c`` of host ``h`` runs its application (namespace,
  address, application core, MSS from the path MTU);
* ``target(client, server, port, proto)``: the address and port the client must connect to in order
  to reach ``port`` on the server — the server's own address on flat networks, a published
  host port (DNAT) for Docker's default bridge across hosts.  It raises ConfigError (with the
  mode in the field name) when the mode cannot carry that flow, e.g. ``none``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perfsim.components.netns import NetNs
from perfsim.errors import ConfigError
from perfsim.topology.cluster import Cluster, app_core_index
from perfsim.transport.workloads import Endpoint
from perfsim.units import IPV4_HDR_BYTES, TCP_HDR_BYTES

Slot = tuple[int, int]
"""(host index, container index)."""


@dataclass
class ModeNetwork:
    """A built mode: endpoints by slot, plus the rule to reach a server."""

    mode: str
    cluster: Cluster
    endpoints: dict[Slot, Endpoint] = field(default_factory=dict)

    def endpoint(self, h: int, c: int) -> Endpoint:
        try:
            return self.endpoints[(h, c)]
        except KeyError:
            raise ConfigError("container", f"h{h}c{c}", f"a container of this {self.mode} network") from None

    def target(self, client: Slot, server: Slot, port: int, proto: int) -> tuple[int, int]:
        """(ip, port) the client connects to for ``proto`` (6 TCP / 17 UDP) ``port`` on the
        server. Default: flat reachability — the server's own address."""
        return self.endpoint(*server).ip, port


def make_endpoint(cl: Cluster, ns: NetNs, ip: int, h: int, c: int, mtu_bytes: int) -> Endpoint:
    """An endpoint whose application runs on the core :func:`app_core_index` gives (``c mod K``
    on a cluster); MSS from the MTU (IPv4 20 B + TCP with timestamps 32 B)."""
    return Endpoint(
        ns=ns, ip=ip, app_core=cl.hosts[h].cpus.cores[app_core_index(cl.spec, h, c)],
        mss_bytes=mtu_bytes - IPV4_HDR_BYTES - TCP_HDR_BYTES, mtu_bytes=mtu_bytes,
    )
