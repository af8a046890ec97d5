"""Sweep spec files (``perfsim sweep SPEC.yaml``): a base, factors, replications -> points.

A spec names a **base** and the **factors** to vary over it::

    version: 1
    name: overlay-scale            # default: the file's stem; output results/sweep/<name>
    base: ../examples/minimal.yaml # a scenario file (relative to this file) ...
    # base: {mode: host, workload: tcp_stream, streams: 1, hosts: 2}   # ... or a compare-style run
    engine: des                    # des | fluid | auto
    replications: 3                # seeds s0, s0+1, s0+2 (s0: the base's seed) -- or seeds: [1, 7]
    modes: [host, bridge, overlay] # a factor over the network mode: one row per mode
    set: {duration_s: 0.01}        # fixed overrides of the base
    factors:                       # the grid: every combination of these values
      hosts.count: [2, 4]
      workloads.0.streams: [1, 4]  # or workloads[0].streams, or workloads.rr.streams (by name)

A parameter path is a dotted path into the base: for a scenario file, its keys (``hosts.count``,
``network.options.vni``; a list entry by index or by its ``name``); for a run mapping, one of
:data:`RUN_DEFAULTS`' keys (``mode_options.learning`` for a mode option).

Vocabulary: a **configuration** is one combination of factor values (the mode included); a
**point** is a configuration with one seed, the unit of work, stored in one file and identified
by :attr:`Point.point_id`, a hash of its resolved parameters, seed and engine.  Resolved means
complete: the base with every default filled in, so writing a default explicitly, or ``10``
for ``10.0``, or reordering keys does not change the hash; changing anything that changes the
simulation does.

Everything is validated before anything runs: the spec's keys, every configuration against
the scenario model (or :class:`RunSpec`), the profiles.  What only the topology knows (a mode
that cannot carry a workload) is found when the point runs, and recorded as its error.

When a point's mode differs from the base's, the base's ``network.options`` (``mode_options``)
that the mode does not have, and its published ports (for modes other than bridge and
user-bridge), are left out, so a scenario written for one mode can be swept over all; options
set by ``set`` or ``factors`` are kept (and checked).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfsim.errors import ConfigError

SPEC_VERSION = 1
SPEC_ENGINES = ("des", "fluid", "auto")
"""Engines a spec may name; which of them can run is :data:`perfsim.experiment.sweep.AVAILABLE_ENGINES`."""
SPEC_KEYS = ("version", "name", "description", "base", "engine", "replications", "seeds", "modes", "set", "factors")
NAME_PATTERN = r"[A-Za-z0-9_.-]+"
MAX_POINTS = 1_000_000
HASH_CHARS = 16
"""Hex digits of the SHA-256 kept as an id (64 bits: no collision in any practical sweep)."""

RUN_DEFAULTS: dict[str, Any] = {
    "mode": "host", "workload": "tcp_stream", "streams": 1, "message_size": None, "placement": None,
    "hosts": 2, "containers_per_host": None, "cores": 4, "nic_gbps": 10.0, "mtu_bytes": 1500,
    "offloads": True, "rps": False, "duration_s": 0.02, "warmup_s": None, "profile": "default",
    "mode_options": {}, "testbed": False, "cpu_ghz": None, "idle_wakeup_us": None,
}
"""Keys of a run base (``base:`` as a mapping), with ``perfsim compare``'s defaults.  ``None``
means derived as compare does: ``placement`` the mode's default, ``containers_per_host`` one
container per flow, ``warmup_s`` 20 % of ``duration_s``; ``message_size`` the workload's."""
SCENARIO_COLUMNS = ("duration_s", "warmup_s", "profile", "hosts", "fabric")
"""Scalar parameters of a scenario shown as columns of every row (``hosts.count`` ...)."""


