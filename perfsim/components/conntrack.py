"""Connection tracking (``nf_conntrack``): one table per network namespace.

Model
-----
An entry (``struct nf_conn``) holds the *original* tuple (the first packet's 5-tuple) and the
*reply* tuple (what a reply looks like on the wire, i.e. after NAT: a DNAT changes the reply's
source, a SNAT its destination).  The hash table maps **both** tuples to the entry, so a reply
finds it, and the tuple that matched gives the packet's direction.  :meth:`Conntrack.track` is
``nf_conntrack_in``: a hit costs ``conntrack_lookup``, a miss allocates and inserts an entry
for ``conntrack_new`` (Linux confirms it at the last hook; here it is inserted at once and
re-keyed when NAT changes the reply tuple).

The packet carries its entry as ``pkt.ct`` (``skb->_nfct``: the entry *and* the direction, so
``pkt.ct`` is a :class:`CtRef`).  It is per namespace: the code that moves a packet into another
namespace resets ``pkt.ct``, and a table only trusts ``pkt.ct`` when ``pkt.ct.table is self``.

States and timeouts (seconds, Linux defaults, :class:`ConntrackTimeouts`)
-------------------------------------------------------------------------
TCP follows ``tcp_conntracks`` in simplified form: SYN -> SYN_SENT, SYN/ACK in reply ->
SYN_RECV, the ACK of the originator -> ESTABLISHED (and *assured*); a FIN -> FIN_WAIT, the
other side's ACK -> CLOSE_WAIT, and once a FIN has been seen in both directions -> TIME_WAIT.
(Linux passes through LAST_ACK until the final ACK; the model goes straight to TIME_WAIT so the
entry lives ``tcp_time_wait_s`` even if a simulated transport omits that ACK.)  A SYN from the
originator on a TIME_WAIT/CLOSE entry kills it and opens a new one (RFC 1122 reopen).  A first
packet that is not a SYN is picked up as ESTABLISHED (``nf_conntrack_tcp_loose=1``) and is
assured once a reply is seen.  UDP is UNREPLIED (30 s) until a reply, then REPLIED (120 s,
the stream timeout) and assured; ICMP uses 30 s and any other protocol 600 s (generic).  Every
tracked packet sets ``expires_s = now + timeout(state)``.

Expiry and garbage collection
-----------------------------
An expired entry is invisible: a lookup that finds one removes it (lazy expiry, like
``nf_ct_gc_expired``).  A periodic gc pass (every ``gc_interval_s``, started on the first insert
and stopped while the table is empty) pops a heap of ``(expiry, seq, entry)``; an entry whose
expiry moved on since it was pushed is pushed again, so most packets never touch the heap.  A
packet that moves the expiry *earlier* than the entry's heap time — a shorter timeout for the
new state: ESTABLISHED (5 days) -> FIN_WAIT or TIME_WAIT (120 s), SYN_SENT -> a short
configured TIME_WAIT — pushes it at the new time, so gc reaps every entry once it has
expired, as the kernel's gc worker (which walks the whole table) does.  The gc
pass appends ``(t, count)`` to :attr:`Conntrack.samples`.  :meth:`Conntrack.count` is what
``nf_conntrack_count`` says: entries in the table, expired ones not yet reaped included.

Full table (``nf_conntrack_max``)
---------------------------------
An insert into a full table first reaps expired entries, then *early-drops* a non-assured entry,
else the packet is dropped (``conntrack_full``, the kernel's "nf_conntrack: table full, dropping
packet") and counted in ``insert_failed``.  Established flows keep working because their lookups
still hit.  So at most ``nf_conntrack_max`` entries exist, and the first drop comes with the
first new connection after ``nf_conntrack_max`` live ones.

Where early drop looks (``early_drop`` in ``nf_conntrack_core.c``): Linux does not search the
whole table.  It scans the hash chain of the *new* tuple's bucket and the next ones,
``NF_CT_EVICTION_RANGE`` (8) buckets in all, and kills every non-assured entry of the first
chain that has one (each entry hangs in two chains: its original and its reply tuple).  With
``eviction_range=8`` (what :func:`perfsim.topology.cluster.build_cluster` uses) the table does
exactly that, buckets being ``flow_hash(tuple) mod buckets``; so with 65536 buckets and a few
handshakes in flight a full table drops the new connection's SYN, as Linux does, instead of
killing a handshake in progress.  ``eviction_range=None`` keeps the coarser approximation
(the oldest non-assured entry of the whole table), which small unit tables use.

After a failed insert the kernel also flags its gc worker (``conntrack_gc_work.early_drop``):
its next pass kills, while the table holds at least 95 % of ``nf_conntrack_max``, the entries
``gc_worker_can_early_drop`` accepts — non-assured ones and TCP entries in FIN_WAIT,
CLOSE_WAIT, LAST_ACK, TIME_WAIT or CLOSE (``tcp_can_early_drop``).  The periodic gc pass here
does the same, so a table full of TIME_WAIT entries recovers at the next pass (every
``gc_interval_s``; Linux's worker re-runs every 1-60 s, from the entries' mean timeout)
instead of after ``tcp_time_wait_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

from perfsim.core.cpu import flow_hash
from perfsim.core.packet import FIN, PROTO_ICMP, PROTO_TCP, PROTO_UDP, SYN, SYNACK, FlowKey, Packet
from perfsim.errors import check_number

if TYPE_CHECKING:
    from perfsim.components.host import Host
    from perfsim.core.sim import Sim

MAX_TIMEOUT_S = 2_147_483.0  # timeouts are s32 jiffies at HZ=1000
MAX_ENTRIES = 2**31 - 1
NF_CT_EVICTION_RANGE = 8
"""Hash buckets early drop scans, starting at the new tuple's (``nf_conntrack_core.c``)."""
GC_EARLY_DROP_PERCENT = 95
"""After a failed insert, gc early-drops while the table holds >= this % of the maximum."""

