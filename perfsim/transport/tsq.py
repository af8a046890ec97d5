"""Send-side queue limits: the bytes a socket has below it, TCP Small Queues, the UDP send buffer.

Model (what Linux does)
-----------------------
* **sk_wmem_alloc.**  Every skb a socket hands to IP is charged to the socket
  (``skb_set_owner_w``) until it is freed: by the NIC driver's TX completion once its last frame
  has left, when a veth or loopback device orphans it (``dev_forward_skb`` /
  ``loopback_xmit``: at once), or when it is dropped.  :class:`WmemAlloc` keeps that sum.  The
  charge is ``pkt.size_bytes`` (frames with their headers) standing for ``skb->truesize``.  A
  NIC reports the completion when the skb is queued, with the future time its last frame
  leaves (``PacketOwner.on_xmit_done``); the account keeps those times in order and retires
  them lazily, so the hot path costs O(1) amortized per skb and no event of its own.
* **TCP Small Queues** (``tcp_small_queue_check`` in ``net/ipv4/tcp_output.c``).  Before
  ``tcp_write_xmit`` sends an skb it computes::

      limit = max(2 * skb->truesize, sk_pacing_rate >> sk_pacing_shift)   # shift 10: ~1 ms
      limit = min(limit, net.ipv4.tcp_limit_output_bytes)   # flows not paced by FQ/BBR

  and, if ``sk_wmem_alloc > limit`` while the retransmit queue holds more than one skb
  (``tcp_rtx_queue_empty_or_single_skb``), sets ``TSQ_THROTTLED`` and stops.  A later TX
  completion (``tcp_wfree``) schedules ``tcp_tsq_handler``, which calls ``tcp_write_xmit``
  again.  The throttled socket here arms *one* wake-up, at the earliest completion time at
  which ``sk_wmem_alloc <= limit`` holds again (earlier completions would only find the check
  failing again).  So an skb is sent only while at most ``limit`` bytes are below the socket:
  the queued bytes stay below ``limit`` + one skb.  A socket kept at its limit therefore
  costs one wake-up event per skb the NIC completes, as ``tcp_wfree`` schedules the handler
  once per freed skb in Linux; a socket under its limit costs no event at all.
* **sk_pacing_rate** (``tcp_update_pacing_rate`` in ``net/ipv4/tcp_input.c``, commit
  43e122b014c9 "tcp: refine pacing rate determination", 2015):
  ``ratio × mss × max(cwnd, packets_out) / srtt`` with ``ratio = tcp_pacing_ss_ratio`` = 200 %
  while ``cwnd < ssthresh / 2`` (slow start) and ``tcp_pacing_ca_ratio`` = 120 % otherwise;
  before the first RTT sample the rate is unlimited (``~0``).  Linux recomputes it on every
  ACK; here it is computed at the check from the same inputs (cwnd, srtt, skbs out).
* **tcp_limit_output_bytes** defaults: 131072 when TSQ appeared (3.6, commit 46d3ceabd8d9),
  262144 from June 2015 (c39c4c6abb89, "tcp: double default TSQ output bytes limit"), 1 MiB
  from 5.0 (c73e5807e4f6, November 2018, "tcp: tsq: no longer use limit_output_bytes for
  paced flows", which also stopped applying it to FQ-paced flows) and 4 MiB from 6.16
  (9ea3bfa61b09, May 2025, with c4221a8cc3a7 applying it to every flow again).  The default
  here is 1 MiB, the value of the 5.x/6.x LTS kernels that run most container hosts.
* **UDP send buffer** (``sock_alloc_send_pskb`` in ``net/core/sock.c``): ``sendmsg`` blocks
  while ``sk_wmem_alloc >= sk_sndbuf`` (``net.core.wmem_default`` = 212992); the freeing
  path's ``sock_def_write_space`` wakes the writer only once ``2 × sk_wmem_alloc <=
  sk_sndbuf`` ("do not wake up a writer until he can make significant progress").
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perfsim.core.packet import Packet
    from perfsim.core.sim import Sim

DEFAULT_TCP_LIMIT_OUTPUT_BYTES = 1 << 20
"""``net.ipv4.tcp_limit_output_bytes`` of Linux 5.0 .. 6.15 (see the module docstring)."""
DEFAULT_UDP_SNDBUF_BYTES = 212992
"""``net.core.wmem_default``: a UDP socket's ``sk_sndbuf``."""
PACING_SHIFT = 10
"""``sk_pacing_shift``: TSQ allows ``sk_pacing_rate >> 10`` bytes, about 1 ms of traffic."""
PACING_SS_RATIO = 2.0
"""``net.ipv4.tcp_pacing_ss_ratio`` = 200 (%)."""
PACING_CA_RATIO = 1.2
"""``net.ipv4.tcp_pacing_ca_ratio`` = 120 (%)."""

