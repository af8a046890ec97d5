"""Engine benchmark: how fast perfsim moves packets, against a plain SimPy pipeline.

Workload: Poisson source -> 3 links -> sink, 1000 B frames, 1 Gbit/s links (8 µs of
serialization), 10 µs propagation per hop, arrivals at 80 % load (100 000 packets/s of
simulated time), run until a fixed number of packets has been delivered.

* **perfsim**: :class:`PoissonSource` -> :class:`Link` ×3 -> :class:`MeasuringSink`; each link
  is one event per packet (Lindley's recursion, no process).
* **simpy**: the same shape written the idiomatic SimPy/ns.py way — per link a ``Port`` (a
  ``simpy.Store`` and a process doing ``yield timeout(serialization)``) and a ``Wire`` that
  spawns one process per packet for the propagation delay (SimPy's ``latency.py`` example).

Both draw the same arrival instants, so their mean latencies must agree (checked: exit status
1 if not).  Events are counted from SimPy's event-id counter (``env._eid``): every event either
engine schedules takes one id.  Output (one line each)::

    perfsim packets_per_s=<N> events_per_s=<N>
    perfsim_hops packet_hops_per_s=<N>
    simpy packets_per_s=<N> events_per_s=<N>
    ratio perfsim/simpy=<x>
    memory max_rss_mb=<N>

Usage: ``python benchmarks/engine.py [--quick] [--packets N] [--seed S] [--repeat R]``; on a
shared machine ``--repeat 3`` (interleaved runs, fastest kept, as Mesa's benchmarks do) gives
steadier numbers.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from array import array
from collections.abc import Generator
from typing import Any, NamedTuple

import simpy

from perfsim.components.link import Link
from perfsim.components.source import MeasuringSink, PoissonSource
from perfsim.core.element import connect
from perfsim.core.rng import ExpSampler, RngStreams
from perfsim.core.sim import Sim

RATE_BPS = 1e9
DELAY_S = 10e-6
SIZE_BYTES = 1000
LOAD = 0.8
HOPS = 3
ARRIVAL_PPS = LOAD * RATE_BPS / (SIZE_BYTES * 8)
DEFAULT_PACKETS = 200_000
QUICK_PACKETS = 20_000


class Result(NamedTuple):
    wall_s: float
    events: int
    delivered: int
    mean_latency_s: float


def run_perfsim(n_packets: int, seed: int) -> Result:
    """The chain built from perfsim elements."""
    sim = Sim(seed=seed)
    links = [Link(sim, f"link{i}", RATE_BPS, DELAY_S, queue_packets=1_000_000) for i in range(HOPS)]
    sink = MeasuringSink(sim, "sink")
    for a, b in zip(links, [*links[1:], sink], strict=True):
        connect(a, b)
    PoissonSource(sim, "src", links[0], ARRIVAL_PPS, SIZE_BYTES, count=n_packets)
    gc.collect()
    eid0 = next(sim.env._eid)
    t0 = time.perf_counter()
    sim.env.run()
    wall = time.perf_counter() - t0
    events = next(sim.env._eid) - eid0 - 1
    return Result(wall, events, sink.received, sink.mean_sojourn_s)


# -- the same pipeline in plain SimPy ---------------------------------------------------------
class _Pkt:
    __slots__ = ("size_bytes", "t_created")

    def __init__(self, size_bytes: int, t_created: float) -> None:
        self.size_bytes = size_bytes
        self.t_created = t_created


class _Sink:
    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.sojourn = array("d")

    def put(self, pkt: _Pkt) -> None:
        self.sojourn.append(self.env.now - pkt.t_created)


class _Wire:
    """Propagation: one process per packet sleeping ``delay_s`` (order kept: equal delays)."""

    def __init__(self, env: simpy.Environment, delay_s: float, out: Any) -> None:
        self.env = env
        self.delay_s = delay_s
        self.out = out

    def put(self, pkt: _Pkt) -> None:
        self.env.process(self._propagate(pkt))

    def _propagate(self, pkt: _Pkt) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(self.delay_s)
        self.out.put(pkt)


class _Port:
    """ns.py's Port: an unbounded FIFO Store served by one serializer process."""

    def __init__(self, env: simpy.Environment, rate_bps: float, out: Any) -> None:
        self.env = env
        self.rate_bps = rate_bps
        self.out = out
        self.store = simpy.Store(env)
        env.process(self.run())

    def put(self, pkt: _Pkt) -> None:
        self.store.put(pkt)

    def run(self) -> Generator[simpy.Event, Any, None]:
        while True:
            pkt = yield self.store.get()
            yield self.env.timeout(pkt.size_bytes * 8.0 / self.rate_bps)
            self.out.put(pkt)


