"""``perfsim sweep``: run every point of a sweep spec on Dask, resumably; tidy results + summary.

The points (:mod:`perfsim.experiment.sweep_spec`) run on a Dask cluster — an embedded
``LocalCluster`` of worker processes on 127.0.0.1 by default, or an existing cluster reached at
a scheduler address, which is how a sweep goes beyond one machine.  Each point is a task that
calls :func:`run_point`; its rows come back to this process, which writes them into the
Parquet dataset (:class:`~perfsim.experiment.parquet_store.PointStore`, one file per point,
atomic) as each completes — workers need no shared file system, only perfsim installed.

* **Resume.** Points whose file exists are skipped, so re-running the same command after an
  interruption runs only what is missing.  ``restart`` discards the old points.
* **Errors.** A point that raises is stored as one row whose ``error`` column holds the
  message; the others go on.  Error points are not re-run on resume (a deterministic
  simulation would fail again) unless ``retry_errors`` is set.
* **Interruption.** Ctrl-C or SIGTERM cancels the queued tasks and closes the cluster; only
  whole point files are left (written by rename).  SIGKILL leaves at worst a temporary file,
  which the next run deletes.
* **Determinism.** A point's result depends on its parameters and seed only, never on the
  worker, the order or the cluster: a sweep on any cluster, in-process (``workers=0``) or
  resumed after a kill gives byte-identical ``results.csv`` and ``summary.csv`` (no wall-clock
  value is stored in them).

Output (``out_dir``): ``points/`` (the dataset), ``results.parquet`` and ``results.csv`` (one
row per point × seed × mode × workload; mode is a parameter of the point), ``summary.csv``
(per configuration and workload: mean, standard deviation, n and the Student-t 95 % confidence
interval of each metric over the seeds), ``spec.yaml`` (a copy of the spec).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Self

import numpy as np
import pandas as pd

from perfsim.errors import ConfigError
from perfsim.experiment.output import write_atomic, write_frame
from perfsim.experiment.parquet_store import PointStore
from perfsim.experiment.sweep_spec import SPEC_ENGINES, Point, SweepSpec, run_spec

AVAILABLE_ENGINES = ("des", "fluid", "auto")
"""Engines :func:`run_point` can run."""
METRICS = ("throughput_gbps", "pps", "transactions_per_s", "latency_p50_us", "latency_p99_us", "cpu_s_per_gb",
           "drops")
ROW_COLUMNS = ("workload", "type", "client", "server", "streams", "message_size", *METRICS)
"""What :func:`run_point` returns for each workload of a point."""
ID_COLUMNS = ("point_id", "config_id", "seed", "engine")
CI_LEVEL = 0.95
CONNECT_TIMEOUT_S = 10
POLL_S = 0.05
"""How often the client looks for finished points (and for a Ctrl-C)."""
_INT_COLUMNS = ("streams", "message_size", "drops")


# --- one point ----------------------------------------------------------------------------


def check_engine(engine: str) -> None:
    """Raise ConfigError unless :func:`run_point` can run ``engine``."""
    if engine not in SPEC_ENGINES:
        raise ConfigError("engine", engine, f"one of {', '.join(SPEC_ENGINES)}")
    if engine not in AVAILABLE_ENGINES:
        raise ConfigError("engine", engine, f"{' or '.join(AVAILABLE_ENGINES)} (the {engine} engine is not "
                          "available yet in perfsim sweep)")


def run_point(params: dict[str, Any], seed: int, engine: str) -> list[dict[str, Any]]:
    """Simulate one point: ``params`` as :attr:`Point.params` (``{"scenario": mapping}`` or
    ``{"run": mapping}``) with ``seed``, on ``engine``.  Returns one dict per workload, keys
    :data:`ROW_COLUMNS`.  Raises (ConfigError, RoutingError ...) when the point cannot run."""
    check_engine(engine)
    if set(params) == {"scenario"}:
        return _scenario_rows(params["scenario"], seed, engine)
    if set(params) == {"run"}:
        return _run_rows(params["run"], seed, engine)
    raise ConfigError("params", sorted(params), "a mapping with one key, scenario or run")


def _scenario_rows(mapping: dict[str, Any], seed: int, engine: str) -> list[dict[str, Any]]:
    from perfsim.scenario.cli import simulate_with, summary_frame
    from perfsim.scenario.compile import check
    from perfsim.scenario.load import load_dict

    scenario = load_dict({**mapping, "seed": seed})
    out = simulate_with(check(scenario).experiment, engine)
    frame = summary_frame(scenario, out).rename(columns={"name": "workload"})
    return [{k: r[k] for k in ROW_COLUMNS} for r in frame.to_dict("records")]


def _run_rows(mapping: dict[str, Any], seed: int, engine: str) -> list[dict[str, Any]]:
    from dataclasses import replace

    from perfsim.experiment.run import run

    spec = replace(run_spec(mapping, seed), engine=engine)
    s = run(spec).summary()
    return [{"workload": spec.workload, "type": spec.workload, "client": None, "server": None,
             "streams": spec.streams, "message_size": spec.message_bytes, **{m: s[m] for m in METRICS}}]


def error_message(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_task(params: dict[str, Any], seed: int, engine: str) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The Dask task: ``(rows, None)``, or ``(None, message)`` when the point raised."""
    try:
        return run_point(params, seed, engine), None
    except Exception as exc:  # noqa: BLE001 - a failing point is a result, not a crash of the sweep
        return None, error_message(exc)


