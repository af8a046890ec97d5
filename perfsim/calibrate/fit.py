"""Fit a cost profile's constants to measurements: regularised, bounded linear least squares.

Model
-----
On most training configurations every process is pinned to one core, so that core does every
unit of work of the path, serially: the seconds one unit (a payload byte, a datagram, a
transaction, a connection) takes are the CPU seconds the path spends on it, divided by the
fraction of time the core is busy::

    y_i = 1 / rate_i  =  (1 / util_i) × Σ_s ( P_is × a_s + B_is × b_s )

``a_s`` / ``b_s`` are stage ``s``'s per-packet / per-byte constants; ``P_is`` / ``B_is`` are the
skbs and bytes stage ``s`` handles per unit in configuration ``i`` *on the saturated core* and
``util_i`` that core's busy fraction.  With one core that is all the work.  A stream with the
client and the server on two cores saturates one of them — on the testbed the sender's, which
also runs the veth receive softirq (the client's measured CPU share is the larger on every
two-core stream) — and the same relation holds for that core alone: this is what separates the
sender's copy from the receiver's, which one core always sees together.  The row is taken on
the core of the side whose measured CPU share is larger, even when a simulation with the
current constants saturates the other one (linearised on the busiest simulated core, the fit
could settle on either split of the copies, and did); without CPU shares, on the busiest
simulated core.  A two-core TCP stream also gives the other side's work: its measured CPU share
over the saturated side's, times ``y_i``, is an observation of the other core's row.  Without
it the copies' per-byte costs are split between the writer and the reader only by the weak
pull towards the prior, and a reader left too idle sleeps, wakes and acknowledges on the wrong
core.  (iperf3 reports process CPU time, which leaves out the softirq the reader's core runs
in interrupt context and its idle entries and exits — the reader's core is busier than that
share says; a UDP reader's per-call costs are measured, and its per-byte copy of 64 B cannot
stand for the rest of its work, so UDP streams give no such row.)  A request/response
on two cores is serial instead — one transaction is the work of both cores plus the wake-ups of
the idle core each message is handed to — so its row counts every core's work and the number
of wake-ups (``idle_wakeup``, a delay rather than CPU time, is fitted like a constant per event).  None of these is written down: the simulator counts them by running configuration
``i`` (which stages the path crosses, how many skbs GSO/GRO make, how many ACKs TCP sends, how
many packets a connection costs).  They depend a little on the constants themselves (TSQ and
ACK clocking shape skb sizes), so the fit iterates: simulate with the current constants,
solve, repeat.

The solve minimises the *relative* misfit of every training rate plus a weak pull of every
free constant towards its prior (the profile the fit starts from), with every constant at
least 1/20 of its prior (a stage the path crosses does cost something)::

    Σ_i ((X_i θ - y_i) / y_i)²  +  λ Σ_j min(θ0_j / m_k, 1) ((θ_j - θ0_j) / θ0_j)²

(``m_k``: the median prior of the constant's kind, per packet or per byte).  The prior term
only decides what the data cannot: constants that always appear together (``veth_xmit`` and
``backlog_rx`` on every veth hop, both below the median) move by the same factor, keeping
their prior ratio.
``idle_wakeup`` has no pull at all: it spans two orders of magnitude between a bare-metal core
and a virtual machine's vCPU, so only the measurements decide it — and ``perfsim calibrate``
measures it directly (:mod:`perfsim.calibrate.wakeup`) and keeps it ``fixed``.  Free constants:
every stage's per-packet cost that the training paths exercise, and per-byte costs only for the
copies between user and kernel memory (``sock_tx_copy``, ``sock_rx_copy``, and
``copy_cross_core``, their extra when the other end's core wrote the lines last: what two-core
streams cost per byte beyond one-core ones) and TCP's handling
of page fragments (``tcp_tx``, ``tcp_rx``: a 64 KiB skb's 16 pages are filled, referenced and
freed one by one; what a stream with offloads off tells from per-skb work).  Every other stage
passes skbs by reference and checksums are offloaded (also on veth).  Constants the testbed
cannot see (physical NIC driver, GRO, ipip without its module, embedded DNS) keep their prior
and are marked as such in the profile.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import lsq_linear

from perfsim.calibrate.configs import (
    DEFAULT_DURATION_S,
    FIT_METRIC,
    check_measurements,
    config_id,
    fit_units,
    run_spec,
    simulated_metrics,
    unit_seconds,
)
from perfsim.core.profile import STAGES, Profile, StageCost, load_profile
from perfsim.errors import ConfigError, check_number
from perfsim.experiment.run import run
from perfsim.topology.cluster import app_core_index

PER_BYTE_STAGES = ("sock_tx_copy", "sock_rx_copy", "copy_cross_core", "tcp_tx", "tcp_rx")
"""The stages whose per-byte constant is fitted: the user <-> kernel copies (and their extra
when another core wrote the lines last), and TCP's page fragments (a 64 KiB skb carries 16
pages that are attached, referenced and freed one by one)."""
MIN_PRIOR_PACKET_S = 1e-8
MIN_PRIOR_BYTE_S = 1e-12
DEFAULT_LAMBDA = 0.01
MIN_FACTOR = 0.05
"""No constant is fitted below 1/20 of its prior: a stage the path crosses costs something."""
MEASURED_STAGES = ("task_switch", "select", "udp_recv")
"""Constants measured directly (:mod:`perfsim.calibrate.percall`), never fitted: they keep the
prior's (or the calibration's own measurement's) value."""
UNPRIORED_STAGES = ("idle_wakeup",)
"""Constants fitted without a pull towards their prior: the machine decides them alone."""
DEFAULT_ITERATIONS = 3

