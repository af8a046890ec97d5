"""Cost profiles: the per-stage CPU constants, kept in data files with their provenance.

A profile is a YAML file::

    name: default
    provenance: {source: ..., machine: ..., date: ..., method: ...}
    stages:
      bridge_forward: {per_packet_s: 4.0e-7, per_byte_s: 0.0}
      ...

Every stage in :data:`STAGES` must be present; nothing else is allowed (a typo is an error,
not a silently ignored key).  The code never contains a cost: it asks the profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from perfsim.errors import ConfigError, check_number

STAGES: dict[str, str] = {
    "sock_tx_copy": "sendmsg: copy user -> kernel (per byte) and syscall entry (per call)",
    "tcp_tx": "tcp_sendmsg/tcp_write_xmit/tcp_transmit_skb: TCP output of one skb",
    "udp_tx": "udp_sendmsg: UDP output of one datagram",
    "ip_output": "ip_queue_xmit/ip_output: route lookup result, IP header, output hooks base",
    "ip_forward": "ip_forward: forwarding decision and TTL decrement",
    "dev_xmit": "dev_queue_xmit: qdisc enqueue/dequeue and driver hand-off",
    "nic_tx": "physical NIC driver xmit of one skb (TSO makes frames in hardware)",
    "gso_segment": "software GSO segmentation, per resulting frame (offloads off at the NIC)",
    "nic_rx": "physical NIC driver receive (NAPI poll, skb alloc), per wire frame",
    "gro": "GRO merge, per wire frame (only when GRO is on)",
    "veth_xmit": "veth_xmit: scrub, hand to the peer, netif_rx onto this CPU's backlog",
    "backlog_rx": "process_backlog / __netif_receive_skb of one skb on the receiving CPU",
    "loopback_xmit": "loopback_xmit (lo, 64 KiB MTU), including the backlog receive",
    "bridge_forward": "br_handle_frame: FDB learn + lookup + br_forward to one port",
    "bridge_flood_copy": "br_flood: clone and transmit one copy to one port",
    "ip_rcv": "ip_rcv/ip_rcv_finish: IP input, routing decision for the inner packet",
    "nf_hook": "one netfilter hook traversal with an empty chain (iptables base cost)",
    "nf_rule": "one iptables rule evaluated (rule sets are walked linearly)",
    "conntrack_lookup": "nf_conntrack_in for a packet of a known connection (hash lookup)",
    "conntrack_new": "nf_conntrack_in + confirm for the first packet of a connection (insert)",
    "nat_rewrite": "NAT header rewrite (DNAT/SNAT/MASQUERADE or its reverse), checksum fix-up",
    "vxlan_encap": "vxlan_xmit: FDB lookup, outer route, build outer headers, udp_tunnel_xmit",
    "vxlan_decap": "vxlan_rcv: UDP socket demux, strip outer headers, gro_cells to the inner dev",
    "ipip_encap": "ipip_tunnel_xmit: outer IPv4 header",
    "ipip_decap": "ipip_rcv: strip outer IPv4 header",
    "udp_rx": "udp_rcv/udp_queue_rcv_skb: UDP input of one datagram into the socket queue",
    "tcp_rx": "tcp_v4_rcv/tcp_rcv_established of one skb (incl. ACK generation decision)",
    "tcp_connect": "TCP connection setup/teardown work in both stacks (SYN, accept, FIN, close)",
    "sock_rx_copy": "recvmsg: syscall, dequeue and copy kernel -> user (per byte)",
    "udp_recv": "recvmsg of one queued UDP datagram: syscall, dequeue, skb free, per call (the copy's "
                "per-byte cost is sock_rx_copy's)",
    "copy_cross_core": "extra of a TCP payload copy whose cache lines another core wrote last (per byte): "
                       "the reader's copy of what the sender wrote, the writer's copy into pages the "
                       "reader freed — a cache-line transfer per 64 B",
    "arp": "neighbour (ARP) request or reply processing",
    "dns_lookup": "embedded DNS (127.0.0.11) lookup by the resolver, uncached",
    "task_wakeup": "try_to_wake_up of a task asleep on another core: remote enqueue and reschedule "
                   "IPI, on the waker's core (in a VM the IPI exits to the hypervisor)",
    "task_switch": "a blocked task woken and switched in on its core: try_to_wake_up and schedule() "
                   "out of whatever ran there (another task or idle) into it, per switch",
    "select": "select()/poll() of a readable socket before a read (iperf3's loop), per call",
    "idle_wakeup": "latency before an idle core starts work handed to it (interrupt or IPI to a halted "
                   "CPU: C-state exit; in a VM, the vCPU's wake-up) — a delay, not CPU time",
}
"""Every stage a profile must cost, with what it stands for in the kernel."""


SHAPED_STAGES = ("idle_wakeup",)
"""Stages whose cost may vary from event to event with a measured ``shape``."""
MAX_SHAPE_ATOMS = 1000


@dataclass(frozen=True, slots=True)
class StageCost:
    """``per_packet_s + per_byte_s × bytes`` seconds of CPU per skb.

    ``shape`` (``idle_wakeup`` only): equal-probability atoms of the measured distribution of
    the cost, normalised to mean 1; each event then costs ``per_packet_s × atom`` for a random
    atom (``per_packet_s`` stays the mean).  ``None``: every event costs the same.
    """

    per_packet_s: float
    per_byte_s: float = 0.0
    shape: tuple[float, ...] | None = None

    def seconds(self, nbytes: int, units: int = 1) -> float:
        return self.per_packet_s * units + self.per_byte_s * nbytes


@dataclass(frozen=True, slots=True)
class Profile:
    """A named, validated set of stage costs with where they came from."""

    name: str
    stages: dict[str, StageCost]
    provenance: dict[str, Any] = field(default_factory=dict)

    def cost(self, stage: str) -> StageCost:
        try:
            return self.stages[stage]
        except KeyError:
            raise ConfigError("stage", stage, f"one of {sorted(self.stages)}") from None

    @property
    def cpu_ghz(self) -> float | None:
        """The clock of the machine the constants were measured on (``provenance.machine.cpu_ghz``)."""
        machine = self.provenance.get("machine")
        value = machine.get("cpu_ghz") if isinstance(machine, dict) else None
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def machine_cpus(self) -> int | None:
        """How many CPUs the machine the constants were measured on had (``provenance.machine.cores``)."""
        machine = self.provenance.get("machine")
        value = machine.get("cores") if isinstance(machine, dict) else None
        return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def at_clock(self, cpu_ghz: float) -> Profile:
        """The profile scaled to a core of ``cpu_ghz`` GHz: every constant × (own clock / cpu_ghz).

        Assumption: the kernel's work per skb and per byte is a fixed number of cycles, so time
        scales with 1/clock.  Per-byte copies are really bound by memory bandwidth, which grows
        more slowly than the clock; scaling them too is the simple, stated approximation.
        """
        check_number("cpu_ghz", cpu_ghz, low=0.1, high=10.0)
        own = self.cpu_ghz
        if own is None:
            raise ConfigError("cpu_ghz", cpu_ghz, f"only with a profile that states its machine's clock (profile {self.name} "
                              "has no provenance.machine.cpu_ghz)")
        f = own / cpu_ghz
        stages = {s: StageCost(c.per_packet_s * f, c.per_byte_s * f, c.shape) for s, c in self.stages.items()}
        prov = dict(self.provenance, scaled_to_cpu_ghz=cpu_ghz)
        return Profile(self.name, stages, prov)

    def awake(self) -> Profile:
        """The profile with ``idle_wakeup`` = 0: cores that never sleep (``idle=poll``, busy
        polling, or a machine loaded enough that no core is ever idle)."""
        return self.with_idle_wakeup(0.0)

    def with_idle_wakeup(self, wakeup_s: float) -> Profile:
        """The profile for cores whose idle wake-up takes ``wakeup_s`` (a hardware parameter:
        the C-state exit latency in ``/sys/devices/system/cpu/cpu0/cpuidle/state*/latency``
        plus IPI delivery on bare metal; a vCPU's wake-up in a VM) — every time: the measured
        ``shape`` is the profile machine's and is dropped."""
        check_number("idle_wakeup_s", wakeup_s, low=0.0, high=0.1)
        stages = dict(self.stages, idle_wakeup=StageCost(float(wakeup_s), 0.0))
        return Profile(self.name, stages, dict(self.provenance, idle_wakeup_s=float(wakeup_s)))

    def with_wake_shape(self, shape: Any, mean_s: float | None = None) -> Profile:
        """The profile whose ``idle_wakeup`` varies per wake-up as ``shape`` (measured atoms,
        :func:`normalised_shape`) around its mean — ``mean_s`` if given (a measured one),
        else the profile's."""
        mean = (self.cost("idle_wakeup").per_packet_s if mean_s is None
                else check_number("idle_wakeup mean_s", mean_s, low=0.0, high=0.1))
        atoms = normalised_shape(shape, "idle_wakeup.shape")
        stages = dict(self.stages, idle_wakeup=StageCost(float(mean), 0.0, atoms))
        return Profile(self.name, stages, dict(self.provenance))

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile") -> Profile:
        """Validate a parsed profile; every error names the field by its path."""
        if not isinstance(data, dict):
            raise ConfigError(source, type(data).__name__, "a mapping with name, provenance, stages")
        unknown = set(data) - {"name", "provenance", "stages", "notes"}
        if unknown:
            raise ConfigError(f"{source}.{sorted(unknown)[0]}", "?", "name, provenance, stages, notes")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}.name", name, "a non-empty string")
        prov = data.get("provenance")
        if not isinstance(prov, dict) or "source" not in prov:
            raise ConfigError(f"{source}.provenance", prov, "a mapping with at least 'source'")
        raw = data.get("stages")
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}.stages", raw, "a mapping of stage name -> costs")
        stages: dict[str, StageCost] = {}
        for stage, spec in raw.items():
            path = f"{source}.stages.{stage}"
            if stage not in STAGES:
                raise ConfigError(path, stage, f"a known stage: {', '.join(sorted(STAGES))}")
            if not isinstance(spec, dict) or set(spec) - {"per_packet_s", "per_byte_s", "why", "shape"}:
                raise ConfigError(path, spec, "a mapping with per_packet_s, per_byte_s, why (and shape)")
            a = check_number(f"{path}.per_packet_s", spec.get("per_packet_s"), low=0, high=1.0)
            b = check_number(f"{path}.per_byte_s", spec.get("per_byte_s", 0.0), low=0, high=1e-3)
            shape = None if spec.get("shape") is None else normalised_shape(spec["shape"], f"{path}.shape")
            if shape is not None and stage not in SHAPED_STAGES:
                raise ConfigError(f"{path}.shape", "a shape", f"no shape: only {', '.join(SHAPED_STAGES)} may vary per event")
            stages[stage] = StageCost(float(a), float(b), shape)
        missing = sorted(set(STAGES) - set(stages))
        if missing:
            raise ConfigError(f"{source}.stages", f"missing {missing[0]}", "every stage in perfsim.core.profile.STAGES")
        return cls(name, stages, dict(prov))


