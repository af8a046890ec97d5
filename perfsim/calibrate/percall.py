"""Per-call costs measured directly, not fitted: the switch to a woken task, ``select()`` and
the waker's cost of a wake-up on an idle other CPU.

``percall.c``, pinned to one CPU (its remote partner to another), measures (medians over its
rounds):

* ``task_switch``: one hand-over between two processes on the CPU — a pipe ping-pong's round
  trip minus two ``write`` + ``read`` pairs that do not block, halved.  It is what a blocked
  task's wake-up and the switch into it cost its core, on top of the system calls.
* ``select``: ``select()`` on one readable UDP socket before each ``read()`` of a queued 64 B
  datagram, minus the reads alone — iperf3's server calls it before every datagram.
* ``udp_recv``: that ``read()`` of a queued 64 B datagram on its own.
* ``wake_remote_s`` (only where a second CPU is allowed): what the waker pays to wake a task
  blocked on another CPU that went idle — the ``write()`` that wakes the partner minus one that
  wakes nobody: ``try_to_wake_up``'s remote path and the IPI to the halted CPU.  In a virtual
  machine the IPI is an exit of the sending vCPU (an x2APIC ICR write) that the hypervisor
  handles before the sender goes on — on the 2-vCPU machine kind about 11 µs, ten times the
  bare-metal cost.  Only a wake-up of a CPU that has halted pays it: for 10–20 µs after a task
  blocks its CPU still polls in the idle loop and is woken without an IPI
  (``docs/kernel-evidence.md``), which perfsim does not model yet.

Why measured: the request/response configurations the fit learns from switch tasks on every
message, so a fitted per-call cost (``sock_rx_copy``) would carry the switch, and a stream
whose reader never blocks would pay it too; and a UDP ``read()`` (no socket lock, no ACK)
costs a fraction of the TCP one the fit would otherwise share with it.  ``perfsim calibrate``
keeps the three fixed (:data:`perfsim.calibrate.fit.MEASURED_STAGES`).
Assumption: switching into a task woken on an idle core costs what switching between two
tasks does (the idle CPU's own wake-up is ``idle_wakeup``).
"""

from __future__ import annotations

import os

from perfsim.errors import ConfigError

PERCALL_ROUNDS = 200
"""Rounds of ``percall.c`` (about 6 s on the 2-vCPU machine kind, its remote wake-ups included)."""
MEASURED = {"task_switch": "switch_s", "select": "select_s", "udp_recv": "read_s"}
"""Profile stage -> the line of ``percall.c``'s output that measures its per-call cost.
``wake_remote_s`` is measured and recorded (``provenance.percall``) but not yet the profile's
``task_wakeup``: perfsim's two-core TCP stream sends 2.4× the IPIs the kernel does (4,600
against 1,950 per second, ``perfsim.calibrate.cpu_split``), so the measured cost per IPI would
be charged too often; ``task_wakeup`` stays fitted until the IPI count is right."""
OPTIONAL = ("wake_remote_s",)


def parse_percall(text: str) -> dict[str, float]:
    """``percall.c``'s output (``name value`` lines) -> seconds per call for ``read_s``,
    ``select_s``, ``switch_s`` and, if measured, ``wake_remote_s``; a missing, non-numeric or
    implausible (not 1 ns .. 1 ms) value is a ConfigError."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                values[parts[0]] = float(parts[1])
            except ValueError:
                raise ConfigError("percall output", line, "'name seconds' lines") from None
    for key in ("read_s", "select_s", "switch_s", *OPTIONAL):
        v = values.get(key)
        if v is None and key in OPTIONAL:
            continue
        if v is None or not 1e-9 <= v <= 1e-3:
            raise ConfigError(f"percall {key}", v, "a per-call cost between 1 ns and 1 ms")
    return values


def measure_percall(cpu: int = 0, rounds: int = PERCALL_ROUNDS, remote: int | None = None) -> dict[str, float]:
    """Run ``percall.c`` pinned to ``cpu``: seconds per call of ``read_s``, ``select_s`` and
    ``switch_s``, and ``wake_remote_s`` with its partner on ``remote`` (default: the lowest
    other CPU this process may use; none if there is no other).  Loopback and pipes only."""
    from perfsim.calibrate.measure import c_binary
    from perfsim.calibrate.testbed import run

    allowed = os.sched_getaffinity(0)
    if cpu not in allowed:
        raise ConfigError("cpu", cpu, f"a CPU this process may run on ({sorted(allowed)})")
    if not 1 <= rounds <= 100_000:
        raise ConfigError("rounds", rounds, "1 .. 100000")
    if remote is None:
        remote = min(allowed - {cpu}, default=None)
    elif remote == cpu or remote not in allowed:
        raise ConfigError("remote", remote, f"another CPU this process may run on ({sorted(allowed - {cpu})})")
    argv = ["taskset", "-c", str(cpu), str(c_binary("percall")), str(rounds)]
    if remote is not None:
        argv.append(str(remote))
    out = run(argv, timeout_s=60 + rounds * 0.15)
    return parse_percall(out.stdout)


def stage_costs(measured: dict[str, float]) -> dict[str, float]:
    """The measured stages' per-call costs: ``{"task_switch": s, "select": s, "udp_recv": s}``."""
    return {stage: measured[key] for stage, key in MEASURED.items() if key in measured}