@dataclass(frozen=True)
class Point:
    """One configuration with one seed: the unit of work."""

    index: int
    """Position in the plan (results are ordered by it)."""
    point_id: str
    """Hash of (resolved parameters, seed, engine): the file name and the resume key."""
    config_id: str
    """Hash of (resolved parameters, engine): the same for every seed of a configuration."""
    seed: int
    params: dict[str, Any]
    """What :func:`perfsim.experiment.sweep.run_point` gets: ``{"scenario": mapping}`` or
    ``{"run": mapping}``, complete (every default filled in), the seed not yet applied."""
    labels: dict[str, Any]
    """Parameter columns of the point's rows: ``mode``, then the base's scalar parameters and
    every factor (path -> value)."""


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec."""

    name: str
    description: str
    kind: str
    """``scenario`` (base is a scenario file) or ``run`` (base is a run mapping)."""
    base: dict[str, Any]
    base_source: str
    engine: str
    seeds: tuple[int, ...]
    modes: tuple[str, ...]
    fixed: tuple[tuple[str, Any], ...]
    factors: tuple[tuple[str, tuple[Any, ...]], ...]
    source: str
    points: tuple[Point, ...]

    @property
    def configurations(self) -> int:
        return len(self.points) // max(len(self.seeds), 1)

    @property
    def factor_names(self) -> list[str]:
        """The varying columns: ``mode`` (when ``modes`` is given) and every factor's path."""
        return (["mode"] if self.modes else []) + [p for p, _ in self.factors]


def canonical(value: Any) -> Any:
    """``value`` made JSON-stable: tuples -> lists, integral floats -> ints (``10.0`` and ``10``
    are the same parameter value), mapping keys as strings."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively: the mapping a YAML file would hold."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def stable_hash(obj: Any) -> str:
    """The first :data:`HASH_CHARS` hex digits of the SHA-256 of ``obj``'s canonical JSON."""
    text = json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def point_id(params: dict[str, Any], seed: int, engine: str) -> str:
    return stable_hash({"params": params, "seed": seed, "engine": engine})


def config_id(params: dict[str, Any], engine: str) -> str:
    return stable_hash({"params": params, "engine": engine})


# --- parameter paths -------------------------------------------------------------------


def split_path(path: str, where: str) -> list[str]:
    """``workloads[0].streams`` / ``workloads.0.streams`` -> ``["workloads", "0", "streams"]``."""
    if not isinstance(path, str) or not path:
        raise ConfigError(where, path, "a parameter path such as hosts.count or workloads.0.streams")
    parts = re.sub(r"\[([^\]]*)\]", r".\1", path).split(".")
    if any(p == "" for p in parts):
        raise ConfigError(where, path, "a parameter path such as hosts.count or workloads.0.streams")
    return parts


def _list_index(items: list[Any], key: str, where: str, path: str) -> int:
    if re.fullmatch(r"\d+", key):
        i = int(key)
        if i < len(items):
            return i
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == key:
            return i
    names = [str(it["name"]) for it in items if isinstance(it, dict) and "name" in it]
    named = f" or a name ({', '.join(names)})" if names else ""
    raise ConfigError(where, path, f"a path whose list entry '{key}' is an index 0 .. {len(items) - 1}{named}")


def set_path(data: dict[str, Any], parts: list[str], value: Any, where: str, path: str) -> None:
    """Set ``value`` at ``parts`` in ``data`` (in place), creating missing mappings."""
    node: Any = data
    for depth, key in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            i = _list_index(node, key, where, path)
            if last:
                node[i] = copy.deepcopy(value)
            else:
                node = node[i]
        elif isinstance(node, dict):
            if last:
                node[key] = copy.deepcopy(value)
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
        else:
            done = ".".join(parts[:depth])
            raise ConfigError(where, path, f"a path into a mapping or a list ({done} is a single value)")


# --- bases -------------------------------------------------------------------------------


