"""What a workload measured: bytes and packets delivered to the application, transactions,
latency samples, retransmissions and drops.

Measurement points (netperf semantics)
--------------------------------------
* Bytes, packets (wire segments of the data skbs) and datagrams are counted when the
  *receiving application* has finished copying them out of the socket (``recvmsg`` returned),
  not when they reach the socket queue.
* One-way latency (stream workloads) is ``t_read_done - t_created`` of each data skb (or UDP
  datagram), sampled when its last byte has been read.
* Transaction latency (``*_rr``, ``tcp_crr``) is the full round trip seen by the client: from
  the start of the request write (for ``tcp_crr``: from the start of ``connect()``) to the end
  of the read of the whole response.
* Everything before ``measure_from_s`` (warm-up: handshake, slow start) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class FlowStats:
    """Counters of one workload instance (one netperf test), all after ``measure_from_s``.

    Attributes
    ----------
    workload: the workload name (``tcp_stream`` ...).
    measure_from_s: start of the measurement window (s); earlier events are not counted.
    one_way: record one latency sample per delivered skb/datagram (streams) instead of one
        per transaction (request/response workloads).
    bytes: payload bytes copied to receiving applications (both directions for rr/crr).
    packets: wire segments of the data skbs those bytes came in (``pkt.segs`` summed).
    datagrams: UDP datagrams read by applications.
    transactions: completed request/response transactions (rr, crr).
    connections: TCP connections established by the client.
    latencies_s: latency samples in seconds (one-way or round-trip, see ``one_way``).
    retransmits: TCP segments sent again; timeouts / fast_retransmits: recovery events.
    drops: packets of this flow dropped anywhere (reported to their owner by ``Sim.drop``).
    """

    workload: str
    measure_from_s: float = 0.0
    one_way: bool = True
    bytes: int = 0
    packets: int = 0
    datagrams: int = 0
    transactions: int = 0
    connections: int = 0
    latencies_s: list[float] = field(default_factory=list)
    retransmits: int = 0
    timeouts: int = 0
    fast_retransmits: int = 0
    drops: int = 0

    # -- recording (hot path: one call per read / per skb) ----------------------------------
    def on_read(self, now: float, nbytes: int) -> None:
        """An application finished reading ``nbytes``."""
        if now >= self.measure_from_s:
            self.bytes += nbytes

    def on_skb(self, now: float, t_created: float, segs: int) -> None:
        """The last byte of a data skb of ``segs`` segments was read by the application."""
        if now >= self.measure_from_s:
            self.packets += segs
            if self.one_way:
                self.latencies_s.append(now - t_created)

    def on_datagram(self, now: float, nbytes: int, segs: int, t_created: float) -> None:
        """A UDP datagram of ``nbytes`` payload in ``segs`` frames was read."""
        if now >= self.measure_from_s:
            self.bytes += nbytes
            self.packets += segs
            self.datagrams += 1
            if self.one_way:
                self.latencies_s.append(now - t_created)

    def on_transaction(self, now: float, rtt_s: float) -> None:
        """The client completed one request/response transaction that took ``rtt_s``."""
        if now >= self.measure_from_s:
            self.transactions += 1
            self.latencies_s.append(rtt_s)

    def on_connection(self, now: float) -> None:
        if now >= self.measure_from_s:
            self.connections += 1

    def on_retransmit(self, now: float, segs: int, timeout: bool = False, fast: bool = False) -> None:
        """``segs`` segments were retransmitted; flags mark the event that started a recovery."""
        if now >= self.measure_from_s:
            self.retransmits += segs
            self.timeouts += timeout
            self.fast_retransmits += fast

    def on_drop(self, now: float) -> None:
        if now >= self.measure_from_s:
            self.drops += 1

    @property
    def progressed(self) -> bool:
        """Has the workload delivered anything to an application yet?"""
        return self.bytes > 0 or self.transactions > 0 or self.datagrams > 0

    def restart(self, now: float) -> None:
        """Start the measurement window at ``now``: forget everything counted so far."""
        self.measure_from_s = now
        self.bytes = self.packets = self.datagrams = self.transactions = self.connections = 0
        self.retransmits = self.timeouts = self.fast_retransmits = self.drops = 0
        self.latencies_s.clear()

    # -- results ----------------------------------------------------------------------------
    def summary(self, until_s: float) -> dict[str, Any]:
        """A flat dict (one DataFrame row) of the window ``[measure_from_s, until_s]``.

        Rates are per second of that window; latency statistics are in seconds (NaN when
        there is no sample).
        """
        dur = until_s - self.measure_from_s
        lat = np.asarray(self.latencies_s, dtype=float)
        has = lat.size > 0
        return {
            "workload": self.workload,
            "duration_s": dur,
            "bytes": self.bytes,
            "throughput_bps": self.bytes * 8.0 / dur if dur > 0 else float("nan"),
            "packets": self.packets,
            "pps": self.packets / dur if dur > 0 else float("nan"),
            "datagrams": self.datagrams,
            "transactions": self.transactions,
            "transactions_per_s": self.transactions / dur if dur > 0 else float("nan"),
            "connections": self.connections,
            "latency_samples": int(lat.size),
            "latency_mean_s": float(lat.mean()) if has else float("nan"),
            "latency_p50_s": float(np.percentile(lat, 50)) if has else float("nan"),
            "latency_p99_s": float(np.percentile(lat, 99)) if has else float("nan"),
            "latency_max_s": float(lat.max()) if has else float("nan"),
            "retransmits": self.retransmits,
            "timeouts": self.timeouts,
            "fast_retransmits": self.fast_retransmits,
            "drops": self.drops,
        }
