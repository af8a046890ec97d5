"""A cluster: N hosts with K cores and one NIC each, joined by one switch.

::

    h0 [cpu0..cpuK-1]  eth0 10.0.0.1 --\\
    h1 [cpu0..cpuK-1]  eth0 10.0.0.2 ---+-- switch (rate_bps, delay_s per port)
    ...                                 /
    hN-1               eth0 10.0.x.y --/

Every host's root namespace has ``ip_forward`` on and an iptables/conntrack instance, as on
a Docker host.  The underlay (fabric) subnet is ``10.0.0.0/16``; the addresses exist only
inside the simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perfsim.components.conntrack import Conntrack
from perfsim.components.host import Host, Offloads
from perfsim.components.netfilter import Netfilter
from perfsim.components.netns import NetNs
from perfsim.components.nic import Nic, Switch
from perfsim.core.addr import mac_for
from perfsim.core.sim import Sim
from perfsim.errors import check_number

FABRIC_NET = 0x0A000000  # 10.0.0.0/16
FABRIC_PLEN = 16


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterSpec:
    """Hardware of the cluster. Every field is validated with a clear error."""

    hosts: int = 2
    cores: int = 4
    nic_rate_bps: float = 10e9
    fabric_delay_s: float = 5e-6
    mtu_bytes: int = 1500
    offloads: bool = True
    rps: bool = False
    nic_queue_packets: int = 1000
    nf_conntrack_max: int = 262144
    gc_thresh3: int = 1024

    def __post_init__(self) -> None:
        check_number("hosts", self.hosts, low=1, high=65000, integer=True)
        check_number("cores", self.cores, low=1, high=4096, integer=True)
        check_number("nic_rate_bps", self.nic_rate_bps, low=0, low_inclusive=False, high=1e13)
        check_number("fabric_delay_s", self.fabric_delay_s, low=0, high=1.0)
        check_number("mtu_bytes", self.mtu_bytes, low=68, high=65535, integer=True)
        check_number("nic_queue_packets", self.nic_queue_packets, low=1, high=10_000_000, integer=True)
        check_number("nf_conntrack_max", self.nf_conntrack_max, low=1, high=1 << 31, integer=True)
        check_number("gc_thresh3", self.gc_thresh3, low=1, high=1 << 31, integer=True)


@dataclass
class Cluster:
    """The built cluster: hosts, their root namespaces and NICs, the switch."""

    sim: Sim
    spec: ClusterSpec
    hosts: list[Host] = field(default_factory=list)
    roots: list[NetNs] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    switch: Switch | None = None
    _macs: int = 0

    def new_mac(self) -> int:
        self._macs += 1
        return mac_for(self._macs)

    def host_ip(self, i: int) -> int:
        return FABRIC_NET + i + 1


def build_cluster(sim: Sim, spec: ClusterSpec) -> Cluster:
    """Create the hosts, their NICs and the switch that joins them."""
    cl = Cluster(sim, spec)
    for i in range(spec.hosts):
        host = Host(sim, f"h{i}", spec.cores, Offloads.all(spec.offloads), rps=spec.rps)
        ct = Conntrack(sim, f"h{i}.conntrack", max_entries=spec.nf_conntrack_max)
        root = NetNs(host, f"h{i}", ip_forward=True, gc_thresh3=spec.gc_thresh3, netfilter=Netfilter(host, f"h{i}.iptables", ct))
        nic = Nic(host, f"h{i}/eth0", cl.new_mac(), spec.nic_rate_bps, spec.mtu_bytes, spec.nic_queue_packets)
        root.add_device(nic, cl.host_ip(i), FABRIC_PLEN)
        cl.hosts.append(host)
        cl.roots.append(root)
        cl.nics.append(nic)
    if spec.hosts > 1:
        cl.switch = Switch(sim, "switch", spec.nic_rate_bps, spec.fabric_delay_s, spec.nic_queue_packets, spec.mtu_bytes)
        for nic in cl.nics:
            cl.switch.attach(nic)
    return cl
