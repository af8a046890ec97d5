"""fq_codel's CoDel on the NIC queue: exact drop times on deterministic input (RFC 8289)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from perfsim.components.codel import CodelLink
from perfsim.components.link import Link
from perfsim.core.element import CaptureSink, connect
from perfsim.core.packet import FlowKey
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import run
from perfsim.topology.cluster import ClusterSpec, build_cluster

FLOW = FlowKey(1, 2, 17, 1000, 2000)


def _feed(sim: Sim, link: CodelLink, n: int, gap_s: float) -> list[float]:
    """``n`` 1500 B frames, one every ``gap_s``; returns the list the CoDel drop times go to."""
    drops: list[float] = []

    def drop(pkt: object) -> None:
        drops.append(sim.now)
        CodelLink._drop_codel(link, pkt)  # type: ignore[arg-type]

    link._drop_codel = drop  # type: ignore[method-assign]
    for k in range(n):
        sim.call_at(k * gap_s, link.put, sim.new_packet(FLOW, 1458, 42, 1))
    return drops


def test_codel_drops_after_an_interval_above_target_then_at_interval_over_sqrt_count(sim: Sim) -> None:
    """1500 B frames every 10 µs into 1 Gbit/s (12 µs each): frame k waits 2k µs.  Frame 2500
    (dequeued at 30 ms) is the first at the 5 ms target, so dropping may start 100 ms later:
    the first frame dequeued from 130 ms is dropped (130.008 ms); the next drops are due at
    +100 ms, +100/sqrt(2) ms and +100/sqrt(3) ms, each hitting the first frame dequeued after
    it (the dropped frames' slots shift the later ones by 12 µs each); the queue, still above
    target, has drained (384 ms) before the fifth is due."""
    link = CodelLink(sim, "nic", rate_bps=1e9)
    sink = CaptureSink(sim)
    connect(link, sink)
    drops = _feed(sim, link, 32_000, 10e-6)
    sim.run(1.0)
    assert drops == [pytest.approx(t, abs=1e-12) for t in (130.008e-3, 230.016e-3, 300.720e-3, 358.464e-3)]
    assert sim.drops[("nic", "codel")] == 4
    assert len(sink.log) == 32_000 - 4
    assert sim.created == sim.delivered + sim.dropped


def test_standing_queue_shorter_than_an_interval_is_not_dropped(sim: Sim) -> None:
    """The same overload for 100 ms: the queue is above target from 30 ms until the last frame
    starts at 120 ms, less than an interval, so nothing is dropped (a tail-drop queue of 1000
    would have lost 9000 frames)."""
    link = CodelLink(sim, "nic", rate_bps=1e9)
    sink = CaptureSink(sim)
    connect(link, sink)
    drops = _feed(sim, link, 10_000, 10e-6)
    sim.run(1.0)
    assert drops == []
    assert len(sink.log) == 10_000
    assert sink.times[-1] == pytest.approx(120e-3, abs=1e-12)


def test_dropping_state_ends_below_target_and_resumes_its_count(sim: Sim) -> None:
    """After the first episode's four drops the queue drains (no arrivals for 0.33 s); a second
    overload re-enters the dropping state within 16 intervals, so its count resumes at
    count - lastcount = 3: its second drop comes 100/sqrt(3) ms after its first, not 100 ms."""
    link = CodelLink(sim, "nic", rate_bps=1e9)
    connect(link, CaptureSink(sim))
    drops = _feed(sim, link, 32_000, 10e-6)
    sim.run(0.72)  # the first episode's queue has drained by 0.384 s
    assert len(drops) == 4
    for k in range(32_000):
        sim.call_at(0.72 + k * 10e-6, link.put, sim.new_packet(FLOW, 1458, 42, 1))
    sim.run(2.0)
    first, second = drops[4], drops[5]
    assert first == pytest.approx(0.72 + 130.008e-3, abs=1e-12)
    assert second - first == pytest.approx(0.1 / 3**0.5, abs=12e-6)


def test_packet_and_memory_limits_drop_the_arriving_packet(sim: Sim) -> None:
    link = CodelLink(sim, "a", rate_bps=1e9, limit_packets=5)
    connect(link, CaptureSink(sim))
    for _ in range(10):
        link.put(sim.new_packet(FLOW, 1458, 42, 1))
    # 3000 B of memory at 1 Gbit/s: a frame is accepted while at most 24 µs are still ahead of it
    mem = CodelLink(sim, "b", rate_bps=1e9, memory_limit_bytes=3000)
    connect(mem, CaptureSink(sim, "sink_b"))
    for _ in range(10):
        mem.put(sim.new_packet(FLOW, 1458, 42, 1))
    sim.run(1.0)
    assert sim.drops[("a", "qdisc_limit")] == 5
    assert sim.drops[("b", "qdisc_limit")] == 7
    assert sim.created == sim.delivered + sim.dropped


def test_a_sparse_flow_goes_ahead_of_the_backlog_and_a_backlogged_one_waits(sim: Sim) -> None:
    """fq_codel serves a flow with nothing queued first: with 1500 B frames of one flow queued
    at 1 Gbit/s (12 µs each), a 66 B ACK of another flow arriving at 1 µs leaves right after
    the frame in transmission (12 + 0.528 µs), and its time is added to the backlog's end; a
    small packet of the backlogged flow itself waits its turn."""
    link = CodelLink(sim, "nic", rate_bps=1e9)
    sink = CaptureSink(sim)
    connect(link, sink)
    bulk = [sim.new_packet(FLOW, 1458, 42, 1) for _ in range(3)]
    for p in bulk:
        link.put(p)
    ack = sim.new_packet(FlowKey(2, 1, 6, 80, 1000), 0, 66, 1)
    small = sim.new_packet(FLOW, 24, 42, 1)
    sim.call_at(1e-6, link.put, ack)
    sim.call_at(2e-6, link.put, small)
    sim.run(1.0)
    when = {id(p): t for t, p in sink.log}
    assert [when[id(p)] for p in bulk] == [pytest.approx(t, abs=1e-15) for t in (12e-6, 24e-6, 36e-6)]
    assert when[id(ack)] == pytest.approx(12.528e-6, abs=1e-15)
    assert when[id(small)] == pytest.approx(36.528e-6 + 0.528e-6, abs=1e-15)
    assert link.sparse_packets == 1


def test_container_streams_overflow_a_pfifo_nic_queue_and_fq_codel_keeps_the_wire_full() -> None:
    """64 bridge-mode TCP streams between two hosts' containers: a veth orphans their skbs, so
    TCP Small Queues does not hold them back and the NIC's queue is what bounds them.  The
    1000-skb tail-drop queue overflows again and again (bursts of whole 64 KiB skbs lost,
    tens of thousands of segments retransmitted); under fq_codel CoDel drops an skb at a time
    (after the slow-start overflow of its 32 MiB limit), retransmissions are a few percent of
    that, and both directions stay within 2 % of the wire's goodput (1448 B of TCP payload per
    1538 B on the wire)."""
    base = RunSpec(mode="bridge", placement="cross-host", workload="tcp_stream", streams=64, containers_per_host=32,
                   cluster=ClusterSpec(hosts=2), duration_s=0.8, warmup_s=0.4, seed=0)
    pf = run(replace(base, cluster=ClusterSpec(hosts=2, nic_qdisc="pfifo")))
    fq = run(base)
    pf_drops = dict(zip(pf.drops["reason"], pf.drops["count"], strict=True))
    fq_drops = dict(zip(fq.drops["reason"], fq.drops["count"], strict=True))
    assert pf_drops.get("queue_full", 0) > 0
    assert "codel" not in pf_drops
    assert fq_drops.get("codel", 0) > 0
    assert "queue_full" not in fq_drops
    pf_s, fq_s = pf.summary(), fq.summary()
    assert fq_s["retransmits"] < pf_s["retransmits"] / 10
    wire_goodput_gbps = 2 * 10.0 * 1448 / 1538
    assert fq_s["throughput_gbps"] == pytest.approx(wire_goodput_gbps, rel=0.02)


def test_nic_qdisc_is_chosen_by_name_and_a_bad_name_is_refused() -> None:
    sim = Sim(seed=1)
    fq = build_cluster(sim, ClusterSpec(hosts=2))
    assert all(isinstance(n.tx_link, CodelLink) for n in fq.nics)
    sim = Sim(seed=1)
    pf = build_cluster(sim, ClusterSpec(hosts=2, nic_qdisc="pfifo", nic_queue_packets=7))
    assert all(type(n.tx_link) is Link and n.tx_link.queue_packets == 7 for n in pf.nics)
    with pytest.raises(ConfigError, match=r"nic_qdisc: got 'red'; allowed: fq_codel or pfifo"):
        ClusterSpec(nic_qdisc="red")
