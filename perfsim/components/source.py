"""Open-loop traffic sources and a measuring sink, for element-level experiments.

A source is a SimPy process (started in ``__init__``, as in ns.py's generators) that creates
UDP/IPv4 frames with :meth:`Sim.new_packet` and hands each one to ``out.put`` at the moment it
is created, so ``pkt.t_created`` is the packet's arrival time at ``out``.  Sources are open
loop: nothing they send depends on what happens downstream (no congestion control, no
back-pressure), which is what queueing theory's arrival processes assume.

Sizes
-----
``size_bytes`` is the whole frame, Ethernet header included (the :class:`Packet` convention):
every packet carries a 42 B header stack (Ethernet 14 + IPv4 20 + UDP 8) and
``size_bytes - 42`` B of payload.  With ``size_dist="exp"`` sizes are random with mean
``size_bytes``: see :class:`FlooredExpSize`.

Randomness
----------
Every draw comes from the run's :class:`~perfsim.core.rng.RngStreams`: inter-arrival gaps
from the stream ``<name>``, sizes from ``<name>.size``, so turning random sizes on does not
change the arrival instants.  Draws are made in blocks (:class:`ExpSampler`); the per-packet
path makes no numpy call.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from perfsim.core.element import Element, Receiver
from perfsim.core.packet import PROTO_UDP, FlowKey, Packet
from perfsim.core.rng import ExpSampler
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError, check_number
from perfsim.units import ETH_HDR_BYTES, IPV4_HDR_BYTES, UDP_HDR_BYTES

HDR_BYTES = ETH_HDR_BYTES + IPV4_HDR_BYTES + UDP_HDR_BYTES
"""Header stack of a source's frames: Ethernet 14 + IPv4 20 + UDP 8 = 42 B."""
MAX_FRAME_BYTES = 65535 + ETH_HDR_BYTES
"""Largest frame: a 65535 B IPv4 packet plus the Ethernet header."""
MIN_EXP_FRAME_BYTES = 64
"""Floor of exponentially distributed frame sizes (the classic minimum Ethernet frame)."""
MAX_EXP_MEAN_BYTES = 8192
"""Largest mean of exponential sizes; above it the cut at MAX_FRAME_BYTES would matter."""
DEFAULT_FLOW = FlowKey(0x0A000001, 0x0A000002, PROTO_UDP, 10000, 5001)
"""10.0.0.1:10000 -> 10.0.0.2:5001/udp."""

Process = Generator[simpy.Event, Any, None]


class FlooredExpSize:
    """Frame sizes ``max(64, round(X))`` with ``X ~ Exp(scale)``, scaled so the mean is exact.

    Real frames are never shorter than a minimum, so a pure exponential cannot be used; the
    floor is the smallest change to one.  ``scale_bytes`` solves
    ``E[max(a, X)] = a + scale·exp(-a/scale) = mean_bytes`` (``a`` = 64), so the offered load
    ``rate × mean`` is what the caller asked for.  The moments are those of the continuous
    ``max(a, X)``; rounding to whole bytes changes them by less than 1e-6 relative (for a
    mean of 1000 B), and sizes are capped at :data:`MAX_FRAME_BYTES` (probability below
    ``exp(-8)`` at the largest allowed mean).

    For a mean of 1000 B the second moment is 0.4 % below the pure exponential's ``2·mean²``,
    so an M/G/1 queue fed with these sizes waits 0.3 % less than M/M/1 at load 0.8.
    """

    __slots__ = ("_sampler", "mean_bytes", "min_bytes", "scale_bytes")

    def __init__(self, gen: np.random.Generator, mean_bytes: float) -> None:
        self.mean_bytes = float(mean_bytes)
        self.min_bytes = MIN_EXP_FRAME_BYTES
        self.scale_bytes = _solve_scale(self.min_bytes, self.mean_bytes)
        self._sampler = ExpSampler(gen, self.scale_bytes)

    @property
    def second_moment_bytes2(self) -> float:
        """``E[size²]`` in B²: ``a² + exp(-a/s)·(2·a·s + 2·s²)``."""
        a, s = self.min_bytes, self.scale_bytes
        return a * a + math.exp(-a / s) * (2.0 * a * s + 2.0 * s * s)

    def next(self) -> int:
        """One frame size in bytes."""
        n = int(self._sampler.next() + 0.5)
        if n < MIN_EXP_FRAME_BYTES:
            return MIN_EXP_FRAME_BYTES
        return min(n, MAX_FRAME_BYTES)


