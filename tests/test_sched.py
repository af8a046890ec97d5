"""EEVDF (perfsim.core.sched): the scheduler's rules on hand-made task patterns, and the
one-core UDP stream it exists for."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import simpy

from perfsim.core.sched import BASE_SLICE_S, TICK_S, FairScheduler, Task, base_slice_s


def test_base_slice_scales_with_log2_of_the_cpus_up_to_eight() -> None:
    assert base_slice_s(1) == pytest.approx(0.7e-3)
    assert base_slice_s(2) == pytest.approx(1.4e-3)  # se.slice on this 2-vCPU machine kind
    assert base_slice_s(3) == pytest.approx(1.4e-3)
    assert base_slice_s(8) == pytest.approx(2.8e-3)
    assert base_slice_s(96) == pytest.approx(2.8e-3)
    assert BASE_SLICE_S == 0.7e-3 and TICK_S == 0.004


def _hog(env: simpy.Environment, task: Task, step_s: float, log: list[tuple[float, str]]) -> Generator[Any, Any, None]:
    """A task that always wants the core: a syscall boundary every ``step_s``."""
    if (turn := task.wake()) is not None:
        yield turn
    log.append((env.now, task.name))
    while True:
        if (turn := task.checkpoint()) is not None:
            yield turn
            log.append((env.now, task.name))
        yield env.timeout(step_s)


def test_two_hogs_take_turns_of_one_tick() -> None:
    """Two tasks that never sleep: each keeps the core until a tick finds its slice used up
    (1.4 ms < one 4 ms tick), so they switch at the ticks — every 4 ms, 50 % each."""
    env = simpy.Environment()
    s = FairScheduler(env, "cpu0", slice_s=1.4e-3)
    log: list[tuple[float, str]] = []
    a, b = s.add("a"), s.add("b")
    env.process(_hog(env, a, 10e-6, log))
    env.process(_hog(env, b, 10e-6, log))
    env.run(until=0.1)
    times = [t for t, _ in log[1:]]
    # each switch happens at the first syscall boundary after a tick (within one 10 µs step)
    assert all(t % TICK_S < 10e-6 + 1e-9 or TICK_S - t % TICK_S < 1e-9 for t in times)
    assert [name for _, name in log[:4]] == ["a", "b", "a", "b"]
    assert len(times) == pytest.approx(0.1 / TICK_S, abs=1)
    assert a.runtime_s == pytest.approx(b.runtime_s, rel=0.1)


def test_a_single_task_is_never_scheduled() -> None:
    env = simpy.Environment()
    s = FairScheduler(env, "cpu0", slice_s=1.4e-3)
    t = s.add("only")
    assert s.single and t.wake() is None and t.checkpoint() is None
    t.block()
    assert s.curr is None and s.switches == 0


def test_a_woken_task_with_positive_lag_preempts_at_the_next_syscall_boundary() -> None:
    """A task that first wakes while a hog runs has no lag: it waits for the hog's slice to
    end (at a tick).  Having run less than the hog since, it sleeps with lag > 0 and, woken
    again, is placed before the hog and preempts it at the hog's next checkpoint."""
    env = simpy.Environment()
    s = FairScheduler(env, "cpu0", slice_s=1.4e-3)
    log: list[tuple[float, str]] = []
    hog, sleeper = s.add("hog"), s.add("sleeper")
    env.process(_hog(env, hog, 10e-6, log))

    def sleepy() -> Generator[Any, Any, None]:
        yield env.timeout(2e-3)
        if (turn := sleeper.wake()) is not None:
            yield turn
        log.append((env.now, "sleeper ran"))
        yield env.timeout(100e-6)
        sleeper.block()
        yield env.timeout(1e-3)
        woke = env.now
        if (turn := sleeper.wake()) is not None:
            yield turn
        log.append((woke, "sleeper woke"))
        log.append((env.now, "sleeper ran again"))

    env.process(sleepy())
    env.run(until=10e-3)
    at = {n: t for t, n in log if n.startswith("sleeper")}
    assert at["sleeper ran"] == pytest.approx(TICK_S, abs=10e-6)  # the hog's slice ended at the tick
    # it blocked with lag = V - v = (4.0 + 2.1) / 2 - 2.1 ms: it had run 0.1 ms to the hog's 4
    assert sleeper.vlag == pytest.approx(0.95e-3, abs=10e-6)
    assert at["sleeper woke"] == pytest.approx(TICK_S + 1.1e-3, abs=10e-6)
    assert 0.0 <= at["sleeper ran again"] - at["sleeper woke"] <= 10e-6 + 1e-9  # the next checkpoint


