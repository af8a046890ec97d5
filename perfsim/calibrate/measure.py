"""Measure the real kernel datapaths of :mod:`perfsim.calibrate.testbed` with real tools.

One *configuration* (:class:`MeasureConfig`) is a path, a workload, its streams and message size,
offloads on/off and how many cores the processes are pinned to.  The tools:

=============  ==========================================================================
tcp_stream     ``iperf3 -c -t D -P streams -l message_bytes -J`` against ``iperf3 -s``:
               ``throughput_bps`` = the receiver's goodput (``end.sum_received``),
               ``cpu_client_pct`` / ``cpu_server_pct`` (``cpu_utilization_percent``)
udp_stream     ``iperf3 -u -b 0 -l message_bytes`` (default 64 B): ``throughput_bps`` and
               ``packet_rate_pps`` = datagrams received per second ((packets - lost) /
               seconds, the receiver's view), ``loss_fraction``, the CPU percentages
tcp_rr/udp_rr  ``sockperf pp [--tcp] -m message_bytes --full-rtt`` against ``sockperf sr``:
               ``latency_s`` (median full round trip), ``latency_p99_s``, ``transaction_rate``
               (round trips per second of sockperf's valid window)
tcp_crr        ``crr`` (``crr.c``, compiled once into ``~/.cache/perfsim``): connect, write
               message_bytes (default 1), read as many back, close, for D seconds:
               ``connection_rate``, ``latency_s`` / ``latency_p99_s`` of one whole transaction
=============  ==========================================================================

CPU placement, which the simulation reproduces: ``cores=1`` pins client and server (and so all
softirq work they trigger: a veth transmit runs the receive path on the sender's CPU) to CPU 0;
``cores=2`` pins the client to CPU 0 and the server to CPU 1.  iperf3 and sockperf count whole
seconds: their runs last ``ceil(duration_s)`` (at least 1 s; sockperf spends its first 0.4 s
warming up and reports the rest); crr runs ``duration_s`` exactly.

Repeats are interleaved (repeat 0 of every configuration, then repeat 1, ...), with one testbed
per (path, offloads) kept for the whole measurement, so a slow minute of a busy machine does not
land on one configuration only.  Results are a long DataFrame, one row per (configuration,
metric, repeat); :func:`summarize` takes medians.

``python -m perfsim.calibrate.measure [--quick] [--paths host,overlay] [--workloads ...]
[--duration S] [--repeats N] [--out raw.csv]``: exit 0, 2 on a bad option (one line), 3 when
namespaces cannot be created or a tool is missing, 130 on Ctrl-C and 143 on SIGTERM (after
removing the testbeds), 1 when a tool fails.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.resources
import json
import math
import os
import platform
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
from tqdm import tqdm

from perfsim.calibrate.testbed import (
    CRR_PORT,
    IPERF3_PORT,
    PATHS,
    SOCKPERF_PORT,
    TCP_CONGESTION_CONTROL,
    CommandError,
    Testbed,
    can_create_namespaces,
    cleanup_stale,
    missing_tools,
    run,
)
from perfsim.errors import ConfigError, check_number

WORKLOADS = ("tcp_stream", "udp_stream", "tcp_rr", "udp_rr", "tcp_crr")
DEFAULT_MESSAGE_BYTES = {"tcp_stream": 131072, "udp_stream": 64, "tcp_rr": 64, "udp_rr": 64, "tcp_crr": 1}
MESSAGE_RANGE = {  # what the tools accept
    "tcp_stream": (1, 1 << 20), "udp_stream": (16, 65507), "tcp_rr": (14, 65507), "udp_rr": (14, 65507),
    "tcp_crr": (1, 1 << 20),
}
METRICS = {
    "tcp_stream": ("throughput_bps", "cpu_client_pct", "cpu_server_pct"),
    "udp_stream": ("throughput_bps", "packet_rate_pps", "loss_fraction", "cpu_client_pct", "cpu_server_pct"),
    "tcp_rr": ("latency_s", "latency_p99_s", "transaction_rate"),
    "udp_rr": ("latency_s", "latency_p99_s", "transaction_rate"),
    "tcp_crr": ("connection_rate", "latency_s", "latency_p99_s"),
}
TOOLS = {"tcp_stream": "iperf3", "udp_stream": "iperf3", "tcp_rr": "sockperf", "udp_rr": "sockperf", "tcp_crr": "gcc"}
CONFIG_COLUMNS = ["path", "workload", "streams", "message_bytes", "offloads", "cores"]
COLUMNS = [*CONFIG_COLUMNS, "config_id", "metric", "repeat", "value"]

QUICK_PATHS = ("host", "bridge", "overlay")
QUICK_DURATION_S = 1.0
QUICK_REPEATS = 2
FULL_DURATION_S = 2.0
FULL_REPEATS = 3
CLIENT_GRACE_S = 15.0
"""A client gets its duration plus this long before it is killed (a hang is an error)."""


@dataclass(frozen=True)
class MeasureConfig:
    """One measured configuration; ``message_bytes=0`` means the workload's default
    (:data:`DEFAULT_MESSAGE_BYTES`).  Invalid fields raise :class:`ConfigError`."""

    path: str
    workload: str
    streams: int = 1
    message_bytes: int = 0
    offloads: bool = True
    cores: int = 1

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ConfigError("path", self.path, f"one of {', '.join(PATHS)}")
        if self.workload not in WORKLOADS:
            raise ConfigError("workload", self.workload, f"one of {', '.join(WORKLOADS)}")
        check_number("streams", self.streams, low=1, high=128, integer=True)
        if self.streams > 1 and self.workload not in ("tcp_stream", "udp_stream"):
            raise ConfigError("streams", self.streams, f"1 for {self.workload} (parallel streams: *_stream only)")
        if isinstance(self.message_bytes, int) and not isinstance(self.message_bytes, bool) and self.message_bytes == 0:
            object.__setattr__(self, "message_bytes", DEFAULT_MESSAGE_BYTES[self.workload])
        lo, hi = MESSAGE_RANGE[self.workload]
        check_number("message_bytes", self.message_bytes, low=lo, high=hi, integer=True)
        if not isinstance(self.offloads, bool):
            raise ConfigError("offloads", self.offloads, "True or False")
        check_number("cores", self.cores, low=1, high=2, integer=True)

    @property
    def id(self) -> str:
        """``overlay/tcp_stream/s1/m131072/on/c1`` (same as ``perfsim.calibrate.configs.config_id``)."""
        return (f"{self.path}/{self.workload}/s{self.streams}/m{self.message_bytes}/"
                f"{'on' if self.offloads else 'off'}/c{self.cores}")

    @property
    def cpus(self) -> tuple[int, int]:
        """(client CPU, server CPU)."""
        return (0, 0) if self.cores == 1 else (0, 1)


def full_plan() -> list[MeasureConfig]:
    """Every path: tcp_stream with 1 and 4 streams (offloads on), 1 stream with offloads off,
    udp_stream 64 B, tcp_rr and udp_rr 64 B, tcp_crr 1 B — each on 1 and on 2 cores (84)."""
    plan = []
    for path in PATHS:
        for cores in (1, 2):
            plan += [
                MeasureConfig(path, "tcp_stream", 1, cores=cores),
                MeasureConfig(path, "tcp_stream", 4, cores=cores),
                MeasureConfig(path, "tcp_stream", 1, offloads=False, cores=cores),
                MeasureConfig(path, "udp_stream", cores=cores),
                MeasureConfig(path, "tcp_rr", cores=cores),
                MeasureConfig(path, "udp_rr", cores=cores),
                MeasureConfig(path, "tcp_crr", cores=cores),
            ]
    return plan


def quick_plan() -> list[MeasureConfig]:
    """host, bridge and overlay: tcp_stream (1 stream), udp_rr and tcp_crr on one core (9);
    run with :data:`QUICK_DURATION_S` and :data:`QUICK_REPEATS`."""
    return [MeasureConfig(p, w) for p in QUICK_PATHS for w in ("tcp_stream", "udp_rr", "tcp_crr")]


# --- tools ------------------------------------------------------------------------------------

def whole_seconds(duration_s: float) -> int:
    """iperf3's and sockperf's ``-t``: whole seconds, at least ``duration_s``, at least 1."""
    return max(1, math.ceil(duration_s - 1e-9))


def c_binary(name: str) -> Path:
    """The compiled ``<name>.c`` of this package (``crr``, ``wake``):
    ``$XDG_CACHE_HOME/perfsim/<name>-<sha256 of the source>``, built with gcc on first use and
    whenever the source changes."""
    src = importlib.resources.files("perfsim.calibrate").joinpath(f"{name}.c").read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "perfsim"
    exe = cache / f"{name}-{digest}"
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        (Path(tmp) / f"{name}.c").write_bytes(src)
        out = Path(tmp) / name
        run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(out), str(Path(tmp) / f"{name}.c")], timeout_s=120)
        os.replace(out, exe)  # atomic: a concurrent build of the same source is harmless
    return exe


def crr_binary() -> Path:
    """The compiled ``crr.c`` (:func:`c_binary`)."""
    return c_binary("crr")


def _server_and_client(
    tb: Testbed, cfg: MeasureConfig, server: list[str], proto: str, port: int, client: list[str], timeout_s: float,
) -> str:
    """Start ``server`` (pinned), wait until it listens, run ``client`` (pinned) to completion,
    stop the server; returns the client's stdout."""
    c_cpu, s_cpu = cfg.cpus
    proc = tb.start(tb.server_ns, server, cpu=s_cpu)
    try:
        tb.wait_listening(tb.server_ns, proto, port, proc)
        cp = tb.call(tb.client_ns, client, cpu=c_cpu, timeout_s=timeout_s, check=False)
    finally:
        server_err = tb.stop(proc)
    if cp.returncode != 0:
        detail = (cp.stderr or cp.stdout[-300:] or server_err).strip()
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(cp.stdout).get("error") or detail
        raise CommandError(cp.args, f"exit status {cp.returncode}", detail)
    return str(cp.stdout)