# Entry states (indices into the timeout table).
SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE = range(8)
UDP_UNREPLIED, UDP_REPLIED, ICMP, GENERIC = range(8, 12)
_GC_EARLY_DROP_TCP = frozenset((FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE))
"""TCP states ``tcp_can_early_drop`` accepts (assured entries that are closing)."""
STATE_NAMES = (
    "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT",
    "CLOSE", "UDP_UNREPLIED", "UDP_REPLIED", "ICMP", "GENERIC",
)


@dataclass(frozen=True, slots=True)
class ConntrackTimeouts:
    """Per-state timeouts in seconds (``net.netfilter.nf_conntrack_*_timeout*`` defaults)."""

    tcp_syn_sent_s: float = 120.0
    tcp_syn_recv_s: float = 60.0
    tcp_established_s: float = 432000.0
    tcp_fin_wait_s: float = 120.0
    tcp_close_wait_s: float = 60.0
    tcp_last_ack_s: float = 30.0
    tcp_time_wait_s: float = 120.0
    tcp_close_s: float = 10.0
    udp_unreplied_s: float = 30.0
    udp_replied_s: float = 120.0
    icmp_s: float = 30.0
    generic_s: float = 600.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            field = f"timeouts.{f.name}"
            check_number(field, value, low=0, high=MAX_TIMEOUT_S, low_inclusive=False)

    def by_state(self) -> tuple[float, ...]:
        """Timeouts indexed by state number (TCP states, then UDP, ICMP, generic)."""
        return tuple(float(getattr(self, f.name)) for f in fields(self))