def test_a_task_blocking_while_not_eligible_stays_queued_until_it_would_be_picked() -> None:
    """DELAY_DEQUEUE: the sleeper ran ahead of the hog (not eligible) when it blocked, so it
    stays on the queue; when the scheduler would pick it, it leaves with lag <= 0."""
    env = simpy.Environment()
    s = FairScheduler(env, "cpu0", slice_s=1.4e-3)
    hog, runner = s.add("hog"), s.add("runner")
    ran: list[float] = []

    def run_then_block() -> Generator[Any, Any, None]:
        if (turn := runner.wake()) is not None:
            yield turn
        ran.append(env.now)
        yield env.timeout(3e-3)  # 3 ms of virtual time ahead of the hog, which has not run
        runner.block()

    env.process(run_then_block())
    env.process(_hog(env, hog, 10e-6, []))
    env.run(until=3.0e-3 + 1e-9)
    assert runner.delayed and runner.on_rq and runner.blocked
    env.run(until=20e-3)  # the hog catches up: the runner is picked, and leaves
    assert not runner.on_rq and not runner.delayed and runner.vlag <= 0.0


def _udp_on_one_core(send_s: float, recv_s: float, capacity: int, until_s: float) -> dict[str, Any]:
    """A sender that does a datagram's whole path (``send_s``) and a receiver that reads one
    (``recv_s``), on one core under EEVDF; the socket holds ``capacity`` datagrams."""
    env = simpy.Environment()
    s = FairScheduler(env, "cpu0", slice_s=1.4e-3)
    snd, rcv = s.add("sender"), s.add("receiver")
    st: dict[str, Any] = {"sent": 0, "dropped": 0, "received": 0, "queue": 0, "read_ev": None, "runs": []}

    def sender() -> Generator[Any, Any, None]:
        if (turn := snd.wake()) is not None:
            yield turn
        start = env.now
        while True:
            if (turn := snd.checkpoint()) is not None:
                st["runs"].append((start, env.now))
                yield turn
                start = env.now
            yield env.timeout(send_s)
            st["sent"] += 1
            if st["queue"] < capacity:
                st["queue"] += 1
                ev, st["read_ev"] = st["read_ev"], None
                if ev is not None:
                    ev.succeed()
            else:
                st["dropped"] += 1

    def receiver() -> Generator[Any, Any, None]:
        while True:
            while st["queue"] == 0:
                st["read_ev"] = env.event()
                rcv.block()
                yield st["read_ev"]
                if (turn := rcv.wake()) is not None:
                    yield turn
            if (turn := rcv.checkpoint()) is not None:
                yield turn
            yield env.timeout(recv_s)
            st["queue"] -= 1
            st["received"] += 1

    env.process(sender())
    env.process(receiver())
    env.run(until=until_s)
    st["sender_s"], st["receiver_s"] = snd.runtime_s, rcv.runtime_s
    return st


def test_a_udp_sender_sharing_its_core_overruns_the_receiver_at_tick_boundaries() -> None:
    """The kernel's pattern (perf sched on this machine kind, docs/kernel-evidence.md): the two
    mostly alternate, but now and then the sender keeps the core for milliseconds, until a
    tick; the socket fills and the rest is dropped.  Nothing here is fitted: 5 µs / 5.5 µs per
    datagram, 256 datagrams of buffer (212992 B at 832 B each), the kernel's slice and tick."""
    st = _udp_on_one_core(5.0e-6, 5.5e-6, 256, 1.0)
    assert st["sent"] == st["received"] + st["dropped"] + st["queue"]
    assert st["sender_s"] + st["receiver_s"] == pytest.approx(1.0, abs=1e-3)  # the core never idles
    long_runs = [(a, b) for a, b in st["runs"] if b - a > 1e-3]
    assert long_runs, "the sender never kept the core for a millisecond"
    # every long run ends at the first syscall boundary after a tick
    assert all(b % TICK_S < 5.0e-6 + 1e-9 for _, b in long_runs)
    loss = st["dropped"] / st["sent"]
    assert 0.2 < loss < 0.5  # the kernel: 38-40 % over loopback; a FIFO core: 0
    assert st["sender_s"] > 0.55  # the sender holds the core more than half the time (kernel: 60 %)