def _solve_scale(a: float, mean: float) -> float:
    """Newton's method on ``a + s·exp(-a/s) = mean`` (increasing and concave in ``s``)."""
    s = mean
    for _ in range(50):
        e = math.exp(-a / s)
        f = a + s * e - mean
        step = f / (e * (1.0 + a / s))
        s -= step
        if abs(step) < 1e-12 * s:
            break
    return s


class _Source(Element):
    """What both sources share: validation, the header stack, sizes and counters."""

    def __init__(
        self,
        sim: Sim,
        name: str,
        out: Receiver,
        size_bytes: float,
        flow: FlowKey | None,
        stop_s: float | None,
        size_dist: str | None,
        count: int | None,
        start_s: float,
    ) -> None:
        if size_dist is None:
            check_number(
                f"{name}.size_bytes", size_bytes, low=HDR_BYTES, high=MAX_FRAME_BYTES, integer=True
            )
        elif size_dist == "exp":
            check_number(
                f"{name}.size_bytes",
                size_bytes,
                low=MIN_EXP_FRAME_BYTES,
                low_inclusive=False,
                high=MAX_EXP_MEAN_BYTES,
            )
        else:
            raise ConfigError(f"{name}.size_dist", size_dist, "None (fixed size) or 'exp'")
        if stop_s is not None:
            check_number(f"{name}.stop_s", stop_s, low=0)
        if count is not None:
            check_number(f"{name}.count", count, low=1, integer=True)
        check_number(f"{name}.start_s", start_s, low=0)
        if not callable(getattr(out, "put", None)):
            raise ConfigError(f"{name}.out", out, "an element with a put(pkt) method")
        if flow is not None and not isinstance(flow, FlowKey):
            raise ConfigError(f"{name}.flow", flow, "a FlowKey or None")
        super().__init__(sim, name)
        self.out: Receiver | None = out
        self.flow = flow if flow is not None else DEFAULT_FLOW
        self.stop_s = math.inf if stop_s is None else float(stop_s)
        self.count = count
        self.start_s = float(start_s)
        self.size_bytes = size_bytes
        self._fixed_size = int(size_bytes)
        self.sizes: FlooredExpSize | None = (
            FlooredExpSize(sim.rng.stream(f"{name}.size"), size_bytes) if size_dist else None
        )
        self.sent = 0
        """Packets created and handed to ``out``."""
        self.sent_bytes = 0

    @property
    def mean_size_bytes(self) -> float:
        """Mean frame size in bytes (exact, for the offered load)."""
        return float(self.size_bytes)

    @property
    def size_second_moment_bytes2(self) -> float:
        """``E[size²]`` in B², as queueing formulas (Pollaczek–Khinchine) need it."""
        if self.sizes is None:
            return float(self.size_bytes) ** 2
        return self.sizes.second_moment_bytes2

    def _emit(self) -> bool:
        """Create one packet now and hand it on; False once ``count`` packets are out."""
        sizes = self.sizes
        size = self._fixed_size if sizes is None else sizes.next()
        pkt: Packet = self.sim.new_packet(self.flow, size - HDR_BYTES, HDR_BYTES)
        self.sent += 1
        self.sent_bytes += size
        self.out.put(pkt)  # type: ignore[union-attr]
        return self.count is None or self.sent < self.count

    def held_packets(self) -> int:
        """A source hands every packet on at once: it never holds one."""
        return 0


