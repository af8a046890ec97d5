"""A host NIC's transmit queue under ``fq_codel``, Linux's default queueing discipline.

Why it matters
--------------
systemd sets ``net.core.default_qdisc = fq_codel`` (``/usr/lib/sysctl.d/50-default.conf``) on
the distributions Docker hosts run, so that is the qdisc in front of a host's NIC.  A container's
TCP segments reach it after a veth, which orphans the skb: TCP Small Queues no longer bounds
what a socket has queued there, and with a tail-drop FIFO of ``txqueuelen`` = 1000 skbs (64 KiB
GSO super-segments, 50 ms at 10 Gbit/s) many such streams fill it, lose bursts of whole
super-segments together and recover with smaller skbs.  CoDel instead drops one skb at a time
once the queue has stood above 5 ms for 100 ms.

Model (RFC 8289, the ``fq_codel`` defaults)
-------------------------------------------
The constants are the kernel's defaults, not fitted: ``net/sched/sch_fq_codel.c``
``fq_codel_init`` (``limit`` 10*1024, ``memory_limit`` 32 MB since "fq_codel: add memory
limitation per queue", 2016; ``quantum`` ``psched_mtu(dev)`` = MTU + 14 B) and
``codel_params_init`` (``target`` 5 ms, ``interval`` 100 ms); see also ``tc-fq_codel(8)``.

* ``target`` 5 ms, ``interval`` 100 ms: a packet is dropped at dequeue when the sojourn time
  of the packets dequeued has stayed at or above ``target`` for an ``interval``; while in that
  dropping state the next drop is ``interval / sqrt(count)`` after the previous one, and the
  state ends at the first packet below ``target``; re-entering soon after resumes ``count``
  (the RFC's ``count - lastcount`` rule).
* Limits ``limit`` 10240 packets and ``memory_limit`` 32 MiB (as bytes still to serialize); an
  arriving packet beyond either is dropped (reason ``qdisc_limit``).
* **Sparse flows go first.**  ``fq_codel`` hashes each packet to a flow queue and serves
  flows that had nothing queued (its ``new_flows`` list) before the backlogged ones, a quantum
  (MTU + 14 B: 1514 B) each.  So a pure ACK, a SYN or a request of a request/response flow does
  not wait behind the bulk data queued by other flows: here a packet of at most one quantum whose flow
  (the innermost 5-tuple: the flow dissector looks inside IP-in-IP, and VXLAN's outer source
  port is a hash of the inner flow) has nothing queued is sent right after the skb being
  transmitted (and the sparse packets before it).  Its serialization time is added to the end
  of the backlog rather than to each packet already scheduled (at most one ACK's 70 ns per
  skb on a 10 Gbit/s NIC).  This matters for two-way bulk traffic: without it, the ACKs of one
  direction's flows wait behind the other direction's data, their senders see the sum of both
  queues as round trip, and a CoDel drop can leave their link idle.
* The backlogged packets are served first come first served (:class:`~perfsim.components.link.Link`'s
  Lindley recursion), so a packet's dequeue time and sojourn are known when it arrives, and
  CoDel's dequeue-time decision is taken then, in dequeue order; a dropped packet is reported
  at its dequeue time (reason ``codel``) and never occupies the wire.

Assumptions: the backlogged flows share one FIFO and one CoDel instance.  ``fq_codel``'s deficit
round robin among them and its CoDel per flow are not modelled: with every flow backlogged
each flow's sojourn is the queue's, but a drop hits whichever flow's skb is at the head rather
than the flow whose own queue stood above target, and a limit drop takes the arriving packet
rather than the head of the fattest flow.  CoDel's "backlog below one MTU" exemption is not
applied (the packets behind a packet are not known when it arrives).
"""

from __future__ import annotations

import math

from perfsim.components.link import Link
from perfsim.core.packet import FlowKey, Packet
from perfsim.core.sim import Sim
from perfsim.units import ETH_HDR_BYTES

QDISCS = ("fq_codel", "pfifo")
"""Queueing disciplines a host NIC can have: ``fq_codel`` (Linux's default through systemd) or
``pfifo`` (tail drop at ``txqueuelen``, the kernel's built-in ``pfifo_fast`` default)."""

CODEL_TARGET_S = 5e-3
CODEL_INTERVAL_S = 100e-3
FQ_CODEL_LIMIT_PACKETS = 10240
FQ_CODEL_MEMORY_LIMIT_BYTES = 32 << 20
_RESUME_WINDOW_S = 16 * CODEL_INTERVAL_S
"""CoDel resumes its drop count if it re-enters the dropping state within this time."""


