"""The sweep tests' fixture: a real Dask cluster (``dask scheduler`` + ``dask worker`` processes
on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.sweep.helpers import BIN, address_of, wait_for


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Dask cluster as separate processes on loopback: ``dask scheduler`` on a free port
    and ``dask worker`` with 2 single-threaded worker processes.  Yields the scheduler address."""
    d = tmp_path_factory.mktemp("dask")
    info = d / "scheduler.json"
    procs: list[subprocess.Popen[bytes]] = []
    log = open(d / "cluster.log", "wb")  # noqa: SIM115 - closed below
    try:
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(info)], stdout=log, stderr=log, cwd=d, start_new_session=True))
        wait_for(lambda: address_of(info) is not None, 60, "the dask scheduler")
        address = str(address_of(info))
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", "--scheduler-file", str(info), "--host", "127.0.0.1", "--nworkers", "2",
             "--nthreads", "1", "--no-dashboard", "--local-directory", str(d)],
            stdout=log, stderr=log, cwd=d, start_new_session=True))
        wait_for(lambda: (d / "cluster.log").read_text(errors="replace").count("Registered to:") >= 2, 60,
                 "2 dask workers registered")
        yield address
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        log.close()


