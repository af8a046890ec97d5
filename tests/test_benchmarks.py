"""The benchmarks run and print their figures in the agreed format (speed is not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_engine_benchmark_quick_prints_the_required_lines() -> None:
    proc = subprocess.run([sys.executable, "benchmarks/engine.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name in ("perfsim", "simpy"):
        assert re.search(rf"^{name} packets_per_s=\d+ events_per_s=\d+$", out, re.MULTILINE), out
    assert re.search(r"^ratio perfsim/simpy=[\d.]+$", out, re.MULTILINE), out


@pytest.mark.slow
def test_modes_benchmark_quick_reports_every_mode() -> None:
    proc = subprocess.run([sys.executable, "benchmarks/modes.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for mode in ("host", "bridge", "overlay", "routed", "ipip"):
        assert re.search(rf"^{mode}\s+tcp_stream\s+sim_s_per_wall_s=[\d.]+ events_per_s=\d+ packets_per_s=\d+$", proc.stdout, re.M)
    assert re.search(r"^all events_per_s=\d+$", proc.stdout, re.M)


@pytest.mark.slow
def test_fluid_scale_benchmark_quick_prints_the_curve() -> None:
    proc = subprocess.run([sys.executable, "benchmarks/fluid_scale.py", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+$", proc.stdout, re.M)
    assert [int(r) for r in rows] == [1000, 3000, 10000], proc.stdout


@pytest.mark.slow
def test_fluid_agreement_benchmark_prints_every_point_and_the_summary() -> None:
    proc = subprocess.run([sys.executable, "benchmarks/fluid_agreement.py", "--modes", "host", "--quick",
                           "--duration", "0.02"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    points = re.findall(r"^host\s+\S+\s+\S+ flows=\s*\d+ hosts=\d des=\s*[\d.]+ fluid=\s*[\d.]+ Gbit/s error=\s*[+-][\d.]+% \(DES [\d.]+ s, drift [+-][\d.]+%\) "
                        r"worst flow [+-][\d.]+%$",
                        proc.stdout, re.M)
    assert len(points) == 2 * 2 * 2 * 2  # placements x workloads x flows x hosts
    assert re.search(r"^16 points: mean \|error\| [\d.]+%, max [\d.]+%, within 5%: \d+ of 16 \([\d.]+%\)$", proc.stdout, re.M)
    assert re.search(r"^per flow: the worst flow of each point within 5% in \d+ of 16 points, max [\d.]+%$", proc.stdout, re.M)