def _source(
    env: simpy.Environment, out: Any, gaps: ExpSampler, n_packets: int
) -> Generator[simpy.Event, Any, None]:
    for _ in range(n_packets):
        yield env.timeout(gaps.next())
        out.put(_Pkt(SIZE_BYTES, env.now))


def run_simpy(n_packets: int, seed: int) -> Result:
    """The same chain in idiomatic SimPy, with the same arrival instants as perfsim's."""
    env = simpy.Environment()
    sink = _Sink(env)
    nxt: Any = sink
    for _ in range(HOPS):
        nxt = _Port(env, RATE_BPS, _Wire(env, DELAY_S, nxt))
    gaps = ExpSampler(RngStreams(seed).stream("src"), 1.0 / ARRIVAL_PPS)
    env.process(_source(env, nxt, gaps, n_packets))
    gc.collect()
    eid0 = next(env._eid)
    t0 = time.perf_counter()
    env.run()
    wall = time.perf_counter() - t0
    events = next(env._eid) - eid0 - 1
    n = len(sink.sojourn)
    return Result(wall, events, n, sum(sink.sojourn) / n if n else float("nan"))


def emit(line: str) -> None:
    """One result line on stdout."""
    sys.stdout.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_PACKETS} packets")
    ap.add_argument("--packets", type=int, default=None, help=f"default {DEFAULT_PACKETS}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--repeat", type=int, default=1, help="run both engines this many times, keep the fastest"
    )
    args = ap.parse_args(argv)
    n = (
        args.packets
        if args.packets is not None
        else (QUICK_PACKETS if args.quick else DEFAULT_PACKETS)
    )
    if n < 1 or args.repeat < 1:
        ap.error("--packets and --repeat must be >= 1")

    runs = [(run_perfsim(n, args.seed), run_simpy(n, args.seed)) for _ in range(args.repeat)]
    ps = min((r[0] for r in runs), key=lambda r: r.wall_s)
    sp = min((r[1] for r in runs), key=lambda r: r.wall_s)
    emit(f"perfsim packets_per_s={n / ps.wall_s:.0f} events_per_s={ps.events / ps.wall_s:.0f}")
    emit(f"perfsim_hops packet_hops_per_s={n * HOPS / ps.wall_s:.0f}")
    emit(f"simpy packets_per_s={n / sp.wall_s:.0f} events_per_s={sp.events / sp.wall_s:.0f}")
    emit(f"ratio perfsim/simpy={sp.wall_s / ps.wall_s:.2f}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    emit(f"memory max_rss_mb={rss_mb:.0f}")
    emit(
        f"check packets={n} events_per_packet perfsim={ps.events / n:.2f} simpy={sp.events / n:.2f}"
        f" mean_latency_us perfsim={ps.mean_latency_s * 1e6:.4f}"
        f" simpy={sp.mean_latency_s * 1e6:.4f}"
    )
    same = abs(ps.mean_latency_s - sp.mean_latency_s) <= 1e-9 * sp.mean_latency_s
    if ps.delivered != n or sp.delivered != n or not same:
        sys.stderr.write("error: the two engines disagree on delivered packets or latency\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
