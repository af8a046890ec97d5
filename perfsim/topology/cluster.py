"""A cluster: N hosts with K cores and one NIC each, joined by one switch.

::

    h0 [cpu0..cpuK-1]  eth0 10.0.0.1 --\\
    h1 [cpu0..cpuK-1]  eth0 10.0.0.2 ---+-- switch (rate_bps, delay_s per port)
    ...                                 /
    hN-1               eth0 10.0.x.y --/

Every host's root namespace has ``ip_forward`` on and an iptables/conntrack instance, as on
a Docker host.  The underlay (fabric) subnet is ``10.0.0.0/16``; the addresses exist only
inside the simulation.

The calibration testbed (``testbed=True``) is the platform ``perfsim calibrate`` measures: the
"hosts" are network namespaces on **one** machine, so they share its ``cores`` (one CPU pool),
and two hosts are joined by a veth pair (the wire) instead of NICs and a switch::

    machine [cpu0..cpuK-1]:  ns h0: eth0 10.0.0.1 --veth-- eth0 10.0.0.2 :ns h1

A veth carries GSO super-segments whole and has no line rate: the wire costs ``veth_xmit`` +
``backlog_rx`` on the sending core and nothing else (no ``nic_*``, ``gro`` or serialization).
Applications of container ``c`` of host ``h`` run on core ``(h + c) mod K``, as the harness pins
them (client on cpu0, server on cpu1; everything on cpu0 when K is 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from perfsim.components.conntrack import NF_CT_EVICTION_RANGE, Conntrack, ConntrackTimeouts
from perfsim.components.host import Host, Offloads, cpu_pool
from perfsim.components.netdev import NetDevice, VethEnd
from perfsim.components.netfilter import Netfilter
from perfsim.components.netns import NetNs
from perfsim.components.codel import QDISCS
from perfsim.components.nic import Nic, Switch
from perfsim.core.addr import mac_for
from perfsim.core.cpu import CpuPool
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError, check_number

SCHEDULERS = ("eevdf", "fifo")
"""How application tasks share a core (:attr:`ClusterSpec.scheduler`)."""
SCHEDULED_WORKLOADS = ("udp_stream",)
"""Workloads whose application tasks take part in the EEVDF scheduler (the others stay FIFO)."""
NO_FLUID_SCHEDULER = ("des for udp_stream with the eevdf scheduler (the testbed's default): the fluid engine has "
                      "no scheduler model — or scheduler fifo")
"""What the fluid engine asks for when a run needs the scheduler model."""
TESTBED_MAX_HOSTS = 2
"""The calibration testbed is two namespaces joined by one veth wire."""

FABRIC_NET = 0x0A000000  # 10.0.0.0/16
FABRIC_PLEN = 16

IntLike = TypeVar("IntLike", int, Any)
"""An index or an array of them."""


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
    nic_qdisc: str = "fq_codel"
    """Queueing discipline of every host's NIC (:mod:`perfsim.components.codel`): ``fq_codel``
    (Linux's default via systemd) or ``pfifo`` (tail drop at ``nic_queue_packets``)."""
    nic_queue_packets: int = 1000
    nf_conntrack_max: int = 262144
    gc_thresh3: int = 1024
    conntrack_timeouts: ConntrackTimeouts | None = None
    """Per-state conntrack timeouts of every host (``net.netfilter.nf_conntrack_*_timeout*``);
    ``None``: the Linux defaults (TIME_WAIT 120 s, ...)."""
    cpu_ghz: float | None = None
    """Clock of the cores; ``None``: the profile's own machine.  Another value scales every cost
    constant by the ratio of clocks (:meth:`perfsim.core.profile.Profile.at_clock`)."""
    idle_wakeup_s: float | None = None
    """Latency before an idle core starts work handed to it (C-state exit + IPI; a VM's vCPU
    wake-up); ``None``: the profile's ``idle_wakeup``, measured on its machine."""
    testbed: bool = False
    """Simulate the calibration testbed: hosts are namespaces on one machine sharing ``cores``,
    joined by a veth wire (``nic_rate_bps``, ``fabric_delay_s`` and ``nic_queue_packets`` unused)."""
    scheduler: str | None = None
    """How application tasks pinned to one core share it: ``eevdf`` (Linux's scheduler,
    :mod:`perfsim.core.sched`; today the ``udp_stream`` sender and reader take part) or ``fifo``
    (every task's work in arrival order).  ``None``: ``eevdf`` on the testbed, where it was
    measured, ``fifo`` elsewhere — the fluid engine has no scheduler model, and a cluster's DES
    and fluid runs should agree."""

    def __post_init__(self) -> None:
        if self.cpu_ghz is not None:
            check_number("cpu_ghz", self.cpu_ghz, low=0.1, high=10.0)
        if self.idle_wakeup_s is not None:
            check_number("idle_wakeup_s", self.idle_wakeup_s, low=0.0, high=0.1)
        if not isinstance(self.testbed, bool):
            raise ConfigError("testbed", self.testbed, "true or false")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ConfigError("scheduler", self.scheduler, " or ".join(SCHEDULERS))
        if self.testbed and self.hosts > TESTBED_MAX_HOSTS:
            raise ConfigError("hosts", self.hosts, f"<= {TESTBED_MAX_HOSTS} on the testbed (two namespaces joined by one veth wire)")
        check_number("hosts", self.hosts, low=1, high=65000, integer=True)
        check_number("cores", self.cores, low=1, high=4096, integer=True)
        check_number("nic_rate_bps", self.nic_rate_bps, low=0, low_inclusive=False, high=1e13)
        check_number("fabric_delay_s", self.fabric_delay_s, low=0, high=1.0)
        check_number("mtu_bytes", self.mtu_bytes, low=68, high=65535, integer=True)
        if self.nic_qdisc not in QDISCS:
            raise ConfigError("nic_qdisc", self.nic_qdisc, " or ".join(QDISCS))
        check_number("nic_queue_packets", self.nic_queue_packets, low=1, high=10_000_000, integer=True)
        check_number("nf_conntrack_max", self.nf_conntrack_max, low=1, high=1 << 31, integer=True)
        check_number("gc_thresh3", self.gc_thresh3, low=1, high=1 << 31, integer=True)
        if self.conntrack_timeouts is not None and not isinstance(self.conntrack_timeouts, ConntrackTimeouts):
            raise ConfigError("conntrack_timeouts", self.conntrack_timeouts, "a ConntrackTimeouts or None (Linux defaults)")

    @property
    def app_scheduler(self) -> str:
        """``eevdf`` or ``fifo``: :attr:`scheduler`, its default resolved."""
        if self.scheduler is not None:
            return self.scheduler
        return "eevdf" if self.testbed else "fifo"

    def schedules(self, workload: str) -> bool:
        """Are ``workload``'s application tasks scheduled by EEVDF here (a model only the DES
        has)?"""
        return workload in SCHEDULED_WORKLOADS and self.app_scheduler == "eevdf"


@dataclass
class Cluster:
    """The built cluster: hosts, their root namespaces and NICs, the switch."""

    sim: Sim
    spec: ClusterSpec
    hosts: list[Host] = field(default_factory=list)
    roots: list[NetNs] = field(default_factory=list)
    nics: list[NetDevice] = field(default_factory=list)
    """Each host's fabric device ``eth0``: a NIC, or on the testbed its end of the veth wire."""
    switch: Switch | None = None
    _macs: int = 0

    def new_mac(self) -> int:
        self._macs += 1
        return mac_for(self._macs)

    def host_ip(self, i: int) -> int:
        return FABRIC_NET + i + 1


def build_cluster(sim: Sim, spec: ClusterSpec) -> Cluster:
    """Create the hosts and their fabric devices: NICs and the switch that joins them, or on
    the testbed one shared CPU pool and a veth wire."""
    cl = Cluster(sim, spec)
    shared: CpuPool | None = None
    if spec.testbed:
        rss_key = int(sim.rng.stream("testbed.rss_key").integers(0, 1 << 32))
        # the testbed pins its tasks to --cores of the machine's CPUs; the kernel sizes the
        # scheduler's slice by all of them
        shared = cpu_pool(sim, "testbed", spec.cores, 1000, rss_key, online_cpus=sim.profile.machine_cpus,
                          eevdf=spec.app_scheduler == "eevdf")
    for i in range(spec.hosts):
        host = Host(sim, f"h{i}", spec.cores, Offloads.all(spec.offloads), rps=spec.rps, cpus=shared,
                    eevdf=spec.app_scheduler == "eevdf")
        ct = Conntrack(sim, f"h{i}.conntrack", max_entries=spec.nf_conntrack_max, timeouts=spec.conntrack_timeouts,
                       eviction_range=NF_CT_EVICTION_RANGE)
        root = NetNs(host, f"h{i}", ip_forward=True, gc_thresh3=spec.gc_thresh3, netfilter=Netfilter(host, f"h{i}.iptables", ct))
        dev: NetDevice
        if spec.testbed:
            dev = VethEnd(host, f"h{i}/eth0", cl.new_mac(), spec.mtu_bytes)
        else:
            dev = Nic(host, f"h{i}/eth0", cl.new_mac(), spec.nic_rate_bps, spec.mtu_bytes, spec.nic_queue_packets,
                      qdisc=spec.nic_qdisc)
        root.add_device(dev, cl.host_ip(i), FABRIC_PLEN)
        cl.hosts.append(host)
        cl.roots.append(root)
        cl.nics.append(dev)
    if spec.testbed:
        if spec.hosts == 2:
            a, b = cl.nics
            assert isinstance(a, VethEnd) and isinstance(b, VethEnd)
            a.peer, b.peer = b, a
    elif spec.hosts > 1:
        cl.switch = Switch(sim, "switch", spec.nic_rate_bps, spec.fabric_delay_s, spec.nic_queue_packets, spec.mtu_bytes)
        for nic in cl.nics:
            assert isinstance(nic, Nic)
            cl.switch.attach(nic)
    return cl


def app_core_index(spec: ClusterSpec, h: IntLike, c: IntLike) -> IntLike:
    """The core container ``c`` of host ``h`` runs its application on: ``c mod K`` on a
    cluster (every host has its own K cores); ``(h + c) mod K`` on the testbed, where the hosts
    share the machine's cores and the harness pins the client to cpu0 and the server to cpu1.
    ``h`` and ``c`` may be numpy arrays (the fluid engine's flows, element by element)."""
    return (h + c) % spec.cores if spec.testbed else c % spec.cores