def normalised_shape(values: Any, path: str = "shape") -> tuple[float, ...]:
    """A measured distribution's atoms (a list of 2 .. 1000 numbers >= 0, not all 0), scaled
    to mean 1."""
    if not isinstance(values, (list, tuple)) or not 2 <= len(values) <= MAX_SHAPE_ATOMS:
        raise ConfigError(path, type(values).__name__ if not isinstance(values, (list, tuple)) else f"{len(values)} values",
                          f"a list of 2 .. {MAX_SHAPE_ATOMS} numbers (equal-probability atoms)")
    atoms = [float(check_number(f"{path}[{i}]", v, low=0.0, high=1e6)) for i, v in enumerate(values)]
    mean = sum(atoms) / len(atoms)
    if mean <= 0:
        raise ConfigError(path, "all 0", "atoms with a positive mean")
    return tuple(a / mean for a in atoms)


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a built-in profile by name (``default``) or a profile YAML file by path (cached by
    name, path and the file's modification time)."""
    p = Path(name_or_path)
    stamp = p.stat().st_mtime_ns if p.is_file() else 0
    return _load_profile(str(name_or_path), stamp)


@lru_cache(maxsize=32)
def _load_profile(name_or_path: str, _stamp: int) -> Profile:
    text: str
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError("profile", str(name_or_path), "a built-in profile name or an existing YAML file")
        text = p.read_text()
        source = p.name
    else:
        builtin = resources.files("perfsim.profiles").joinpath(f"{name_or_path}.yaml")
        if not builtin.is_file():
            raise ConfigError("profile", str(name_or_path), f"one of {builtin_profiles()} or a YAML file path")
        text = builtin.read_text()
        source = str(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("profile", source, f"valid YAML ({exc.__class__.__name__})") from None
    return Profile.from_dict(data, source)


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped with perfsim."""
    root = resources.files("perfsim.profiles")
    return sorted(f.name[: -len(".yaml")] for f in root.iterdir() if f.name.endswith(".yaml"))
