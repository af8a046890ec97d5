"""Sweeps on Dask: a real cluster (``dask scheduler`` and ``dask worker`` processes on
127.0.0.1) and the embedded LocalCluster give byte-identical results to the in-process run."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from perfsim.cli import main
from perfsim.experiment import sweep
from perfsim.experiment.sweep import execute
from perfsim.experiment.sweep_spec import load_spec
from tests.sweep.helpers import run_cli, write_spec

SPEC = {"name": "dask", "base": "base.yaml", "replications": 2, "modes": ["bridge", "host", "none"],
        "factors": {"workloads.rr.message_size": [64, 4096], "hosts.cores": [1, 2]}}
"""2 x 2 x 3 modes x 2 seeds = 24 points, 8 of which (mode none) fail."""
FILES = ("results.csv", "summary.csv")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The spec and the files of its in-process run (no Dask)."""
    d = tmp_path_factory.mktemp("ref")
    path = write_spec(d, SPEC)
    out = execute(load_spec(path), d / "out", workers=0)
    assert (out.points, out.errors) == (24, 8)
    return path, {f: (d / "out" / f).read_bytes() for f in FILES}


def test_external_cluster_gives_the_in_process_results(dask_cluster: str, reference: tuple[Path, dict[str, bytes]],
                                                       tmp_path: Path) -> None:
    spec, files = reference
    proc = run_cli("sweep", str(spec), "--scheduler", dask_cluster, "--out", str(tmp_path / "out"), "--format", "none")
    assert proc.returncode == 1, proc.stderr  # the mode-none points failed, and say so
    assert "24 points (12 configurations x 2 seeds): 24 run now, 0 already done, 8 errors" in proc.stderr
    assert "Traceback" not in proc.stderr
    for f in FILES:
        assert (tmp_path / "out" / f).read_bytes() == files[f], f
    # resumed on the cluster: nothing to do
    again = run_cli("sweep", str(spec), "--scheduler", dask_cluster, "--out", str(tmp_path / "out"), "--format", "none")
    assert "0 run now, 24 already done, 8 errors" in again.stderr


def test_embedded_local_cluster_gives_the_in_process_results(reference: tuple[Path, dict[str, bytes]],
                                                             tmp_path: Path) -> None:
    spec, files = reference
    proc = run_cli("sweep", str(spec), "--workers", "2", "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "sweep dask: 100%" in proc.stderr
    assert "24/24" in proc.stderr
    assert "errors=8" in proc.stderr
    for f in FILES:
        assert (tmp_path / "out" / f).read_bytes() == files[f], f


def test_local_cluster_from_the_python_api(reference: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    """In the test process itself (warnings are errors here): a LocalCluster of one worker."""
    spec, files = reference
    out = execute(load_spec(spec), tmp_path / "out", workers=1)
    assert (out.ran, out.errors) == (24, 8)
    assert (tmp_path / "out" / "results.csv").read_bytes() == files["results.csv"]


def test_unreachable_scheduler_is_a_one_line_error(reference: tuple[Path, dict[str, bytes]], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT_S", 1)  # the CLI waits 10 s for a remote scheduler
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["sweep", str(reference[0]), "--scheduler", f"tcp://127.0.0.1:{port}", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"perfsim sweep: --scheduler: got 'tcp://127.0.0.1:{port}'; allowed: the address of a "
                          "running Dask scheduler, tcp://HOST:PORT (could not connect: OSError: Timed out")
    assert err.count("\n") == 1
    assert not (tmp_path / "o" / "points").exists()