def run_iperf3(tb: Testbed, cfg: MeasureConfig, duration_s: float) -> dict[str, float]:
    """One iperf3 run of a ``*_stream`` configuration; the metrics of :data:`METRICS`."""
    secs = whole_seconds(duration_s)
    udp = cfg.workload == "udp_stream"
    client = ["iperf3", "-4", "-c", tb.server_addr, "-p", str(tb.port("udp" if udp else "tcp", IPERF3_PORT)),
              "-t", str(secs), "-P", str(cfg.streams), "-l", str(cfg.message_bytes), "-J",
              "--connect-timeout", "3000"]
    if udp:
        client += ["-u", "-b", "0"]
    out = _server_and_client(tb, cfg, ["iperf3", "-4", "-s", "-p", str(IPERF3_PORT)], "tcp", IPERF3_PORT, client,
                             secs + CLIENT_GRACE_S)
    end = json.loads(out)["end"]
    recv, cpu = end["sum_received"], end["cpu_utilization_percent"]
    metrics = {"throughput_bps": float(recv["bits_per_second"])}
    if udp:
        packets, lost, seconds = int(recv["packets"]), int(recv["lost_packets"]), float(recv["seconds"])
        metrics["packet_rate_pps"] = (packets - lost) / seconds
        metrics["loss_fraction"] = lost / packets if packets else float("nan")
    metrics["cpu_client_pct"] = float(cpu["host_total"])
    metrics["cpu_server_pct"] = float(cpu["remote_total"])
    return metrics


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_VALID = re.compile(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)")
_PCT = re.compile(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)")


