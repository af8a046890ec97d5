"""Issue 6, conntrack: under ``tcp_crr`` the table fills at exactly ``nf_conntrack_max``, new
connections are dropped (``conntrack_full``) from the moment the limit says and not before,
and entries leave by their timeouts — so the table a workload needs is rate × lifetime.

Expected sizes come from the configured limits and the structure of each datapath (how many
entries one connection makes in a host's table); the only measured input is the connection
rate ``R`` of a run whose table is unlimited, which the limit cannot influence before it is hit.
"""

from __future__ import annotations

import pytest

from perfsim.components.conntrack import (
    ESTABLISHED,
    GC_EARLY_DROP_PERCENT,
    SYN_SENT,
    TIME_WAIT,
    Conntrack,
    ConntrackTimeouts,
)
from perfsim.core.addr import ip
from perfsim.core.cpu import flow_hash
from perfsim.core.packet import ACK, FIN, SYN, SYNACK, FlowKey, Packet
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.experiment.simulate import Experiment, simulate
from perfsim.topology.cluster import ClusterSpec
from tests.scale.helpers import Live, one_to_one, start

FLOWS = 4
UNLIMITED = 1 << 20
ENTRIES_PER_CONNECTION = {"host": 1, "bridge": 1, "overlay": 2}
"""Entries one ``tcp_crr`` connection makes in each host's table.  host: the TCP 5-tuple.
bridge: the same tuple (br_netfilter and the routed hooks share the root namespace's table;
MASQUERADE / DNAT only rewrite its reply tuple).  overlay: the inner TCP packets are hidden in
VXLAN, and each direction of the connection leaves with its own outer UDP source port (hashed
from the inner flow), so a host sees two new outer UDP flows per connection."""


def crr(mode: str, n_max: int, timeouts: ConntrackTimeouts | None = None) -> Experiment:
    cluster = ClusterSpec(hosts=2, cores=4, nf_conntrack_max=n_max, conntrack_timeouts=timeouts)
    return Experiment(cluster=cluster, mode=mode, containers_per_host=FLOWS, flows=one_to_one("tcp_crr", FLOWS, 64),
                      duration_s=1.0, warmup_s=0.0)


def connection_rate(mode: str, until_s: float, timeouts: ConntrackTimeouts | None = None) -> tuple[float, Live]:
    """Connections per second of the workload with an unlimited table, from t = 0."""
    ref = start(crr(mode, UNLIMITED, timeouts))
    ref.sim.run(until_s)
    return ref.connections() / until_s, ref


@pytest.mark.parametrize("mode", ["host", "bridge", "overlay"])
def test_table_fills_at_nf_conntrack_max_and_drops_start_when_the_limit_says(mode: str) -> None:
    e = ENTRIES_PER_CONNECTION[mode]
    n_max = 48 * e
    rate, ref = connection_rate(mode, 0.01)
    # the structure: each connection adds e entries to each host's table (+ those in flight)
    for h in (0, 1):
        assert abs(ref.conntrack(h).inserted - e * ref.connections()) <= e * FLOWS
    assert ref.conntrack(0).count() > n_max  # the unlimited run goes past the limit
    t_full = n_max / (rate * e)  # predicted: the table reaches nf_conntrack_max then

    live = start(crr(mode, n_max))
    step = t_full / 100
    t, first_drop, most = 0.0, None, 0
    while t < 1.6 * t_full:
        t += step
        live.sim.run(t)
        most = max(most, live.conntrack(0).count(), live.conntrack(1).count())
        if first_drop is None and live.drops("conntrack_full"):
            first_drop = t
    assert first_drop is not None
    assert 0.9 * t_full <= first_drop <= 1.1 * t_full, (first_drop, t_full)
    assert most == n_max  # reached, never exceeded
    assert live.conntrack(0).count() == n_max  # and stays full: TIME_WAIT lasts 120 s
    # every drop is the table's, counted as a failed insert where it happened
    assert set(live.sim.drops) <= {(f"h{h}.conntrack", "conntrack_full") for h in (0, 1)}
    for site, n in live.drops("conntrack_full").items():
        assert live.iptables(int(site[1])).conntrack.insert_failed == n  # type: ignore[union-attr]
    # new connections are what is refused: each flow's next SYN is dropped once, and waits for
    # its 1 s retransmission timer.  Mostly at the client's table, which fills first (its entry
    # is made at OUTPUT, before the server's); but with several entries per connection
    # (overlay's inner and outer flows) a SYN admitted by the client's table can find the
    # server's full — its entries then hold a place in the client's table, and n_max / e - 1
    # connections get through instead of n_max / e
    drops = live.drops("conntrack_full")
    assert sum(drops.values()) == FLOWS
    assert drops.get("h0.conntrack", 0) >= FLOWS - 1
    assert live.connections() == n_max // e - (FLOWS - drops.get("h0.conntrack", 0))


