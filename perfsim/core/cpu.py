"""CPU cores and per-stage costs.

Model
-----
Each core is a non-preemptive FIFO server (``busy_until_s``).  Every stage a packet crosses
charges ``per_packet_s × units + per_byte_s × bytes`` seconds to the core currently doing the
work (``pkt.core``): the sender's core on transmit, the softirq core chosen by RSS on receive.
``units`` is 1 for a stage that handles a GSO/GRO super-segment as one skb and ``pkt.segs``
for a stage that touches every wire frame (NIC driver, GRO, software segmentation).  The work
accumulates on the packet (``pkt.work_s``) and is served by :meth:`perfsim.core.sim.Sim.after_work`
when the packet leaves the core — so a run-to-completion softirq path costs one event, not one
per stage.

An idle core does not start at once: work handed to a core that has nothing to do waits
``wakeup_s`` first (the profile's ``idle_wakeup``: the interrupt or IPI that wakes a halted CPU,
its C-state exit; in a virtual machine, the wake-up of the halted vCPU by the hypervisor).
The wait is latency, not CPU time.  A core that finished its last work less than
:data:`IDLE_EPSILON_S` ago counts as still running (float rounding of "the same instant").
With a ``wake_sampler`` (a profile whose ``idle_wakeup`` has a measured ``shape``) each wake-up
draws its own delay from that distribution, with the same mean: a virtual machine's vCPU
wake-up is mostly quick with a long tail, which makes the median round trip shorter than the
mean (the rate).

Assumption: table operations (FDB, conntrack) happen when the packet reaches the core, not
when the core gets to it; under a queue of a few hundred µs this shifts them by that much.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from perfsim.core.packet import FlowKey, Packet
from perfsim.core.rng import ShapeSampler

IDLE_EPSILON_S = 1e-12
"""A core idle for less than this is still running (float rounding, not a halt)."""

if TYPE_CHECKING:
    import numpy as np
    import simpy

    from perfsim.core.profile import StageCost
    from perfsim.core.sched import FairScheduler


class Core:
    """One CPU core of a host. ``busy_s`` is the total work it has been given."""

    __slots__ = ("backlog", "backlog_limit", "busy_s", "busy_until_s", "index", "name", "sched", "slice_s",
                 "wake_end_s", "wake_sampler", "wakeup_s", "wakeups")

    def __init__(self, name: str, index: int, backlog_limit: int = 1000, wakeup_s: float = 0.0,
                 wake_sampler: ShapeSampler | None = None, slice_s: float | None = None) -> None:
        self.name = name
        self.index = index
        self.slice_s = slice_s
        """The scheduler's base slice on this machine (:func:`perfsim.core.sched.base_slice_s`);
        ``None``: no scheduler, every task's work is served in arrival order."""
        self.sched: FairScheduler | None = None
        """The scheduler of the application tasks pinned here, made on first use."""
        self.busy_until_s = 0.0
        self.busy_s = 0.0
        self.wakeup_s = wakeup_s
        """Delay before an idle core starts work (``idle_wakeup``; its mean with a sampler)."""
        self.wake_sampler = wake_sampler
        """Draws each wake-up's delay (None: always ``wakeup_s``)."""
        self.wakeups = 0
        """How many times work found this core idle and had to wake it."""
        self.wake_end_s = 0.0
        """When the last wake-up ends (work queued behind it starts then)."""
        self.backlog: deque[float] = deque()
        self.backlog_limit = backlog_limit
        """``net.core.netdev_max_backlog``: packets a core's receive queue may hold."""

    def work_done(self, now_s: float) -> float:
        """Work completed by ``now_s``: a FIFO core still owes ``busy_until_s - now_s``, or —
        still waking up — everything queued behind the wake-up."""
        start = self.wake_end_s if self.wake_end_s > now_s else now_s
        owed = self.busy_until_s - start
        return self.busy_s - owed if owed > 0 else self.busy_s

    def start(self, now_s: float) -> float:
        """When work handed to the core at ``now_s`` can start: when it is free, or — idle —
        after waking up."""
        busy = self.busy_until_s
        if busy > now_s - IDLE_EPSILON_S:
            return busy if busy > now_s else now_s
        self.wakeups += 1
        sampler = self.wake_sampler
        self.wake_end_s = now_s + (self.wakeup_s if sampler is None else sampler.next())
        return self.wake_end_s

    def scheduler(self, env: simpy.Environment) -> FairScheduler | None:
        """The EEVDF scheduler of the tasks pinned to this core (:mod:`perfsim.core.sched`),
        or ``None`` on a FIFO core."""
        if self.sched is None and self.slice_s is not None:
            from perfsim.core.sched import FairScheduler

            self.sched = FairScheduler(env, self.name, self.slice_s, core=self)
        return self.sched

    def backlog_full(self, now: float) -> bool:
        """Is the receive queue (per-CPU backlog) full at ``now``? Forgets finished entries."""
        q = self.backlog
        while q and q[0] <= now:
            q.popleft()
        return len(q) >= self.backlog_limit

    def __repr__(self) -> str:
        return f"Core({self.name})"


def flow_hash(flow: FlowKey) -> int:
    """A deterministic 32-bit hash of a 5-tuple (stands in for the NIC's Toeplitz hash)."""
    h = (flow.src_ip * 0x9E3779B1) ^ (flow.dst_ip * 0x85EBCA77) ^ (flow.sport << 16 | flow.dport)
    h ^= flow.proto * 0xC2B2AE3D
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & 0xFFFFFFFF
    return h ^ (h >> 12)


