"""The element protocol (after ns.py): every element has a ``name``, a ``put(pkt)`` entry and,
if it forwards, an ``out`` successor set by :func:`connect`.

``put`` runs at the current simulated time and must either hand the packet on (synchronously,
or later via :meth:`Sim.call_at` / :meth:`Sim.after_work`), consume it (``sim.consume``), or
drop it (``sim.drop``) — never lose it silently: ``created == delivered + dropped + in flight``
is checked by the tests.  Elements that hold packets outside the event queue report them with
``held_packets()``.
"""

from __future__ import annotations

from typing import Protocol

from perfsim.core.packet import Packet
from perfsim.core.sim import Sim


class PacketOwner(Protocol):
    """The socket that sent a packet (``pkt.owner``). Elements call it back:

    * ``on_xmit_done(pkt, t_s)`` when the skb stops counting against the socket: at ``t_s``,
      the NIC's TX completion (possibly in the future), or now when a veth or loopback device
      orphans it — this drives TCP Small Queues and the UDP send-buffer limit;
    * ``on_drop(pkt, site, reason)`` (via :meth:`Sim.drop`) when it is dropped.
    """

    def on_xmit_done(self, pkt: Packet, t_s: float) -> None: ...

    def on_drop(self, pkt: Packet, site: str, reason: str) -> None: ...


class Receiver(Protocol):
    """Anything packets can be given to."""

    def put(self, pkt: Packet) -> None: ...


class Element:
    """Base of named elements registered with the run's :class:`Sim`."""

    def __init__(self, sim: Sim, name: str) -> None:
        self.sim = sim
        self.name = name
        self.out: Receiver | None = None
        sim.register(name, self)

    def put(self, pkt: Packet) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def connect(a: Element, b: Receiver) -> None:
    """Wire ``a``'s output to ``b``."""
    a.out = b


class CaptureSink(Element):
    """Consumes packets and records ``(time, pkt)`` — the test double of ns.py's tests."""

    def __init__(self, sim: Sim, name: str = "sink") -> None:
        super().__init__(sim, name)
        self.log: list[tuple[float, Packet]] = []

    def put(self, pkt: Packet) -> None:
        self.log.append((self.sim.now, pkt))
        self.sim.consume(pkt)

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.log]
