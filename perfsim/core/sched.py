"""EEVDF: how Linux (6.12 and later) shares one core between application tasks.

Why
---
Two tasks pinned to one core — a UDP sender and its receiver, as ``taskset`` pins them on the
calibration testbed — do not alternate one datagram for one.  The sender does the whole
receive path in its own context (the veth or loopback softirq runs at its ``local_bh_enable``)
and wakes the receiver; whether the receiver gets the core then is the scheduler's decision.
On this machine kind (``perf sched``, ``docs/kernel-evidence.md``) the two alternate every
10–20 µs most of the time, but every few ticks the sender keeps the core for 1–5 ms, up to a
tick boundary: the receiver's socket buffer fills and every datagram after that crosses the
whole stack only to be dropped (``UdpRcvbufErrors``).  A FIFO core (:mod:`perfsim.core.cpu`)
cannot do that; this module is the scheduler that does.

Model (``kernel/sched/fair.c``, equal weights: every task nice 0)
-----------------------------------------------------------------
* Each task has a virtual runtime ``v`` (its CPU time while it runs), a ``deadline`` one slice
  ahead of ``v`` and a lag.  ``V`` is the mean ``v`` of the queued tasks; a task is *eligible*
  when ``v <= V``.
* ``pick``: the eligible task with the earliest deadline; the running task keeps the core while
  its slice is protected (RUN_TO_PARITY: until ``v`` reaches the deadline it had when picked)
  and it is eligible.
* ``update_curr`` — at every tick (``1 / HZ``) and at every wake-up — renews the running task's
  deadline once ``v`` has reached it, and asks for a reschedule if it did or its protection
  has ended.  A reschedule takes effect at the running task's next syscall boundary
  (:meth:`Task.checkpoint`).
* A woken task is placed at ``V - lag`` (PLACE_LAG, the lag scaled by the queue's weight) with
  a fresh deadline, and preempts the running task if ``pick`` chooses it.  Waking a task that
  is already queued does nothing — so once a woken receiver lost that check, nothing
  reconsiders until the next tick.
* A task that blocks while not eligible stays queued (DELAY_DEQUEUE) until ``pick`` would choose
  it; it then leaves with its lag clipped to zero or below (DELAY_ZERO); woken before that, it
  keeps its place, re-placed at lag 0 if it has become eligible.
* The running task's virtual time advances with the wall time it holds the core, its softirq
  work included (the kernel charges a softirq to the task it interrupted).

Only tasks that take part (:meth:`FairScheduler.add`) are scheduled; with one task on a core
every call returns at once.  Softirq work and unscheduled tasks stay on the FIFO core.

Kernel parameters: ``sysctl_sched_base_slice`` 0.7 ms × (1 + ilog2(min(online CPUs, 8)))
(SCHED_TUNABLESCALING_LOG; ``se.slice`` in ``/proc/self/sched`` reads 1.4 ms on the 2-vCPU
machine kind) and ``CONFIG_HZ=250`` (``/proc/config.gz``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perfsim.errors import ConfigError, check_number

if TYPE_CHECKING:
    import simpy

    from perfsim.core.cpu import Core, Stage

BASE_SLICE_S = 0.7e-3
"""``normalized_sysctl_sched_base_slice`` (Linux 6.12+)."""
TICK_S = 1.0 / 250
"""The scheduler tick, ``1 / CONFIG_HZ`` (250 on this machine kind's kernel)."""
_EPS_S = 1e-15


def base_slice_s(online_cpus: int) -> float:
    """The kernel's default slice for a machine with ``online_cpus`` CPUs: the normalised
    0.7 ms times ``1 + ilog2(min(cpus, 8))`` (``update_sysctl``, SCHED_TUNABLESCALING_LOG)."""
    n = int(check_number("online_cpus", online_cpus, low=1, high=1 << 20, integer=True))
    return BASE_SLICE_S * (1 + (min(n, 8).bit_length() - 1))


class Task:
    """One application task (thread) pinned to a core, as EEVDF sees it."""

    __slots__ = ("blocked", "deadline", "delayed", "name", "on_rq", "runtime_s", "sched", "switch", "switches_in",
                 "turn", "v", "vlag", "vprot")

    def __init__(self, sched: FairScheduler, name: str, switch: Stage | None = None) -> None:
        self.sched = sched
        self.name = name
        self.switch = switch
        """The stage its core pays each time it is switched in (``task_switch``), or None."""
        self.v = 0.0
        self.deadline = 0.0
        self.vprot = 0.0
        self.vlag = 0.0
        self.on_rq = False
        """Queued (running, runnable, or blocked but delayed)."""
        self.delayed = False
        """Blocked, but still queued until it becomes eligible (DELAY_DEQUEUE)."""
        self.blocked = True
        """Not started yet, or waiting for an event (not wanting the core)."""
        self.turn: simpy.Event | None = None
        """Succeeds when the scheduler gives this runnable task the core."""
        self.runtime_s = 0.0
        """Wall time this task held the core (its softirq work included)."""
        self.switches_in = 0

    def checkpoint(self) -> simpy.Event | None:
        """A syscall boundary of the running task: account its time and act on a pending
        reschedule.  Returns an event to wait for when the core has gone to another task."""
        s = self.sched
        if s.single:
            return None
        return s._checkpoint(self)

    def block(self) -> None:
        """The task is about to wait for an event (an empty socket, a full send buffer)."""
        s = self.sched
        if not s.single:
            s._block(self)

    def wake(self) -> simpy.Event | None:
        """The event the task waited for happened: it is runnable again.  Returns an event to
        wait for until the scheduler gives it the core (``None``: it has the core)."""
        s = self.sched
        if s.single:
            return None
        return s._wake(self)

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


class FairScheduler:
    """EEVDF over the tasks pinned to one core (see the module docstring).

    ``slice_s`` is the base slice, ``tick_s`` the tick period; ``core`` (if given) pays each
    switch to a task with a ``switch`` stage, before that task's own work.
    """

    def __init__(self, env: simpy.Environment, name: str, slice_s: float, tick_s: float = TICK_S,
                 core: Core | None = None) -> None:
        check_number(f"{name}.slice_s", slice_s, low=0, low_inclusive=False, high=1.0)
        check_number(f"{name}.tick_s", tick_s, low=0, low_inclusive=False, high=1.0)
        self.env = env
        self.name = name
        self.core = core
        self.slice_s = slice_s
        self.tick_s = tick_s
        self.tasks: list[Task] = []
        self.single = True
        """At most one task: every call is a no-op (the FIFO core alone decides)."""
        self.curr: Task | None = None
        self._last_s = 0.0
        self._next_tick_s = tick_s
        self.need_resched = False
        self.switches = 0
        """Context switches between tasks."""

    def add(self, name: str, switch: Stage | None = None) -> Task:
        """A new task on this core; it starts blocked and calls :meth:`Task.wake` when it first
        wants the core.  ``switch``: what its core pays to switch to it (``task_switch``)."""
        if any(t.name == name for t in self.tasks):
            raise ConfigError("task", name, f"a task name not already on {self.name}")
        task = Task(self, name, switch)
        self.tasks.append(task)
        self.single = len(self.tasks) < 2
        return task

    # -- EEVDF ------------------------------------------------------------------------------
    def _queued(self) -> list[Task]:
        return [t for t in self.tasks if t.on_rq]

    def _avg(self) -> float:
        q = self._queued()
        return sum(t.v for t in q) / len(q) if q else 0.0

    def _eligible(self, t: Task, avg: float) -> bool:
        return t.v <= avg + _EPS_S

    def _pick(self) -> Task | None:
        q = self._queued()
        if not q:
            return None
        if len(q) == 1:
            return q[0]
        avg = sum(t.v for t in q) / len(q)
        curr = self.curr
        if curr is not None and not (curr.on_rq and not curr.blocked and self._eligible(curr, avg)):
            curr = None
        if curr is not None and curr.vprot > curr.v:  # RUN_TO_PARITY
            return curr
        best: Task | None = None
        for t in q:
            if self._eligible(t, avg) and (best is None or t.deadline < best.deadline):
                best = t
        if best is None or (curr is not None and curr.deadline < best.deadline):
            best = curr
        return best

    def _lag(self, t: Task) -> float:
        limit = max(2.0 * self.slice_s, self.tick_s)
        lag = self._avg() - t.v
        return max(-limit, min(limit, lag))

    def _update_curr(self) -> None:
        """``update_curr``/``update_deadline`` for the running task (its time already added)."""
        curr = self.curr
        if curr is None or curr.blocked:
            return
        renewed = False
        if curr.v >= curr.deadline:
            curr.deadline = curr.v + self.slice_s
            renewed = True
        if (renewed or curr.vprot <= curr.v) and len(self._queued()) > 1:
            self.need_resched = True

    def _account(self) -> None:
        """Charge the running task the time since the last accounting; run the ticks passed."""
        now = self.env.now
        curr = self.curr
        if curr is not None and not curr.blocked:
            dt = now - self._last_s
            curr.v += dt
            curr.runtime_s += dt
        self._last_s = now
        if now >= self._next_tick_s:
            ticks = int((now - self._next_tick_s) / self.tick_s) + 1
            self._next_tick_s += ticks * self.tick_s
            self._update_curr()

    def _schedule(self) -> None:
        """``__schedule``: pick (finishing delayed dequeues on the way) and switch."""
        self.need_resched = False
        while True:
            nxt = self._pick()
            if nxt is not None and nxt.delayed:  # picked a delayed task: it leaves now
                lag = self._lag(nxt)
                nxt.vlag = min(lag, 0.0)  # DELAY_ZERO
                nxt.on_rq = False
                nxt.delayed = False
                continue
            break
        if nxt is self.curr:
            return
        self.curr = nxt
        if nxt is None:
            return
        self.switches += 1
        nxt.switches_in += 1
        nxt.vprot = nxt.deadline
        stage, core = nxt.switch, self.core
        if stage is not None and core is not None:  # schedule(): the core switches before the task runs
            from perfsim.core.sim import reserve_stage

            reserve_stage(stage, core, self.env.now)
        ev = nxt.turn
        nxt.turn = None
        if ev is not None and not ev.triggered:
            ev.succeed()

    def _wait_turn(self, t: Task) -> simpy.Event | None:
        if self.curr is t:
            return None
        ev = t.turn = self.env.event()
        return ev

    def _checkpoint(self, t: Task) -> simpy.Event | None:
        if self.curr is t:
            self._account()
            if self.need_resched:
                self._schedule()
        return self._wait_turn(t)

    def _block(self, t: Task) -> None:
        self._account()
        t.blocked = True
        if t.on_rq:
            if self._eligible(t, self._avg()):
                t.vlag = self._lag(t)
                t.on_rq = False
            else:  # DELAY_DEQUEUE: competes on until it would be picked
                t.delayed = True
        if self.curr is t:
            self._schedule()

    def _wake(self, t: Task) -> simpy.Event | None:
        self._account()
        t.blocked = False
        if t.delayed:  # requeue_delayed_entity (DELAY_ZERO): re-placed at lag 0 once eligible
            t.delayed = False
            if self._lag(t) > 0.0:
                t.on_rq = False
                t.v = self._avg()
                t.deadline = t.v + self.slice_s
                t.on_rq = True
        elif not t.on_rq:  # place_entity with PLACE_LAG
            q = self._queued()
            lag = t.vlag * (len(q) + 1) / len(q) if q else 0.0
            t.v = (sum(x.v for x in q) / len(q) if q else t.v) - lag
            t.deadline = t.v + self.slice_s
            t.on_rq = True
        self._update_curr()
        if self.curr is None or self.curr.blocked:
            self._schedule()
        elif self._pick() is t:  # check_preempt_wakeup_fair
            self.need_resched = True
        return self._wait_turn(t)

    def __repr__(self) -> str:
        return f"FairScheduler({self.name!r}, tasks={[t.name for t in self.tasks]})"