class CodelLink(Link):
    """A :class:`Link` whose queue is managed by CoDel with ``fq_codel``'s limits."""

    def __init__(
        self,
        sim: Sim,
        name: str,
        rate_bps: float,
        delay_s: float = 0.0,
        mtu_bytes: int = 1500,
        overhead_bytes: int = 0,
        target_s: float = CODEL_TARGET_S,
        interval_s: float = CODEL_INTERVAL_S,
        limit_packets: int = FQ_CODEL_LIMIT_PACKETS,
        memory_limit_bytes: int = FQ_CODEL_MEMORY_LIMIT_BYTES,
    ) -> None:
        super().__init__(sim, name, rate_bps, delay_s, limit_packets, mtu_bytes, overhead_bytes)
        self.target_s = target_s
        self.interval_s = interval_s
        self._max_backlog_s = memory_limit_bytes * self._s_per_byte
        self._first_above_s = 0.0
        self._dropping = False
        self._drop_next_s = 0.0
        self._count = 0
        self._lastcount = 0
        self._sparse_until = 0.0
        self._flow_last: dict[FlowKey, float] = {}
        """Departure of the last backlogged packet of each flow: is its queue empty?"""
        self.quantum_bytes = mtu_bytes + ETH_HDR_BYTES
        """``fq_codel``'s quantum, ``psched_mtu(dev)``: what a sparse flow may send at once."""
        self.sparse_packets = 0

    def enqueue(self, pkt: Packet) -> float:
        """Queue ``pkt``; return the time its last bit leaves, or -1.0 if it is dropped (now for
        a limit, at its dequeue time for CoDel)."""
        now = self.sim.env._now
        dq = self._departures
        while dq and dq[0] <= now:
            dq.popleft()
        if pkt.hdr_bytes - ETH_HDR_BYTES + pkt.payload_bytes // pkt.segs > self.mtu_bytes:
            self.sim.drop(pkt, self.name, "mtu_exceeded")
            return -1.0
        busy = self._busy_until
        start = busy if busy > now else now  # noqa: FURB136 - cheaper than max()
        key = pkt.encap[0][0] if pkt.encap else pkt.flow
        if start > now and pkt.size_bytes <= self.quantum_bytes and self._flow_last.get(key, 0.0) <= now:
            return self._send_sparse(pkt, dq[0] if dq else now)
        if len(dq) >= self.queue_packets or start - now > self._max_backlog_s:
            self.sim.drop(pkt, self.name, "qdisc_limit")
            return -1.0
        if self._codel_drops(start - now, start):
            self.sim.call_at(start, self._drop_codel, pkt)
            return -1.0
        departure = Link.enqueue(self, pkt)  # the FIFO's own bookkeeping; its checks pass here
        self._flow_last[key] = departure
        return departure

    put = enqueue

    def _send_sparse(self, pkt: Packet, head_departure_s: float) -> float:
        """A packet of a flow with nothing queued, while others are backlogged: it leaves after
        the skb in transmission (``head_departure_s``) and the sparse packets before it."""
        nbytes = pkt.size_bytes + pkt.segs * self.overhead_bytes
        tx = nbytes * self._s_per_byte
        after = self._sparse_until
        departure = (after if after > head_departure_s else head_departure_s) + tx  # noqa: FURB136 - cheaper than max()
        self._sparse_until = departure
        self._busy_until += tx
        self.sparse_packets += 1
        self.sent_packets += 1
        self.sent_bytes += nbytes
        self.busy_s += tx
        self.sim.call_at(departure + self.delay_s, self.out.put, pkt)  # type: ignore[union-attr]
        return departure

    def _drop_codel(self, pkt: Packet) -> None:
        self.sim.drop(pkt, self.name, "codel")

    def _codel_drops(self, sojourn_s: float, now_s: float) -> bool:
        """CoDel's dequeue decision (RFC 8289 ``codel_dequeue``) for a packet dequeued at
        ``now_s`` after waiting ``sojourn_s``."""
        ok_to_drop = False
        if sojourn_s < self.target_s:
            self._first_above_s = 0.0
        elif self._first_above_s == 0.0:
            self._first_above_s = now_s + self.interval_s
        elif now_s >= self._first_above_s:
            ok_to_drop = True
        if self._dropping:
            if not ok_to_drop:
                self._dropping = False
                return False
            if now_s < self._drop_next_s:
                return False
            self._count += 1
            self._drop_next_s += self.interval_s / math.sqrt(self._count)
            return True
        if not ok_to_drop:
            return False
        self._dropping = True
        delta = self._count - self._lastcount
        self._count = delta if delta > 1 and now_s - self._drop_next_s < _RESUME_WINDOW_S else 1
        self._drop_next_s = now_s + self.interval_s / math.sqrt(self._count)
        self._lastcount = self._count
        return True