def parse_sockperf(text: str) -> dict[str, float]:
    """``latency_s`` (p50), ``latency_p99_s`` and ``transaction_rate`` from ``sockperf pp
    --full-rtt`` output (times in µs there, full round trips)."""
    text = _ANSI.sub("", text)
    valid = _VALID.search(text)
    pct = {float(p): float(v) for p, v in _PCT.findall(text)}
    if valid is None or 50.0 not in pct or 99.0 not in pct:
        raise RuntimeError(f"unexpected sockperf output: {text.strip()[-300:]!r}")
    if "Round trip" not in text and "avg-rtt" not in text:
        raise RuntimeError("sockperf did not report full round trips (--full-rtt)")
    seconds, received = float(valid.group(1)), int(valid.group(3))
    return {"latency_s": pct[50.0] * 1e-6, "latency_p99_s": pct[99.0] * 1e-6, "transaction_rate": received / seconds}


def run_sockperf(tb: Testbed, cfg: MeasureConfig, duration_s: float) -> dict[str, float]:
    """One sockperf ping-pong run of a ``*_rr`` configuration."""
    proto = "tcp" if cfg.workload == "tcp_rr" else "udp"
    flag = ["--tcp"] if proto == "tcp" else []
    secs = whole_seconds(duration_s)
    server = ["sockperf", "sr", *flag, "-i", "0.0.0.0", "-p", str(SOCKPERF_PORT)]
    client = ["sockperf", "pp", *flag, "-i", tb.server_addr, "-p", str(tb.port(proto, SOCKPERF_PORT)),
              "-m", str(cfg.message_bytes), "-t", str(secs), "--full-rtt"]
    out = _server_and_client(tb, cfg, server, proto, SOCKPERF_PORT, client, secs + CLIENT_GRACE_S)
    return parse_sockperf(out)


