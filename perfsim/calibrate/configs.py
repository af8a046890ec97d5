"""The link between a calibration measurement and the simulation of the same configuration.

A measured configuration is a *path* of the real testbed (:mod:`perfsim.calibrate.testbed`), a
workload, its streams and message size, offloads on/off and how many cores the processes were
pinned to.  :func:`run_spec` turns it into the :class:`~perfsim.experiment.config.RunSpec` of
perfsim's testbed platform (``ClusterSpec(testbed=True)``: two namespaces on one machine sharing
``cores``, joined by a veth wire), and :func:`simulated_metrics` reads the same metrics off the
simulation that the harness reads off iperf3, sockperf and the connection-rate tool.

Metrics (all per second or seconds, never derived from each other by hand):

=================  ======================================================================
throughput_bps     payload bits per second read by the receiving application(s)
packet_rate_pps    UDP datagrams per second read by the receiving application
transaction_rate   request/response round trips per second (``*_rr``)
connection_rate    connect + 1 request/response + close per second (``tcp_crr``)
latency_s          median round-trip time of one transaction (``*_rr``)
latency_p99_s      99th percentile of the same
=================  ======================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from perfsim.errors import ConfigError
from perfsim.experiment.config import WORKLOADS, RunSpec
from perfsim.experiment.run import Result
from perfsim.topology.cluster import ClusterSpec

PATHS: dict[str, tuple[str, str, int]] = {
    "host": ("host", "cross-host", 1),
    "bridge": ("bridge", "same-host", 2),
    "nat": ("bridge", "cross-host", 1),
    "overlay": ("overlay", "cross-host", 1),
    "container": ("container", "same-host", 2),
    "routed": ("routed", "cross-host", 1),
}
"""Testbed path -> (perfsim mode, placement, containers per host).  ``nat`` is Docker's default
bridge across hosts through a published port (MASQUERADE + DNAT)."""

FIT_METRIC: dict[str, str] = {
    "tcp_stream": "throughput_bps",
    "udp_stream": "packet_rate_pps",
    "tcp_rr": "transaction_rate",
    "udp_rr": "transaction_rate",
    "tcp_crr": "connection_rate",
}
"""The rate each workload is fitted on: one unit (byte, datagram, transaction, connection)
costs ``1 / rate`` seconds of the one core every process is pinned to."""

RATE_METRICS = ("throughput_bps", "packet_rate_pps", "transaction_rate", "connection_rate")
LATENCY_METRICS = ("latency_s", "latency_p99_s")
METRICS = RATE_METRICS + LATENCY_METRICS

CONFIG_COLUMNS = ["path", "workload", "streams", "message_bytes", "offloads", "cores"]

DEFAULT_DURATION_S: float | None = None
"""Simulated seconds per configuration; ``None``: 0.15 s for streams, half of it warm-up (a core
shared by a sender and a receiver settles only once the receive buffer has filled), 0.4 s with
0.3 s of warm-up for streams with offloads off (40 times more skbs to fill it with), 0.05 s for
request/response (a fifth of it warm-up)."""
STREAM_DURATION_S = 0.15
STREAM_NO_OFFLOAD_DURATION_S = 0.4
RR_DURATION_S = 0.05


def check_measurements(df: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Validate measurements read from a file or built by hand: the configuration columns,
    ``metric``, ``value`` (and ``extra``) present, every cell of the right kind.  Returns a
    copy with proper types; the first bad cell is a ConfigError naming its row and column."""
    need = [*CONFIG_COLUMNS, "metric", "value", *extra]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ConfigError("measurements", f"missing column {missing[0]}", f"columns {', '.join(need)}")
    if df.empty:
        raise ConfigError("measurements", "no rows", "at least one measurement")
    out = df.copy()
    for col, low in (("streams", 1), ("message_bytes", 1), ("cores", 1), ("value", 0)):
        num = pd.to_numeric(out[col], errors="coerce")
        bad = ~np.isfinite(num) | (num < low) | ((num != num.round()) if col != "value" else False)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            kind = "a finite number >= 0" if col == "value" else f"an integer >= {low}"
            raise ConfigError(f"measurements row {i + 1}.{col}", df[col].iloc[i], kind)
        out[col] = num if col == "value" else num.astype(int)
    for col, allowed in (("path", PATHS), ("workload", WORKLOADS)):
        bad = ~out[col].isin(list(allowed))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ConfigError(f"measurements row {i + 1}.{col}", df[col].iloc[i], f"one of {', '.join(allowed)}")
    flags = out["offloads"].map(lambda v: _bool(v) if str(v).strip().lower() in _BOOL_TEXT else None)
    if flags.isna().any():
        i = int(np.flatnonzero(flags.isna().to_numpy())[0])
        raise ConfigError(f"measurements row {i + 1}.offloads", df["offloads"].iloc[i], "true or false")
    out["offloads"] = flags.astype(bool)
    out["metric"] = out["metric"].astype(str)
    return out


_BOOL_TEXT = ("true", "false", "1", "0", "on", "off", "yes", "no", "1.0", "0.0")


