"""StreamThread: several tcp_stream flows served by one application thread per side (iperf3
before 3.16): delivery, one reader wake-up for all sockets, reads of ``message_size``, the
configuration errors, the testbed's flow plans and determinism."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pandas as pd
import pytest

from perfsim.calibrate.configs import run_spec
from perfsim.core.packet import DATA
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import flow_plans, run
from perfsim.transport import common, tcp_rx
from perfsim.transport.stats import FlowStats
from perfsim.transport.workloads import (
    STREAM_READ_BYTES,
    Endpoint,
    Flow,
    StreamThread,
    start_workload,
)

from .fakes import FakeNs, fake_pair

IP_A, IP_B = 0x0A000001, 0x0A000002
T = 0.02


def setup(
    sim: Sim, n: int, size: int, shared: bool, starts: list[float] | None = None,
    stops: list[float | None] | None = None,
) -> tuple[list[Flow], FakeNs, FakeNs]:
    """``n`` tcp_stream flows from core 0 of ``a`` to core 1 of ``b`` (50 us each way), on
    one StreamThread or each with its own processes."""
    a, b = fake_pair(sim, 50e-6)
    cli = Endpoint(a, IP_A, a.host.cpus.cores[0], 1448)
    srv = Endpoint(b, IP_B, b.host.cpus.cores[1], 1448)
    thread = StreamThread(sim) if shared else None
    starts = starts or [0.0] * n
    stops = stops or [None] * n
    flows = [start_workload(sim, "tcp_stream", cli, srv, size, 5001 + i, 40000 + i, start_s=starts[i],
                            stop_s=stops[i], thread=thread) for i in range(n)]
    return flows, a, b


def written(flow: Flow) -> int:
    return int(flow.client_sock.write_end) - 1  # sequence numbers start at 1 (ISN 0)


def record_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every application read (``FlowStats.on_read``), in order."""
    reads: list[int] = []
    orig = FlowStats.on_read

    def on_read(self: FlowStats, now: float, nbytes: int) -> None:
        reads.append(nbytes)
        orig(self, now, nbytes)

    monkeypatch.setattr(FlowStats, "on_read", on_read)
    return reads


# -- delivery --------------------------------------------------------------------------------
def test_two_flows_on_one_thread_deliver_everything_in_order(sim: Sim) -> None:
    size = 131072
    flows, _, _ = setup(sim, 2, size, shared=True)
    sim.run(T)
    for f in flows:
        conn = f.server_conn
        assert conn is not None
        assert f.stats.connections == 1
        assert f.stats.bytes > 10_000_000  # measured: 66708880 and 66579312 B
        assert f.stats.bytes == conn.bytes_read  # measure_from_s = 0: every read counts
        assert conn._read_seq - 1 == conn.bytes_read  # read in order, no gap
        assert written(f) >= conn.bytes_read
        assert written(f) % size == 0  # whole blocking writes of message_size
    # round-robin writes: no flow is more than one message ahead of another
    w = [written(f) for f in flows]
    assert max(w) - min(w) <= size
    assert sum(f.server_conn.bytes_read for f in flows if f.server_conn) == sum(f.stats.bytes for f in flows)


def test_stopped_flows_deliver_every_written_byte_and_close(sim: Sim) -> None:
    """Flow 0 stops at 5 ms, flow 1 at 10 ms: each server connection reads every byte its
    client wrote, then sees EOF and closes; the thread serves flow 1 on after flow 0 ended."""
    flows, _, _ = setup(sim, 2, 131072, shared=True, stops=[0.005, 0.01])
    sim.run(T)
    for f in flows:
        assert f.server_conn is not None
        assert f.stats.bytes == f.server_conn.bytes_read == written(f) > 0
        assert f.server_conn.readable()  # at end of stream: select() reports it
    assert written(flows[1]) > written(flows[0]) + 131072  # flow 1 kept going after 5 ms


def test_a_stalled_flow_does_not_stop_the_thread_reading_the_others(sim: Sim) -> None:
    """From 5 ms every data skb of flow 0 is lost (its RTO, >= 200 ms, is past the run) and
    flow 1's arrive 2 ms late, after the reader has drained everything else.  select() must wake
    on flow 1's socket: flow 1 is read to its last written byte although flow 0 never becomes
    readable again.  (Measured: flow 1 wrote and read 21495808 B, flow 0 wrote 21495808 and
    read 17432464; a reader sleeping on flow 0 only, or blocking in flow 0's recv(), leaves
    about 4 MB of flow 1 unread.)"""
    flows, a, _ = setup(sim, 2, 131072, shared=True)
    a.lose_if = lambda p: p.kind == DATA and p.flow.sport == 40000 and sim.now >= 0.005
    a.delay_if = lambda p: 0.002 if p.kind == DATA and p.flow.sport == 40001 and sim.now >= 0.005 else 0.0
    sim.run(T)
    c0, c1 = flows[0].server_conn, flows[1].server_conn
    assert c0 is not None
    assert c1 is not None
    assert a.lost
    assert a.delayed
    # flow 0 is stalled with a full 4 MiB send buffer, which blocks the client thread too
    assert written(flows[0]) - c0.bytes_read > 3_900_000
    assert written(flows[1]) == written(flows[0])
    # ... but everything flow 1 sent was read
    assert c1.bytes_read == written(flows[1]) == flows[1].stats.bytes
    assert not c1.readable()
    assert not c0.readable()