def _scenario_resolved(data: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """A scenario mapping -> the complete, validated mapping (every default filled in)."""
    from perfsim.scenario.load import load_dict

    scenario = load_dict(data, base_dir)
    out: dict[str, Any] = _plain(dataclasses.asdict(scenario))
    out.pop("seed")  # each point sets its own
    out.pop("description")  # free text: editing it does not change a result
    return out


def _run_resolved(data: dict[str, Any]) -> dict[str, Any]:
    """A run mapping -> the complete mapping, validated by building its :class:`RunSpec`."""
    for key, value in data.items():
        if key not in RUN_DEFAULTS:
            raise ConfigError(f"base.{key}", value, f"one of the keys {', '.join(RUN_DEFAULTS)}")
    out = {**copy.deepcopy(RUN_DEFAULTS), **copy.deepcopy(data)}
    out.pop("seed", None)
    from perfsim.topology.modes import MODES

    if out["mode"] not in MODES:
        raise ConfigError("mode", out["mode"], f"one of {', '.join(MODES)}")
    if not isinstance(out["mode_options"], dict):
        raise ConfigError("mode_options", out["mode_options"], "a mapping of option name -> value")
    if out["placement"] is None:
        out["placement"] = MODES[out["mode"]].default_placement
    if out["containers_per_host"] is None:
        from perfsim.errors import check_number

        check_number("streams", out["streams"], low=1, high=1_000_000, integer=True)
        check_number("hosts", out["hosts"], low=1, high=65000, integer=True)
        if out["testbed"]:
            per_host = 1 if out["placement"] == "cross-host" else 2
        else:
            per_host = math.ceil(out["streams"] / out["hosts"])
            per_host *= 1 if out["placement"] == "cross-host" else 2
        out["containers_per_host"] = per_host
    if out["warmup_s"] is None:
        from perfsim.errors import check_number

        check_number("duration_s", out["duration_s"], low=0, low_inclusive=False, high=3600.0)
        out["warmup_s"] = out["duration_s"] * 0.2
    if out["message_size"] is None:
        from perfsim.experiment.config import DEFAULT_MESSAGE_BYTES, WORKLOADS

        if out["workload"] not in WORKLOADS:
            raise ConfigError("workload", out["workload"], f"one of {', '.join(WORKLOADS)}")
        out["message_size"] = DEFAULT_MESSAGE_BYTES[out["workload"]]
    run_spec(out, seed=0)  # every field checked by RunSpec and ClusterSpec
    return out


def run_spec(params: dict[str, Any], seed: int) -> Any:
    """The :class:`RunSpec` of a resolved run mapping."""
    from perfsim.experiment.config import RunSpec
    from perfsim.topology.cluster import ClusterSpec

    for key in ("offloads", "rps", "testbed"):
        if not isinstance(params[key], bool):
            raise ConfigError(key, params[key], "true or false")
    for key in ("nic_gbps", "cpu_ghz", "idle_wakeup_us"):
        v = params[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ConfigError(key, v, "a number")
    idle = params["idle_wakeup_us"]
    cluster = ClusterSpec(
        hosts=params["hosts"], cores=params["cores"], nic_rate_bps=params["nic_gbps"] * 1e9,
        mtu_bytes=params["mtu_bytes"], offloads=params["offloads"], rps=params["rps"], testbed=params["testbed"],
        cpu_ghz=params["cpu_ghz"], idle_wakeup_s=None if idle is None else idle * 1e-6,
    )
    return RunSpec(
        mode=params["mode"], workload=params["workload"], streams=params["streams"],
        message_size=params["message_size"], placement=params["placement"],
        containers_per_host=params["containers_per_host"], cluster=cluster, duration_s=params["duration_s"],
        warmup_s=params["warmup_s"], seed=seed, profile=params["profile"], mode_options=dict(params["mode_options"]),
    )


def _switch_mode(data: dict[str, Any], kind: str, mode: str) -> None:
    """Set the mode of a base copy, leaving out the base's options the mode does not have."""
    from perfsim.scenario.model import PUBLISH_MODES
    from perfsim.topology.modes import MODES

    if mode not in MODES:
        raise ConfigError("modes", mode, f"one of {', '.join(MODES)}")
    allowed = MODES[mode].options
    if kind == "run":
        data["mode"] = mode
        opts = data.get("mode_options")
        if isinstance(opts, dict):
            data["mode_options"] = {k: v for k, v in opts.items() if k in allowed}
        return
    net = data.setdefault("network", {})
    if not isinstance(net, dict):
        return  # the model refuses it
    net["mode"] = mode
    if isinstance(net.get("options"), dict):
        net["options"] = {k: v for k, v in net["options"].items() if k in allowed}
    if mode not in PUBLISH_MODES:
        net.pop("publish", None)


def _flat_labels(resolved: dict[str, Any], kind: str) -> dict[str, Any]:
    """The parameter columns of a resolved base: scalars, nested mappings as dotted names."""
    out: dict[str, Any] = {}

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = value

    if kind == "run":
        out["mode"] = resolved["mode"]
        for k, v in resolved.items():
            if k != "mode":
                flatten(k, v)
        return out
    out["mode"] = resolved["network"]["mode"]
    for key in SCENARIO_COLUMNS:
        flatten(key, resolved[key])
    return out


def _column_value(value: Any) -> Any:
    """A factor value as a table cell: scalars as they are, lists and mappings as JSON."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(canonical(value), sort_keys=True)
    return value


# --- the spec file -----------------------------------------------------------------------


def _parse_yaml(text: str, source: str) -> Any:
    from perfsim.scenario.load import parse_yaml

    return parse_yaml(text, source)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file; raises ConfigError (one line) on any mistake."""
    from perfsim.scenario.load import read_text_file

    p = Path(path)
    text = read_text_file(p, "spec", "sweep spec file")
    return load_spec_dict(_parse_yaml(text, str(path)), p.parent, default_name=p.stem, source=str(path))


def load_spec_dict(data: Any, base_dir: Path, default_name: str = "sweep", source: str = "<spec>") -> SweepSpec:
    """Validate a parsed spec mapping (relative paths resolve against ``base_dir``)."""
    if not isinstance(data, dict):
        raise ConfigError("<document>", data, f"a mapping with keys {', '.join(SPEC_KEYS)}")
    for key in data:
        if key not in SPEC_KEYS:
            raise ConfigError(str(key), data[key], f"one of the keys {', '.join(SPEC_KEYS)}")
    if data.get("version", SPEC_VERSION) != SPEC_VERSION:
        raise ConfigError("version", data["version"], f"exactly {SPEC_VERSION}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError("name", name, "a name of letters, digits, '.', '_' and '-'")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("description", description, "a string")
    engine = data.get("engine", "des")
    if engine not in SPEC_ENGINES:
        raise ConfigError("engine", engine, f"one of {', '.join(SPEC_ENGINES)}")
    if "base" not in data:
        raise ConfigError("base", "nothing (missing)", "a scenario file path or a run mapping (mode, workload, ...)")
    kind, base, base_source, base_dir_for_profiles, base_seed = _load_base(data["base"], base_dir)
    seeds = _seeds(data, base_seed)
    modes = _modes(data.get("modes"))
    fixed = _assignments(data.get("set", {}), "set", allow_lists=False)
    factors = _factors(data.get("factors", {}))
    paths = [p for p, _ in fixed] + [p for p, _ in factors]
    mode_paths = {"mode"} if kind == "run" else {"network.mode"}
    for p in paths:
        if modes and ".".join(split_path(p, p)) in mode_paths:
            raise ConfigError(f"factors.{p}", "the mode", "no second mode parameter next to 'modes' (use one)")
    n = len(seeds) * max(len(modes), 1) * math.prod(len(v) for _, v in factors)
    if n > MAX_POINTS:
        raise ConfigError("factors", f"{n} points", f"at most {MAX_POINTS} points (configurations x seeds)")
    spec = SweepSpec(
        name=name, description=description, kind=kind, base=base, base_source=base_source, engine=engine,
        seeds=seeds, modes=modes, fixed=fixed, factors=factors, source=source, points=(),
    )
    return dataclasses.replace(spec, points=tuple(_expand(spec, base_dir_for_profiles)))


def _load_base(value: Any, base_dir: Path) -> tuple[str, dict[str, Any], str, Path | None, int]:
    if isinstance(value, str):
        from perfsim.scenario.load import load_text

        p = Path(value)
        p = p if p.is_absolute() else base_dir / p
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError("base", value, f"a readable scenario file ({p}: {why})") from None
        data = _parse_yaml(text, str(p))
        try:
            scenario = load_text(text, str(p), p.parent)
        except ConfigError as exc:
            raise ConfigError(f"base {value}: {exc.field}", exc.value, exc.allowed) from None
        if not isinstance(data, dict):  # pragma: no cover - load_text refused it already
            raise ConfigError("base", value, "a scenario mapping")
        return "scenario", data, str(p), p.parent, scenario.seed
    if isinstance(value, dict):
        data = dict(value)
        seed = data.pop("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError("base.seed", seed, "an integer >= 0")
        try:
            _run_resolved(data)
        except ConfigError as exc:
            name = exc.field if exc.field.startswith("base.") else f"base.{exc.field}"
            raise ConfigError(name, exc.value, exc.allowed) from None
        return "run", data, "<run mapping>", None, seed
    raise ConfigError("base", value, "a scenario file path or a run mapping (mode, workload, streams, ...)")


def _seeds(data: dict[str, Any], base_seed: int) -> tuple[int, ...]:
    if "seeds" in data and "replications" in data:
        raise ConfigError("seeds", data["seeds"], "either seeds or replications, not both")
    if "seeds" in data:
        seeds = data["seeds"]
        if (not isinstance(seeds, list) or not seeds
                or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63 for s in seeds)):
            raise ConfigError("seeds", seeds, "a non-empty list of integers >= 0")
        if len(set(seeds)) != len(seeds):
            raise ConfigError("seeds", seeds, "a list without repeated seeds")
        return tuple(seeds)
    n = data.get("replications", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10000:
        raise ConfigError("replications", n, "an integer >= 1 and <= 10000")
    return tuple(range(base_seed, base_seed + n))


def _modes(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    from perfsim.topology.modes import MODES

    if not isinstance(value, list) or not value:
        raise ConfigError("modes", value, f"a non-empty list of modes from {', '.join(MODES)}")
    for m in value:
        if m not in MODES:
            raise ConfigError("modes", m, f"one of {', '.join(MODES)}")
    if len(set(value)) != len(value):
        raise ConfigError("modes", value, "a list without repeated modes")
    return tuple(value)


def _assignments(value: Any, key: str, allow_lists: bool) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, dict):
        raise ConfigError(key, value, "a mapping of parameter path -> value")
    out = []
    for path, v in value.items():
        split_path(path, f"{key}.{path}")
        out.append((str(path), v))
    return tuple(out)


def _factors(value: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if not isinstance(value, dict):
        raise ConfigError("factors", value, "a mapping of parameter path -> list of values")
    out = []
    for path, values in value.items():
        where = f"factors.{path}"
        split_path(path, where)
        if not isinstance(values, list) or not values:
            raise ConfigError(where, values, "a non-empty list of values")
        seen = [json.dumps(canonical(v), sort_keys=True) for v in values]
        if len(set(seen)) != len(seen):
            raise ConfigError(where, values, "a list without repeated values")
        out.append((str(path), tuple(values)))
    return tuple(out)


def _expand(spec: SweepSpec, base_dir: Path | None) -> list[Point]:
    """Every configuration x seed, validated, in plan order: factors in file order (the first
    varies slowest), then modes, then seeds."""
    base_mode = spec.base.get("mode", RUN_DEFAULTS["mode"]) if spec.kind == "run" else \
        (spec.base.get("network") or {}).get("mode")
    grid = itertools.product(*[values for _, values in spec.factors], spec.modes or (None,))
    points: list[Point] = []
    seen: dict[str, str] = {}
    profiles: set[str] = set()
    for combo in grid:
        *values, mode = combo
        data = copy.deepcopy(spec.base)
        if mode is not None and mode != base_mode:
            _switch_mode(data, spec.kind, mode)
        assigns = list(spec.fixed) + list(zip([p for p, _ in spec.factors], values, strict=True))
        label = ", ".join([f"mode={mode}"] * (mode is not None) + [f"{p}={v!r}" for p, v in zip(
            [p for p, _ in spec.factors], values, strict=True)])
        for path, value in assigns:
            where = f"set.{path}" if (path, value) in spec.fixed else f"factors.{path}"
            set_path(data, split_path(path, where), value, where, path)
        try:
            resolved = _scenario_resolved(data, base_dir) if spec.kind == "scenario" else _run_resolved(data)
        except ConfigError as exc:
            at = f"point {label}: " if label else ""
            raise ConfigError(f"{at}{exc.field}", exc.value, exc.allowed) from None
        profiles.add(resolved["profile"])
        params = {spec.kind: resolved}
        labels = _flat_labels(resolved, spec.kind)
        for path, value in zip([p for p, _ in spec.factors], values, strict=True):
            labels.setdefault(path, _column_value(value))
        cid = config_id(params, spec.engine)
        if cid in seen:
            raise ConfigError("factors", label, f"configurations that differ (same parameters as {seen[cid]})")
        seen[cid] = label or "the base"
        for seed in spec.seeds:
            points.append(Point(len(points), point_id(params, seed, spec.engine), cid, seed, params,
                                {k: _column_value(v) for k, v in labels.items()}))
    from perfsim.core.profile import load_profile

    for prof in sorted(profiles):
        try:
            load_profile(prof)
        except ConfigError as exc:
            raise ConfigError("profile", prof, exc.allowed) from None
    return points
