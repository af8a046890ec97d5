"""The run context shared by every element: SimPy environment, RNG streams, cost profile,
packet accounting and drop counters (desmod's ``SimEnvironment``, made typed).

Hot-path scheduling
-------------------
Most hops do not contend for anything and need no event of their own: an element processes a
packet synchronously in ``put()`` and calls its successor.  Only where a packet has to wait —
for a CPU core to finish the work accumulated on it, for a link to serialize it, for
propagation — is it scheduled, with :meth:`Sim.call_at`, as one lightweight SimPy event whose
single callback is ``fn(pkt)``.  A packet crossing three links therefore costs three events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from heapq import heappush
from typing import TYPE_CHECKING, Any

import simpy

from perfsim.core.cpu import IDLE_EPSILON_S
from perfsim.core.packet import FlowKey, Packet
from perfsim.core.rng import RngStreams

if TYPE_CHECKING:
    from perfsim.core.cpu import Core, Stage
    from perfsim.core.profile import Profile

NORMAL_PRIORITY = 1  # simpy.events.NORMAL


class _Call:
    """A minimal SimPy event: at its time, ``fn(arg)`` runs. Quacks like ``simpy.Event``."""

    __slots__ = ("_ok", "_value", "arg", "callbacks", "fn")

    def __init__(self, fn: Callable[[Any], None], arg: Any) -> None:
        self.callbacks: list[Callable[[Any], None]] | None = [_fire]
        self._ok = True
        self._value = None
        self.fn = fn
        self.arg = arg


def _fire(ev: _Call) -> None:
    ev.fn(ev.arg)


class Sim:
    """Everything one simulation run shares.

    Parameters
    ----------
    seed:
        Root seed; every component draws from its own stream (:class:`RngStreams`).
    profile:
        The cost profile (per-stage CPU constants). ``None`` loads the built-in default.
    count_by_core:
        Also count which core did each stage's work (for the calibration fit; slower).
    """

    def __init__(self, seed: int = 0, profile: Profile | None = None, count_by_core: bool = False) -> None:
        from perfsim.core.profile import load_profile

        self.env = simpy.Environment()
        self.seed = seed
        self.rng = RngStreams(seed)
        self.profile = profile if profile is not None else load_profile("default")
        self.count_by_core = count_by_core
        self.created = 0
        """Packets created (including clones and retransmissions)."""
        self.delivered = 0
        """Packets consumed by an application, a sink or the kernel itself (ARP)."""
        self.dropped = 0
        self.drops: Counter[tuple[str, str]] = Counter()
        """Drops by (site, reason): packets lost on their way."""
        self.filtered: Counter[tuple[str, str]] = Counter()
        """Packets the kernel discards by design, by (site, reason): flooded copies that reach a
        host they are not for (PACKET_OTHERHOST). They count as consumed, not as drops."""
        self.elements: dict[str, Any] = {}
        self._queue: list[Any] = self.env._queue
        self._eid = self.env._eid

    # -- time and scheduling ---------------------------------------------------------------
    @property
    def now(self) -> float:
        return self.env._now

    def call_at(self, t_s: float, fn: Callable[[Any], None], arg: Any) -> None:
        """Run ``fn(arg)`` at absolute time ``t_s`` (>= now), after events already due then."""
        heappush(self._queue, (t_s, NORMAL_PRIORITY, next(self._eid), _Call(fn, arg)))

    def call_in(self, delay_s: float, fn: Callable[[Any], None], arg: Any) -> None:
        """Run ``fn(arg)`` after ``delay_s`` seconds."""
        heappush(
            self._queue, (self.env._now + delay_s, NORMAL_PRIORITY, next(self._eid), _Call(fn, arg))
        )

    def after_work(self, pkt: Packet, fn: Callable[[Packet], None]) -> float:
        """Serve the CPU work accumulated on ``pkt`` by its core, then hand it to ``fn``.

        The core is a non-preemptive FIFO server: the work starts when the core is free (or now,
        after the wake-up of an idle core) and lasts ``pkt.work_s``.  Returns the finish time.  A packet with no pending work (or
        no core) is handed on at once, without an event.
        """
        core = pkt.core
        work = pkt.work_s
        now = self.env._now
        if core is None or work <= 0.0:
            fn(pkt)
            return now
        busy: float = core.busy_until_s
        if busy > now - IDLE_EPSILON_S:  # Core.start's running case, inlined: the hot path
            finish = (busy if busy > now else now) + work  # noqa: PLR1730 - cheaper than max()
        else:
            finish = core.start(now) + work
        core.busy_until_s = finish
        core.busy_s += work
        pkt.work_s = 0.0
        heappush(self._queue, (finish, NORMAL_PRIORITY, next(self._eid), _Call(fn, pkt)))
        return finish

    def run(self, until_s: float) -> None:
        """Advance the simulation to ``until_s`` seconds (no-op if that time has passed)."""
        if until_s > self.env._now:
            self.env.run(until=until_s)

    # -- packets ----------------------------------------------------------------------------
    def new_packet(
        self,
        flow: FlowKey,
        payload_bytes: int,
        hdr_bytes: int,
        segs: int = 1,
        kind: int = 0,
        **kw: Any,
    ) -> Packet:
        """Create a packet stamped with the current time and a run-unique id."""
        self.created += 1
        return Packet(self.created, flow, payload_bytes, hdr_bytes, segs, kind, self.env._now, **kw)

    def clone(self, pkt: Packet) -> Packet:
        """Copy a packet (flooding); the copy counts as created. CPU work pending on ``pkt``
        stays with it: it was done once, before the copy existed."""
        self.created += 1
        copy = pkt.clone(self.created)
        copy.work_s = 0.0
        return copy

    def settle(self, pkt: Packet) -> None:
        """Serve now the CPU work accumulated on ``pkt`` that no hand-off will serve: the packet
        ends here (drop, filter, consume) or waits outside any core (an ARP queue)."""
        core = pkt.core
        if core is not None and pkt.work_s > 0.0:
            core.busy_until_s = core.start(self.env._now) + pkt.work_s
            core.busy_s += pkt.work_s
            pkt.work_s = 0.0

    def drop(self, pkt: Packet, site: str, reason: str) -> None:
        """Count a drop at ``site`` for ``reason`` and tell the packet's owner, if any.
        Work done on the packet before the drop still occupied its core."""
        self.settle(pkt)
        self.dropped += 1
        self.drops[(site, reason)] += 1
        owner = pkt.owner
        if owner is not None:
            owner.on_drop(pkt, site, reason)

    def filter(self, pkt: Packet, site: str, reason: str) -> None:
        """A packet discarded by design (not a loss): consumed, and counted in ``filtered``."""
        self.settle(pkt)
        self.delivered += 1
        self.filtered[(site, reason)] += 1

    def consume(self, pkt: Packet) -> None:
        """Count a packet that reached its final consumer (socket, sink, ARP handler)."""
        if pkt.work_s > 0.0:
            self.settle(pkt)
        self.delivered += 1

    def in_flight(self) -> int:
        """Packets still inside the system, counted where they are (not as a difference).

        Looks at every scheduled event that carries a packet and asks each registered element
        that holds packets (``held_packets()``), so a leak shows up as
        ``created != delivered + dropped + in_flight``.
        """
        n = sum(1 for entry in self._queue if isinstance(entry[3], _Call) and isinstance(entry[3].arg, Packet))
        for el in self.elements.values():
            held = getattr(el, "held_packets", None)
            if held is not None:
                n += held()
        return n

    def register(self, name: str, element: Any) -> None:
        """Register an element under a unique name (clear error on duplicates)."""
        from perfsim.errors import ConfigError

        if name in self.elements:
            raise ConfigError("name", name, "a name not used by another element")
        self.elements[name] = element


def reserve_stage(stage: Stage, core: Core, now_s: float, nbytes: int = 0, calls: int = 1) -> float:
    """Reserve ``calls`` calls of ``stage`` moving ``nbytes`` on ``core`` (0 calls: a per-byte
    extra of a call already counted), accounted on the stage; return the end (:func:`reserve`)."""
    c = stage.per_packet_s * calls + stage.per_byte_s * nbytes
    stage.cpu_s += c
    stage.packets += calls
    stage.bytes += nbytes
    stage.note(core, calls, nbytes)
    return reserve(core, now_s, c)


def reserve(core: Core, now_s: float, cost_s: float) -> float:
    """Give ``cost_s`` of packet-less work (a copy by an application) to ``core``.

    The core is FIFO: the work starts when the core is free or now, whichever is later (plus
    the wake-up of an idle core, :meth:`Core.start`).
    Returns the finish time; the caller waits until then (e.g. ``yield env.timeout(f - now)``).
    """
    finish = core.start(now_s) + cost_s
    core.busy_until_s = finish
    core.busy_s += cost_s
    return finish