def test_simulate_reports_the_full_table_in_drops_and_tables() -> None:
    """The same effect through ``simulate``'s frames: drops by site and reason, and the table
    occupancy capped at the limit."""
    n_max = 48
    out = simulate(Experiment(
        cluster=ClusterSpec(hosts=2, cores=4, nf_conntrack_max=n_max), mode="host", containers_per_host=FLOWS,
        flows=one_to_one("tcp_crr", FLOWS, 64), duration_s=0.01, warmup_s=0.001,
    ))
    assert set(out.drops["reason"]) == {"conntrack_full"}
    ct = out.tables[out.tables["table"] == "conntrack"]
    assert ct["entries"].max() == n_max
    assert (ct["limit"] == n_max).all()
    assert (ct["entries"] <= ct["limit"]).all()


def live_entries(live: Live, h: int) -> int:
    ct = live.conntrack(h)
    ct.gc()  # expired entries still count in nf_conntrack_count until reaped
    return ct.count()


def test_entries_expire_after_the_time_wait_timeout_so_the_table_holds_rate_times_lifetime() -> None:
    """Little's law: live entries = R × (connection time + TIME_WAIT).  Two TIME_WAIT timeouts
    T1 < T2 must differ by exactly R × (T2 - T1) entries; with T = 0 a flow holds one entry
    (its connection in progress), so the table holds about FLOWS + R × T."""
    warm, window, samples = 0.004, 0.008, 16
    held = {}
    for tw in (1e-3, 3e-3):
        live = start(crr("host", UNLIMITED, ConntrackTimeouts(tcp_time_wait_s=tw)))
        live.sim.run(warm)
        c0 = live.connections()
        counts = []
        for k in range(1, samples + 1):
            live.sim.run(warm + k * window / samples)
            counts.append(live_entries(live, 1))
        rate = (live.connections() - c0) / window
        held[tw] = (rate, sum(counts) / samples)
        assert live.conntrack(1).expired > 0.5 * live.conntrack(1).inserted  # entries do leave
        assert held[tw][1] == pytest.approx(FLOWS + rate * tw, rel=0.15)
    (r1, l1), (r2, l2) = held[1e-3], held[3e-3]
    assert l2 - l1 == pytest.approx((r1 + r2) / 2 * 2e-3, rel=0.15)


def test_a_table_smaller_than_rate_times_lifetime_drops_a_larger_one_does_not() -> None:
    tw = 3e-3
    rate, _ = connection_rate("host", 0.006, ConntrackTimeouts(tcp_time_wait_s=tw))
    need = FLOWS + rate * tw  # predicted live entries
    small = start(crr("host", int(0.6 * need), ConntrackTimeouts(tcp_time_wait_s=tw)))
    large = start(crr("host", int(1.4 * need), ConntrackTimeouts(tcp_time_wait_s=tw)))
    for live in (small, large):
        live.sim.run(0.015)
    assert small.drops("conntrack_full")
    assert not large.drops("conntrack_full")
    assert large.connections() > 3 * large.conntrack(1).max_entries  # entries were recycled


# -- the kernel's early drop, on the component -----------------------------------------------
A, B = ip("10.0.0.1"), ip("10.0.0.2")


def _pkt(sim: Sim, flow: FlowKey, kind: int) -> Packet:
    return sim.new_packet(flow, 0, 66, kind=kind)


def _closed(sim: Sim, ct: Conntrack, flow: FlowKey) -> None:
    r = flow.reversed()
    for f, kind in ((flow, SYN), (r, SYNACK), (flow, ACK), (flow, FIN), (r, FIN), (flow, ACK)):
        assert ct.track(_pkt(sim, f, kind)) is not None


def _bucket(ct: Conntrack, key: FlowKey) -> int:
    return flow_hash(key) % ct.buckets