def point_frame(point: Point, engine: str, rows: list[dict[str, Any]] | None, error: str | None) -> pd.DataFrame:
    """The rows of one point as stored: ids, parameter columns, workload columns, metrics,
    ``error`` (null where the point ran).  A failed point is one row without metrics."""
    head = {"point_id": point.point_id, "config_id": point.config_id, "seed": point.seed, "engine": engine,
            **point.labels}
    body = rows if rows is not None else [dict.fromkeys(ROW_COLUMNS)]
    df = pd.DataFrame([{**head, **{k: r.get(k) for k in ROW_COLUMNS}, "error": error} for r in body])
    for c in METRICS:
        df[c] = df[c].astype("Int64" if c in _INT_COLUMNS else "float64")
    for c in ("streams", "message_size"):
        df[c] = df[c].astype("Int64")
    for c in ("workload", "type", "client", "server", "error"):
        df[c] = df[c].astype("object")
    df["seed"] = df["seed"].astype("int64")
    return df


# --- the summary -----------------------------------------------------------------------------


def mean_ci(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float, int, float, float]:
    """(mean, sample std, n, low, high): the Student-t confidence interval of the mean of
    ``values`` (NaNs ignored); with fewer than 2 values std and the interval are NaN."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, 0, math.nan, math.nan
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, 1, math.nan, math.nan
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, n, mean - half, mean + half


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration and workload, in plan order: its parameters, ``n`` (seeds
    that ran), ``errors`` (seeds that raised) and ``<metric>_mean``, ``_std``, ``_ci95_low``,
    ``_ci95_high``; ``error`` holds the first error message.  A configuration whose every
    seed raised gets one row, without metrics."""
    if results.empty:
        return pd.DataFrame()
    per_row = {"point_id", "seed", "error", *METRICS}
    keep = [c for c in results.columns if c not in per_row]
    out: list[dict[str, Any]] = []
    for _, conf in results.groupby("config_id", sort=False):
        failed = conf[conf["error"].notna()]
        ran = conf[conf["error"].isna()]
        first_error = failed["error"].iloc[0] if len(failed) else None
        groups = list(ran.groupby("workload", sort=False)) if len(ran) else [(None, failed.iloc[:1])]
        for _, g in groups:
            row = {c: g[c].iloc[0] for c in keep}
            row["n"] = int(g["point_id"].nunique()) if len(ran) else 0
            row["errors"] = int(failed["point_id"].nunique())
            for m in METRICS:
                vals = g[m].to_numpy(dtype=float, na_value=np.nan) if len(ran) else np.empty(0)
                mean, std, _, low, high = mean_ci(vals)
                row.update({f"{m}_mean": mean, f"{m}_std": std, f"{m}_ci95_low": low, f"{m}_ci95_high": high})
            row["error"] = first_error
            out.append(row)
    df = pd.DataFrame(out)
    for c in ("streams", "message_size"):
        df[c] = df[c].astype("Int64")
    return df


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepOutput:
    """What :func:`execute` did and produced."""

    results: pd.DataFrame
    summary: pd.DataFrame
    points: int
    ran: int
    skipped: int
    errors: int
    """Points of the sweep whose stored result is an error (this run's and earlier ones)."""
    wall_s: float
    paths: dict[str, Path]


def default_out_dir(spec: SweepSpec) -> Path:
    return Path("results") / "sweep" / spec.name


