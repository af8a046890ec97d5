"""Pieces shared by the sockets: application-side CPU work, a lazy timer, buffer defaults and
the TCP constants (states, timers, header sizes) used by the modules of the TCP endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from perfsim.core.cpu import IDLE_EPSILON_S
from perfsim.core.sim import reserve_stage
from perfsim.units import ETH_HDR_BYTES, IPV4_HDR_BYTES, TCP_HDR_BYTES

if TYPE_CHECKING:
    from perfsim.core.cpu import Core, Stage
    from perfsim.core.sim import Sim

DEFAULT_SNDBUF_BYTES = 4 * 1024 * 1024
"""TCP send buffer (``net.ipv4.tcp_wmem[2]``, the autotuning maximum)."""
DEFAULT_RCVBUF_BYTES = 6 * 1024 * 1024
"""TCP receive buffer (``net.ipv4.tcp_rmem[2]``, the autotuning maximum)."""

TCP_FRAME_HDR_BYTES = ETH_HDR_BYTES + IPV4_HDR_BYTES + TCP_HDR_BYTES
"""66: headers of every TCP frame on the wire."""
INITIAL_CWND_SEGS = 10
RTO_MIN_S = 0.2
RTO_INITIAL_S = 1.0
RTO_MAX_S = 120.0
DELAYED_ACK_S = 0.04
MAX_RETRIES = 15
"""``tcp_retries2``: consecutive timeouts before the connection is aborted."""
MAX_SYN_RETRIES = 6
TIME_WAIT_REUSE_S = 1.0
"""How long a TIME_WAIT socket keeps its port (re-ACKing a repeated FIN) before a new
connection may take it over: ``tcp_tw_reuse`` allows reuse after 1 s (Linux holds TIME_WAIT
60 s, which conntrack models on its own)."""

CLOSED, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSING, CLOSE_WAIT, LAST_ACK, TIME_WAIT = range(9)
STATE_NAMES = ("CLOSED", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSING",
               "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT")
SENDING_STATES = (ESTABLISHED, FIN_WAIT, CLOSING, CLOSE_WAIT, LAST_ACK)
"""States in which a connection may still transmit data or its FIN."""


def app_work_s(stage: Stage, nbytes: int, calls: int = 1) -> float:
    """CPU seconds of ``calls`` application calls of ``stage`` moving ``nbytes``."""
    return stage.per_packet_s * calls + stage.per_byte_s * nbytes


def reserve_app_work(stage: Stage, core: Core, now_s: float, nbytes: int, calls: int = 1) -> float:
    """Reserve ``calls`` application calls of ``stage`` moving ``nbytes`` on ``core`` (0 calls:
    a per-byte extra of a call already counted); return the end.

    The time is accounted on the stage (``reserve`` only books the core).
    """
    return reserve_stage(stage, core, now_s, nbytes, calls)


def wake_task(ev: Any, value: Any, stage: Stage, waker: Core | None, sleeper: Core, now_s: float,
              switch: Stage | None = None) -> None:
    """``try_to_wake_up`` of a task blocked on ``ev`` (a reader, writer, ``accept`` or
    ``connect``): succeed it with ``value``.  When the waker runs on another core than the
    sleeper's and that core is idle, the waker's core pays ``stage`` (``task_wakeup``) once:
    ``ttwu_queue_cond`` puts the task on the idle core's wake list and sends it an IPI (in a
    VM, an exit of the sending vCPU to wake the halted one).  A busy target core runs the
    activation itself.  The sleeper's core then switches to the task: ``switch``
    (``task_switch``, the schedule() out of what ran there and into the task) before the
    task's own work — omitted (None) for a task whose core's scheduler charges its switches
    (:mod:`perfsim.core.sched`)."""
    if ev is None or ev.triggered:
        return
    ev.succeed(value)
    if waker is not None and waker is not sleeper and sleeper.busy_until_s < now_s - IDLE_EPSILON_S:
        reserve_app_work(stage, waker, now_s, 0)
    if switch is not None:
        reserve_app_work(switch, sleeper, now_s, 0)


class LazyTimer:
    """A re-armable timer that costs one event per expiry, not one per re-arm.

    ``set(t)`` moves the deadline; an event already scheduled earlier re-schedules itself to
    the new deadline when it fires.  ``cancel()`` disarms it.
    """

    __slots__ = ("_sched", "deadline", "fn", "sim")

    def __init__(self, sim: Sim, fn: Callable[[], None]) -> None:
        self.sim = sim
        self.fn = fn
        self.deadline: float | None = None
        self._sched: float | None = None

    def set(self, t_s: float) -> None:
        self.deadline = t_s
        if self._sched is None or t_s < self._sched:
            self._sched = t_s
            self.sim.call_at(t_s, self._fire, t_s)

    def cancel(self) -> None:
        self.deadline = None

    def _fire(self, t_s: float) -> None:
        if self._sched == t_s:
            self._sched = None
        d = self.deadline
        if d is None:
            return
        if d <= self.sim.now:
            self.deadline = None
            self.fn()
        elif self._sched is None:
            self._sched = d
            self.sim.call_at(d, self._fire, d)
