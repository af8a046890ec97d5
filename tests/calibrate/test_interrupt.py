"""Ctrl-C and SIGTERM in the middle of a measurement remove the whole testbed.

``python -m perfsim.calibrate.measure`` runs as a subprocess; once its namespaces exist and a
tool runs inside them, it gets the signal and must exit (130 / 143) within seconds, leaving no
``psim-`` namespace, no link and no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perfsim.calibrate import testbed
from perfsim.calibrate.testbed import NS_PREFIX, Testbed, leftovers, list_namespaces, run


def _pids_in(namespaces: list[str]) -> set[int]:
    pids: set[int] = set()
    for ns in namespaces:
        cp = run(["ip", "netns", "pids", ns], check=False)
        pids |= {int(p) for p in cp.stdout.split() if p.isdigit()}
    return pids


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_measurement_cleans_up(signum: int, status: int, tmp_path: Path) -> None:
    before = set(list_namespaces())
    out = tmp_path / "raw.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "perfsim.calibrate.measure", "--paths", "nat", "--workloads", "tcp_stream",
         "--duration", "30", "--repeats", "1", "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        run_id, pids = "", set[int]()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None and len(pids) < 2:
            # the run whose namespaces hold children of proc (other runs may exist meanwhile):
            # wait for both the iperf3 server and client
            for ns in list_namespaces():
                if ns.startswith(NS_PREFIX) and ns not in before:
                    children = {p for p in _pids_in([ns]) if _parent(p) == proc.pid}
                    if children:
                        run_id = ns[len(NS_PREFIX):].split("-", 1)[0]
                        pids |= children
            time.sleep(0.05)
        assert len(pids) >= 2, f"the measurement never started: {proc.poll()}"
        t0 = time.monotonic()
        os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == status, err
        assert time.monotonic() - t0 < 5
        assert "removed" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert leftovers(run_id) == []
    assert not [ns for ns in list_namespaces() if ns.startswith(f"{NS_PREFIX}{run_id}")]
    assert not [p for p in pids if _alive(p)]
    assert not out.exists()


@pytest.mark.usefixtures("kernel")
def test_in_process_ctrl_c_removes_the_testbed_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    tb = Testbed("bridge")
    started: list[subprocess.Popen[bytes]] = []

    def measure_until_ctrl_c() -> None:
        with tb:
            started.append(tb.start(tb.server_ns, ["sleep", "60"]))
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises before this ends

    with pytest.raises(KeyboardInterrupt):
        measure_until_ctrl_c()
    assert started[0].poll() is not None
    assert leftovers(tb.run_id) == []
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.usefixtures("kernel")
def test_a_signal_during_cleanup_waits_until_cleanup_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    real = testbed._delete_namespaces

    def delete_and_get_terminated(names: list[str]) -> list[str]:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the cleanup
        return real(names)

    monkeypatch.setattr(testbed, "_delete_namespaces", delete_and_get_terminated)
    tb = Testbed("host")
    with pytest.raises(SystemExit) as stop, tb:
        pass
    assert stop.value.code == 143
    assert leftovers(tb.run_id) == []


@pytest.mark.usefixtures("kernel")
def test_a_killed_run_is_stale_and_cleanup_stale_removes_it() -> None:
    before = set(list_namespaces())
    proc = subprocess.Popen(
        [sys.executable, "-m", "perfsim.calibrate.measure", "--paths", "host", "--workloads", "tcp_stream",
         "--duration", "30", "--repeats", "1", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        mine: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not mine:
            new = [ns for ns in list_namespaces() if ns.startswith(NS_PREFIX) and ns not in before]
            mine = [ns for ns in new if any(_parent(p) == proc.pid for p in _pids_in([ns]))]
            time.sleep(0.05)
        assert mine
        run_id = mine[0][len(NS_PREFIX):].split("-", 1)[0]
        assert not [ns for ns in testbed.cleanup_stale() if run_id in ns]  # alive: not stale
        pids = _pids_in([ns for ns in list_namespaces() if ns.startswith(f"{NS_PREFIX}{run_id}-")])
    finally:
        proc.kill()  # SIGKILL: no cleanup of its own, namespaces and iperf3 stay behind
        proc.wait()
    assert leftovers(run_id)  # the crash left them
    removed = testbed.cleanup_stale()
    assert {ns for ns in removed if run_id in ns} == {f"{NS_PREFIX}{run_id}-h0", f"{NS_PREFIX}{run_id}-h1"}
    assert leftovers(run_id) == []
    deadline = time.monotonic() + 5
    while [p for p in pids if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)]
