"""A fake namespace pair for transport tests: a fixed one-way delay, optional chosen losses,
an optional fake NIC.

It implements exactly the namespace interface the transport uses (``host``, ``name``, ``sim``,
``bind``, ``unbind``, ``ip_output``; ``sock.deliver(pkt)`` on receive).  ``ip_output`` charges
nothing more: it lets the sending core serve the work already on the packet
(``Sim.after_work``), then hands the packet to the peer namespace ``delay_s`` later, where
``pkt.core`` becomes the RSS core of the peer host and the socket bound to
``(proto, dport)`` gets it.  Every packet sent is logged as a :class:`Sent` row.

TX completion: without a NIC the packet's owner hears ``on_xmit_done(pkt, now)`` inside
``ip_output``, like a veth whose synchronous ``xmit`` orphans the skb.  With :meth:`FakeNs.set_nic` the
packet first waits in a FIFO served at ``rate_bps`` (``size_bytes × 8 / rate_bps`` per
packet, no per-frame overhead) holding at most ``queue_packets`` (tail drop, reason
``fake_queue_full``); the owner hears ``on_xmit_done(pkt, departure)`` when it is queued, with
the future time its last bit leaves, like ``Nic._to_wire``; the peer gets it ``delay_s`` after
that departure.  ``delay_if`` adds a chosen packet an extra delay on the wire (after the NIC),
so that later packets overtake it: reordering.
"""

from __future__ import annotations

from collections import deque
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
        self.delay_if: Callable[[Packet], float] | None = None
        """Extra one-way delay (s) of a packet on the wire; later packets may overtake it."""
        self.delayed: list[Packet] = []
        self.on_output: Callable[[Packet], None] | None = None
        """Called with every packet ``ip_output`` gets (after logging it): a test probe."""
        self.nic_rate_bps = 0.0
        self.nic_queue_packets = 0
        self.nic_max_queue = 0
        self.nic_sent_bytes = 0
        self._nic_busy_until = 0.0
        self._nic_departures: deque[float] = deque()

    def set_nic(self, rate_bps: float, queue_packets: int = 1000) -> None:
        """Send through a fake NIC: a FIFO of ``queue_packets`` served at ``rate_bps``."""
        self.nic_rate_bps = rate_bps
        self.nic_queue_packets = queue_packets

    def nic_queue_len(self) -> int:
        """Packets in the fake NIC (waiting or being serialized) now."""
        now = self.sim.now
        return sum(1 for d in self._nic_departures if d > now)

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
        if self.on_output is not None:
            self.on_output(pkt)
        if not self.nic_rate_bps and pkt.owner is not None:
            pkt.owner.on_xmit_done(pkt, self.sim.now)
        self.sim.after_work(pkt, self._wire)

    def _wire(self, pkt: Packet) -> None:
        if pkt.id in self.lose_ids or (self.lose_if is not None and self.lose_if(pkt)):
            self.lost.append(pkt)
            self.sim.drop(pkt, self.name, "fake_loss")
            return
        assert self.peer is not None
        delay = self.delay_s
        if self.delay_if is not None:
            extra = self.delay_if(pkt)
            if extra > 0.0:
                self.delayed.append(pkt)
                delay += extra
        if not self.nic_rate_bps:
            self.sim.call_in(delay, self.peer._arrive, pkt)
            return
        now = self.sim.now
        dq = self._nic_departures
        while dq and dq[0] <= now:
            dq.popleft()
        if len(dq) >= self.nic_queue_packets:
            self.sim.drop(pkt, self.name, "fake_queue_full")
            return
        departure = max(now, self._nic_busy_until) + pkt.size_bytes * 8.0 / self.nic_rate_bps
        self._nic_busy_until = departure
        dq.append(departure)
        self.nic_max_queue = max(self.nic_max_queue, len(dq))
        self.nic_sent_bytes += pkt.size_bytes
        if pkt.owner is not None:
            pkt.owner.on_xmit_done(pkt, departure)
        self.sim.call_at(departure + delay, self.peer._arrive, pkt)

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
