"""Validated run configuration, shared by the CLI and the Python API.

Every field is checked once, here, so that a bad value gives one sentence naming the field,
the value and what is allowed — whichever interface it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perfsim.errors import ConfigError, check_number
from perfsim.topology.cluster import ClusterSpec
from perfsim.units import VXLAN_OVERHEAD_BYTES

ENGINES = ("des", "fluid", "auto")
WORKLOADS = ("tcp_stream", "udp_stream", "tcp_rr", "udp_rr", "tcp_crr")

DEFAULT_MESSAGE_BYTES = {
    "tcp_stream": 131072,  # iperf3's default write size
    "udp_stream": 1400,
    "tcp_rr": 1,  # netperf's default request/response size
    "udp_rr": 1,
    "tcp_crr": 1,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSpec:
    """One simulation run: a mode, a workload with ``streams`` flows, a cluster, a duration."""

    mode: str = "host"
    workload: str = "tcp_stream"
    streams: int = 1
    message_size: int | None = None
    placement: str = "cross-host"
    containers_per_host: int = 1
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    duration_s: float = 0.05
    warmup_s: float = 0.01
    seed: int = 0
    profile: str = "default"
    mode_options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the mode's builder (e.g. ``{"learning": True}`` for overlay)."""
    engine: str = "des"
    """``des`` (packet level), ``fluid`` (flow level, :mod:`perfsim.fluid`) or ``auto``
    (:func:`perfsim.fluid.choose_engine`: DES up to a stated size, fluid beyond)."""

    def __post_init__(self) -> None:
        from perfsim.topology.modes import MODES, PLACEMENTS

        if self.mode not in MODES:
            raise ConfigError("mode", self.mode, f"one of {', '.join(MODES)}")
        if self.workload not in WORKLOADS:
            raise ConfigError("workload", self.workload, f"one of {', '.join(WORKLOADS)}")
        if self.engine not in ENGINES:
            raise ConfigError("engine", self.engine, f"one of {', '.join(ENGINES)}")
        if self.placement not in PLACEMENTS:
            raise ConfigError("placement", self.placement, f"one of {', '.join(PLACEMENTS)}")
        if not isinstance(self.mode_options, dict):
            raise ConfigError("mode_options", self.mode_options, "a mapping of option name -> value")
        for key in self.mode_options:
            if key not in MODES[self.mode].options:
                opts = ", ".join(MODES[self.mode].options) or "none"
                raise ConfigError(f"mode_options.{key}", self.mode_options[key], f"an option of mode {self.mode}: {opts}")
        allowed = MODES[self.mode].placements
        if self.placement not in allowed:
            raise ConfigError("placement", self.placement, f"{' or '.join(allowed)} for mode {self.mode}")
        if self.placement == "cross-host" and self.cluster.hosts < 2:
            raise ConfigError("hosts", self.cluster.hosts, ">= 2 for cross-host placement")
        if self.mode == "overlay" and self.cluster.mtu_bytes < 68 + VXLAN_OVERHEAD_BYTES:
            raise ConfigError("mtu_bytes", self.cluster.mtu_bytes, f">= {68 + VXLAN_OVERHEAD_BYTES} for an overlay (50 B of VXLAN headers)")
        check_number("streams", self.streams, low=1, high=1_000_000, integer=True)
        check_number("containers_per_host", self.containers_per_host, low=1, high=100_000, integer=True)
        if self.message_size is not None:
            check_number("message_size", self.message_size, low=1, high=1 << 24, integer=True)
        check_number("duration_s", self.duration_s, low=0, low_inclusive=False, high=3600.0)
        check_number("warmup_s", self.warmup_s, low=0, high=3600.0)
        if self.warmup_s >= self.duration_s:
            raise ConfigError("warmup_s", self.warmup_s, f"less than duration_s ({self.duration_s})")
        check_number("seed", self.seed, low=0, high=2**63 - 1, integer=True)
        if self.engine == "fluid" and self.cluster.schedules(self.workload):
            from perfsim.topology.cluster import NO_FLUID_SCHEDULER

            raise ConfigError("engine", "fluid", NO_FLUID_SCHEDULER)
        from perfsim.core.profile import load_profile

        prof = load_profile(self.profile)  # an unknown profile fails here, before anything runs
        if self.cluster.cpu_ghz is not None:
            prof.at_clock(self.cluster.cpu_ghz)  # and one that cannot be scaled
        if self.mode == "none":
            ch, cc, sh, sc = self.slots(0)
            if (ch, cc) != (sh, sc):
                raise ConfigError("mode", "none", f"a mode with a network device: a 'none' container has only "
                                  f"a loopback device and cannot reach h{sh}c{sc} (use containers_per_host=1 "
                                  "and same-host for a loopback flow)")

    def slots(self, i: int) -> tuple[int, int, int, int]:
        """(client host, client container, server host, server container) of flow ``i``.

        Round-robin: cross-host, flow ``i`` runs from container ``(i div N) mod M`` of host
        ``i mod N`` to the same container index on the next host; same-host, from container
        ``2(i div N) mod M`` to the next container of the same host (the same container when
        ``M`` is 1, i.e. over loopback).  On the testbed every flow goes one way, from host 0
        (container ``i mod M``) to host 1, as ``iperf3 -P`` runs its streams from one client.
        """
        n = self.cluster.hosts
        m = self.containers_per_host
        if self.cluster.testbed:
            c = i % m
            return (0, c, 1, c) if self.placement == "cross-host" else (0, 2 * c % m, 0, (2 * c + 1) % m)
        h = i % n
        if self.placement == "cross-host":
            c = (i // n) % m
            return h, c, (h + 1) % n, c
        c = (2 * (i // n)) % m
        return h, c, h, (c + 1) % m

    @property
    def resolved_engine(self) -> str:
        """``des`` or ``fluid``: ``auto`` resolved by the size of the run (the DES when it
        needs the scheduler model)."""
        if self.engine != "auto":
            return self.engine
        if self.cluster.schedules(self.workload):
            return "des"
        from perfsim.fluid import choose_engine

        return choose_engine(self.streams, self.cluster.hosts * self.containers_per_host)

    @property
    def message_bytes(self) -> int:
        return self.message_size if self.message_size is not None else DEFAULT_MESSAGE_BYTES[self.workload]