def run_crr(tb: Testbed, cfg: MeasureConfig, duration_s: float) -> dict[str, float]:
    """One ``crr`` run of a ``tcp_crr`` configuration."""
    exe = str(crr_binary())
    msg = str(cfg.message_bytes)
    client = [exe, "client", tb.server_addr, str(tb.port("tcp", CRR_PORT)), msg, f"{duration_s:.6f}"]
    out = _server_and_client(tb, cfg, [exe, "server", str(CRR_PORT), msg], "tcp", CRR_PORT, client,
                             duration_s + CLIENT_GRACE_S)
    res = json.loads(out)
    if res["errors"]:
        _err(f"warning: {cfg.id}: {res['errors']} failed connections")
    return {"connection_rate": res["connections"] / res["seconds"], "latency_s": float(res["latency_p50_s"]),
            "latency_p99_s": float(res["latency_p99_s"])}


RUNNERS = {"tcp_stream": run_iperf3, "udp_stream": run_iperf3, "tcp_rr": run_sockperf, "udp_rr": run_sockperf,
           "tcp_crr": run_crr}


def run_config(tb: Testbed, cfg: MeasureConfig, duration_s: float) -> dict[str, float]:
    """One run of ``cfg`` on a testbed of its path and offloads."""
    if (tb.path, tb.offloads) != (cfg.path, cfg.offloads):
        raise ConfigError("testbed", f"{tb.path}/{tb.offloads}", f"a testbed of {cfg.path}/{cfg.offloads}")
    return RUNNERS[cfg.workload](tb, cfg, duration_s)


# --- the measurement --------------------------------------------------------------------------

def _check_run(configs: list[MeasureConfig], duration_s: float, repeats: int) -> None:
    if not configs:
        raise ConfigError("configs", configs, "at least one MeasureConfig")
    for cfg in configs:
        if not isinstance(cfg, MeasureConfig):
            raise ConfigError("configs", cfg, "MeasureConfig objects")
    check_number("duration_s", duration_s, low=0.1, high=3600)
    check_number("repeats", repeats, low=1, high=1000, integer=True)
    cpus = os.cpu_count() or 1
    wanted = max(cfg.cores for cfg in configs)
    if wanted > cpus:
        raise ConfigError("cores", wanted, f"<= {cpus} (the CPUs of this machine)")
    missing = missing_tools(sorted({TOOLS[cfg.workload] for cfg in configs}))
    if missing:
        raise RuntimeError(f"missing tools: {', '.join(missing)} (make kernel-tools installs them)")