_NOT_WAITING = -1
_INF = float("inf")


def tcp_pacing_rate(mss_bytes: int, cwnd_segs: int, ssthresh_segs: int, packets_out: int,
                    srtt_s: float) -> float:
    """``sk_pacing_rate`` in bytes per second (``inf`` before the first RTT sample)."""
    if srtt_s <= 0.0:
        return _INF
    ratio = PACING_SS_RATIO if cwnd_segs < ssthresh_segs // 2 else PACING_CA_RATIO
    return ratio * mss_bytes * max(cwnd_segs, packets_out) / srtt_s


def tsq_limit(skb_bytes: int, pacing_rate_Bps: float, limit_output_bytes: int) -> int:
    """The TSQ limit in bytes for an skb of ``skb_bytes`` (``tcp_small_queue_check``)."""
    paced = int(pacing_rate_Bps) >> PACING_SHIFT if pacing_rate_Bps < _INF else limit_output_bytes
    return min(max(2 * skb_bytes, paced), limit_output_bytes)


class WmemAlloc:
    """``sk_wmem_alloc`` of one socket: bytes of skbs handed to IP and not yet freed.

    ``charge(pkt)`` when the skb is sent; ``xmit_done(pkt, t_s)`` frees it at ``t_s`` (now or
    later; a second report for the same skb, e.g. by a NIC after a veth already orphaned it,
    is ignored); ``dropped(pkt)`` frees it now.  ``wait_until_at_most(n)`` makes the account
    call ``wake()`` once, at the earliest time the level is ``<= n`` (one event).
    """

    __slots__ = ("_done_b", "_done_t", "_pending", "_thresh", "_wake", "_wake_at", "bytes",
                 "sim", "wakeups")

    def __init__(self, sim: Sim, wake: Callable[[], None]) -> None:
        self.sim = sim
        self._wake = wake
        self.bytes = 0
        """Charged bytes not yet retired (includes frees due by now until :meth:`level`)."""
        self._pending: dict[int, int] = {}  # skb id -> bytes, completion not yet reported
        self._done_t: deque[float] = deque()  # reported future frees, in time order
        self._done_b: deque[int] = deque()
        self._thresh = _NOT_WAITING
        self._wake_at = _INF
        self.wakeups = 0

    def charge(self, pkt: Packet) -> None:
        size = pkt.size_bytes
        self._pending[pkt.id] = size
        self.bytes += size

    def xmit_done(self, pkt: Packet, t_s: float) -> None:
        size = self._pending.pop(pkt.id, 0)
        if not size:
            return
        if t_s <= self.sim.env._now:
            self._free(size)
            return
        dt = self._done_t
        if not dt or dt[-1] <= t_s:
            dt.append(t_s)
            self._done_b.append(size)
        else:  # completions out of order (two devices): keep the queue sorted
            i = bisect_right(dt, t_s)
            dt.insert(i, t_s)
            self._done_b.insert(i, size)
        if self._thresh != _NOT_WAITING and t_s < self._wake_at:
            self._arm()

    def dropped(self, pkt: Packet) -> None:
        size = self._pending.pop(pkt.id, 0)
        if size:
            self._free(size)

    def level(self) -> int:
        """Bytes below the socket now."""
        dt = self._done_t
        if dt:
            now = self.sim.env._now
            db = self._done_b
            while dt and dt[0] <= now:
                dt.popleft()
                self.bytes -= db.popleft()
        return self.bytes

    @property
    def skbs(self) -> int:
        """skbs below the socket (retiring nothing: some may be due now)."""
        return len(self._pending) + len(self._done_t)

    def wait_until_at_most(self, threshold: int) -> None:
        """Call ``wake()`` once, at the earliest time the level is ``<= threshold``."""
        self._thresh = max(threshold, 0)
        self._arm()

    def _free(self, size: int) -> None:
        self.bytes -= size
        if self._thresh != _NOT_WAITING:
            self._arm()

    def _arm(self) -> None:
        """Schedule the wake-up at the earliest known time the level meets the threshold."""
        need = self.level() - self._thresh
        now = self.sim.env._now
        t = now
        if need > 0:
            acc = 0
            for t_done, size in zip(self._done_t, self._done_b, strict=True):
                acc += size
                if acc >= need:
                    t = t_done
                    break
            else:
                return  # not reachable with the frees known now: a later report re-arms
        if t < self._wake_at:
            self._wake_at = t
            self.sim.call_at(t, self._fire, t)

    def _fire(self, t_s: float) -> None:
        if t_s != self._wake_at:
            return  # superseded by an earlier wake-up
        self._wake_at = _INF
        self._thresh = _NOT_WAITING
        self.wakeups += 1
        self._wake()