def config_id(row: Mapping[str, Any]) -> str:
    """``overlay/tcp_stream/s1/m131072/on/c1``: stable name of a configuration."""
    return (f"{row['path']}/{row['workload']}/s{int(row['streams'])}/m{int(row['message_bytes'])}/"
            f"{'on' if _bool(row['offloads']) else 'off'}/c{int(row['cores'])}")


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "on", "yes")
    return bool(value)


def run_spec(
    row: Mapping[str, Any],
    profile: str = "default",
    duration_s: float | None = DEFAULT_DURATION_S,
    warmup_s: float | None = None,
    seed: int = 0,
) -> RunSpec:
    """The simulation of one measured configuration on perfsim's testbed platform (durations:
    see :data:`DEFAULT_DURATION_S`; the warm-up defaults to half a stream's duration and a fifth
    of a request/response's)."""
    path = str(row["path"])
    if path not in PATHS:
        raise ConfigError("path", path, f"one of {', '.join(PATHS)}")
    workload = str(row["workload"])
    if workload not in WORKLOADS:
        raise ConfigError("workload", workload, f"one of {', '.join(WORKLOADS)}")
    mode, placement, per_host = PATHS[path]
    stream = workload.endswith("stream")
    offloads = _bool(row["offloads"])
    if duration_s is None:
        duration_s = (STREAM_DURATION_S if offloads else STREAM_NO_OFFLOAD_DURATION_S) if stream else RR_DURATION_S
    if warmup_s is None:
        warmup_s = duration_s * ((0.5 if offloads else 0.75) if stream else 0.2)
    cluster = ClusterSpec(hosts=2, cores=int(row["cores"]), offloads=offloads, testbed=True)
    return RunSpec(
        mode=mode, placement=placement, workload=workload, streams=int(row["streams"]),
        message_size=int(row["message_bytes"]), containers_per_host=per_host, cluster=cluster,
        duration_s=duration_s, warmup_s=warmup_s, seed=seed, profile=profile,
    )


def simulated_metrics(result: Result) -> dict[str, float]:
    """The metrics of :data:`METRICS` that apply to the run's workload, read off the simulation."""
    spec = result.spec
    window = spec.duration_s - result.measured_from_s
    if window <= 0:
        window = spec.duration_s - spec.warmup_s
    flows = result.flows
    wl = spec.workload
    out: dict[str, float] = {}
    if wl in ("tcp_stream", "udp_stream"):
        out["throughput_bps"] = float(flows["bytes"].sum()) * 8 / window
    if wl == "udp_stream":
        out["packet_rate_pps"] = float(flows["datagrams"].sum()) / window
    if wl in ("tcp_rr", "udp_rr"):
        out["transaction_rate"] = float(flows["transactions"].sum()) / window
    if wl == "tcp_crr":
        out["connection_rate"] = float(flows["transactions"].sum()) / window
    if wl in ("tcp_rr", "udp_rr", "tcp_crr"):
        lat = result.latencies_s
        if result.latency_quantiles_s is not None:  # the fluid engine: per-flow estimates
            out["latency_s"], out["latency_p99_s"] = result.latency_quantiles_s
        else:
            out["latency_s"] = float(np.percentile(lat, 50)) if lat.size else float("nan")
            out["latency_p99_s"] = float(np.percentile(lat, 99)) if lat.size else float("nan")
    return out


def fit_units(result: Result) -> float:
    """How many units of the workload's :data:`FIT_METRIC` the window delivered (bytes,
    datagrams, transactions or connections)."""
    wl = result.spec.workload
    col = {"tcp_stream": "bytes", "udp_stream": "datagrams"}.get(wl, "transactions")
    return float(result.flows[col].sum())


def unit_seconds(metric: str, value: float) -> float:
    """Seconds per unit of a measured rate: ``8 / bps`` per byte, ``1 / rate`` otherwise."""
    if metric == "throughput_bps":
        return 8.0 / value
    return 1.0 / value


def default_training(row: Mapping[str, Any]) -> bool:
    """The default training subset, chosen so that every fitted number has a linear relation
    to a measured rate:

    * on one core (all work serial, rate linear in the constants): TCP stream, request/response
      and connection rate on every path but ``routed``, with offloads on and (TCP stream) off:
      MSS-sized skbs tell per-skb from per-byte work;
    * on two cores, the host path only: the TCP and UDP streams (whose saturated core, the
      sender's as the measured CPU shares show, separates the sender's work from the
      receiver's)
      and UDP request/response (serial: it measures the wake-up of an idle core — unless the
      wake-up was measured directly, :mod:`perfsim.calibrate.wakeup`, which the fit then
      keeps).

    Held out for ``perfsim validate``: the whole routed path, every other path on two cores,
    several streams, offloads off on two cores, UDP streams on one core (their loss depends on
    how the scheduler shares the core between sender and receiver, which is not modelled) and
    every latency."""
    wl = str(row["workload"])
    path = str(row["path"])
    if str(row.get("metric", FIT_METRIC[wl])) != FIT_METRIC[wl] or int(row["streams"]) != 1:
        return False
    if not _bool(row["offloads"]):
        return path != "routed" and wl == "tcp_stream" and int(row["cores"]) == 1
    if int(row["cores"]) == 1:
        return path != "routed" and wl != "udp_stream"
    return path == "host" and wl in ("tcp_stream", "udp_stream", "udp_rr")
