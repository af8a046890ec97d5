"""Conntrack: state machine, timeouts, gc and occupancy, full table and early drop, costs."""

from __future__ import annotations

import pytest

from perfsim.components.conntrack import Conntrack, ConntrackTimeouts
from perfsim.components.host import Host
from perfsim.core.addr import ip
from perfsim.core.packet import ACK, DATA, FIN, SYN, SYNACK, FlowKey, Packet
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError

A, B = ip("10.0.0.1"), ip("10.0.0.2")


def tcp(i: int) -> FlowKey:
    return FlowKey(A, B, 6, 40000 + i, 80)


def udp(i: int) -> FlowKey:
    return FlowKey(A, B, 17, 5000 + i, 53)


def pkt(sim: Sim, flow: FlowKey, kind: int = DATA) -> Packet:
    return sim.new_packet(flow, 100, 54, kind=kind)


def handshake(sim: Sim, ct: Conntrack, flow: FlowKey) -> None:
    for f, kind in ((flow, SYN), (flow.reversed(), SYNACK), (flow, ACK)):
        assert ct.track(pkt(sim, f, kind)) is not None


def test_tcp_states_follow_the_handshake_and_close(sim: Sim) -> None:
    """SYN_SENT, SYN_RECV, ESTABLISHED (assured), FIN_WAIT, CLOSE_WAIT, TIME_WAIT."""
    ct = Conntrack(sim, "ct")
    f, r = tcp(0), tcp(0).reversed()
    seen = []
    for flow, kind in ((f, SYN), (r, SYNACK), (f, ACK), (f, DATA), (f, FIN), (r, ACK), (r, FIN)):
        ref = ct.track(pkt(sim, flow, kind))
        assert ref is not None
        seen.append((ref.is_reply, ref.entry.state_name, ref.entry.assured))
    assert seen == [
        (False, "SYN_SENT", False),
        (True, "SYN_RECV", False),
        (False, "ESTABLISHED", True),
        (False, "ESTABLISHED", True),
        (False, "FIN_WAIT", True),
        (True, "CLOSE_WAIT", True),
        (True, "TIME_WAIT", True),
    ]
    assert ct.count() == 1
    assert ct.inserted == 1


def test_time_wait_expires_after_120s_and_gc_reaps_it(sim: Sim) -> None:
    ct = Conntrack(sim, "ct")
    f = tcp(0)
    handshake(sim, ct, f)
    for flow, kind in ((f, FIN), (f.reversed(), FIN)):
        ct.track(pkt(sim, flow, kind))
    sim.run(119.5)
    assert ct.count() == 1
    assert ct.lookup(pkt(sim, f)) is not None
    sim.run(120.5)
    assert ct.count() == 0
    assert ct.samples[-1] == (120.0, 0)
    assert ct.expired == 1


def test_syn_on_time_wait_entry_reopens_the_connection(sim: Sim) -> None:
    ct = Conntrack(sim, "ct")
    f = tcp(0)
    handshake(sim, ct, f)
    ct.track(pkt(sim, f, FIN))
    ct.track(pkt(sim, f.reversed(), FIN))
    ref = ct.track(pkt(sim, f, SYN))
    assert ref is not None
    assert ref.entry.state_name == "SYN_SENT"
    assert not ref.entry.assured
    assert ct.inserted == 2
    assert ct.count() == 1


def test_loose_pickup_is_established_and_assured_on_reply(sim: Sim) -> None:
    ct = Conntrack(sim, "ct")
    ref = ct.track(pkt(sim, tcp(0), DATA))
    assert ref is not None
    assert (ref.entry.state_name, ref.entry.assured) == ("ESTABLISHED", False)
    ct.track(pkt(sim, tcp(0).reversed(), ACK))
    assert ref.entry.assured


def test_udp_unreplied_expires_after_30s(sim: Sim) -> None:
    ct = Conntrack(sim, "ct")
    ct.track(pkt(sim, udp(0)))
    sim.run(29.0)
    hit = ct.lookup(pkt(sim, udp(0)))
    assert hit is not None
    assert hit[1] is False
    assert hit[0].state_name == "UDP_UNREPLIED"
    sim.run(31.0)
    assert ct.lookup(pkt(sim, udp(0))) is None
    ref = ct.track(pkt(sim, udp(0)))
    assert ref is not None
    assert ref.entry.created_s == 31.0
    assert ct.inserted == 2
    assert ct.expired == 1


def test_udp_replied_is_assured_and_lives_120s_after_the_last_packet(sim: Sim) -> None:
    ct = Conntrack(sim, "ct")
    ct.track(pkt(sim, udp(0)))
    sim.run(1.0)
    ref = ct.track(pkt(sim, udp(0).reversed()))
    assert ref is not None
    assert ref.is_reply
    e = ref.entry
    assert (e.state_name, e.assured, e.expires_s) == ("UDP_REPLIED", True, 121.0)
    sim.run(120.9)
    assert ct.lookup(pkt(sim, udp(0).reversed())) is not None
    sim.run(121.0)
    assert ct.lookup(pkt(sim, udp(0))) is None