class CtEntry:
    """One tracked connection (``struct nf_conn``).

    ``dnat_init``/``snat_init`` say whether the NAT binding of each kind has been decided
    (``nf_nat_initialized``); ``nat_dst``/``nat_src`` whether it translates anything.
    """

    __slots__ = (
        "assured",
        "created_s",
        "dead",
        "dnat_init",
        "expires_s",
        "fin_dirs",
        "heap_s",
        "nat_dst",
        "nat_src",
        "orig",
        "ref_orig",
        "ref_reply",
        "reply",
        "seen_reply",
        "snat_init",
        "state",
        "table",
    )

    def __init__(
        self, table: Conntrack, orig: FlowKey, reply: FlowKey, state: int, now: float
    ) -> None:
        self.table = table
        self.orig = orig
        self.reply = reply
        self.state = state
        self.assured = False
        self.seen_reply = False
        self.fin_dirs = 0  # bit 1: FIN seen from the originator, bit 2: from the replier
        self.created_s = now
        self.expires_s = now
        self.heap_s = now  # the earliest time the gc heap holds for this entry
        self.dead = False
        self.dnat_init = False
        self.snat_init = False
        self.nat_dst = False
        self.nat_src = False
        self.ref_orig = CtRef(self, False)
        self.ref_reply = CtRef(self, True)

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    def __repr__(self) -> str:
        return f"CtEntry({self.orig} / {self.reply}, {self.state_name}, assured={self.assured})"


class CtRef:
    """What ``pkt.ct`` holds: an entry and the packet's direction (``skb->_nfct`` + ctinfo)."""

    __slots__ = ("entry", "is_reply", "table")

    def __init__(self, entry: CtEntry, is_reply: bool) -> None:
        self.entry = entry
        self.table = entry.table
        self.is_reply = is_reply


class _NoStage:
    """Stands in for a host stage when the table is used without a host (no cost)."""

    def charge(self, pkt: Packet) -> None:
        pass


