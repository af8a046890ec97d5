"""A fake namespace pair for transport tests: a fixed one-way delay, optional chosen losses.

It implements exactly the namespace interface the transport uses (``host``, ``name``, ``sim``,
``bind``, ``unbind``, ``ip_output``; ``sock.deliver(pkt)`` on receive).  ``ip_output`` charges
nothing more: it lets the sending core serve the work already on the packet
(``Sim.after_work``), then hands the packet to the peer namespace ``delay_s`` later, where
``pkt.core`` becomes the RSS core of the peer host and the socket bound to
``(proto, dport)`` gets it.  Every packet sent is logged as a :class:`Sent` row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from perfsim.components.host import Host, Offloads
from perfsim.core.packet import Packet
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError


class Sent(NamedTuple):
    t: float
    id: int
    kind: int
    sport: int
    dport: int
    seq: int
    ack: int
    payload: int
    segs: int
    size: int
    core: str


class FakeNs:
    """One side of the fake path."""

    def __init__(self, sim: Sim, host: Host, name: str, delay_s: float) -> None:
        self.sim = sim
        self.host = host
        self.name = name
        self.delay_s = delay_s
        self.peer: FakeNs | None = None
        self.sockets: dict[tuple[int, int], Any] = {}
        self.log: list[Sent] = []
        self.lose_ids: set[int] = set()
        self.lose_if: Callable[[Packet], bool] | None = None
        self.lost: list[Packet] = []

    def bind(self, proto: int, port: int, sock: Any) -> None:
        if (proto, port) in self.sockets:
            raise ConfigError(f"{self.name}.port", port, "a free port")
        self.sockets[(proto, port)] = sock

    def unbind(self, proto: int, port: int) -> None:
        self.sockets.pop((proto, port), None)

    def ip_output(self, pkt: Packet) -> None:
        f = pkt.flow
        self.log.append(Sent(self.sim.now, pkt.id, pkt.kind, f.sport, f.dport, pkt.seq, pkt.ack,
                             pkt.payload_bytes, pkt.segs, pkt.size_bytes, pkt.core.name))
        self.sim.after_work(pkt, self._wire)

    def _wire(self, pkt: Packet) -> None:
        if pkt.id in self.lose_ids or (self.lose_if is not None and self.lose_if(pkt)):
            self.lost.append(pkt)
            self.sim.drop(pkt, self.name, "fake_loss")
            return
        assert self.peer is not None
        self.sim.call_in(self.delay_s, self.peer._arrive, pkt)

    def _arrive(self, pkt: Packet) -> None:
        sock = self.sockets.get((pkt.flow.proto, pkt.flow.dport))
        if sock is None:
            self.sim.drop(pkt, self.name, "no_socket")
            return
        pkt.core = self.host.cpus.rss(pkt.flow)
        sock.deliver(pkt)

    def data(self) -> list[Sent]:
        """Logged packets that carried payload."""
        return [s for s in self.log if s.payload > 0]


def fake_pair(
    sim: Sim, delay_s: float, cores: int = 2, offloads: Offloads | None = None,
    offloads_b: Offloads | None = None,
) -> tuple[FakeNs, FakeNs]:
    """Two hosts ``a`` and ``b``, each with one fake namespace, joined by ``delay_s`` each way."""
    ha = Host(sim, "a", cores=cores, offloads=offloads)
    hb = Host(sim, "b", cores=cores, offloads=offloads_b if offloads_b is not None else offloads)
    a = FakeNs(sim, ha, "a", delay_s)
    b = FakeNs(sim, hb, "b", delay_s)
    a.peer, b.peer = b, a
    return a, b


def other_core(ns: FakeNs, flow: Any) -> Any:
    """A core of ``ns``'s host that is not the RSS core of ``flow`` (needs >= 2 cores)."""
    rx = ns.host.cpus.rss(flow)
    return next(c for c in ns.host.cpus.cores if c is not rx)
