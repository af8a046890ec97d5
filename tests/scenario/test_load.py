"""Loading and validating scenario files: every bad input gives one ConfigError naming its path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from perfsim.errors import ConfigError
from perfsim.scenario import check, load_dict, load_file, load_text
from perfsim.scenario.schema import SCHEMA_PATH, render

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINIMAL = yaml.safe_load((EXAMPLES / "minimal.yaml").read_text())


def two_hosts(mode: str, **network: Any) -> dict[str, Any]:
    """A cross-host scenario in ``mode``: a on host 0, b on host 1, a tcp_rr from a to b."""
    return {
        "version": 1, "name": "t", "duration_s": 0.01, "warmup_s": 0.002, "hosts": {"count": 2},
        "network": {"mode": mode, **network},
        "containers": [{"name": "a", "host": 0}, {"name": "b", "host": 1}],
        "workloads": [{"name": "w", "type": "tcp_rr", "client": "a", "server": "b", "port": 80}],
    }


def error(data: Any) -> ConfigError:
    """The single ConfigError loading + checking ``data`` raises."""
    with pytest.raises(ConfigError) as info:
        check(load_dict(data))
    return info.value


def mutate(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` (default: minimal.yaml) with the dotted ``path`` set to ``value``."""
    d = copy.deepcopy(MINIMAL if base is None else base)
    *parents, last = path.split(".")
    node: Any = d
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return d


def test_minimal_loads_with_defaults() -> None:
    s = load_file(EXAMPLES / "minimal.yaml")
    assert s.name == "minimal"
    assert (s.hosts.count, s.hosts.cores, s.hosts.nic_gbps) == (1, 4, 10.0)
    assert (s.workloads[0].streams, s.workloads[0].message_size) == (1, 64)
    checked = check(s)
    assert (checked.containers, checked.flows) == (2, 1)
    assert (checked.experiment.flows[0].client, checked.experiment.flows[0].server) == ((0, 0), (0, 1))


@pytest.mark.parametrize(("data", "field", "allowed"), [
    (mutate("version", 2), "version", "exactly 1"),
    (mutate("name", "Bad Name"), "name", "matching ^[a-z0-9_-]+$"),
    (mutate("duration_s", 0), "duration_s", "a number > 0 and <= 3600"),
    (mutate("duration_s", -1.0), "duration_s", "a number > 0"),
    (mutate("warmup_s", 0.01), "warmup_s", "< duration_s (0.01)"),
    (mutate("engine", "flow"), "engine", "one of des"),
    (mutate("hosts.count", 0), "hosts.count", "an integer >= 1 and <= 65000"),
    (mutate("hosts.nic_gbps", 0), "hosts.nic_gbps", "a number > 0"),
    (mutate("hosts.nic_gbps", "fast"), "hosts.nic_gbps", "a number > 0"),
    (mutate("hosts.offloads", "yes"), "hosts.offloads", "true or false"),
    (mutate("hosts.cores", 2.5), "hosts.cores", "an integer >= 1"),
    (mutate("fabric.delay_us", -5), "fabric.delay_us", "a number >= 0"),
    (mutate("network.mode", "macvlan"), "network.mode", "one of host, bridge, user-bridge"),
    (mutate("workloads.0.message_size", 0), "workloads[0].message_size", "an integer >= 1"),
    (mutate("workloads.0.message_size", -3), "workloads[0].message_size", "an integer >= 1"),
    (mutate("workloads.0.streams", 0), "workloads[0].streams", "an integer >= 1"),
    (mutate("workloads.0.rate_bps", -1), "workloads[0].rate_bps", "a number >= 0"),
    (mutate("workloads.0.rate_bps", 1e9), "workloads[0].rate_bps", "0 for tcp_rr"),
    (mutate("workloads.0.type", "tcp_maerts"), "workloads[0].type", "one of tcp_stream, udp_stream"),
    (mutate("workloads.0.start_s", 0.01), "workloads[0].start_s", "< duration_s (0.01)"),
    (mutate("workloads.0.client", "nobody"), "workloads[0].client", "one of the containers: client, server"),
    (mutate("workloads.0.server", "nobody"), "workloads[0].server", "one of the containers: client, server"),
    (mutate("containers.1.name", "client"), "containers[1].name", "a name not used by another container"),
    (mutate("containers.1.host", 1), "containers[1].host", "a host index 0 .. 0"),
    (mutate("profile", "no-such-profile"), "profile", "one of ['default', 'prior', 'wakeup-measured'] or a YAML file path"),
    (mutate("network.options", {"learning": True}), "network.options.learning", "an option of mode bridge: subnet, mtu_bytes"),
    (mutate("workloads.0.type", "udp_stream", mutate("workloads.0.message_size", 70000)),
     "workloads[0].message_size", "<= 65507 for udp_stream"),
])
def test_bad_value_names_its_path(data: dict[str, Any], field: str, allowed: str) -> None:
    exc = error(data)
    assert exc.field == field
    assert str(exc).startswith(f"{field}: got ")
    assert allowed in exc.allowed


def test_overlay_on_one_host() -> None:
    exc = error(mutate("network.mode", "overlay"))
    assert exc.field == "network.mode"
    assert "network.mode: overlay needs hosts.count >= 2" in exc.allowed


