"""The idle-CPU wake-up (``idle_wakeup``), measured directly: its mean and its spread.

``wake.c`` times a thread blocked on an eventfd being woken: from another CPU after both went
idle (*remote*: the IPI, the wake-up of the halted CPU — in a VM the hypervisor resuming the
halted vCPU — and the task's switch-in) and from its own CPU (*local*: the same
``try_to_wake_up`` and switch without any wake-up).  The idle wake-up is the difference:
every remote sample minus the local median (:func:`idle_wakeups`).  Its mean becomes
``idle_wakeup.per_packet_s`` and its distribution, as equal-probability atoms normalised to mean 1
(:func:`shape_atoms`), ``idle_wakeup.shape``: the simulator draws every idle core's wake-up
from them (:class:`perfsim.core.rng.ShapeSampler`).  The fit keeps the constant fixed.

Assumptions: the CPU work of a wake-up (``try_to_wake_up``, the switch, the return from the
system call — a few µs, costed by other stages) is the same whether the sleeper's CPU was idle
or not, so the local median is what to subtract; the idle time before a wake-up in a two-core
request/response test is about :data:`WAKE_GAP_S`.  On bare metal with shallow C-states the
difference is a few µs and its shape hardly matters; in a VM it is tens of µs with a long tail,
which puts the median round trip well below the mean.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from perfsim.errors import ConfigError

WAKE_SAMPLES = 300
"""Remote samples taken before each two-core request/response measurement (``perfsim
calibrate``): the wake-up of a vCPU changes with the host's load, so it is sampled in the same
minutes as the round trips it explains."""
LOCAL_SAMPLES = 100
WAKE_GAP_S = 100e-6
"""Idle time before each wake-up: about what each side of a two-core request/response test
waits for the other."""
SHAPE_ATOMS = 100


def wakeup_path_for(raw_path: Path) -> Path:
    """Where a profile's wake-up samples live: ``name.raw.csv`` -> ``name.wakeup.csv.gz``
    (gzip-compressed: tens of thousands of samples, each with the measurement it preceded)."""
    return raw_path.with_name(raw_path.name.removesuffix(".raw.csv") + ".wakeup.csv.gz")


def measure_wakeups(samples: int = WAKE_SAMPLES, gap_s: float = WAKE_GAP_S, cpus: tuple[int, int] = (0, 1),
                    local_samples: int = LOCAL_SAMPLES) -> pd.DataFrame:
    """Wake-up delays (s) of a task woken from CPU ``cpus[0]``: ``samples`` on idle CPU
    ``cpus[1]`` (``kind`` remote) and ``local_samples`` on ``cpus[0]`` itself (``kind`` local)."""
    from perfsim.calibrate.measure import c_binary
    from perfsim.calibrate.testbed import CommandError, run

    allowed = os.sched_getaffinity(0)
    if cpus[0] == cpus[1] or not set(cpus) <= allowed:
        raise ConfigError("cpus", cpus, f"two different CPUs this process may run on ({sorted(allowed)})")
    frames = []
    for kind, sleeper, n in (("remote", cpus[1], samples), ("local", cpus[0], local_samples)):
        argv = [str(c_binary("wake")), str(n), str(round(gap_s * 1e9)), str(cpus[0]), str(sleeper)]
        out = run(argv, timeout_s=60 + n * (gap_s + 1e-3)).stdout
        try:
            delays = np.array([int(x) for x in out.split()], dtype=float) * 1e-9
        except ValueError:
            raise CommandError(argv, "output is not one delay per line") from None
        if delays.size != n or (delays <= 0).any():
            raise CommandError(argv, f"expected {n} positive delays, got {delays.size}")
        frames.append(pd.DataFrame({"kind": kind, "delay_s": delays}))
    return pd.concat(frames, ignore_index=True)


def idle_wakeups(samples: pd.DataFrame) -> np.ndarray:
    """The idle wake-ups: every remote sample minus the local median, at least 0."""
    s = check_samples(samples)
    remote = s.loc[s["kind"] == "remote", "delay_s"].to_numpy()
    local = float(np.median(s.loc[s["kind"] == "local", "delay_s"].to_numpy()))
    return np.maximum(remote - local, 0.0)


def shape_atoms(delays_s: np.ndarray, atoms: int = SHAPE_ATOMS) -> list[float]:
    """The samples' distribution as ``atoms`` equal-probability atoms (the mean of each
    ``1/atoms`` quantile band), normalised to mean 1."""
    d = np.sort(np.asarray(delays_s, dtype=float))
    if d.size < atoms or not np.isfinite(d).all() or d[0] < 0 or d.mean() <= 0:
        raise ConfigError("wake-up samples", f"{d.size} samples", f"at least {atoms} finite delays >= 0 with a positive mean")
    bands = np.array_split(d, atoms)
    means = np.array([b.mean() for b in bands])
    return [float(x) for x in means / means.mean()]


def check_samples(samples: pd.DataFrame, source: str = "wake-up samples") -> pd.DataFrame:
    """Columns ``kind`` (remote / local) and ``delay_s`` (finite, > 0), both kinds present."""
    if not {"kind", "delay_s"} <= set(samples.columns):
        raise ConfigError(source, sorted(map(str, samples.columns)), "columns kind and delay_s")
    delay = pd.to_numeric(samples["delay_s"], errors="coerce")
    if not np.isfinite(delay).all() or (delay <= 0).any():
        raise ConfigError(source, "a delay_s that is not a number > 0", "delays in seconds, > 0")
    kinds = set(samples["kind"].astype(str))
    if kinds != {"remote", "local"}:
        raise ConfigError(source, sorted(kinds), "kinds remote and local")
    return samples.assign(delay_s=delay.astype(float))


def write_wakeups(samples: pd.DataFrame, path: Path) -> None:
    """The samples as CSV, delays in µs to 0.1 µs (``delay_us``), other columns (``config_id``,
    ``repeat``: which measurement they preceded) as they are."""
    df = check_samples(samples)
    df = df.assign(delay_us=(df["delay_s"] * 1e6).round(1)).drop(columns="delay_s")
    df.to_csv(path, index=False)


def read_wakeups(path: Path) -> pd.DataFrame:
    """Samples written by :func:`write_wakeups` (``delay_us``), with ``delay_s``."""
    try:
        df = pd.read_csv(path)
    except (ValueError, OSError, EOFError) as exc:  # EOFError: a truncated .gz
        raise ConfigError("wake-up samples", str(path), f"a readable CSV ({exc.__class__.__name__})") from None
    if "delay_us" not in df.columns:
        raise ConfigError("wake-up samples", str(path), "a CSV with columns kind and delay_us")
    delay = pd.to_numeric(df["delay_us"], errors="coerce") * 1e-6
    return check_samples(df.drop(columns="delay_us").assign(delay_s=delay), str(path))
