"""Mutation testing of the loader: a mutated scenario either loads, checks and runs (and then
conserves packets), or fails with one ConfigError "<path>: got <value>; allowed: <...>".

Mutants start from ``examples/minimal.yaml`` as a dict and get one to three mutations: delete
a key, set a key to a wrong type / out-of-range number / random string / None, add an unknown
key, duplicate a container name, point a workload at a missing container, change the mode,
add a host, container or workload.  Valid mutants are simulated for 2 ms when small enough
(hosts x containers <= 64, at most 8 flows); larger ones are only checked.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from perfsim.errors import ConfigError
from perfsim.experiment.simulate import simulate
from perfsim.scenario import check, load_dict
from perfsim.scenario.compile import compile_scenario
from perfsim.topology.modes import MODES

MINIMAL = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "minimal.yaml").read_text())
TOP_KEYS = ("version", "name", "description", "seed", "duration_s", "warmup_s", "engine", "profile",
            "hosts", "fabric", "network", "containers", "workloads", "<document>")
MESSAGE = re.compile(r"^(?P<path>[A-Za-z0-9_<>-]+(?:\[\d+\]|\.[A-Za-z0-9_<>-]+)*): got .*; allowed: .+$", re.DOTALL)
VALUES = [
    None, True, False, -1, 0, 1, 2, 3, 7, 64, 0.5, -0.5, 1e12, 2**70, math.nan, math.inf, -math.inf,
    65535, 70000, "", "tcp", "udp", "x", "Bad Name", "bridge", "overlay", [], [1], {}, {"a": 1},
    0.001, 0.002, 1500, 117,
]
OBJECT_KEYS = {"hosts": ("count", "cores", "nic_gbps", "mtu_bytes", "offloads", "rps", "qdisc"),
               "fabric": ("delay_us", "queue_packets"), "network": ("mode", "options", "publish")}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (tuple of keys / indices) to a value inside ``node``."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _parent(d: Any, path: tuple[Any, ...]) -> Any:
    for k in path[:-1]:
        d = d[k]
    return d


@st.composite
def mutants(draw: st.DrawFn) -> dict[str, Any]:
    d = copy.deepcopy(MINIMAL)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["delete", "set", "set", "set", "unknown", "dup_container", "missing_container",
                                     "mode", "mode", "add_host", "add_container", "add_workload", "random_string"]))
        paths = _paths(d)
        if kind in ("delete", "set", "random_string") and paths:
            path = draw(st.sampled_from(paths))
            parent = _parent(d, path)
            if kind == "delete":
                del parent[path[-1]]
            elif kind == "set":
                parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(VALUES)))
            else:
                parent[path[-1]] = draw(st.text(max_size=8))
        elif kind == "unknown":
            targets = [()] + [p for p in paths if isinstance(_parent(d, (*p, None)), dict)]
            where = draw(st.sampled_from(targets))
            node = _parent(d, (*where, None))
            node[draw(st.sampled_from(["extra", "Count", "nics", "hosts"]))] = 1
        elif kind == "dup_container" and isinstance(d.get("containers"), list) and d["containers"]:
            d["containers"].append(copy.deepcopy(d["containers"][0]))
        elif kind == "missing_container" and isinstance(d.get("workloads"), list) and d["workloads"]:
            w = d["workloads"][0]
            if isinstance(w, dict):
                w[draw(st.sampled_from(["client", "server"]))] = "ghost"
        elif kind == "mode" and isinstance(d.get("network"), dict):
            d["network"]["mode"] = draw(st.sampled_from(list(MODES)))
        elif kind == "add_host" and isinstance(d.get("hosts"), dict):
            d["hosts"]["count"] = draw(st.integers(1, 4))
            if isinstance(d.get("containers"), list) and d["containers"] and isinstance(d["containers"][-1], dict):
                d["containers"][-1]["host"] = draw(st.integers(0, 4))
        elif kind == "add_container" and isinstance(d.get("containers"), list):
            d["containers"].append({"name": f"c{len(d['containers'])}", "host": draw(st.integers(0, 2))})
        elif kind == "add_workload" and isinstance(d.get("workloads"), list):
            d["workloads"].append({
                "name": f"w{len(d['workloads'])}", "type": draw(st.sampled_from(["tcp_stream", "udp_stream", "udp_rr"])),
                "client": draw(st.sampled_from(["client", "server", "c2"])), "server": "server",
                "port": draw(st.sampled_from([5001, 6000, 7000])), "streams": draw(st.integers(1, 3)),
            })
    return d


def _assert_config_error(exc: ConfigError, data: dict[str, Any]) -> None:
    m = MESSAGE.match(str(exc))
    assert m is not None, str(exc)
    root = re.split(r"[.\[]", m.group("path"))[0]
    assert root in TOP_KEYS or root in data, str(exc)  # a known key or the unknown one named
    assert exc.allowed
    event(f"ConfigError at {root}")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutants())
def test_mutant_loads_or_fails_with_one_config_error(data: dict[str, Any]) -> None:
    try:
        scenario = load_dict(data)
        small = scenario.hosts.count <= 64
        checked = check(scenario) if small else None
    except ConfigError as exc:
        _assert_config_error(exc, data)
        return
    cells = scenario.hosts.count * max(1, compile_scenario(scenario).containers_per_host)
    if checked is None or cells > 64 or checked.flows > 8 or any(w.start_s >= 0.002 for w in scenario.workloads):
        event("valid, checked only")
        return
    event("valid, simulated")
    short = dataclasses.replace(scenario, duration_s=0.002, warmup_s=0.0005)
    out = simulate(check(short).experiment)
    acc = out.accounting
    assert acc["created"] == acc["delivered"] + acc["dropped"] + acc["in_flight"]
    assert len(out.flows) == checked.flows