@pytest.mark.parametrize(("mode", "mtu", "low"), [("overlay", 117, 118), ("ipip", 87, 88)])
def test_mtu_too_small_for_encapsulation(mode: str, mtu: int, low: int) -> None:
    exc = error(mutate("hosts.mtu_bytes", mtu, two_hosts(mode)))
    assert (exc.field, exc.value) == ("hosts.mtu_bytes", mtu)
    assert exc.allowed.startswith(f">= {low} for mode {mode}")
    check(load_dict(mutate("hosts.mtu_bytes", low, two_hosts(mode))))  # the limit itself is fine


def test_container_mode_across_hosts() -> None:
    exc = error(two_hosts("container"))
    assert exc.field == "workloads[0].server"
    assert "cannot cross hosts" in exc.allowed


def test_none_mode_between_containers() -> None:
    data = mutate("network.mode", "none")
    exc = error(data)
    assert exc.field == "workloads[0].server"
    assert "only a loopback device" in exc.allowed
    # a loopback flow inside one 'none' container is possible
    check(load_dict(mutate("workloads.0.server", "client", data)))


def test_isolated_user_bridges() -> None:
    data = mutate("network", {"mode": "user-bridge", "options": {"networks": 2}})
    exc = error(data)  # client on br-net1, server on br-net2, same host: isolation drops it
    assert exc.field == "workloads[0].server"
    assert "client on br-net1, server on br-net2" in exc.allowed
    data["network"]["options"]["attach_both"] = True
    check(load_dict(data))
    # across hosts the flow goes through a published port: not isolated
    cross = two_hosts("user-bridge", options={"networks": 2})
    cross["containers"].insert(1, {"name": "x", "host": 1})  # b becomes container 1 of host 1
    check(load_dict(cross))


def test_attach_both_needs_two_networks() -> None:
    data = mutate("network", {"mode": "user-bridge", "options": {"attach_both": True}})
    exc = error(data)
    assert exc.field == "network.options.attach_both"
    assert exc.allowed == "False unless networks >= 2"


def test_port_already_allocated() -> None:
    data = two_hosts("bridge", publish=[
        {"container": "b", "host_port": 8080, "container_port": 80},
        {"container": "b", "host_port": 8080, "container_port": 81},
    ])
    exc = error(data)
    assert exc.field == "network.publish[1].host_port"
    assert "port is already allocated" in exc.allowed
    data["network"]["publish"][1]["proto"] = "udp"  # same number, other protocol: allowed
    check(load_dict(data))


def test_publish_refused_outside_bridge_modes() -> None:
    exc = error(two_hosts("overlay", publish=[{"container": "b", "host_port": 80, "container_port": 80}]))
    assert exc.field == "network.publish"


def test_publish_names_missing_container() -> None:
    exc = error(two_hosts("bridge", publish=[{"container": "zz", "host_port": 80, "container_port": 80}]))
    assert exc.field == "network.publish[0].container"


def test_server_port_range_overlap_in_one_namespace() -> None:
    data = copy.deepcopy(MINIMAL)
    data["workloads"].append({"name": "rr2", "type": "tcp_rr", "client": "client", "server": "server",
                              "port": 5000, "streams": 2})
    exc = error(data)
    assert exc.field == "workloads[1].port"
    assert "workloads[0]" in exc.allowed


def test_malformed_yaml_names_file_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("version: 1\nname: [unclosed\nhosts: {}\n", "bad.yaml")
    assert info.value.field == "bad.yaml"
    assert info.value.allowed.startswith("valid YAML (line ")


def test_unknown_key_lists_allowed_keys() -> None:
    exc = error(mutate("hosts.nics", 2))
    assert exc.field == "hosts.nics"
    assert exc.allowed.startswith("one of the keys count, cores, nic_gbps")
    exc = error(mutate("workloads.0.sizes", 2))
    assert exc.field == "workloads[0].sizes"


def test_wrong_types() -> None:
    assert error(mutate("hosts", [1, 2])).field == "hosts"
    assert error(mutate("containers", {"name": "a"})).field == "containers"
    assert error(mutate("containers.0", "a")).field == "containers[0]"
    assert error(mutate("seed", True)).field == "seed"
    assert error(mutate("network.options", [1])).field == "network.options"
    assert error([1, 2]).field == "<document>"


def test_missing_required_key() -> None:
    d = copy.deepcopy(MINIMAL)
    del d["network"]
    exc = error(d)
    assert exc.field == "network"
    assert "required" in exc.allowed


def test_profile_path_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "s.yaml"
    f.write_text(yaml.safe_dump(mutate("profile", "mine.yaml")))
    s = load_file(f)
    assert s.profile == str(tmp_path / "sub" / "mine.yaml")
    with pytest.raises(ConfigError) as info:
        check(s)
    assert info.value.field == "profile"


def test_shipped_schema_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render()


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate_against_schema(path: Path) -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))


def test_schema_rejects_what_the_model_rejects() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    for bad in (mutate("hosts.count", 0), mutate("hosts.nics", 1), mutate("workloads.0.type", "x"),
                mutate("version", 2), mutate("hosts.offloads", 1)):
        assert not validator.is_valid(bad)