class CpuPool:
    """The cores of one host, with receive-side scaling (RSS) and optional RPS."""

    def __init__(self, host: str, n_cores: int, backlog_limit: int = 1000, rss_key: int = 0, wakeup_s: float = 0.0,
                 wake_shape: tuple[float, ...] | None = None, rng: np.random.Generator | None = None,
                 online_cpus: int | None = None, eevdf: bool = False) -> None:
        """``wake_shape`` (with ``rng``): each core draws its wake-ups from that distribution
        scaled to mean ``wakeup_s`` (:class:`ShapeSampler`); without it every wake-up takes
        ``wakeup_s``.  ``online_cpus`` (default ``n_cores``): the machine's CPU count, which sets
        the scheduler's slice — more than ``n_cores`` when tasks are pinned to a subset.
        ``eevdf``: application tasks sharing a core are scheduled (:mod:`perfsim.core.sched`)."""
        from perfsim.core.sched import base_slice_s
        from perfsim.errors import ConfigError, check_number

        check_number("cores", n_cores, low=1, high=4096, integer=True)
        slice_s = base_slice_s(n_cores if online_cpus is None else max(online_cpus, n_cores)) if eevdf else None
        if wake_shape is not None and rng is None:
            raise ConfigError("wake_shape", "without rng", "a random stream to draw the wake-ups from")
        self.host = host
        drawn = rng is not None and wake_shape is not None and wakeup_s > 0.0
        self.cores = [Core(f"{host}/cpu{i}", i, backlog_limit, wakeup_s,
                           ShapeSampler(rng, wakeup_s, wake_shape) if drawn else None,  # type: ignore[arg-type]
                           slice_s)
                      for i in range(n_cores)]
        self.rss_key = rss_key
        """Like the NIC's Toeplitz key, random per boot: which core a flow lands on varies."""

    def __len__(self) -> int:
        return len(self.cores)

    def rss(self, flow: FlowKey) -> Core:
        """The core a NIC's RSS (or RPS) steers this flow to."""
        h = flow_hash(flow) ^ self.rss_key
        h = (h * 0x9E3779B1) & 0xFFFFFFFF
        return self.cores[(h >> 16) % len(self.cores)]


class Stage:
    """A costed step of the datapath on one host (e.g. ``bridge_forward`` on ``host1``).

    ``cpu_s`` accumulates what the stage charged; ``packets`` the units its per-packet cost was
    charged for and ``bytes`` the bytes its per-byte cost was charged for, so that
    ``cpu_s == per_packet_s × packets + per_byte_s × bytes`` — the per-stage CPU frame, and the
    design matrix the calibration fit (:mod:`perfsim.calibrate.fit`) solves for the constants.
    """

    __slots__ = ("bytes", "cpu_s", "host", "name", "packets", "per_byte_s", "per_packet_s")

    def __init__(self, name: str, host: str, cost: StageCost) -> None:
        self.name = name
        self.host = host
        self.per_packet_s = cost.per_packet_s
        self.per_byte_s = cost.per_byte_s
        self.cpu_s = 0.0
        self.packets = 0
        self.bytes = 0

    def charge(self, pkt: Packet) -> None:
        """Charge one skb (each fragment, if ``pkt.frags``): per-packet cost once per skb,
        per-byte cost for every byte."""
        units = pkt.segs if pkt.frags else 1
        c = self.per_packet_s * units + self.per_byte_s * pkt.size_bytes
        pkt.work_s += c
        self.cpu_s += c
        self.packets += units
        self.bytes += pkt.size_bytes

    def charge_frames(self, pkt: Packet) -> None:
        """Charge per wire frame (``pkt.segs`` times the per-packet cost) plus per byte."""
        c = self.per_packet_s * pkt.segs + self.per_byte_s * pkt.size_bytes
        pkt.work_s += c
        self.cpu_s += c
        self.packets += pkt.segs
        self.bytes += pkt.size_bytes

    def charge_bytes(self, pkt: Packet, nbytes: int) -> None:
        """Charge one call that moves ``nbytes`` (e.g. a copy of the payload only)."""
        c = self.per_packet_s + self.per_byte_s * nbytes
        pkt.work_s += c
        self.cpu_s += c
        self.packets += 1
        self.bytes += nbytes

    def note(self, core: Core, units: int, nbytes: int) -> None:
        """Hook for work booked directly (not through ``charge*``): only counted per core by
        :class:`CoreCountingStage`."""


class CoreCountingStage(Stage):
    """A :class:`Stage` that also counts, per core, the units and bytes it charged — which core
    did which work.  Used by the calibration fit only (``Sim(count_by_core=True)``), so the
    ordinary hot path pays nothing for it."""

    __slots__ = ("by_core",)

    def __init__(self, name: str, host: str, cost: StageCost) -> None:
        super().__init__(name, host, cost)
        self.by_core: dict[str, list[int]] = {}
        """core name -> [units, bytes] over the whole run."""

    def note(self, core: Core, units: int, nbytes: int) -> None:
        acc = self.by_core.get(core.name)
        if acc is None:
            acc = self.by_core[core.name] = [0, 0]
        acc[0] += units
        acc[1] += nbytes

    def charge(self, pkt: Packet) -> None:
        Stage.charge(self, pkt)
        self.note(pkt.core, pkt.segs if pkt.frags else 1, pkt.size_bytes)

    def charge_frames(self, pkt: Packet) -> None:
        Stage.charge_frames(self, pkt)
        self.note(pkt.core, pkt.segs, pkt.size_bytes)

    def charge_bytes(self, pkt: Packet, nbytes: int) -> None:
        Stage.charge_bytes(self, pkt, nbytes)
        self.note(pkt.core, 1, nbytes)