SATURATED = "saturated"
"""Key of a training row: the side (``client`` or ``server``) whose process the measurement saw
busier, i.e. whose core a multi-core stream's row is taken on (see :func:`simulate_config`)."""

Param = tuple[str, str]
"""(stage, "per_packet_s" | "per_byte_s")."""


@dataclass
class Simulated:
    """One configuration simulated with one profile: its metrics and its design row."""

    config_id: str
    metrics: dict[str, float]
    x: dict[Param, float] = field(default_factory=dict)
    x_other: dict[Param, float] | None = None
    """A two-core stream's design row on the other side's core (the one not saturated), on the
    saturated core's scale: ``x_other · θ / (x · θ)`` is the other core's work per unit of the
    saturated one's."""


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``df`` as plain dicts keyed by column name."""
    return [{str(k): v for k, v in r.items()} for r in df.to_dict("records")]


def profile_dict(profile: Profile, provenance: dict[str, Any] | None = None, name: str | None = None) -> dict[str, Any]:
    """A profile as the YAML mapping :meth:`Profile.from_dict` reads."""
    return {
        "name": name or profile.name,
        "provenance": provenance if provenance is not None else dict(profile.provenance),
        "stages": {s: _stage_dict(c) for s, c in profile.stages.items()},
    }


def _stage_dict(c: StageCost) -> dict[str, Any]:
    d: dict[str, Any] = {"per_packet_s": float(c.per_packet_s), "per_byte_s": float(c.per_byte_s)}
    if c.shape is not None:
        d["shape"] = [round(float(a), 4) for a in c.shape]
    return d


def with_constants(profile: Profile, theta: Mapping[Param, float], name: str = "fitted") -> Profile:
    """``profile`` with the constants in ``theta`` replaced."""
    data = profile_dict(profile, name=name)
    for (stage, kind), value in theta.items():
        data["stages"][stage][kind] = float(value)
    return Profile.from_dict(data, name)


def simulate_config(row: Mapping[str, Any], profile_path: str, duration_s: float | None = DEFAULT_DURATION_S,
                    engine: str = "des") -> Simulated:
    """Simulate one configuration and linearise it (see the module docstring): a stream's row
    counts the work of its saturated core (``row[SATURATED]``'s side, else the busiest), a
    request/response's the work of every core plus the
    wake-ups of idle cores on its critical path; either is divided by the share of the time
    that work explains.  On the fluid ``engine`` only the metrics are returned (no design row:
    the fit needs the DES's per-core counts)."""
    spec = run_spec(row, profile=profile_path, duration_s=duration_s)
    if engine != "des":
        from dataclasses import replace

        return Simulated(config_id(row), simulated_metrics(run(replace(spec, engine=engine))))
    result = run(spec, count_by_core=True)
    window = spec.duration_s - result.measured_from_s
    units = fit_units(result)
    cores = result.cores.assign(core_name=result.cores["host"] + "/cpu" + result.cores["core"].astype(str))
    stream = spec.workload in ("tcp_stream", "udp_stream")
    wake_s = load_profile(profile_path).cost("idle_wakeup").per_packet_s
    x: dict[Param, float] = {}
    if units <= 0 or window <= 0 or result.stage_cores is None or cores.empty:
        return Simulated(config_id(row), simulated_metrics(result), x)
    other: set[str] = set()
    if stream:
        busy = [float(b) for b in cores["busy_s"]]
        at = max(range(len(busy)), key=busy.__getitem__)
        side = str(row.get(SATURATED, ""))
        if side:  # the side the measurement saw saturated, even where this simulation does not
            client_h, client_c, server_h, server_c = spec.slots(0)
            slot = (client_h, client_c) if side == "client" else (server_h, server_c)
            core = int(app_core_index(spec.cluster, *slot))
            at = [int(c) for c in cores["core"]].index(core)
            peer = (server_h, server_c) if side == "client" else (client_h, client_c)
            peer_core = int(app_core_index(spec.cluster, *peer))
            if peer_core != core:
                other = {str(n) for n, c in zip(cores["core_name"], cores["core"], strict=True) if int(c) == peer_core}
        chosen = {str(list(cores["core_name"])[at])}
        explained = busy[at]
    else:
        chosen = set(cores["core_name"].astype(str))
        wakeups = float(cores["wakeups"].sum())
        explained = float(cores["busy_s"].sum()) + wakeups * wake_s
        if wakeups:
            x[("idle_wakeup", "per_packet_s")] = wakeups / units
    util = explained / window
    if util <= 0:
        return Simulated(config_id(row), simulated_metrics(result))
    x.update(_design(result, chosen, units))
    x_other = {k: v / util for k, v in _design(result, other, units).items()} if other else None
    return Simulated(config_id(row), simulated_metrics(result), {k: v / util for k, v in x.items()}, x_other)


def _design(result: Any, chosen: set[str], units: float) -> dict[Param, float]:
    """Skbs and bytes per unit of work that each stage handles on the ``chosen`` cores, in the
    measured window (a stage's window counts, split over cores as over the whole run)."""
    x: dict[Param, float] = {}
    sc = result.stage_cores
    totals: dict[str, tuple[float, float]] = {}
    for stage, skbs, nbytes in zip(sc["stage"], sc["skbs"], sc["bytes"], strict=True):
        t = totals.get(stage, (0.0, 0.0))
        totals[stage] = (t[0] + float(skbs), t[1] + float(nbytes))
    in_window: dict[str, tuple[float, float]] = {}  # the measured window's counts, all hosts
    for st, k, b in zip(result.stages["stage"], result.stages["skbs"], result.stages["bytes"], strict=True):
        w0 = in_window.get(st, (0.0, 0.0))
        in_window[st] = (w0[0] + float(k), w0[1] + float(b))
    for stage, core, skbs, nbytes in zip(sc["stage"], sc["core"], sc["skbs"], sc["bytes"], strict=True):
        if core not in chosen or stage not in in_window:
            continue
        for i, (kind, here) in enumerate((("per_packet_s", float(skbs)), ("per_byte_s", float(nbytes)))):
            total = totals[stage][i]
            if here and total:
                key = (str(stage), kind)
                x[key] = x.get(key, 0.0) + in_window[stage][i] * here / total / units
    return x


def _simulate_task(args: tuple[dict[str, Any], str, float | None, str]) -> Simulated:
    return simulate_config(*args)


def simulate_many(
    rows: Sequence[Mapping[str, Any]],
    profile_path: str,
    duration_s: float | None = DEFAULT_DURATION_S,
    workers: int | None = None,
    desc: str | None = None,
    engine: str = "des",
) -> list[Simulated]:
    """Simulate every configuration (in ``workers`` processes), in order, with a progress bar
    on stderr when ``desc`` is given."""
    tasks = [(dict(r), profile_path, duration_s, engine) for r in rows]
    if workers is not None:
        check_number("workers", workers, low=1, high=1024, integer=True)
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    bar = None
    if desc is not None:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), file=sys.stderr, unit="run", desc=desc)
    out: list[Simulated] = []
    try:
        if workers == 1:
            for t in tasks:
                out.append(_simulate_task(t))
                if bar is not None:
                    bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for res in pool.map(_simulate_task, tasks):
                    out.append(res)
                    if bar is not None:
                        bar.update()
    finally:
        if bar is not None:
            bar.close()
    return out