def test_flows_added_out_of_start_order_all_connect_and_deliver(sim: Sim) -> None:
    """The client connects in start order, the server accepts in the order flows were added."""
    flows, _, _ = setup(sim, 3, 65536, shared=True, starts=[0.003, 0.0, 0.001])
    sim.run(T)
    for f in flows:
        assert f.stats.connections == 1
        assert f.server_conn is not None
        assert f.stats.bytes == f.server_conn.bytes_read > 0
        assert written(f) >= f.server_conn.bytes_read


# -- one server thread -----------------------------------------------------------------------
def count_reader_wakeups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the blocked readers actually woken by ``sk_data_ready`` (``_wake_reader``)."""
    n = [0]
    orig = common.wake_task

    def wake_task(ev: Any, value: Any, stage: Any, waker: Any, sleeper: Any, now_s: float, switch: Any = None) -> None:
        if ev is not None and not ev.triggered:
            n[0] += 1
        orig(ev, value, stage, waker, sleeper, now_s, switch)

    monkeypatch.setattr(tcp_rx, "wake_task", wake_task)
    return n


@pytest.mark.parametrize(("streams", "max_shared"), [(2, 20), (4, 20)])
def test_one_thread_is_woken_less_than_one_reader_per_flow(
    monkeypatch: pytest.MonkeyPatch, sim: Sim, streams: int, max_shared: int,
) -> None:
    """Measured over 20 ms (awake prior profile): 2 flows, 12 reader wake-ups with a process
    per flow and 10 with one thread; 4 flows, 26 and 17.  The shared thread also moved more
    data (99.2 vs 82.3 MB; 98.0 vs 84.2 MB).  (A reader takes everything queued when it runs,
    so a process per flow is woken rarely too.)"""
    wakes = count_reader_wakeups(monkeypatch)
    own, _, _ = setup(sim, streams, 131072, shared=False)
    sim.run(T)
    per_flow = wakes[0]
    own_bytes = sum(f.stats.bytes for f in own)

    wakes[0] = 0
    sim2 = Sim(seed=1, profile=sim.profile)
    shared, _, _ = setup(sim2, streams, 131072, shared=True)
    sim2.run(T)
    one = wakes[0]
    shared_bytes = sum(f.stats.bytes for f in shared)

    assert 0 < one <= max_shared
    assert one < per_flow
    assert shared_bytes >= own_bytes  # fewer wake-ups is not from moving less data


# -- read sizes ------------------------------------------------------------------------------
@pytest.mark.parametrize(("shared", "size", "largest"), [
    (True, 131072, 131072),
    (True, 16384, 16384),
    (False, 131072, STREAM_READ_BYTES),
    (False, 16384, STREAM_READ_BYTES),
])
def test_shared_thread_reads_message_size_per_recv(
    monkeypatch: pytest.MonkeyPatch, sim: Sim, shared: bool, size: int, largest: int,
) -> None:
    """iperf3 reads its block size; netperf's server reads 64 KiB whatever the message size.
    Measured (2 flows, 20 ms): 1007 of 1028 shared reads are full 131072 B blocks; 3507 of
    3517 full 16384 B blocks; per-flow reads peak at 65536 in both cases."""
    reads = record_reads(monkeypatch)
    flows, _, b = setup(sim, 2, size, shared=shared)
    sim.run(T)
    assert max(reads) == largest
    assert sum(reads) == sum(f.stats.bytes for f in flows)
    if shared:
        assert Counter(reads)[size] > 0.9 * len(reads)
    # each read is one sock_rx_copy call; at the end each reader may still be copying one
    readers = 1 if shared else len(flows)
    rx = b.host.stage("sock_rx_copy")
    assert 0 <= rx.packets - len(reads) <= readers
    assert 0 <= rx.bytes - sum(reads) <= readers * largest


# -- configuration errors --------------------------------------------------------------------
@pytest.mark.parametrize(("name", "kw"), [
    ("tcp_rr", {}),
    ("tcp_crr", {}),
    ("udp_stream", {}),
    ("udp_rr", {}),
    ("tcp_stream", {"rate_bps": 1e9}),
])
def test_thread_only_for_unpaced_tcp_stream(sim: Sim, name: str, kw: dict[str, Any]) -> None:
    a, b = fake_pair(sim, 1e-4)
    cli = Endpoint(a, IP_A, a.host.cpus.cores[0], 1448)
    srv = Endpoint(b, IP_B, b.host.cpus.cores[1], 1448)
    with pytest.raises(ConfigError, match=r"^thread: got "):
        start_workload(sim, name, cli, srv, 1000, 5001, 40000, thread=StreamThread(sim), **kw)


@pytest.mark.parametrize(("cli_core", "srv_core"), [(1, 1), (0, 0), (1, 0)])
def test_thread_flows_must_share_the_first_flows_cores(sim: Sim, cli_core: int, srv_core: int) -> None:
    a, b = fake_pair(sim, 1e-4)
    thread = StreamThread(sim)
    start_workload(sim, "tcp_stream", Endpoint(a, IP_A, a.host.cpus.cores[0], 1448),
                   Endpoint(b, IP_B, b.host.cpus.cores[1], 1448), 1000, 5001, 40000, thread=thread)
    with pytest.raises(ConfigError, match=r"^thread: got "):
        start_workload(sim, "tcp_stream", Endpoint(a, IP_A, a.host.cpus.cores[cli_core], 1448),
                       Endpoint(b, IP_B, b.host.cpus.cores[srv_core], 1448), 1000, 5002, 40001, thread=thread)
    # the refused flow bound no port: the same ports on the thread's cores are free
    start_workload(sim, "tcp_stream", Endpoint(a, IP_A, a.host.cpus.cores[0], 1448),
                   Endpoint(b, IP_B, b.host.cpus.cores[1], 1448), 1000, 5002, 40001, thread=thread)
    assert repr(thread) == "StreamThread(2 flows)"


# -- flow plans of a RunSpec -------------------------------------------------------------------
ROW = {"path": "host", "workload": "tcp_stream", "streams": 4, "message_bytes": 131072, "offloads": True, "cores": 2}


def test_testbed_stream_flows_share_one_thread() -> None:
    spec = run_spec(ROW)
    plans = flow_plans(spec)
    assert len(plans) == 4
    assert {p.thread for p in plans} == {"iperf3 h0c0 h1c0"}


def test_no_shared_thread_off_the_testbed_or_for_rr() -> None:
    spec = run_spec(ROW)
    off = dataclasses.replace(spec, cluster=dataclasses.replace(spec.cluster, testbed=False))
    assert [p.thread for p in flow_plans(off)] == [""] * 4
    rr = run_spec(dict(ROW, workload="tcp_rr", message_bytes=1))
    assert [p.thread for p in flow_plans(rr)] == [""] * 4
    udp = run_spec(dict(ROW, workload="udp_stream", message_bytes=1400))
    assert [p.thread for p in flow_plans(udp)] == [""] * 4


def test_testbed_thread_key_follows_the_slot_pair() -> None:
    """Two containers per host: flows 0 and 2 run h0c0 -> h1c0, flows 1 and 3 h0c1 -> h1c1."""
    spec = RunSpec(mode="bridge", placement="cross-host", containers_per_host=2, streams=4,
                   cluster=run_spec(ROW).cluster)
    assert [p.thread for p in flow_plans(spec)] == ["iperf3 h0c0 h1c0", "iperf3 h0c1 h1c1"] * 2


# -- whole runs ------------------------------------------------------------------------------
def test_testbed_run_serves_its_streams_from_one_thread_deterministically(monkeypatch: pytest.MonkeyPatch) -> None:
    added: list[int] = []
    orig = StreamThread.add

    def add(self: StreamThread, flow: Flow, message_size: int, start_s: float) -> None:
        added.append(id(self))
        orig(self, flow, message_size, start_s)

    monkeypatch.setattr(StreamThread, "add", add)
    spec = dataclasses.replace(run_spec(ROW), duration_s=0.02, warmup_s=0.01)
    r1 = run(spec)
    assert sorted(Counter(added).values()) == [4]  # all four flows on one thread
    r2 = run(spec)
    assert len(r1.flows) == 4
    assert (r1.flows["bytes"] > 0).all()
    assert (r1.flows["connections"] == 0).all()  # connected during the warm-up
    pd.testing.assert_frame_equal(r1.flows, r2.flows, check_exact=True)
    pd.testing.assert_frame_equal(r1.cores, r2.cores, check_exact=True)
