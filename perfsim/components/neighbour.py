"""The neighbour (ARP) table of one network namespace: IPv4 → MAC, with Linux's limits.

Model (after ``net/core/neighbour.c`` and ``net/ipv4/arp.c``)
-----------------------------------------------------------
Entry states use Linux's NUD names and values:

* ``INCOMPLETE`` — resolution in progress: an ARP request is outstanding and packets for the
  address wait in the entry's queue (``arp_queue``).  The first request goes out at once, then
  one every ``retrans_s``, ``mcast_solicit`` in total; when the last one times out the entry
  becomes ``FAILED`` and every queued packet is dropped (``neigh_failed``).  So with the
  defaults requests leave at 0, 1 and 2 s and the packets are dropped at 3 s.
* ``REACHABLE`` — confirmed by an ARP reply (:meth:`NeighbourTable.confirm`) within the last
  ``base_reachable_s``.
* ``STALE`` — confirmed longer ago.  Still used to send.  Linux then re-probes it (DELAY,
  PROBE); perfsim does not, so a STALE entry stays usable until it is collected.
* ``FAILED`` — resolution failed; the next packet restarts it.
* ``PERMANENT`` — added by configuration (``ip neigh add ... nud permanent``, or Docker's
  overlay control plane); never expires, never collected, not overridden by ARP.

Table size (modern kernels, since 4.19's ``gc_list``)
------------------------------------------------------
Only non-permanent entries count against the thresholds (permanent ones are
``exempt_from_gc``).  When a new entry is needed and ``n`` entries are counted (``neigh_alloc``):
if ``n >= gc_thresh3``, or ``n >= gc_thresh2`` and the last forced gc was more than 5 s ago, a
*forced gc* runs (``neigh_forced_gc``).  It walks the entries oldest first and removes those
that are ``FAILED`` or were not updated (state or MAC change) in the last 5 s, skipping
``INCOMPLETE`` ones (their timer holds a reference), and stops once it has removed
``n - gc_thresh2`` entries; exactly as in the kernel, it looks at one entry only when that
difference is <= 0.  If it freed nothing and ``n >= gc_thresh3`` the allocation fails: the
packet is dropped (``neigh_table_full``, kernel message "neighbor table overflow!").

A *periodic gc* (``neigh_periodic_work``) runs every ``base_reachable_s / 2`` while the table
holds at least ``gc_thresh1`` entries and removes ``FAILED`` entries and ``STALE`` ones not
used for ``gc_stale_s``.

Simplifications
---------------
* ``reachable_time`` is exactly ``base_reachable_s`` (Linux draws it uniformly from
  [0.5, 1.5] × base) and the REACHABLE → STALE transition is evaluated lazily, without a timer.
* In Linux a REACHABLE entry's timer holds a reference, so forced gc cannot take it until it
  turns STALE; here it can once it has not been updated for 5 s.
* The unresolved queue is limited, as in Linux since 3.3, in bytes of skb truesize
  (``unres_qlen_bytes``, default 212992; truesize ~ frame + 576 B of sk_buff and shared info,
  so 101 full-size frames — the ``unres_qlen`` that /proc shows — but ~330 SYNs); an
  explicit ``unres_qlen`` adds a packet limit.  As in Linux, the oldest queued packet is
  dropped to make room (``unres_queue_full``), and the new packet is always queued.
* A failed resolution only drops the queued packets; Linux also reports ICMP host unreachable
  to local senders.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from perfsim.core import addr
from perfsim.core.packet import Packet
from perfsim.errors import ConfigError, check_number

if TYPE_CHECKING:
    from perfsim.core.sim import Sim

FORCED_GC_MIN_AGE_S = 5.0
"""Forced gc only removes entries not updated for this long (``5 * HZ`` in the kernel)."""


SKB_TRUESIZE_OVERHEAD_BYTES = 576
"""SKB_TRUESIZE(len) - len on x86-64: aligned sizeof(sk_buff) + sizeof(skb_shared_info)."""


class NudState(IntEnum):
    """Neighbour Unreachability Detection states (values of Linux's ``NUD_*`` flags)."""

    INCOMPLETE = 0x01
    REACHABLE = 0x02
    STALE = 0x04
    FAILED = 0x20
    PERMANENT = 0x80


_INCOMPLETE = NudState.INCOMPLETE
_REACHABLE = NudState.REACHABLE
_FAILED = NudState.FAILED
_PERMANENT = NudState.PERMANENT


class _Entry:
    """One neighbour. ``mac`` is set exactly when the entry can be used to send."""

    __slots__ = (
        "confirmed_s",
        "dev",
        "ip",
        "mac",
        "pending",
        "probes",
        "state",
        "token",
        "updated_s",
        "used_s",
    )

    def __init__(self, ip: int, state: NudState, now: float) -> None:
        self.ip = ip
        self.mac: int | None = None
        self.state = state
        self.dev: Any = None
        self.pending: deque[Packet] = deque()
        self.updated_s = now
        self.used_s = now
        self.confirmed_s = now
        self.probes = 0
        self.token = 0  # bumped to invalidate outstanding timers


class NeighbourTable:
    """ARP cache of one namespace, with resolution queueing, retries and Linux's size limits.

    Parameters
    ----------
    sim: the run; the table registers itself under ``name`` (it holds packets).
    name: unique element name, also the drop site (e.g. ``"ns1/neigh"``).
    gc_thresh1: periodic gc does nothing below this many entries (default 128).
    gc_thresh2: forced gc target; above it forced gc may run at most every 5 s (default 512).
    gc_thresh3: hard limit on non-permanent entries (default 1024).
    base_reachable_s: time a confirmed entry stays REACHABLE before it becomes STALE (30 s).
    gc_stale_s: a STALE entry unused for this long is removed by periodic gc (60 s).
    retrans_s: interval between ARP requests of one resolution (1 s).
    mcast_solicit: ARP requests sent before a resolution fails (3); 0 fails at once.
    unres_qlen_bytes: truesize bytes queued per unresolved entry (212992).
    unres_qlen: optional packet limit per unresolved entry (``None``: bytes only).

    Attributes
    ----------
    solicit: callback ``solicit(ip, dev)`` that sends an ARP request; set by the namespace.
    misses, overflows, failed: packets that found no usable entry (:meth:`queue` calls),
        packets dropped because the table was full, resolutions that failed.
    unres_discards, forced_gc_runs, gc_removed: packets dropped from full unresolved queues,
        forced gc runs, entries removed by either gc.
    max_size: largest number of entries held at once.
    """

    def __init__(
        self,
        sim: Sim,
        name: str,
        gc_thresh1: int = 128,
        gc_thresh2: int = 512,
        gc_thresh3: int = 1024,
        base_reachable_s: float = 30.0,
        gc_stale_s: float = 60.0,
        retrans_s: float = 1.0,
        mcast_solicit: int = 3,
        unres_qlen: int | None = None,
        unres_qlen_bytes: int = 212992,
    ) -> None:
        big = 100_000_000
        check_number(f"{name}.gc_thresh1", gc_thresh1, low=0, high=big, integer=True)
        check_number(f"{name}.gc_thresh2", gc_thresh2, low=0, high=big, integer=True)
        check_number(f"{name}.gc_thresh3", gc_thresh3, low=1, high=big, integer=True)
        check_number(
            f"{name}.base_reachable_s", base_reachable_s, low=0, low_inclusive=False, high=86400.0
        )
        check_number(f"{name}.gc_stale_s", gc_stale_s, low=0, low_inclusive=False, high=86400.0)
        check_number(f"{name}.retrans_s", retrans_s, low=0, low_inclusive=False, high=3600.0)
        check_number(f"{name}.mcast_solicit", mcast_solicit, low=0, high=1000, integer=True)
        if unres_qlen is not None:
            check_number(f"{name}.unres_qlen", unres_qlen, low=0, high=big, integer=True)
        check_number(f"{name}.unres_qlen_bytes", unres_qlen_bytes, low=0, high=1 << 31, integer=True)
        self.sim = sim
        self.name = name
        self.gc_thresh1 = gc_thresh1
        self.gc_thresh2 = gc_thresh2
        self.gc_thresh3 = gc_thresh3
        self.base_reachable_s = float(base_reachable_s)
        self.gc_stale_s = float(gc_stale_s)
        self.retrans_s = float(retrans_s)
        self.mcast_solicit = mcast_solicit
        self.unres_qlen = unres_qlen if unres_qlen is not None else big
        self.unres_qlen_bytes = unres_qlen_bytes
        self.solicit: Callable[[int, Any], None] | None = None
        self._entries: dict[int, _Entry] = {}
        self._gc_entries = 0
        self._held = 0
        self._last_flush_s = sim.now
        self._periodic_armed = False
        self.misses = 0
        self.overflows = 0
        self.failed = 0
        self.unres_discards = 0
        self.forced_gc_runs = 0
        self.gc_removed = 0
        self.max_size = 0
        sim.register(name, self)

    # -- hot path ----------------------------------------------------------------------------
    def lookup(self, ip: int) -> int | None:
        """The MAC of ``ip`` if a REACHABLE, STALE or PERMANENT entry exists, else ``None``.

        Records the use (for periodic gc).  On ``None`` the caller hands the packet to
        :meth:`queue`.
        """
        e = self._entries.get(ip)
        if e is None:
            return None
        mac = e.mac
        if mac is not None:
            e.used_s = self.sim.env._now
        return mac

    def queue(self, ip: int, pkt: Packet, dev: Any) -> bool:
        """Hold ``pkt`` until ``ip`` is resolved, starting resolution if needed.

        Returns ``True`` if the packet was queued, ``False`` if it was dropped
        (``neigh_table_full``, or ``neigh_failed`` when ``mcast_solicit == 0``).  Must only be
        called after :meth:`lookup` returned ``None``.
        """
        self.misses += 1
        e = self._entries.get(ip)
        if e is None:
            if not self._make_room():
                self.overflows += 1
                self.sim.drop(pkt, self.name, "neigh_table_full")
                return False
            e = self._insert(ip, _INCOMPLETE)
        elif e.state == _INCOMPLETE:
            pending = e.pending
            # Linux drops from the head of arp_queue until the new skb fits, then queues it.
            limit = self.unres_qlen_bytes - (pkt.size_bytes + SKB_TRUESIZE_OVERHEAD_BYTES)
            while pending and (
                len(pending) >= self.unres_qlen
                or sum(p.size_bytes for p in pending) + SKB_TRUESIZE_OVERHEAD_BYTES * len(pending) > limit
            ):
                self._held -= 1
                self.unres_discards += 1
                self.sim.drop(pending.popleft(), self.name, "unres_queue_full")
            pending.append(pkt)
            self._held += 1
            return True
        elif e.mac is not None:
            raise RuntimeError(
                f"{self.name}: queue() for {addr.ip_str(ip)}, which resolves; call lookup() first"
            )
        return self._resolve(e, pkt, dev)

    # -- resolution --------------------------------------------------------------------------
    def _resolve(self, e: _Entry, pkt: Packet, dev: Any) -> bool:
        """Start resolving a new or FAILED entry with ``pkt`` as its first queued packet."""
        now = self.sim.env._now
        e.dev = dev
        e.probes = 0
        e.token += 1
        if self.mcast_solicit == 0:
            e.state = _FAILED
            e.updated_s = now
            self.failed += 1
            self.sim.drop(pkt, self.name, "neigh_failed")
            return False
        e.state = _INCOMPLETE
        e.updated_s = now
        e.pending.append(pkt)
        self._held += 1
        self._probe(e)
        return True

    def _probe(self, e: _Entry) -> None:
        e.probes += 1
        self.sim.call_in(self.retrans_s, self._on_timer, (e, e.token))
        solicit = self.solicit
        if solicit is not None:
            solicit(e.ip, e.dev)

    def _on_timer(self, arg: tuple[_Entry, int]) -> None:
        e, token = arg
        if e.token != token or e.state != _INCOMPLETE or self._entries.get(e.ip) is not e:
            return  # confirmed, removed or restarted since this timer was set
        if e.probes < self.mcast_solicit:
            self._probe(e)
            return
        e.state = _FAILED
        e.updated_s = self.sim.env._now
        e.token += 1
        self.failed += 1
        pending = e.pending
        self._held -= len(pending)
        drop = self.sim.drop
        while pending:
            drop(pending.popleft(), self.name, "neigh_failed")

    def confirm(self, ip: int, mac: int) -> list[Packet]:
        """An ARP reply (or request) from ``ip`` with ``mac``: the entry becomes REACHABLE.

        Returns the packets that were waiting for the address, oldest first; the caller sends
        them now.  Creates the entry if absent and the table has room (else ignores the
        message).  A PERMANENT entry is left alone, as Linux does not let ARP override it.
        """
        now = self.sim.env._now
        e = self._entries.get(ip)
        if e is None:
            if not self._make_room():
                return []
            e = self._insert(ip, _REACHABLE)
            e.mac = mac
            return []
        if e.state == _PERMANENT:
            return []
        old_state = self._effective_state(e, now)
        if old_state != _REACHABLE or e.mac != mac:
            e.updated_s = now  # Linux moves ``updated`` only on a real change
        e.state = _REACHABLE
        e.mac = mac
        e.confirmed_s = now
        e.token += 1
        return self._release(e)

    def add_permanent(self, ip: int, mac: int) -> list[Packet]:
        """``ip neigh replace ip lladdr mac nud permanent``; returns packets that were queued.

        The returned list is empty unless the address was being resolved.
        """
        key = f"{self.name}.permanent[{ip!r}]"
        if isinstance(ip, bool) or not isinstance(ip, int) or not 0 <= ip <= 0xFFFFFFFF:
            raise ConfigError(key, ip, "an IPv4 address as a 32-bit int")
        key = f"{self.name}.permanent[{addr.ip_str(ip)}]"
        if isinstance(mac, bool) or not isinstance(mac, int) or not 0 <= mac < 1 << 48:
            raise ConfigError(f"{key}.mac", mac, "a MAC address as a 48-bit int")
        e = self._entries.get(ip)
        if e is None:
            e = self._insert(ip, _PERMANENT)
        elif e.state != _PERMANENT:
            self._gc_entries -= 1
        e.state = _PERMANENT
        e.mac = mac
        e.updated_s = e.confirmed_s = self.sim.env._now
        e.token += 1
        return self._release(e)

    def remove(self, ip: int) -> bool:
        """``ip neigh del``: forget ``ip``; queued packets are dropped (``neigh_flushed``)."""
        e = self._entries.get(ip)
        if e is None:
            return False
        pending = e.pending
        self._held -= len(pending)
        while pending:
            self.sim.drop(pending.popleft(), self.name, "neigh_flushed")
        self._delete(e)
        return True

    # -- inspection --------------------------------------------------------------------------
    def state(self, ip: int) -> NudState | None:
        """The entry's state now (REACHABLE turns STALE after ``base_reachable_s``), or None."""
        e = self._entries.get(ip)
        return None if e is None else self._effective_state(e, self.sim.env._now)

    def entries(self) -> list[tuple[int, int | None, NudState]]:
        """``(ip, mac, state)`` of every entry, oldest first (``ip neigh show``)."""
        now = self.sim.env._now
        return [(e.ip, e.mac, self._effective_state(e, now)) for e in self._entries.values()]

    @property
    def gc_entries(self) -> int:
        """Entries that count against the gc thresholds (all but PERMANENT ones)."""
        return self._gc_entries

    def held_packets(self) -> int:
        """Packets waiting in INCOMPLETE entries."""
        return self._held

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"NeighbourTable({self.name!r}, {len(self._entries)} entries)"

    # -- internals ---------------------------------------------------------------------------
    def _effective_state(self, e: _Entry, now: float) -> NudState:
        if e.state == _REACHABLE and now - e.confirmed_s > self.base_reachable_s:
            return NudState.STALE
        return e.state

    def _release(self, e: _Entry) -> list[Packet]:
        pending = e.pending
        if not pending:
            return []
        out = list(pending)
        pending.clear()
        self._held -= len(out)
        return out

    def _insert(self, ip: int, state: NudState) -> _Entry:
        now = self.sim.env._now
        e = _Entry(ip, state, now)
        self._entries[ip] = e
        if state != _PERMANENT:
            self._gc_entries += 1
        n = len(self._entries)
        self.max_size = max(self.max_size, n)
        if n >= self.gc_thresh1 and not self._periodic_armed:
            self._periodic_armed = True
            self.sim.call_in(self.base_reachable_s / 2, self._periodic_gc, None)
        return e

    def _delete(self, e: _Entry) -> None:
        del self._entries[e.ip]
        if e.state != _PERMANENT:
            self._gc_entries -= 1
        e.token += 1

    def _make_room(self) -> bool:
        """``neigh_alloc``'s admission check; False if a new entry must be refused."""
        n = self._gc_entries
        if n >= self.gc_thresh3 or (
            n >= self.gc_thresh2 and self.sim.env._now > self._last_flush_s + FORCED_GC_MIN_AGE_S
        ):
            return self._forced_gc() > 0 or n < self.gc_thresh3
        return True

    def _forced_gc(self) -> int:
        """``neigh_forced_gc``: remove old or FAILED entries, oldest first; return how many."""
        self.forced_gc_runs += 1
        now = self.sim.env._now
        tref = now - FORCED_GC_MIN_AGE_S
        max_clean = self._gc_entries - self.gc_thresh2
        shrunk = 0
        victims: list[_Entry] = []
        for e in self._entries.values():
            state = e.state
            if state is _PERMANENT or state is _INCOMPLETE:
                continue  # not on gc_list / held by its timer
            if state == _FAILED or e.updated_s < tref:
                victims.append(e)
                shrunk += 1
            if shrunk >= max_clean:
                break
        for e in victims:
            self._delete(e)
        self.gc_removed += shrunk
        self._last_flush_s = now
        return shrunk

    def _periodic_gc(self, _: Any) -> None:
        """``neigh_periodic_work``: drop FAILED entries and STALE ones unused for gc_stale_s."""
        if not self._entries or len(self._entries) < self.gc_thresh1:
            self._periodic_armed = False
            return
        now = self.sim.env._now
        victims = []
        for e in self._entries.values():
            state = e.state
            if state is _PERMANENT or state is _INCOMPLETE:
                continue
            if state == _REACHABLE and now - e.confirmed_s <= self.base_reachable_s:
                continue  # still REACHABLE: its timer is pending in Linux
            used = max(e.confirmed_s, e.used_s)
            if state == _FAILED or now - used > self.gc_stale_s:
                victims.append(e)
        for e in victims:
            self._delete(e)
        self.gc_removed += len(victims)
        self.sim.call_in(self.base_reachable_s / 2, self._periodic_gc, None)