@dataclass
class FitResult:
    """The fitted profile, what was fitted, and how well."""

    profile: Profile
    params: pd.DataFrame
    """One row per constant: stage, kind, prior, fitted, free (fitted or kept at its prior)."""
    residuals: pd.DataFrame
    """One row per training observation: measured, simulated with the fitted profile, error %."""
    iterations: int
    lam: float


def _prior_scale(kind: str, value: float) -> float:
    return max(value, MIN_PRIOR_BYTE_S if kind == "per_byte_s" else MIN_PRIOR_PACKET_S)


def solve(
    xs: Sequence[Mapping[Param, float]],
    y: np.ndarray,
    prior: Profile,
    lam: float = DEFAULT_LAMBDA,
    fixed: Collection[Param] = (),
) -> dict[Param, float]:
    """One regularised, bounded linear least-squares solve (see the module docstring).

    ``xs[i]`` maps constants to their coefficient in observation ``i``; ``y[i]`` is the measured
    seconds per unit.  Returns the free constants; the others — and those in ``fixed``
    (measured directly) — keep their prior value.
    """
    free: list[Param] = sorted({p for x in xs for p, v in x.items() if v > 0 and p not in fixed
                                and p[0] not in MEASURED_STAGES
                                and (p[1] == "per_packet_s" or p[0] in PER_BYTE_STAGES)})
    if not free:
        raise ConfigError("training", "no observations", "at least one training measurement")
    theta0 = np.array([_prior_scale(k, getattr(prior.cost(s), k)) for s, k in free])
    n, p = len(xs), len(free)
    a = np.zeros((n, p))
    known = np.zeros(n)
    col = {q: j for j, q in enumerate(free)}
    for i, x in enumerate(xs):
        for q, v in x.items():
            j = col.get(q)
            if j is None:
                known[i] += v * getattr(prior.cost(q[0]), q[1])
            else:
                a[i, j] = v
    # unknowns z = theta / theta0 (every column O(1)); each relative deviation is weighed by
    # the constant's size among its kind (at most 1, so a large constant is not held stiffer
    # than a typical one), so constants that always appear together move by the same factor;
    # the idle core's wake-up has no prior (1 us on bare metal, 100 us in a VM)
    kinds = np.array([k for _, k in free])
    size = np.ones(p)
    for kind in set(kinds):
        sel = kinds == kind
        size[sel] = np.minimum(theta0[sel] / np.median(theta0[sel]), 1.0)
    size[[j for j, q in enumerate(free) if q[0] in UNPRIORED_STAGES]] = 0.0
    reg = np.sqrt(lam * size)
    w = 1.0 / y
    lhs = np.vstack([a * theta0 * w[:, None], np.diag(reg)])
    rhs = np.concatenate([(y - known) * w, reg])
    sol = lsq_linear(lhs, rhs, bounds=(MIN_FACTOR, np.inf), method="bvls")
    return {q: float(z * t) for q, z, t in zip(free, sol.x, theta0, strict=True)}