def measure(
    configs: Iterable[MeasureConfig], duration_s: float = FULL_DURATION_S, repeats: int = FULL_REPEATS,
    progress: bool = True, wakeup_samples: int = 0,
) -> pd.DataFrame:
    """Measure every configuration ``repeats`` times (interleaved) for ``duration_s`` each.

    Returns the long DataFrame of :data:`COLUMNS`; ``df.attrs["testbeds"]`` holds each testbed's
    metadata (br_netfilter, offloads it could not change, ...) by ``path/on|off``.  With
    ``wakeup_samples``, every request/response or connection measurement on two cores is
    preceded by that many idle-CPU wake-up samples (:func:`perfsim.calibrate.wakeup.measure_wakeups`),
    returned in ``df.attrs["wakeups"]`` with the ``config_id`` and ``repeat`` they preceded.
    """
    from perfsim.calibrate.wakeup import measure_wakeups

    configs = list(configs)
    _check_run(configs, duration_s, repeats)
    if any(cfg.workload == "tcp_crr" for cfg in configs):
        crr_binary()  # compile before any testbed exists
    if wakeup_samples:
        c_binary("wake")
    wakes: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []
    testbeds: dict[tuple[str, bool], Testbed] = {}
    with contextlib.ExitStack() as stack, tqdm(total=len(configs) * repeats, disable=not progress,
                                               file=sys.stderr, unit="run", leave=False) as bar:
        for rep in range(repeats):
            for cfg in configs:
                bar.set_description(cfg.id, refresh=False)
                key = (cfg.path, cfg.offloads)
                if key not in testbeds:
                    testbeds[key] = stack.enter_context(Testbed(cfg.path, cfg.offloads))
                if wakeup_samples and cfg.cores >= 2 and cfg.workload in ("tcp_rr", "udp_rr", "tcp_crr"):
                    w = measure_wakeups(wakeup_samples, cpus=(cfg.cpus[0], cfg.cpus[1]))
                    wakes.append(w.assign(config_id=cfg.id, repeat=rep))
                metrics = run_config(testbeds[key], cfg, duration_s)
                base = {"path": cfg.path, "workload": cfg.workload, "streams": cfg.streams,
                        "message_bytes": cfg.message_bytes, "offloads": cfg.offloads, "cores": cfg.cores,
                        "config_id": cfg.id, "repeat": rep}
                rows += [{**base, "metric": m, "value": v} for m, v in metrics.items()]
                bar.update()
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["testbeds"] = {f"{p}/{'on' if o else 'off'}": tb.metadata for (p, o), tb in testbeds.items()}
    if wakes:
        df.attrs["wakeups"] = pd.concat(wakes, ignore_index=True)
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Median ``value`` per (configuration, metric), with ``repeats`` = how many values."""
    keys = [*CONFIG_COLUMNS, "config_id", "metric"]
    grouped = df.groupby(keys, sort=False)["value"]
    out = grouped.median().reset_index()
    out["repeats"] = grouped.count().to_numpy()
    return out


_UNITS = {  # metric -> (header, scale)
    "throughput_bps": ("Gbit/s", 1e-9), "packet_rate_pps": ("kpps", 1e-3), "loss_fraction": ("loss", 1.0),
    "transaction_rate": ("trans/s", 1.0), "connection_rate": ("conn/s", 1.0), "latency_s": ("p50 µs", 1e6),
    "latency_p99_s": ("p99 µs", 1e6), "cpu_client_pct": ("cpu cl%", 1.0), "cpu_server_pct": ("cpu sv%", 1.0),
}


def format_summary(summary: pd.DataFrame) -> str:
    """One line per configuration, its median metrics in readable units."""
    wide = summary.pivot_table(index="config_id", columns="metric", values="value", sort=False)
    order = [m for m in _UNITS if m in wide.columns]
    table = pd.DataFrame({_UNITS[m][0]: wide[m] * _UNITS[m][1] for m in order}, index=wide.index)
    return table.to_string(float_format=lambda v: f"{v:.4g}", na_rep="")


def _version(argv: list[str]) -> str:
    try:
        cp = run(argv, timeout_s=10, check=False)
    except CommandError:
        return "missing"
    text = _ANSI.sub("", (cp.stdout or cp.stderr)).strip()
    return text.splitlines()[0].strip() if text else "unknown"


def machine_info() -> dict[str, Any]:
    """The machine a measurement ran on: CPU model and clock, cores, kernel, tool versions, date."""
    models: list[str] = []
    mhz: list[float] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                models.append(value.strip())
            elif key.strip() == "cpu MHz":
                with contextlib.suppress(ValueError):
                    mhz.append(float(value))
    mean_mhz = sum(mhz) / len(mhz) if mhz else None
    return {
        "cpu_model": models[0] if models else platform.processor() or "unknown",
        "cpu_mhz": mean_mhz,
        "cpu_ghz": mean_mhz / 1000 if mean_mhz else None,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "iperf3": _version(["iperf3", "--version"]),
        "sockperf": _version(["sockperf", "--version"]),
        "iptables": _version(["iptables", "--version"]),
        "gcc": _version(["gcc", "--version"]),
        "python": platform.python_version(),
        "tcp_congestion_control": TCP_CONGESTION_CONTROL,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_csv_atomic(df: pd.DataFrame, out: str | os.PathLike[str]) -> Path:
    """Write ``df`` to ``out`` through a temporary file and ``os.replace``."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            df.to_csv(f, index=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# --- command line -----------------------------------------------------------------------------

