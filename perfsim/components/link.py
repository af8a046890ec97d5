"""A unidirectional link: transmitter with a FIFO tail-drop queue, serialization, propagation.

Model
-----
Frames are served first come, first served at ``rate_bps``.  A packet that arrives at time
``t`` starts when the transmitter is free, ``start = max(t, busy_until)``, leaves after
``(size_bytes + segs × overhead_bytes) × 8 / rate_bps`` and reaches ``out`` ``delay_s`` later
(Lindley's recursion, so the link needs no process and one event per packet).  A GSO
super-segment handed to a TSO NIC is serialized as its ``segs`` frames back to back.

The queue holds at most ``queue_packets`` packets (waiting or in transmission); a packet that
finds it full is dropped (tail drop, reason ``queue_full``), as is one whose largest frame
exceeds ``mtu_bytes`` of IP payload (reason ``mtu_exceeded``).
"""

from __future__ import annotations

from collections import deque

from perfsim.core.element import Element
from perfsim.core.packet import Packet
from perfsim.core.sim import Sim
from perfsim.errors import check_number
from perfsim.units import ETH_HDR_BYTES


class Link(Element):
    """Transmit queue + wire between two devices.

    Parameters
    ----------
    rate_bps: serialization rate in bits per second (> 0).
    delay_s: propagation delay in seconds (>= 0).
    queue_packets: tail-drop limit in packets (>= 1), like ``txqueuelen``.
    mtu_bytes: largest IP packet per frame (>= 68).
    overhead_bytes: per-frame bytes on the wire beyond the frame itself (preamble, FCS, gap:
        24 for Ethernet); 0 makes a 1500 B frame take exactly 12 µs at 1 Gbit/s.
    """

    def __init__(
        self,
        sim: Sim,
        name: str,
        rate_bps: float,
        delay_s: float = 0.0,
        queue_packets: int = 1000,
        mtu_bytes: int = 1500,
        overhead_bytes: int = 0,
    ) -> None:
        check_number(f"{name}.rate_bps", rate_bps, low=0, low_inclusive=False, high=1e13)
        check_number(f"{name}.delay_s", delay_s, low=0, high=10.0)
        check_number(f"{name}.queue_packets", queue_packets, low=1, high=10_000_000, integer=True)
        check_number(f"{name}.mtu_bytes", mtu_bytes, low=68, high=65535, integer=True)
        check_number(f"{name}.overhead_bytes", overhead_bytes, low=0, high=1000, integer=True)
        super().__init__(sim, name)
        self.rate_bps = float(rate_bps)
        self.delay_s = float(delay_s)
        self.queue_packets = queue_packets
        self.mtu_bytes = mtu_bytes
        self.overhead_bytes = overhead_bytes
        self._s_per_byte = 8.0 / self.rate_bps
        self._busy_until = 0.0
        self._departures: deque[float] = deque()
        self.sent_packets = 0
        self.sent_bytes = 0
        self.busy_s = 0.0
        self.max_queue = 0

    def enqueue(self, pkt: Packet) -> float:
        """Queue ``pkt``; return the time its last bit leaves the transmitter, or -1.0 if it
        was dropped."""
        now = self.sim.env._now
        dq = self._departures
        while dq and dq[0] <= now:
            dq.popleft()
        if len(dq) >= self.queue_packets:
            self.sim.drop(pkt, self.name, "queue_full")
            return -1.0
        if pkt.hdr_bytes - ETH_HDR_BYTES + pkt.payload_bytes // pkt.segs > self.mtu_bytes:
            self.sim.drop(pkt, self.name, "mtu_exceeded")
            return -1.0
        nbytes = pkt.size_bytes + pkt.segs * self.overhead_bytes
        tx = nbytes * self._s_per_byte
        busy = self._busy_until
        departure = (busy if busy > now else now) + tx  # noqa: PLR1730 - cheaper than max()
        self._busy_until = departure
        dq.append(departure)
        if len(dq) > self.max_queue:
            self.max_queue = len(dq)
        self.sent_packets += 1
        self.sent_bytes += nbytes
        self.busy_s += tx
        self.sim.call_at(departure + self.delay_s, self.out.put, pkt)  # type: ignore[union-attr]
        return departure

    put = enqueue  # type: ignore[assignment]  # element entry; the departure time is ignored

    def queue_len(self) -> int:
        """Packets queued or in transmission now."""
        now = self.sim.now
        return sum(1 for d in self._departures if d > now)

    def work_done(self, now_s: float) -> float:
        """Seconds of transmission completed by ``now_s`` (given minus still to serialize)."""
        owed = self._busy_until - now_s
        return self.busy_s - owed if owed > 0 else self.busy_s
