"""NeighbourTable: ARP resolution timing, queueing, failure, table limits and gc."""

from __future__ import annotations

from typing import Any

import pytest

from perfsim.components.neighbour import NeighbourTable, NudState
from perfsim.core.addr import ip
from perfsim.core.packet import FlowKey, Packet
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError

DST = ip("10.0.0.2")
MAC = 0x02420A000002
FLOW = FlowKey(ip("10.0.0.1"), DST, 17, 1000, 2000)


class Dev:
    name = "eth0"


DEV = Dev()


class Owner:
    """Records ``(time, packet id, site, reason)`` of every drop of the packets it owns."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.drops: list[tuple[float, int, str, str]] = []

    def on_drop(self, pkt: Packet, site: str, reason: str) -> None:
        self.drops.append((self.sim.now, pkt.id, site, reason))


def make_table(sim: Sim, **kw: Any) -> tuple[NeighbourTable, list[tuple[float, int, str]]]:
    table = NeighbourTable(sim, "n", **kw)
    calls: list[tuple[float, int, str]] = []
    table.solicit = lambda target, dev: calls.append((sim.now, target, dev.name))
    return table, calls


def packets(sim: Sim, n: int, owner: Owner | None = None) -> list[Packet]:
    return [sim.new_packet(FLOW, 100, 42, owner=owner) for _ in range(n)]


def balanced(sim: Sim) -> bool:
    return sim.created == sim.delivered + sim.dropped + sim.in_flight()


def test_miss_solicits_at_0_1_2_s_then_fails_at_3_s(sim: Sim) -> None:
    """3 ARP requests, one per second; at 3 s every queued packet is dropped neigh_failed."""
    table, calls = make_table(sim)
    owner = Owner(sim)
    p1, p2 = packets(sim, 2, owner)
    assert table.lookup(DST) is None
    assert table.queue(DST, p1, DEV) is True
    assert table.queue(DST, p2, DEV) is True
    assert calls == [(0.0, DST, "eth0")]  # exactly once for both packets
    assert table.held_packets() == 2
    assert table.state(DST) is NudState.INCOMPLETE
    assert balanced(sim)
    sim.run(2.999)
    assert calls == [(0.0, DST, "eth0"), (1.0, DST, "eth0"), (2.0, DST, "eth0")]
    assert table.held_packets() == 2
    assert owner.drops == []
    sim.run(10.0)
    assert owner.drops == [(3.0, p1.id, "n", "neigh_failed"), (3.0, p2.id, "n", "neigh_failed")]
    assert sim.drops[("n", "neigh_failed")] == 2
    assert (table.failed, table.misses, table.held_packets()) == (1, 2, 0)
    assert table.state(DST) is NudState.FAILED
    assert table.lookup(DST) is None
    assert len(calls) == 3
    assert balanced(sim)


def test_reply_at_half_a_millisecond_releases_packets_in_order(sim: Sim) -> None:
    """confirm() hands back the queued packets oldest first and stops re-solicitation."""
    table, calls = make_table(sim)
    pkts = packets(sim, 3)
    for p in pkts:
        table.queue(DST, p, DEV)
    released: list[Packet] = []
    sim.call_at(0.5e-3, lambda _: released.extend(table.confirm(DST, MAC)), None)
    sim.run(10.0)
    assert [p.id for p in released] == [p.id for p in pkts]
    assert calls == [(0.0, DST, "eth0")]  # the timers at 1 s and 2 s did nothing
    assert sim.dropped == 0
    assert table.held_packets() == 0
    assert table.lookup(DST) == MAC
    assert table.failed == 0
    assert sim.created == sim.delivered + sim.dropped + sim.in_flight() + len(released)
    for p in released:
        sim.consume(p)
    assert balanced(sim)


def test_unres_qlen_drops_the_oldest(sim: Sim) -> None:
    table, _ = make_table(sim, unres_qlen=2)
    owner = Owner(sim)
    p1, p2, p3, p4 = packets(sim, 4, owner)
    assert table.queue(DST, p1, DEV)
    assert table.queue(DST, p2, DEV)
    assert table.queue(DST, p3, DEV)  # the new one is queued, p1 makes room
    assert owner.drops == [(0.0, p1.id, "n", "unres_queue_full")]
    assert table.held_packets() == 2
    assert table.queue(DST, p4, DEV)
    assert [d[1] for d in owner.drops] == [p1.id, p2.id]
    assert table.unres_discards == 2
    assert balanced(sim)
    released = table.confirm(DST, MAC)
    assert released == [p3, p4]
    for p in released:
        sim.consume(p)
    assert balanced(sim)


def test_full_table_overflows_until_entries_are_5_s_old(sim: Sim) -> None:
    """gc_thresh3=4 with 4 fresh entries refuses a 5th; forced gc makes room after 5 s."""
    table, calls = make_table(sim, gc_thresh3=4)
    owner = Owner(sim)
    ips = [ip(f"10.0.1.{i}") for i in range(1, 5)]
    for i, a in enumerate(ips):
        assert table.confirm(a, MAC + i) == []
    assert len(table) == 4
    new = ip("10.0.2.1")
    (p1,) = packets(sim, 1, owner)
    assert table.queue(new, p1, DEV) is False
    assert owner.drops == [(0.0, p1.id, "n", "neigh_table_full")]
    assert (table.overflows, len(table), calls) == (1, 4, [])
    sim.run(5.0)  # exactly 5 s old is not older than 5 s
    (p2,) = packets(sim, 1, owner)
    assert table.queue(new, p2, DEV) is False
    assert table.overflows == 2
    sim.run(6.0)
    (p3,) = packets(sim, 1, owner)
    assert table.queue(new, p3, DEV) is True
    assert calls == [(6.0, new, "eth0")]
    # gc_thresh2 (512) > gc_thresh3: like the kernel, forced gc looks at one entry, the oldest.
    assert [e[0] for e in table.entries()] == ips[1:] + [new]
    assert table.held_packets() == 1
    assert sim.drops[("n", "neigh_table_full")] == 2
    assert table.max_size == 4
    assert balanced(sim)


def test_forced_gc_shrinks_to_gc_thresh2(sim: Sim) -> None:
    """With gc_thresh2=2, a forced gc removes n - gc_thresh2 = 2 old entries, oldest first."""
    table, _ = make_table(sim, gc_thresh1=1, gc_thresh2=2, gc_thresh3=4)
    ips = [ip(f"10.0.1.{i}") for i in range(1, 5)]
    for a in ips[:2]:
        table.confirm(a, MAC)
    sim.run(1.0)
    for a in ips[2:]:  # above gc_thresh2, but the last flush was < 5 s ago: no forced gc
        table.confirm(a, MAC)
    assert table.forced_gc_runs == 0
    sim.run(5.5)  # entries from t=0 are old, those from t=1 are not
    (p,) = packets(sim, 1)
    assert table.queue(ip("10.0.2.1"), p, DEV)
    assert table.forced_gc_runs == 1
    assert [e[0] for e in table.entries()] == [*ips[2:], ip("10.0.2.1")]
    assert table.gc_removed == 2


def test_gc_above_thresh2_runs_at_most_every_5_s(sim: Sim) -> None:
    """Above gc_thresh2 a new entry triggers forced gc if the last one was more than 5 s ago."""
    table, _ = make_table(sim, gc_thresh2=2, gc_thresh3=10)
    a, b, c, d = (ip(f"10.0.1.{i}") for i in range(1, 5))
    table.confirm(a, MAC)
    table.confirm(b, MAC)
    table.confirm(c, MAC)  # t=0: last flush (table creation) was 0 s ago: no gc
    assert (len(table), table.forced_gc_runs) == (3, 0)
    sim.run(6.0)
    table.confirm(d, MAC)  # max_clean = 3 - 2 = 1: the oldest goes
    assert table.forced_gc_runs == 1
    assert [e[0] for e in table.entries()] == [b, c, d]


def test_permanent_entries_are_never_collected(sim: Sim) -> None:
    table, _ = make_table(sim, gc_thresh1=1, gc_thresh2=0, gc_thresh3=2)
    perm = [ip(f"10.0.9.{i}") for i in range(1, 4)]
    for i, a in enumerate(perm):
        assert table.add_permanent(a, MAC + i) == []
    table.confirm(ip("10.0.1.1"), MAC)
    table.confirm(ip("10.0.1.2"), MAC)
    assert (len(table), table.gc_entries) == (5, 2)  # permanent ones do not count
    assert table.confirm(perm[0], MAC + 99) == []  # ARP does not override PERMANENT
    sim.run(100.0)  # periodic gc ran every 15 s: the STALE unused entries went at 75 s
    assert [e[0] for e in table.entries()] == perm
    table.confirm(ip("10.0.2.2"), MAC)
    table.confirm(ip("10.0.2.3"), MAC)
    sim.run(106.0)
    (p,) = packets(sim, 1)
    # Full: forced gc (max_clean = 2 - gc_thresh2 = 2) takes both old entries, no permanent one.
    assert table.queue(ip("10.0.2.1"), p, DEV)
    assert [e[0] for e in table.entries()] == [*perm, ip("10.0.2.1")]
    assert [table.lookup(a) for a in perm] == [MAC, MAC + 1, MAC + 2]
    assert all(table.state(a) is NudState.PERMANENT for a in perm)
    assert balanced(sim)


def test_periodic_gc_removes_stale_unused_entries(sim: Sim) -> None:
    """REACHABLE for 30 s, then STALE (still used); gc at 75 s removes it, unused for > 60 s."""
    table, _ = make_table(sim, gc_thresh1=1)
    table.confirm(DST, MAC)
    sim.run(30.0)
    assert table.state(DST) is NudState.REACHABLE
    sim.run(31.0)
    assert table.state(DST) is NudState.STALE
    sim.run(74.0)
    assert table.state(DST) is NudState.STALE
    sim.run(76.0)
    assert table.state(DST) is None
    assert table.gc_removed == 1


def test_used_stale_entry_survives_periodic_gc(sim: Sim) -> None:
    table, _ = make_table(sim, gc_thresh1=1)
    table.confirm(DST, MAC)
    sim.run(50.0)
    assert table.lookup(DST) == MAC  # STALE but usable; marks it used at 50 s
    sim.run(106.0)  # gc at 105 s: unused for 55 s
    assert table.state(DST) is NudState.STALE
    sim.run(121.0)  # gc at 120 s: unused for 70 s
    assert table.state(DST) is None


def test_failed_entry_restarts_resolution(sim: Sim) -> None:
    table, calls = make_table(sim)
    (p1,) = packets(sim, 1)
    table.queue(DST, p1, DEV)
    sim.run(4.0)
    (p2,) = packets(sim, 1)
    assert table.lookup(DST) is None
    assert table.queue(DST, p2, DEV)
    assert table.state(DST) is NudState.INCOMPLETE
    assert [c[0] for c in calls] == [0.0, 1.0, 2.0, 4.0]
    sim.run(4.5)
    assert table.confirm(DST, MAC) == [p2]
    sim.consume(p2)
    sim.run(10.0)
    assert [c[0] for c in calls] == [0.0, 1.0, 2.0, 4.0]
    assert table.failed == 1
    assert balanced(sim)


def test_timers_of_a_removed_entry_do_nothing(sim: Sim) -> None:
    """An entry deleted and recreated gets its own schedule; the old timers are ignored."""
    table, calls = make_table(sim)
    owner = Owner(sim)
    (p1,) = packets(sim, 1, owner)
    table.queue(DST, p1, DEV)
    sim.run(0.5)
    assert table.remove(DST)
    assert owner.drops == [(0.5, p1.id, "n", "neigh_flushed")]
    (p2,) = packets(sim, 1, owner)
    table.queue(DST, p2, DEV)
    sim.run(10.0)
    assert [c[0] for c in calls] == [0.0, 0.5, 1.5, 2.5]
    assert owner.drops[1] == (3.5, p2.id, "n", "neigh_failed")
    assert balanced(sim)


def test_permanent_entry_releases_packets_being_resolved(sim: Sim) -> None:
    table, calls = make_table(sim)
    (p,) = packets(sim, 1)
    table.queue(DST, p, DEV)
    assert table.add_permanent(DST, MAC) == [p]
    sim.consume(p)
    sim.run(10.0)
    assert (len(calls), table.lookup(DST), table.gc_entries) == (1, MAC, 0)
    assert balanced(sim)


def test_confirm_on_full_table_is_ignored(sim: Sim) -> None:
    table, _ = make_table(sim, gc_thresh3=1)
    table.confirm(ip("10.0.1.1"), MAC)
    assert table.confirm(ip("10.0.1.2"), MAC) == []
    assert table.lookup(ip("10.0.1.2")) is None
    assert (len(table), table.overflows) == (1, 0)


def test_mcast_solicit_zero_fails_at_once(sim: Sim) -> None:
    table, calls = make_table(sim, mcast_solicit=0)
    (p,) = packets(sim, 1)
    assert table.queue(DST, p, DEV) is False
    assert sim.drops[("n", "neigh_failed")] == 1
    assert (calls, table.state(DST)) == ([], NudState.FAILED)


def test_queue_for_a_resolved_address_is_a_bug(sim: Sim) -> None:
    table, _ = make_table(sim)
    table.confirm(DST, MAC)
    with pytest.raises(RuntimeError, match="call lookup"):
        table.queue(DST, packets(sim, 1)[0], DEV)


def test_table_is_registered_and_counts_held_packets(sim: Sim) -> None:
    table, _ = make_table(sim)
    assert sim.elements["n"] is table
    for i in range(3):
        table.queue(ip(f"10.0.3.{i}"), packets(sim, 1)[0], DEV)
    table.queue(ip("10.0.3.0"), packets(sim, 1)[0], DEV)
    assert table.held_packets() == 4
    assert sim.in_flight() == 4
    assert balanced(sim)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"gc_thresh1": -1}, "gc_thresh1"),
        ({"gc_thresh2": 1.5}, "gc_thresh2"),
        ({"gc_thresh3": 0}, "gc_thresh3"),
        ({"base_reachable_s": 0}, "base_reachable_s"),
        ({"gc_stale_s": -1.0}, "gc_stale_s"),
        ({"retrans_s": 0.0}, "retrans_s"),
        ({"retrans_s": float("nan")}, "retrans_s"),
        ({"mcast_solicit": -1}, "mcast_solicit"),
        ({"unres_qlen": "many"}, "unres_qlen"),
    ],
)
def test_bad_parameters_name_the_field(sim: Sim, kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^n\.{field}: got .*; allowed: "):
        NeighbourTable(sim, "n", **kw)


def test_bad_permanent_entry_names_the_field(sim: Sim) -> None:
    table = NeighbourTable(sim, "n")
    with pytest.raises(ConfigError, match=r"^n\.permanent\[10\.0\.0\.2\]\.mac: got "):
        table.add_permanent(DST, 1 << 48)
    with pytest.raises(ConfigError, match=r"^n\.permanent\[-1\]: got -1"):
        table.add_permanent(-1, MAC)
