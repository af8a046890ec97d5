"""Which CPU does a TCP stream's work on the real calibration testbed — and in the simulation.

``python -m perfsim.calibrate.cpu_split [--path host] [--streams 1,4] [--duration 5]`` (root,
iperf3 and perf): on one testbed path (:class:`~perfsim.calibrate.testbed.Testbed`), an iperf3
TCP stream with 128 KiB writes, client pinned to cpu0 and server to cpu1, as ``perfsim
calibrate`` measures it.  During one second in its middle, ``perf record -a`` takes the
tracepoints

* ``net:net_dev_xmit``: skbs each CPU transmits, split by length into data (> 200 B) and ACKs;
* ``sched:sched_waking``: wake-ups of a sleeping task, by the waking CPU;
* ``ipi:ipi_send_cpu``: IPIs each CPU sends (the wake-up of an idle CPU);

and ``/proc/stat`` gives each CPU's busy share.  The same configuration is then simulated on
the testbed platform (:func:`perfsim.calibrate.configs.run_spec`) and the simulation's counts
per core are printed beside the kernel's: data skbs (``tcp_tx`` of the sender's host), ACKs
(``tcp_tx`` of the receiver's host), IPIs (``task_wakeup``; the simulation does not count
wake-ups that need none), busy share.  This is how the TCP
model's core placement was checked (see ``docs/kernel-evidence.md``); it changes nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from perfsim.calibrate.testbed import PATHS, Testbed, can_create_namespaces

IPERF3_PORT = 5201
DATA_MIN_BYTES = 200
"""A transmitted skb longer than this carries data; shorter ones are ACKs (66 B with timestamps)."""
EVENTS = ("net:net_dev_xmit", "sched:sched_waking", "ipi:ipi_send_cpu")
ROWS = ("data skbs sent /s", "ACKs sent /s", "wake-ups /s", "IPIs sent /s", "busy %")


def _proc_stat() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                fields = line.split()
                out[int(fields[0][3:])] = [int(x) for x in fields[1:9]]
    return out


def _busy(before: dict[int, list[int]], after: dict[int, list[int]], cpu: int) -> float:
    d = [b - a for a, b in zip(before[cpu], after[cpu], strict=True)]
    total = sum(d)
    return 100.0 * (total - d[3] - d[4]) / total if total else float("nan")  # idle, iowait


def _parse(script: str, seconds: float) -> dict[tuple[str, int], float]:
    """Rates per (row, cpu) from ``perf script -F cpu,event,trace`` output."""
    count: Counter[tuple[str, int]] = Counter()
    for line in script.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith("["):
            continue
        cpu, event = int(parts[0].strip("[]")), parts[1].rstrip(":")
        if event == "net:net_dev_xmit":
            length = next((int(p[4:]) for p in parts if p.startswith("len=")), 0)
            count[("data skbs sent /s" if length > DATA_MIN_BYTES else "ACKs sent /s", cpu)] += 1
        elif event == "sched:sched_waking":
            count[("wake-ups /s", cpu)] += 1
        elif event == "ipi:ipi_send_cpu":
            count[("IPIs sent /s", cpu)] += 1
    return {k: v / seconds for k, v in count.items()}


def measure(path: str, streams: int, duration_s: float) -> tuple[float, dict[tuple[str, int], float]]:
    """Throughput (bit/s) and per-CPU rates of one iperf3 TCP stream on the real testbed."""
    record_s = 1.0
    with Testbed(path, offloads=True) as tb, tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "perf.data")
        server = tb.start(tb.server_ns, ["iperf3", "-4", "-s", "-p", str(IPERF3_PORT)], cpu=1)
        try:
            tb.wait_listening(tb.server_ns, "tcp", IPERF3_PORT, server)
            client = subprocess.Popen(
                ["ip", "netns", "exec", tb.client_ns, "taskset", "-c", "0", "iperf3", "-4", "-c", tb.server_addr,
                 "-p", str(tb.port("tcp", IPERF3_PORT)), "-t", str(round(duration_s)), "-P", str(streams),
                 "-l", "131072", "-J"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            time.sleep(max(0.5, (duration_s - record_s) / 2))
            before = _proc_stat()
            subprocess.run(["perf", "record", "-q", "-a", "-m", "4096", *(a for e in EVENTS for a in ("-e", e)), "-o", data,
                            "--", "sleep", str(record_s)], check=True, capture_output=True, timeout=60)
            after = _proc_stat()
            out, _ = client.communicate(timeout=duration_s + 30)
        finally:
            tb.stop(server)
        script = subprocess.run(["perf", "script", "-i", data, "-F", "cpu,event,trace"], check=True,
                                capture_output=True, text=True, timeout=120).stdout
    rates = _parse(script, record_s)
    for cpu in (0, 1):
        rates[("busy %", cpu)] = _busy(before, after, cpu)
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]), rates


def simulate(path: str, streams: int) -> tuple[float, dict[tuple[str, int], float]]:
    """Throughput (bit/s) and per-core rates of the same configuration on the testbed platform."""
    from perfsim.calibrate.configs import run_spec, simulated_metrics
    from perfsim.experiment.run import run

    spec = run_spec({"path": path, "workload": "tcp_stream", "streams": streams, "message_bytes": 131072,
                     "offloads": True, "cores": 2})
    result = run(spec, count_by_core=True)
    window = spec.duration_s - result.measured_from_s
    sc, stages = result.stage_cores, result.stages
    assert sc is not None
    rates: dict[tuple[str, int], float] = {}
    for row, hosts, stage in (("data skbs sent /s", ["h0"], "tcp_tx"), ("ACKs sent /s", ["h1"], "tcp_tx"),
                              ("IPIs sent /s", ["h0", "h1"], "task_wakeup")):
        # per-core shares of the whole run, scaled to the measurement window's count
        part = sc[(sc["stage"] == stage) & sc["host"].isin(hosts)]
        total = float(part["skbs"].sum())
        n = float(stages[(stages["stage"] == stage) & stages["host"].isin(hosts)]["skbs"].sum())
        for core, skbs in part.groupby("core")["skbs"].sum().items():
            rates[(row, int(str(core).rsplit("cpu", 1)[1]))] = n * float(skbs) / total / window if total else 0.0
    for core, util in zip(result.cores["core"], result.cores["utilisation"], strict=True):
        rates[("busy %", int(core))] = 100.0 * float(util)
    return simulated_metrics(result)["throughput_bps"], rates


def format_table(path: str, streams: int, real: tuple[float, dict[tuple[str, int], float]] | None,
                 sim: tuple[float, dict[tuple[str, int], float]]) -> str:
    head = f"{path}, {streams} stream(s): simulated {sim[0] / 1e9:.2f} Gbit/s"
    head += f", measured {real[0] / 1e9:.2f} Gbit/s" if real else ""
    cols = (["real cpu0", "real cpu1"] if real else []) + ["sim cpu0", "sim cpu1"]
    lines = [head, f"  {'':20s}" + "".join(f"{c:>11s}" for c in cols)]
    for row in ROWS:
        vals = ([real[1].get((row, c), 0.0) for c in (0, 1)] if real else [])
        vals += [sim[1].get((row, c), 0.0) if row != "wake-ups /s" else float("nan") for c in (0, 1)]
        lines.append(f"  {row:20s}" + "".join(f"{'-':>11s}" if math.isnan(v) else f"{v:11.0f}" for v in vals))
    if not real:
        lines.append("  (simulation only: no real-kernel measurement)")
    return "\n".join(lines)


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perfsim.calibrate.cpu_split", description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", default="host", help=f"one of {', '.join(PATHS)}")
    ap.add_argument("--streams", default="1,4", help="comma-separated stream counts")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per iperf3 run (3..60)")
    ap.add_argument("--simulate-only", action="store_true", help="print the simulation's side only")
    args = ap.parse_args(argv)
    if args.path not in PATHS:
        _err(f"perfsim: --path: got {args.path!r}; allowed: one of {', '.join(PATHS)}")
        return 2
    try:
        streams = [int(s) for s in args.streams.split(",")]
    except ValueError:
        streams = []
    if not streams or any(not 1 <= s <= 64 for s in streams):
        _err(f"perfsim: --streams: got {args.streams!r}; allowed: comma-separated integers 1..64")
        return 2
    if not 3 <= args.duration <= 60:
        _err(f"perfsim: --duration: got {args.duration}; allowed: 3..60 seconds")
        return 2
    measure_ok = not args.simulate_only
    if measure_ok:
        ok, why = can_create_namespaces()
        missing = [t for t in ("iperf3", "perf", "taskset") if shutil.which(t) is None]
        if not ok or missing or (os.cpu_count() or 1) < 2:
            why = why or (f"missing tools: {', '.join(missing)}" if missing else "needs 2 CPUs")
            _err(f"perfsim: the real kernel cannot be measured here: {why}; simulation only")
            measure_ok = False
    for n in streams:
        real = measure(args.path, n, args.duration) if measure_ok else None
        sys.stdout.write(format_table(args.path, n, real, simulate(args.path, n)) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