def execute(
    spec: SweepSpec,
    out_dir: str | Path | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    restart: bool = False,
    retry_errors: bool = False,
    progress: bool = False,
    handle_sigterm: bool = False,
) -> SweepOutput:
    """Run the points of ``spec`` not yet in ``out_dir`` and write results and summary.

    ``workers``: worker processes of the embedded LocalCluster (default: one per core, at most
    one per point); ``0`` runs the points in this process, without Dask.  ``scheduler``: the
    address of an existing Dask scheduler (``tcp://HOST:PORT``) instead.  Raises ConfigError
    for bad options, before anything runs; KeyboardInterrupt propagates after the cluster is
    closed (the points finished so far are stored); with ``handle_sigterm`` SIGTERM does the
    same as Ctrl-C (the CLI's choice; a library leaves SIGTERM alone)."""
    t0 = time.perf_counter()
    check_engine(spec.engine)
    if scheduler is not None and workers is not None:
        raise ConfigError("--workers", workers, "omitted with --scheduler (the cluster's own workers run the points)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ConfigError("--workers", workers, "an integer >= 0 (0: in this process, without Dask)")
    out = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    store = PointStore(out)
    store.lock()
    try:
        if restart:
            store.clear()
        store.remove_temporary()
        if Path(spec.source).is_file():
            text = Path(spec.source).read_text(encoding="utf-8")
            write_atomic(out / "spec.yaml", lambda p: _write_text(p, text))
        status = store.status()
        todo = [p for p in spec.points if p.point_id not in status or (retry_errors and not status[p.point_id])]
        skipped = len(spec.points) - len(todo)
        errors = 0 if retry_errors else sum(1 for p in spec.points if status.get(p.point_id) is False)
        bar: Any = None
        counts = {"errors": errors, "ran": 0}

        def ready() -> None:
            nonlocal bar
            if progress:
                bar = _progress_bar(spec, skipped, errors)

        def done(point: Point, rows: list[dict[str, Any]] | None, error: str | None) -> None:
            store.write(point.point_id, point_frame(point, spec.engine, rows, error), error is not None)
            counts["ran"] += 1
            counts["errors"] += error is not None
            if bar is not None:
                bar.set_postfix_str(f"errors={counts['errors']}", refresh=False)
                bar.update()

        try:
            with Interrupts(sigterm=handle_sigterm) as guard:
                if todo and workers == 0:
                    ready()
                    for p in todo:
                        done(p, *run_task(p.params, p.seed, spec.engine))
                elif todo:
                    guard.defer = True
                    _run_on_dask(todo, spec.engine, workers, scheduler, ready, done, guard)
        finally:
            if bar is not None:
                bar.close()
        frames = store.read(p.point_id for p in spec.points)
        results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        summary = summarize(results)
        paths = {
            "results.parquet": write_frame(results, out / "results.parquet"),
            "results.csv": write_frame(results, out / "results.csv"),
            "summary.csv": write_frame(summary, out / "summary.csv"),
        }
        n_errors = sum(1 for f in frames if f["error"].notna().any())
        return SweepOutput(results, summary, len(spec.points), counts["ran"], skipped, n_errors,
                           time.perf_counter() - t0, paths)
    finally:
        store.unlock()


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _distributed() -> Any:
    """The ``distributed`` package (imported when a sweep uses Dask; untyped, hence Any)."""
    import distributed

    return distributed


def _progress_bar(spec: SweepSpec, done: int, errors: int) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=len(spec.points), initial=done, file=sys.stderr, unit="point", desc=f"sweep {spec.name}",
               dynamic_ncols=True)
    bar.set_postfix_str(f"errors={errors}")
    return bar


def _run_on_dask(todo: list[Point], engine: str, workers: int | None, scheduler: str | None, ready: Callable[[], None],
                 done: Callable[[Point, list[dict[str, Any]] | None, str | None], None], guard: Interrupts) -> None:
    """Submit the points (a bounded window of them at a time, so a sweep of any size uses
    little memory and an interruption cancels little), store each result as it arrives.
    ``ready()`` is called once the cluster is up, ``done(point, rows, error)`` per point."""
    with _dask_client(workers, scheduler, len(todo), guard) as client:
        ready()
        pending = iter(todo)
        in_flight: dict[Any, Point] = {}
        queue = _distributed().as_completed()

        def submit(n: int) -> None:
            for p in _take(pending, n):
                fut = client.submit(run_task, p.params, p.seed, engine, key=f"perfsim-point-{p.point_id}",
                                    pure=False)
                in_flight[fut] = p
                queue.add(fut)

        window = _window(client)
        submit(window)
        checked = time.monotonic()
        try:
            while in_flight:
                guard.check()
                batch = queue.next_batch(block=False)
                if not batch:
                    time.sleep(POLL_S)
                    continue
                for fut in batch:
                    p = in_flight.pop(fut)
                    try:
                        rows, error = fut.result()
                    except Exception as exc:  # noqa: BLE001 - the task never ended: a killed worker, a lost connection
                        rows, error = None, error_message(exc)
                    fut.release()
                    done(p, rows, error)
                if time.monotonic() - checked > 5:  # workers may have joined the cluster
                    window, checked = _window(client), time.monotonic()
                submit(window - len(in_flight))
        finally:
            if in_flight:
                client.cancel(list(in_flight))