def fit(
    measured: pd.DataFrame,
    prior: Profile,
    iterations: int = DEFAULT_ITERATIONS,
    lam: float = DEFAULT_LAMBDA,
    duration_s: float | None = DEFAULT_DURATION_S,
    workers: int | None = None,
    progress: bool = False,
    workdir: str | Path | None = None,
    on_iteration: Callable[[int, dict[Param, float]], None] | None = None,
    fixed: Collection[Param] = (),
) -> FitResult:
    """Fit ``prior``'s constants to the training rows of ``measured``.

    ``measured`` holds one row per (configuration, metric): the columns of
    :data:`~perfsim.calibrate.configs.CONFIG_COLUMNS`, ``metric``, ``value`` (the median) and
    ``training`` (bool).  Only the training rows whose metric is the workload's
    :data:`~perfsim.calibrate.configs.FIT_METRIC` enter the fit.  The linearisation is exact on
    one core; elsewhere it is as good as "the saturated core sets a stream's rate" and "a
    transaction is serial" hold (see :func:`simulate_config`).
    """
    check_number("iterations", iterations, low=1, high=50, integer=True)
    check_number("lambda", lam, low=0, high=1e6)
    measured = check_measurements(measured, ("training",))
    train = measured[measured["training"].astype(bool)]
    train = train[train["metric"] == train["workload"].map(FIT_METRIC)]
    train = train[np.isfinite(train["value"].astype(float)) & (train["value"].astype(float) > 0)]
    if train.empty:
        raise ConfigError("training", "no usable observations", "measured rates > 0 of one-core configurations")
    rows = records(train)
    shares = measured[measured["metric"].isin(["cpu_client_pct", "cpu_server_pct"])]
    share = {(config_id(r), str(r["metric"])): float(r["value"]) for r in records(shares)}
    other_share: list[float | None] = []
    for r in rows:
        c, s = share.get((config_id(r), "cpu_client_pct")), share.get((config_id(r), "cpu_server_pct"))
        ratio = None
        if c is not None and s is not None and int(r["cores"]) > 1 and max(c, s) > 0:
            r[SATURATED] = "client" if c >= s else "server"
            if r["workload"] == "tcp_stream":
                ratio = min(c, s) / max(c, s)
        other_share.append(ratio)
    y = np.array([unit_seconds(r["metric"], float(r["value"])) for r in rows])
    theta: dict[Param, float] = {}
    current = prior
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for k in range(iterations):
            path = Path(tmp) / f"iteration{k}.yaml"
            path.write_text(yaml.safe_dump(profile_dict(current, name=f"iteration{k}")))
            sims = simulate_many(rows, str(path), duration_s, workers,
                                 desc=f"fit {k + 1}/{iterations}" if progress else None)
            xs, ys = [s.x for s in sims], list(y)
            for sim_i, yi, ratio in zip(sims, y, other_share, strict=True):
                if ratio is not None and sim_i.x_other:  # the other side's work: its CPU share's
                    xs.append(sim_i.x_other)
                    ys.append(yi * ratio)
            theta = solve(xs, np.array(ys), prior, lam, fixed)
            current = with_constants(prior, theta, name=prior.name)
            if on_iteration is not None:
                on_iteration(k, theta)
        path = Path(tmp) / "fitted.yaml"
        path.write_text(yaml.safe_dump(profile_dict(current)))
        final = simulate_many(rows, str(path), duration_s, workers, desc="fit residuals" if progress else None)
    residuals = pd.DataFrame([
        {"config_id": s.config_id, "metric": r["metric"], "measured": float(r["value"]),
         "simulated": s.metrics.get(r["metric"], float("nan"))}
        for s, r in zip(final, rows, strict=True)
    ])
    residuals["error_pct"] = (residuals["simulated"] / residuals["measured"] - 1.0) * 100.0
    params = pd.DataFrame([
        {"stage": s, "kind": kind, "prior": getattr(prior.cost(s), kind),
         "fitted": theta.get((s, kind), getattr(prior.cost(s), kind)), "free": (s, kind) in theta}
        for s in STAGES for kind in ("per_packet_s", "per_byte_s")
    ])
    return FitResult(current, params, residuals, iterations, lam)
