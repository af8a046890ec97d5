"""Link: exact serialization, propagation and tail drop on deterministic input."""

from __future__ import annotations

import pytest

from perfsim.components.link import Link
from perfsim.core.element import CaptureSink, connect
from perfsim.core.packet import FlowKey
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError

FLOW = FlowKey(1, 2, 17, 1000, 2000)


def frame(sim: Sim, size_bytes: int, segs: int = 1):
    """A packet whose frames total ``size_bytes`` (14 B Ethernet + 20 B IP + 8 B UDP + payload)."""
    return sim.new_packet(FLOW, size_bytes - 42 * segs, 42, segs)


def test_two_1500B_packets_on_1gbps_leave_at_12_and_24_us(sim: Sim) -> None:
    """Back-to-back 1500 B frames at 1 Gbit/s: 12 µs each, the second waits for the first."""
    link = Link(sim, "l", rate_bps=1e9, delay_s=0.0)
    sink = CaptureSink(sim)
    connect(link, sink)
    link.put(frame(sim, 1500))
    link.put(frame(sim, 1500))
    sim.run(1.0)
    assert sink.times == [pytest.approx(12e-6, abs=1e-15), pytest.approx(24e-6, abs=1e-15)]


def test_propagation_adds_exactly_its_delay(sim: Sim) -> None:
    link = Link(sim, "l", rate_bps=1e9, delay_s=5e-6)
    sink = CaptureSink(sim)
    connect(link, sink)
    link.put(frame(sim, 1500))
    link.put(frame(sim, 1500))
    sim.run(1.0)
    assert sink.times == [pytest.approx(17e-6, abs=1e-15), pytest.approx(29e-6, abs=1e-15)]


def test_idle_link_starts_at_arrival_not_at_previous_departure(sim: Sim) -> None:
    link = Link(sim, "l", rate_bps=1e9)
    sink = CaptureSink(sim)
    connect(link, sink)
    link.put(frame(sim, 1500))
    sim.call_at(100e-6, link.put, frame(sim, 1000))
    sim.run(1.0)
    assert sink.times == [pytest.approx(12e-6, abs=1e-15), pytest.approx(108e-6, abs=1e-15)]


def test_gso_packet_is_serialized_as_its_frames_with_wire_overhead(sim: Sim) -> None:
    link = Link(sim, "l", rate_bps=1e9, overhead_bytes=24)
    sink = CaptureSink(sim)
    connect(link, sink)
    link.put(frame(sim, 3 * 1500, segs=3))
    sim.run(1.0)
    assert sink.times == [pytest.approx(3 * 1524 * 8e-9, abs=1e-15)]


def test_tail_drop_when_queue_full_is_counted(sim: Sim) -> None:
    link = Link(sim, "l", rate_bps=1e9, queue_packets=2)
    sink = CaptureSink(sim)
    connect(link, sink)
    for _ in range(5):
        link.put(frame(sim, 1500))
    sim.run(1.0)
    assert len(sink.log) == 2
    assert sim.drops[("l", "queue_full")] == 3
    assert sim.created == sim.delivered + sim.dropped


def test_frame_above_mtu_is_dropped(sim: Sim) -> None:
    link = Link(sim, "l", rate_bps=1e9, mtu_bytes=1400)
    connect(link, CaptureSink(sim))
    link.put(frame(sim, 1514))
    sim.run(1.0)
    assert sim.drops[("l", "mtu_exceeded")] == 1


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"rate_bps": -1}, "rate_bps"),
        ({"rate_bps": 0}, "rate_bps"),
        ({"rate_bps": 1e9, "delay_s": -1e-6}, "delay_s"),
        ({"rate_bps": 1e9, "mtu_bytes": 67}, "mtu_bytes"),
        ({"rate_bps": 1e9, "queue_packets": 0}, "queue_packets"),
        ({"rate_bps": "fast"}, "rate_bps"),
    ],
)
def test_bad_parameters_name_the_field(sim: Sim, kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"l\.{field}: got .*; allowed: "):
        Link(sim, "l", **kw)