def _names(field: str, text: str, allowed: Sequence[str]) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ConfigError(field, text, f"a comma-separated list of {', '.join(allowed)}")
    return names


def _number(field: str, text: str | None, default: float, integer: bool, low: float, high: float) -> float:
    if text is None:
        return default
    try:
        value: float = int(text) if integer else float(text)
    except ValueError:
        raise ConfigError(field, text, f"{'an integer' if integer else 'a number'} >= {low:g} and <= {high:g}") from None
    return check_number(field, value, low=low, high=high, integer=integer)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m perfsim.calibrate.measure``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m perfsim.calibrate.measure",
                                     description="Measure Docker's datapaths on this machine's kernel.")
    parser.add_argument("--quick", action="store_true", help="the quick plan (9 configurations, ~30 s)")
    parser.add_argument("--paths", help=f"comma-separated subset of {','.join(PATHS)}")
    parser.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--duration", help="seconds per run (default 2, quick 1)")
    parser.add_argument("--repeats", help="runs per configuration (default 3, quick 2)")
    parser.add_argument("--out", help="write the long CSV here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _sigterm) if _main_thread() else None
    try:
        configs = quick_plan() if args.quick else full_plan()
        if args.paths:
            paths = _names("paths", args.paths, PATHS)
            configs = [c for c in configs if c.path in paths]
        if args.workloads:
            wls = _names("workloads", args.workloads, WORKLOADS)
            configs = [c for c in configs if c.workload in wls]
        if not configs:
            raise ConfigError("paths/workloads", f"{args.paths}/{args.workloads}", "a selection of the plan that is not empty")
        duration = _number("duration", args.duration, QUICK_DURATION_S if args.quick else FULL_DURATION_S,
                           False, 0.1, 3600)
        repeats = int(_number("repeats", args.repeats, QUICK_REPEATS if args.quick else FULL_REPEATS, True, 1, 1000))
        ok, why = can_create_namespaces()
        if not ok:
            _err(f"cannot measure: {why}")
            return 3
        missing = missing_tools(sorted({TOOLS[c.workload] for c in configs}))
        if missing:
            _err(f"cannot measure: missing tools: {', '.join(missing)} (make kernel-tools installs them)")
            return 3
        removed = cleanup_stale()
        if removed:
            _err(f"removed {len(removed)} namespaces of a crashed run")
        t0 = time.monotonic()
        df = measure(configs, duration, repeats, progress=not args.no_progress)
        elapsed = time.monotonic() - t0
        if args.out:
            write_csv_atomic(df, args.out)
        info = machine_info()
        _out(f"{info['cpu_model']}, {info['cores']} cores, kernel {info['kernel']}; "
             f"{len(configs)} configurations x {repeats} in {elapsed:.0f} s")
        _out(format_summary(summarize(df)))
        if args.out:
            _out(f"wrote {args.out}")
        return 0
    except ConfigError as e:
        _err(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        _err("interrupted: testbeds removed")
        return 130
    except SystemExit as e:
        if e.code == 128 + signal.SIGTERM:
            _err("terminated: testbeds removed")
        raise
    except RuntimeError as e:
        _err(f"error: {e}")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