class PoissonSource(_Source):
    """Poisson arrivals: exponential gaps of mean ``1 / rate_pps`` seconds.

    Parameters
    ----------
    sim, name:
        The run and a unique element name (also the name of the source's RNG stream).
    out:
        Receives every packet (``out.put(pkt)``) at its creation instant.
    rate_pps:
        Mean arrival rate in packets per second (> 0).
    size_bytes:
        Frame size in bytes, Ethernet header included (42 ... 65549); the mean size if
        ``size_dist == "exp"`` (64 < mean <= 8192).
    flow:
        5-tuple of the packets (default 10.0.0.1:10000 -> 10.0.0.2:5001/udp).
    stop_s:
        No packet is created after this time (None: never stop).
    size_dist:
        None for fixed sizes, ``"exp"`` for :class:`FlooredExpSize`.
    count:
        Stop after this many packets (None: no limit).
    start_s:
        The arrival process starts at this time (the first packet comes one gap later).

    Process timing: the first packet arrives at ``start_s + G1``, packet k at
    ``start_s + G1 + ... + Gk`` with i.i.d. ``Gk ~ Exp(1 / rate_pps)``; one SimPy timeout per
    packet.
    """

    def __init__(
        self,
        sim: Sim,
        name: str,
        out: Receiver,
        rate_pps: float,
        size_bytes: float,
        flow: FlowKey | None = None,
        stop_s: float | None = None,
        size_dist: str | None = None,
        count: int | None = None,
        start_s: float = 0.0,
    ) -> None:
        check_number(f"{name}.rate_pps", rate_pps, low=0, low_inclusive=False, high=1e12)
        super().__init__(sim, name, out, size_bytes, flow, stop_s, size_dist, count, start_s)
        self.rate_pps = float(rate_pps)
        self._gaps = ExpSampler(sim.rng.stream(name), 1.0 / self.rate_pps)
        self.process = sim.env.process(self._run())

    def _run(self) -> Process:
        env = self.sim.env
        timeout = env.timeout
        gap = self._gaps.next
        stop = self.stop_s
        if self.start_s > 0.0:
            yield timeout(self.start_s)
        while True:
            dt = gap()
            if env._now + dt > stop:
                return
            yield timeout(dt)
            if not self._emit():
                return


class ConstantSource(_Source):
    """Constant bit/packet rate: one packet every ``interval_s`` seconds.

    Packet k (k = 0, 1, ...) is created at exactly ``start_s + k · interval_s`` (computed from
    ``k``, so rounding does not accumulate), until ``count`` packets are out or the next
    instant lies after ``stop_s`` (an instant within 1e-9 intervals of ``stop_s`` still
    counts: ``stop_s`` is inclusive despite rounding).  Other parameters as :class:`PoissonSource`.
    """

    def __init__(
        self,
        sim: Sim,
        name: str,
        out: Receiver,
        interval_s: float,
        size_bytes: float,
        count: int | None = None,
        flow: FlowKey | None = None,
        stop_s: float | None = None,
        size_dist: str | None = None,
        start_s: float = 0.0,
    ) -> None:
        check_number(f"{name}.interval_s", interval_s, low=0, low_inclusive=False, high=1e6)
        super().__init__(sim, name, out, size_bytes, flow, stop_s, size_dist, count, start_s)
        self.interval_s = float(interval_s)
        self.process = sim.env.process(self._run())

    def _run(self) -> Process:
        env = self.sim.env
        timeout = env.timeout
        start, interval = self.start_s, self.interval_s
        # k·interval may round just past an intended stop instant (5 + 3 × 10 µs > 35 µs)
        stop = self.stop_s + 1e-9 * interval
        k = 0
        while True:
            t = start + k * interval
            if t > stop:
                return
            if t > env._now:
                yield timeout(t - env._now)
            if not self._emit():
                return
            k += 1


class MeasuringSink(Element):
    """Consumes packets and records each one's sojourn ``now - pkt.t_created`` in seconds.

    Samples are kept in ``array('d')`` buffers (8 B each, amortised appends, no numpy call per
    packet); :attr:`samples` and :attr:`created_s` return numpy copies in arrival order at
    the sink.
    """

    def __init__(self, sim: Sim, name: str = "sink") -> None:
        super().__init__(sim, name)
        self.received = 0
        self.received_bytes = 0
        self._sojourn = array("d")
        self._created = array("d")

    def put(self, pkt: Packet) -> None:
        t0 = pkt.t_created
        self._sojourn.append(self.sim.env._now - t0)
        self._created.append(t0)
        self.received += 1
        self.received_bytes += pkt.size_bytes
        self.sim.consume(pkt)

    @property
    def samples(self) -> np.ndarray:
        """Per-packet sojourn times in seconds, in the order packets reached the sink."""
        return np.array(self._sojourn, dtype=np.float64)

    @property
    def created_s(self) -> np.ndarray:
        """Creation time of each sampled packet (aligned with :attr:`samples`)."""
        return np.array(self._created, dtype=np.float64)

    @property
    def mean_sojourn_s(self) -> float:
        """Mean sojourn over all packets received (NaN before the first one)."""
        n = len(self._sojourn)
        return math.fsum(self._sojourn) / n if n else math.nan

    def held_packets(self) -> int:
        return 0