def test_early_drop_looks_only_at_the_eight_buckets_from_the_new_tuples() -> None:
    """A full table of handshakes in flight (not assured): a SYN whose 8-bucket window holds
    one of them evicts it; a SYN whose window holds none is dropped, as Linux's early_drop."""
    sim = Sim(seed=0)
    ct = Conntrack(sim, "ct", max_entries=4, buckets=1024, eviction_range=8)
    flows = [FlowKey(A, B, 6, 40000 + i, 80) for i in range(4)]
    for f in flows:
        assert ct.track(_pkt(sim, f, SYN)).entry.state == SYN_SENT  # type: ignore[union-attr]
    taken = {(_bucket(ct, f) + d) % 1024 for f in flows for d in range(-7, 1)}
    taken |= {(_bucket(ct, f.reversed()) + d) % 1024 for f in flows for d in range(-7, 1)}
    far = next(f for f in (FlowKey(A, B, 6, p, 80) for p in range(41000, 60000)) if _bucket(ct, f) not in taken)
    assert ct.track(_pkt(sim, far, SYN)) is None
    assert (ct.insert_failed, ct.early_drops, ct.count()) == (1, 0, 4)
    victim = flows[2]
    near = next(f for f in (FlowKey(A, B, 6, p, 80) for p in range(41000, 60000))
                if (_bucket(ct, victim) - _bucket(ct, f)) % 1024 < 8
                and all((_bucket(ct, o) - _bucket(ct, f)) % 1024 >= 8 and
                        (_bucket(ct, o.reversed()) - _bucket(ct, f)) % 1024 >= 8 for o in flows if o != victim)
                and (_bucket(ct, victim.reversed()) - _bucket(ct, f)) % 1024 >= (_bucket(ct, victim) - _bucket(ct, f)) % 1024)
    assert ct.track(_pkt(sim, near, SYN)) is not None
    assert (ct.early_drops, ct.count()) == (1, 4)
    assert ct.lookup(_pkt(sim, victim, ACK)) is None


def test_after_a_failed_insert_the_next_gc_pass_early_drops_closing_connections_to_95_percent() -> None:
    """nf_conntrack_core.c: a table-full drop flags the gc worker, whose next pass kills
    non-assured entries and TCP ones in TIME_WAIT/FIN_WAIT/... while the table holds at least
    95 % of nf_conntrack_max — established connections are kept."""
    sim = Sim(seed=0)
    n_max = 200
    ct = Conntrack(sim, "ct", max_entries=n_max, eviction_range=8, gc_interval_s=1.0)
    for i in range(150):
        _closed(sim, ct, FlowKey(A, B, 6, 30000 + i, 80))  # TIME_WAIT, assured, 120 s to live
    established = [FlowKey(A, B, 6, 50000 + i, 80) for i in range(n_max - 150)]
    for f in established:
        for g, kind in ((f, SYN), (f.reversed(), SYNACK), (f, ACK)):
            ct.track(_pkt(sim, g, kind))
    assert ct.count() == n_max
    late = FlowKey(A, B, 6, 60000, 80)
    assert ct.track(_pkt(sim, late, SYN)) is None
    assert ct.insert_failed == 1
    sim.run(1.5)  # the next gc pass (at 1 s)
    floor = n_max // 100 * GC_EARLY_DROP_PERCENT
    assert ct.count() == floor - 1
    assert ct.early_drops == n_max - floor + 1
    for f in established:  # assured and ESTABLISHED: not a candidate
        found = ct.lookup(_pkt(sim, f, ACK))
        assert found is not None
        assert found[0].state == ESTABLISHED
    ref = ct.track(_pkt(sim, late, SYN))
    assert ref is not None
    assert ref.entry.state == SYN_SENT
    sim.run(3.5)  # no failure since: later passes only reap what expired (nothing yet)
    assert ct.count() == floor
    assert ct.early_drops == n_max - floor + 1
    closing = [ct.lookup(_pkt(sim, FlowKey(A, B, 6, 30000 + i, 80), ACK)) for i in range(150)]
    kept = [found[0] for found in closing if found is not None]
    assert len(kept) == 150 - (n_max - floor + 1)
    assert {e.state for e in kept} == {TIME_WAIT}


def test_below_100_entries_the_gc_early_drop_is_off_as_in_linux() -> None:
    sim = Sim(seed=0)
    ct = Conntrack(sim, "ct", max_entries=50, eviction_range=8)
    for i in range(50):
        _closed(sim, ct, FlowKey(A, B, 6, 30000 + i, 80))
    assert ct.track(_pkt(sim, FlowKey(A, B, 6, 60000, 80), SYN)) is None
    sim.run(2.0)
    assert (ct.count(), ct.early_drops) == (50, 0)  # nf_conntrack_max / 100 * 95 == 0


def test_cluster_conntrack_timeouts_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^conntrack_timeouts: got 120"):
        ClusterSpec(conntrack_timeouts=120)  # type: ignore[arg-type]
