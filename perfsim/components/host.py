"""A host: its CPU cores, its costed stages and its offload settings.

A host is the unit of CPU accounting: every stage of the cost profile exists once per host
(:class:`~perfsim.core.cpu.Stage`), so the per-stage CPU frame says which host paid for what.
Network namespaces (the host's own and its containers') live on a host and share its cores.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.core.cpu import CoreCountingStage, CpuPool, Stage
from perfsim.core.profile import STAGES
from perfsim.core.sim import Sim
from perfsim.errors import check_number


@dataclass(frozen=True, slots=True)
class Offloads:
    """Segmentation offloads as ``ethtool -K`` sets them.

    ``gso``/``tso``: the stack builds super-segments of up to ``gso_max_bytes`` and the NIC (TSO)
    or the kernel just before the driver (GSO) cuts them into frames. ``gro``: the receiving
    NIC path merges the frames of one super-segment back into one skb.
    """

    tso: bool = True
    gso: bool = True
    gro: bool = True
    gso_max_bytes: int = 65536

    def __post_init__(self) -> None:
        check_number("offloads.gso_max_bytes", self.gso_max_bytes, low=1500, high=524288, integer=True)

    @classmethod
    def all(cls, on: bool) -> Offloads:
        return cls(tso=on, gso=on, gro=on)


def cpu_pool(sim: Sim, name: str, cores: int, netdev_max_backlog: int, rss_key: int,
             online_cpus: int | None = None, eevdf: bool = False) -> CpuPool:
    """``cores`` cores whose idle wake-ups follow the profile's ``idle_wakeup`` (its mean, and
    its measured shape if it has one, drawn from the stream ``<name>.wakeup``); ``online_cpus``:
    the machine's CPU count if more than ``cores`` (it sets the scheduler's slice); ``eevdf``:
    application tasks sharing a core are scheduled (:mod:`perfsim.core.sched`)."""
    wake = sim.profile.cost("idle_wakeup")
    rng = sim.rng.stream(f"{name}.wakeup") if wake.shape is not None else None
    return CpuPool(name, cores, netdev_max_backlog, rss_key, wake.per_packet_s, wake.shape, rng, online_cpus,
                   eevdf=eevdf)


class Host:
    """A machine: ``cores`` CPU cores, offloads, kernel limits, and its network namespaces."""

    def __init__(
        self,
        sim: Sim,
        name: str,
        cores: int = 4,
        offloads: Offloads | None = None,
        rps: bool = False,
        netdev_max_backlog: int = 1000,
        cpus: CpuPool | None = None,
        eevdf: bool = False,
    ) -> None:
        """``cpus``: share another host's cores instead of owning ``cores`` of its own (the
        calibration testbed, where every "host" is a namespace on one machine).  ``eevdf``:
        the application tasks sharing one of its cores are scheduled as Linux does
        (:mod:`perfsim.core.sched`); otherwise the core serves every task's work in order."""
        check_number(f"{name}.netdev_max_backlog", netdev_max_backlog, low=1, high=10_000_000, integer=True)
        self.sim = sim
        self.name = name
        if cpus is None:
            rss_key = int(sim.rng.stream(f"{name}.rss_key").integers(0, 1 << 32))
            cpus = cpu_pool(sim, name, cores, netdev_max_backlog, rss_key, eevdf=eevdf)
        self.cpus = cpus
        self.offloads = offloads if offloads is not None else Offloads()
        self.rps = rps
        kind = CoreCountingStage if sim.count_by_core else Stage
        self.stages: dict[str, Stage] = {s: kind(s, name, sim.profile.cost(s)) for s in STAGES}
        self.namespaces: dict[str, object] = {}

    def stage(self, name: str) -> Stage:
        return self.stages[name]

    def __repr__(self) -> str:
        return f"Host({self.name!r}, cores={len(self.cpus)})"
