"""Helpers of the sweep tests: a tiny base scenario, spec files, the CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent
BASE = {
    "version": 1, "name": "tiny", "duration_s": 0.006, "warmup_s": 0.002,
    "hosts": {"count": 2, "cores": 2},
    "network": {"mode": "bridge"},
    "containers": [{"name": "client", "host": 0}, {"name": "server", "host": 0}],
    "workloads": [{"name": "rr", "type": "tcp_rr", "client": "client", "server": "server", "message_size": 64}],
}
"""One tcp_rr flow between two containers of one host: a point takes ~20 ms to simulate."""


def write_spec(directory: Path, spec: dict[str, Any] | str, base: dict[str, Any] | None = None,
               name: str = "spec.yaml") -> Path:
    """Write ``base.yaml`` (the tiny scenario, or ``base``) and the spec beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "base.yaml").write_text(yaml.safe_dump(base if base is not None else BASE, sort_keys=False))
    path = directory / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return path


def perfsim_cmd(*args: str) -> list[str]:
    return [str(BIN / "perfsim"), *args]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(perfsim_cmd(*args), capture_output=True, text=True, timeout=timeout, check=False)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def address_of(info: Path) -> str | None:
    """The scheduler's address from its scheduler file, once the file is complete."""
    try:
        return str(json.loads(info.read_text())["address"])
    except (OSError, ValueError, KeyError):
        return None