def test_gc_reduces_count_and_records_occupancy_samples(sim: Sim) -> None:
    """3 flows at t=0 (expire at 30 s), 2 at t=10.5 (expire at 40.5 s); gc every 1 s."""
    ct = Conntrack(sim, "ct")
    for i in range(3):
        ct.track(pkt(sim, udp(i)))
    sim.run(10.5)
    for i in range(3, 5):
        ct.track(pkt(sim, udp(i)))
    assert ct.count() == 5
    sim.run(30.5)
    assert ct.count() == 2
    sim.run(60.0)
    assert ct.count() == 0
    expected = (
        [(float(t), 3) for t in range(1, 11)]
        + [(float(t), 5) for t in range(11, 30)]
        + [(float(t), 2) for t in range(30, 41)]
        + [(41.0, 0)]
    )
    assert ct.samples == expected
    assert ct.max_count == 5
    assert ct.expired == 5


def test_full_table_drops_the_fourth_flow_while_established_flows_pass(sim: Sim) -> None:
    ct = Conntrack(sim, "ct", max_entries=3)
    for i in range(3):
        handshake(sim, ct, tcp(i))
    assert ct.track(pkt(sim, tcp(3), SYN)) is None
    assert sim.drops[("ct", "conntrack_full")] == 1
    assert (ct.insert_failed, ct.early_drops, ct.count()) == (1, 0, 3)
    for i in range(3):
        ref = ct.track(pkt(sim, tcp(i), DATA))
        assert ref is not None
        assert ref.entry.state_name == "ESTABLISHED"
        back = ct.track(pkt(sim, tcp(i).reversed(), ACK))
        assert back is not None
        assert back.is_reply
    assert sim.dropped == 1
    assert ct.count() == 3


def test_early_drop_evicts_the_oldest_unassured_entry(sim: Sim) -> None:
    ct = Conntrack(sim, "ct", max_entries=3)
    ct.track(pkt(sim, udp(0)))
    ct.track(pkt(sim, udp(0).reversed()))  # assured
    ct.track(pkt(sim, udp(1)))  # unassured, oldest
    sim.run(1.0)
    ct.track(pkt(sim, udp(2)))  # unassured
    ref = ct.track(pkt(sim, udp(3)))
    assert ref is not None
    assert (ct.early_drops, ct.insert_failed, ct.count()) == (1, 0, 3)
    assert ct.lookup(pkt(sim, udp(1))) is None
    assert ct.lookup(pkt(sim, udp(0))) is not None
    assert ct.lookup(pkt(sim, udp(2))) is not None
    assert sim.dropped == 0


def test_full_table_reaps_expired_entries_before_early_drop(sim: Sim) -> None:
    ct = Conntrack(sim, "ct", max_entries=1, gc_interval_s=1000.0)
    ct.track(pkt(sim, udp(0)))
    sim.run(30.0)
    assert ct.count() == 1  # expired, not yet reaped
    assert ct.track(pkt(sim, udp(1))) is not None
    assert (ct.expired, ct.early_drops, ct.count()) == (1, 0, 1)


def test_track_charges_new_then_lookup_and_reuses_pkt_ct(sim: Sim) -> None:
    host = Host(sim, "h1", cores=1)
    ct = Conntrack(sim, "ct", host=host)
    first = pkt(sim, udp(0))
    first.core = host.cpus.cores[0]
    ref = ct.track(first)
    assert first.ct is ref
    new_s = sim.profile.cost("conntrack_new").seconds(first.size_bytes)
    assert first.work_s == pytest.approx(new_s, rel=1e-12)
    assert ct.track(first) is ref  # already tracked here: no second lookup, no cost
    assert first.work_s == pytest.approx(new_s, rel=1e-12)
    second = pkt(sim, udp(0))
    ct.track(second)
    lookup_s = sim.profile.cost("conntrack_lookup").seconds(second.size_bytes)
    assert second.work_s == pytest.approx(lookup_s, rel=1e-12)
    assert host.stage("conntrack_new").packets == 1
    assert host.stage("conntrack_lookup").packets == 1


def test_gc_chain_stops_when_empty_and_restarts(sim: Sim) -> None:
    ct = Conntrack(sim, "ct", timeouts=ConntrackTimeouts(udp_unreplied_s=2.0))
    ct.track(pkt(sim, udp(0)))
    sim.run(100.0)
    assert ct.samples == [(1.0, 1), (2.0, 0)]
    ct.track(pkt(sim, udp(1)))
    sim.run(200.0)
    assert ct.samples[2:] == [(101.0, 1), (102.0, 0)]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"max_entries": -1}, "ct.max_entries"),
        ({"max_entries": 1.5}, "ct.max_entries"),
        ({"buckets": 0}, "ct.buckets"),
        ({"gc_interval_s": 0}, "ct.gc_interval_s"),
    ],
)
def test_bad_parameters_name_the_field(sim: Sim, kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: got .*; allowed: "):
        Conntrack(sim, "ct", **kw)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"tcp_established_s": 0}, "timeouts.tcp_established_s"),
        ({"udp_unreplied_s": -1.0}, "timeouts.udp_unreplied_s"),
        ({"icmp_s": "30"}, "timeouts.icmp_s"),
        ({"tcp_time_wait_s": float("nan")}, "timeouts.tcp_time_wait_s"),
    ],
)
def test_bad_timeouts_name_the_field(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: got "):
        ConntrackTimeouts(**kw)