def test_a_receive_buffer_that_outlasts_a_tick_loses_far_less() -> None:
    """Same costs, 8x the buffer (iperf3 -w 800K on loopback: no loss, against 39 % at the
    default): a tick's worth of datagrams (4 ms / 5 µs = 800) fits."""
    small = _udp_on_one_core(5.0e-6, 5.5e-6, 256, 0.5)
    big = _udp_on_one_core(5.0e-6, 5.5e-6, 2048, 0.5)
    assert big["dropped"] / big["sent"] < 0.5 * small["dropped"] / small["sent"]


def _testbed_udp(cores: int, scheduler: str | None, **kw: Any) -> Any:
    from perfsim.experiment.config import RunSpec
    from perfsim.topology.cluster import ClusterSpec

    return RunSpec(mode="container", placement="same-host", containers_per_host=2, workload="udp_stream",
                   message_size=64, cluster=ClusterSpec(hosts=2, cores=cores, testbed=True, scheduler=scheduler),
                   duration_s=0.1, warmup_s=0.05, **kw)


def test_the_testbed_schedules_a_udp_sender_and_reader_sharing_a_core() -> None:
    """--testbed --cores 1: EEVDF by default — the receiver's socket overflows and what the
    sender carried through the stack for the dropped datagrams is lost; with scheduler fifo
    nothing is dropped.  On two cores the tasks do not share a core and the sender runs free."""
    from perfsim.experiment.run import run

    eevdf, fifo = run(_testbed_udp(1, None)), run(_testbed_udp(1, "fifo"))
    assert eevdf.spec.cluster.app_scheduler == "eevdf" and fifo.spec.cluster.app_scheduler == "fifo"
    assert fifo.summary()["drops"] == 0
    drops = eevdf.drops
    assert set(drops["reason"]) == {"socket_rcvbuf_full"}
    assert len(drops) > 0
    two = run(_testbed_udp(2, None))
    assert two.summary()["pps"] > 1.5 * eevdf.summary()["pps"]
    again = run(_testbed_udp(1, None))
    assert again.flows.equals(eevdf.flows)  # same seed, same result


@pytest.mark.xfail(strict=True, reason="known miss (docs/kernel-evidence.md, third session): with the UDP read "
                   "measured at 1.1 us, perfsim's one-core reader keeps up and preempts the sender for every "
                   "datagram (~4 % lost); the kernel's iperf3 server costs 5.2 us a datagram there and loses 30-40 %")
def test_a_one_core_udp_pair_loses_what_the_kernel_loses() -> None:
    from perfsim.experiment.run import run

    eevdf, fifo = run(_testbed_udp(1, None)), run(_testbed_udp(1, "fifo"))
    assert eevdf.summary()["drops"] > 0.15 * eevdf.summary()["pps"] * 0.05  # the kernel: 38-40 % lost
    assert eevdf.summary()["pps"] < 0.9 * fifo.summary()["pps"]


def test_the_fluid_engine_refuses_what_needs_the_scheduler_and_auto_picks_the_des() -> None:
    from perfsim.errors import ConfigError
    from perfsim.topology.cluster import ClusterSpec

    with pytest.raises(ConfigError, match="scheduler"):
        _testbed_udp(1, None, engine="fluid")
    assert _testbed_udp(1, None, engine="auto").resolved_engine == "des"
    assert _testbed_udp(1, "fifo", engine="fluid").resolved_engine == "fluid"
    assert ClusterSpec().app_scheduler == "fifo" and ClusterSpec(testbed=True).app_scheduler == "eevdf"
    with pytest.raises(ConfigError, match="eevdf or fifo"):
        ClusterSpec(scheduler="cfs")


def test_compare_scheduler_option_and_its_errors(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    from perfsim.cli import main

    base = ["compare", "--testbed", "--cores", "1", "--modes", "container", "--workload", "udp_stream",
            "--streams", "1", "--message-size", "64", "--format", "csv", "--out", str(tmp_path), "--workers", "1"]
    assert main([*base, "--scheduler", "fifo"]) == 0
    assert ",fifo," in capsys.readouterr().out
    assert main([*base, "--scheduler", "cfs"]) == 2
    assert "scheduler" in capsys.readouterr().err
    assert main([*base, "--engine", "fluid"]) == 2
    assert "no scheduler model" in capsys.readouterr().err