class Interrupts:
    """SIGINT (and, with ``sigterm``, SIGTERM) during a sweep: with ``defer``, the handler only
    records the request and :meth:`check` raises KeyboardInterrupt at a safe point — raised
    from the handler itself it could land in a garbage-collector callback of Dask's and be
    swallowed; without ``defer`` (points running in this process) it raises at once.  Outside
    the main thread nothing is installed."""

    def __init__(self, sigterm: bool = False) -> None:
        self.signals = [signal.SIGINT] + ([signal.SIGTERM] if sigterm else [])
        self.defer = False
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.requested is None
        self.requested = signum
        if first and not self.defer:
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt

    @contextmanager
    def ignored_by_children(self) -> Iterator[None]:
        """SIGINT ignored while worker processes are spawned, so that they inherit SIG_IGN: a
        Ctrl-C in the terminal reaches the whole process group, and only this process must
        act on it (it closes the cluster, which stops the workers)."""
        if signal.SIGINT not in self._previous:
            yield
            return
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, self._handle)


def _take(it: Iterator[Point], n: int) -> list[Point]:
    out = []
    for _ in range(max(n, 0)):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def _window(client: Any) -> int:
    """Points kept in flight: two per worker thread (none idles between tasks), at least 16."""
    threads: int = sum(client.nthreads().values())
    return max(16, 2 * threads)


class _dask_client:  # used as a context manager, like a function
    """A Dask client on an embedded LocalCluster or on an existing scheduler; closing it closes
    the embedded cluster (and its worker processes) too."""

    def __init__(self, workers: int | None, scheduler: str | None, points: int, guard: Interrupts) -> None:
        self.guard = guard
        self.workers = workers
        self.scheduler = scheduler
        self.points = points
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        dist = _distributed()
        try:
            if self.scheduler is not None:
                self.client = _connect(self.scheduler)
            else:
                n = self.workers if self.workers is not None else min(os.cpu_count() or 1, self.points)
                with self.guard.ignored_by_children():
                    self.cluster = dist.LocalCluster(
                        n_workers=max(n, 1), threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, silence_logs=logging.ERROR,
                        # no dashboard; the scheduler's HTTP endpoints (health, metrics) on a free
                        # loopback port instead of 8787, which another cluster may hold
                        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                    )
                self.guard.check()
                self.client = dist.Client(self.cluster)
        except BaseException:
            self.__exit__()
            raise
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _connect(address: str) -> Any:
    """A client of the scheduler at ``address``; checks that its workers can run perfsim."""
    import perfsim

    if not isinstance(address, str) or not address.strip():
        raise ConfigError("--scheduler", address, "a scheduler address such as tcp://HOST:8786")
    try:
        client = _distributed().Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError("--scheduler", address, f"the address of a running Dask scheduler, tcp://HOST:PORT "
                          f"(could not connect: {error_message(exc)})") from None
    try:
        versions = client.run(_worker_perfsim_version)
    except Exception as exc:  # noqa: BLE001 - whatever a worker raised, it cannot run perfsim
        client.close()
        raise ConfigError("--scheduler", address, "a cluster whose workers can import perfsim "
                          f"(install it on every worker: {error_message(exc)})") from None
    wrong = {w: v for w, v in versions.items() if v != perfsim.__version__}
    if wrong:
        client.close()
        w, v = next(iter(wrong.items()))
        raise ConfigError("--scheduler", address, f"workers running perfsim {perfsim.__version__} like this "
                          f"client (worker {w} runs {v})")
    if not versions:
        sys.stderr.write(f"perfsim sweep: no worker at {address} yet; points wait until workers join\n")
    return client


def _worker_perfsim_version() -> str:
    import perfsim

    return perfsim.__version__