class Conntrack:
    """The conntrack table of one network namespace.

    Parameters
    ----------
    sim, name:
        The run and the table's name (drop site of ``conntrack_full``).
    max_entries:
        ``nf_conntrack_max``; 0 means unlimited, as in Linux.
    buckets:
        ``nf_conntrack_buckets``: reported as the load factor, and where early drop looks
        (lookups cost the same at any load).
    timeouts:
        Per-state timeouts; ``None`` takes the Linux defaults.
    gc_interval_s:
        Period of the gc pass that reaps expired entries and samples occupancy.
    host:
        The host whose ``conntrack_lookup``/``conntrack_new`` stages :meth:`track` charges;
        :class:`~perfsim.components.netfilter.Netfilter` attaches it.  Without one, no cost.
    eviction_range:
        Buckets early drop scans from the new tuple's (:data:`NF_CT_EVICTION_RANGE` in Linux);
        ``None``: the oldest non-assured entry of the whole table (a coarser approximation).
    """

    def __init__(
        self,
        sim: Sim,
        name: str,
        max_entries: int = 262144,
        buckets: int = 65536,
        timeouts: ConntrackTimeouts | None = None,
        gc_interval_s: float = 1.0,
        host: Host | None = None,
        eviction_range: int | None = None,
    ) -> None:
        check_number(f"{name}.max_entries", max_entries, low=0, high=MAX_ENTRIES, integer=True)
        check_number(f"{name}.buckets", buckets, low=1, high=2**30, integer=True)
        check_number(f"{name}.gc_interval_s", gc_interval_s, low=0, high=3600, low_inclusive=False)
        if eviction_range is not None:
            check_number(f"{name}.eviction_range", eviction_range, low=1, high=2**30, integer=True)
        self.eviction_range = eviction_range
        self._chains: dict[int, dict[CtEntry, None]] = {}
        """Non-assured entries by hash bucket (each under its two tuples), for early drop."""
        self._gc_early_drop = False
        """A full-table insert failed: the next gc pass early-drops (``conntrack_gc_work``)."""
        self.sim = sim
        self.name = name
        self.max_entries = max_entries
        self._limit = max_entries if max_entries else MAX_ENTRIES + 1
        self.buckets = buckets
        self.timeouts = timeouts if timeouts is not None else ConntrackTimeouts()
        self._timeout = self.timeouts.by_state()
        self.gc_interval_s = float(gc_interval_s)
        self._table: dict[FlowKey, CtEntry] = {}
        self._unassured: dict[CtEntry, None] = {}  # insertion order = age (early_drop victims)
        self._heap: list[tuple[float, int, CtEntry]] = []
        self._seq = 0
        self._n = 0
        self._gc_running = False
        self._lookup_stage: Any = _NoStage()
        self._new_stage: Any = _NoStage()
        self.host: Host | None = None
        if host is not None:
            self.attach(host)
        self.max_count = 0
        self.inserted = 0
        self.found = 0
        self.expired = 0
        self.early_drops = 0
        self.insert_failed = 0
        self.samples: list[tuple[float, int]] = []
        """``(t_s, count)`` after each gc pass: the table occupancy over time."""
        sim.register(name, self)

    def attach(self, host: Host) -> None:
        """Charge :meth:`track`'s lookups and inserts to ``host``'s stages."""
        from perfsim.errors import ConfigError

        if self.host is not None and self.host is not host:
            allowed = f"the host it is on ({self.host.name})"
            raise ConfigError(f"{self.name}.host", host.name, allowed)
        self.host = host
        self._lookup_stage = host.stage("conntrack_lookup")
        self._new_stage = host.stage("conntrack_new")

    def held_packets(self) -> int:
        return 0

    # -- table operations -----------------------------------------------------------------
    def count(self) -> int:
        """Entries in the table (``nf_conntrack_count``: unreaped expired ones included)."""
        return self._n

    def lookup(self, pkt: Packet) -> tuple[CtEntry, bool] | None:
        """The live entry ``pkt.flow`` belongs to and whether it is a reply; no cost, no refresh."""
        flow = pkt.flow
        e = self._table.get(flow)
        if e is None:
            return None
        if e.expires_s <= self.sim.env._now:
            self._remove(e)
            self.expired += 1
            return None
        return e, flow != e.orig

    def new(self, pkt: Packet, reply_tuple: FlowKey) -> CtEntry | None:
        """Insert an entry for ``pkt.flow`` (the original tuple) with ``reply_tuple``.

        On a full table: reap expired entries, then early-drop the oldest non-assured one;
        if there is none, drop ``pkt`` (``conntrack_full``) and return ``None``.  A tuple
        already held by a live entry (a NAT clash) drops it too (``conntrack_clash``).
        """
        now = self.sim.env._now
        table = self._table
        orig = pkt.flow
        for key in (orig, reply_tuple):
            other = table.get(key)
            if other is not None:
                if other.expires_s > now:
                    self.insert_failed += 1
                    self.sim.drop(pkt, self.name, "conntrack_clash")
                    return None
                self._remove(other)
                self.expired += 1
        if self._n >= self._limit:
            self.gc()
            if self._n >= self._limit and not self._early_drop(orig):
                self._gc_early_drop = True
                self.insert_failed += 1
                self.sim.drop(pkt, self.name, "conntrack_full")
                return None
        proto = orig.proto
        if proto == PROTO_TCP:
            state = SYN_SENT if pkt.kind == SYN else ESTABLISHED
        elif proto == PROTO_UDP:
            state = UDP_UNREPLIED
        elif proto == PROTO_ICMP:
            state = ICMP
        else:
            state = GENERIC
        e = CtEntry(self, orig, reply_tuple, state, now)
        e.expires_s = now + self._timeout[state]
        table[orig] = e
        table[reply_tuple] = e
        self._unassured[e] = None
        if self.eviction_range is not None:
            self._chain_add(e, orig)
            self._chain_add(e, reply_tuple)
        self._n += 1
        self.inserted += 1
        self.max_count = max(self.max_count, self._n)
        self._seq += 1
        heappush(self._heap, (e.expires_s, self._seq, e))
        e.heap_s = e.expires_s
        if not self._gc_running:
            self._gc_running = True
            self.sim.call_in(self.gc_interval_s, self._gc_tick, None)
        return e

    def track(self, pkt: Packet) -> CtRef | None:
        """``nf_conntrack_in``: find or create the entry of ``pkt``, update its state and expiry.

        Sets and returns ``pkt.ct`` (a :class:`CtRef`); a packet already tracked by this table
        is returned as is (no cost).  ``None``: the packet was dropped (table full or clash).
        """
        cur: CtRef | None = pkt.ct
        if cur is not None and cur.table is self:
            return cur
        flow = pkt.flow
        now = self.sim.env._now
        e = self._table.get(flow)
        if e is not None:
            if e.expires_s <= now:
                self._remove(e)
                self.expired += 1
                e = None
            elif pkt.kind == SYN and e.state >= TIME_WAIT and e.state <= CLOSE and flow == e.orig:
                self._remove(e)  # RFC 1122 reopen: nf_ct_kill, then the SYN is tracked anew
                e = None
        if e is None:
            e = self.new(pkt, flow.reversed())
            if e is None:
                return None
            self._new_stage.charge(pkt)
            is_reply = False
        else:
            self._lookup_stage.charge(pkt)
            self.found += 1
            is_reply = flow != e.orig
        self._update(e, is_reply, pkt.kind, now)
        ref = e.ref_reply if is_reply else e.ref_orig
        pkt.ct = ref
        return ref

    def _update(self, e: CtEntry, is_reply: bool, kind: int, now: float) -> None:
        s = e.state
        if is_reply and not e.seen_reply:
            e.seen_reply = True
            if s == UDP_UNREPLIED:
                s = UDP_REPLIED
                self._assure(e)
        if s <= CLOSE:  # TCP
            if kind == FIN:
                e.fin_dirs |= 2 if is_reply else 1
                if e.fin_dirs == 3:
                    s = TIME_WAIT
                elif s in (SYN_RECV, ESTABLISHED):
                    s = FIN_WAIT
            elif kind == SYNACK:
                if is_reply and s == SYN_SENT:
                    s = SYN_RECV
            elif kind != SYN:  # ACK or data
                if s == SYN_RECV and not is_reply:
                    s = ESTABLISHED
                elif s == FIN_WAIT and not e.fin_dirs & (2 if is_reply else 1):
                    s = CLOSE_WAIT  # the other side acknowledged the FIN
            if s == ESTABLISHED and e.seen_reply and not e.assured:
                self._assure(e)
        e.state = s
        expires = e.expires_s = now + self._timeout[s]
        if expires < e.heap_s:  # a shorter timeout: the gc must look earlier
            self._seq += 1
            heappush(self._heap, (expires, self._seq, e))
            e.heap_s = expires

    def _assure(self, e: CtEntry) -> None:
        e.assured = True
        self._forget_unassured(e)

    def _forget_unassured(self, e: CtEntry) -> None:
        if e in self._unassured:
            del self._unassured[e]
            if self.eviction_range is not None:
                self._chain_discard(e, e.orig)
                self._chain_discard(e, e.reply)

    def _bucket(self, key: FlowKey) -> int:
        """The hash bucket of a tuple (``hash_conntrack``; here :func:`flow_hash`)."""
        return flow_hash(key) % self.buckets

    def _chain_add(self, e: CtEntry, key: FlowKey) -> None:
        b = self._bucket(key)
        chain = self._chains.get(b)
        if chain is None:
            chain = self._chains[b] = {}
        chain[e] = None

    def _chain_discard(self, e: CtEntry, key: FlowKey) -> None:
        b = self._bucket(key)
        chain = self._chains.get(b)
        if chain is not None:
            chain.pop(e, None)
            if not chain:
                del self._chains[b]

    def tuple_taken(self, key: FlowKey, entry: CtEntry | None = None) -> bool:
        """Whether a live entry other than ``entry`` holds ``key`` (``nf_nat_used_tuple``)."""
        other = self._table.get(key)
        if other is None or other is entry:
            return False
        if other.expires_s <= self.sim.env._now:
            self._remove(other)
            self.expired += 1
            return False
        return True

    def set_reply(self, e: CtEntry, reply: FlowKey) -> bool:
        """Give ``e`` a new reply tuple (a NAT binding); False if a live entry holds it."""
        if reply == e.reply:
            return True
        if self.tuple_taken(reply, e):
            return False
        table = self._table
        if table.get(e.reply) is e and e.reply != e.orig:
            del table[e.reply]
        if self.eviction_range is not None and e in self._unassured:
            self._chain_discard(e, e.reply)
            self._chain_add(e, reply)
        e.reply = reply
        table[reply] = e
        o = e.orig
        e.nat_dst = reply.src_ip != o.dst_ip or reply.sport != o.dport
        e.nat_src = reply.dst_ip != o.src_ip or reply.dport != o.sport
        return True

    def _remove(self, e: CtEntry) -> None:
        if e.dead:
            return
        e.dead = True
        table = self._table
        if table.get(e.orig) is e:
            del table[e.orig]
        if table.get(e.reply) is e:
            del table[e.reply]
        self._forget_unassured(e)
        self._n -= 1

    def _early_drop(self, orig: FlowKey) -> bool:
        """``early_drop``: free room for ``orig`` by killing non-assured entries; False if none
        was found where the kernel looks (see the module docstring)."""
        if self.eviction_range is None:
            for victim in self._unassured:
                self._remove(victim)
                self.early_drops += 1
                return True
            return False
        first = self._bucket(orig)
        for i in range(min(self.eviction_range, self.buckets)):
            chain = self._chains.get((first + i) % self.buckets)
            if chain:
                for victim in list(chain):  # early_drop_list kills every one of the chain
                    self._remove(victim)
                    self.early_drops += 1
                return True
        return False

    def _gc_worker_early_drop(self) -> int:
        """The gc pass after a failed insert: kill what ``gc_worker_can_early_drop`` accepts
        (non-assured entries, closing TCP ones), oldest first, while the table holds at least
        :data:`GC_EARLY_DROP_PERCENT` % of the maximum; return how many."""
        self._gc_early_drop = False
        floor = self.max_entries // 100 * GC_EARLY_DROP_PERCENT  # 0 below 100 entries: off, as in Linux
        if floor == 0 or self._n < floor:
            return 0
        killed = 0
        seen: set[int] = set()
        for e in list(self._table.values()):
            if self._n < floor:
                break
            if id(e) in seen or e.dead:
                continue
            seen.add(id(e))
            if not e.assured or (e.orig.proto == PROTO_TCP and e.state in _GC_EARLY_DROP_TCP):
                self._remove(e)
                killed += 1
        self.early_drops += killed
        return killed

    # -- garbage collection ---------------------------------------------------------------
    def gc(self) -> int:
        """Remove every expired entry now; return how many were removed."""
        now = self.sim.env._now
        heap = self._heap
        removed = 0
        while heap and heap[0][0] <= now:
            t, seq, e = heappop(heap)
            if e.dead:
                continue
            if e.expires_s > now:
                if t == e.heap_s:  # else a later copy, superseded by an earlier push
                    heappush(heap, (e.expires_s, seq, e))
                    e.heap_s = e.expires_s
                continue
            self._remove(e)
            removed += 1
        self.expired += removed
        return removed

    def _gc_tick(self, _arg: object) -> None:
        self.gc()
        if self._gc_early_drop:
            self._gc_worker_early_drop()
        self.samples.append((self.sim.env._now, self._n))
        if self._n:
            self.sim.call_in(self.gc_interval_s, self._gc_tick, None)
        else:
            self._gc_running = False
            self._heap.clear()  # only dead entries can be left

    # -- metrics --------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        """Counters for the metrics frame (``conntrack -S`` plus occupancy)."""
        return {
            "count": self._n,
            "max_count": self.max_count,
            "max_entries": self.max_entries,
            "load_factor": self._n / self.buckets,
            "inserted": self.inserted,
            "found": self.found,
            "expired": self.expired,
            "early_drops": self.early_drops,
            "insert_failed": self.insert_failed,
        }

    def __repr__(self) -> str:
        return f"Conntrack({self.name!r}, count={self._n}/{self.max_entries})"
