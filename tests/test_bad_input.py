"""Every invalid parameter gives one clear ConfigError naming the field and what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from perfsim.components.host import Host
from perfsim.components.link import Link
from perfsim.components.netdev import veth_pair
from perfsim.components.netns import NetNs
from perfsim.components.vxlan import VxlanDevice
from perfsim.core.addr import ip
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.topology.cluster import ClusterSpec


@pytest.fixture
def ns(sim: Sim) -> NetNs:
    host = Host(sim, "h", cores=1)
    n = NetNs(host, "h")
    a, _b = veth_pair(host, "h/eth0", 1, "h/peer", 2)
    n.add_device(a, ip("10.0.0.1"), 24)
    return n


def test_negative_rate(sim: Sim) -> None:
    with pytest.raises(ConfigError, match=r"^l\.rate_bps: got -5; allowed: a number > 0"):
        Link(sim, "l", rate_bps=-5)


def test_mtu_below_68(sim: Sim) -> None:
    host = Host(sim, "h", cores=1)
    with pytest.raises(ConfigError, match=r"^h/x\.mtu_bytes: got 67; allowed: an integer >= 68"):
        veth_pair(host, "h/x", 1, "h/y", 2, mtu_bytes=67)


def test_overlay_mtu_leaving_no_room_for_50_bytes(ns: NetNs) -> None:
    with pytest.raises(ConfigError, match=r"^h/vx\.mtu_bytes: got 1460; allowed: an integer >= 68 and <= 1450"):
        VxlanDevice(ns.host, "h/vx", 9, 42, ip("10.0.0.1"), ns, mtu_bytes=1460)


def test_unknown_device_name(ns: NetNs) -> None:
    with pytest.raises(ConfigError, match=r"^h\.device: got 'eth9'; allowed: one of \['eth0'\]"):
        ns.add_route("10.9.0.0/16", dev="eth9")


def test_route_to_nowhere(ns: NetNs) -> None:
    with pytest.raises(ConfigError, match=r"via: got '192\.0\.2\.1'; allowed: an address on a connected subnet"):
        ns.add_route("10.9.0.0/16", via="192.0.2.1")
    with pytest.raises(ConfigError, match=r"allowed: a gateway \('via'\) or a device"):
        ns.add_route("10.9.0.0/16")
    ns.add_route("10.9.0.0/16", via="10.0.0.254")
    route = ns.routes.lookup(ip("10.9.1.1"))
    assert route is not None and route.gateway == ip("10.0.0.254") and route.dev.ifname == "eth0"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"mode": "bogus"}, r"^mode: got 'bogus'; allowed: one of host, bridge, user-bridge, container, none, overlay, routed, ipip"),
        ({"workload": "tcp_maerts"}, r"^workload: got 'tcp_maerts'"),
        ({"streams": 0}, r"^streams: got 0; allowed: an integer >= 1"),
        ({"duration_s": -1.0}, r"^duration_s: got -1\.0"),
        ({"warmup_s": 1.0, "duration_s": 0.5}, r"^warmup_s: got 1\.0; allowed: less than duration_s"),
        ({"message_size": 0}, r"^message_size: got 0"),
        ({"mode": "container", "placement": "cross-host"}, r"^placement: got 'cross-host'; allowed: same-host for mode container"),
        ({"placement": "moon"}, r"^placement: got 'moon'"),
    ],
)
def test_run_spec_errors_name_the_field(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunSpec(**kw)


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"hosts": 0}, "hosts"), ({"cores": 0}, "cores"), ({"nic_rate_bps": 0.0}, "nic_rate_bps"),
     ({"mtu_bytes": 40}, "mtu_bytes"), ({"nf_conntrack_max": 0}, "nf_conntrack_max"), ({"cores": 2.5}, "cores")],
)
def test_cluster_spec_errors_name_the_field(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: got "):
        ClusterSpec(**kw)


def test_unknown_profile_and_bad_profile_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"^profile: got 'nope'; allowed: one of \['default', 'prior', 'wakeup-measured'\]"):
        load_profile("nope")
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nprovenance: {source: test}\nstages: {bridge_forward: {per_packet_s: -1}}\n")
    with pytest.raises(ConfigError, match=r"^p\.yaml\.stages\.bridge_forward\.per_packet_s: got -1"):
        load_profile(bad)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"valid YAML"):
        load_profile(bad)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["compare", "--modes", "bogus"], "modes: got 'bogus'"),
        (["compare", "--streams", "abc"], "argument --streams: got 'abc'; allowed: an integer"),
        (["compare", "--streams", "0"], "streams: got 0"),
        (["compare", "--format", "xml"], "--format: got 'xml'"),
        (["compare", "--offloads", "maybe"], "--offloads: got 'maybe'"),
        (["compare", "--qdisc", "red"], "--qdisc: got 'red'; allowed: fq_codel or pfifo"),
        (["compare", "--until-steady", "0.01"], "--until-steady: got 0.01; allowed: a number >= 0.02"),
        (["compare", "--profile", "missing"], "profile: got 'missing'"),
        (["compare", "--mtu", "100", "--modes", "overlay"], "mtu_bytes: got 100"),
    ],
)
def test_cli_exits_2_with_one_line_and_no_traceback(args: list[str], needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "perfsim.cli", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("[")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_unknown_mode_option_is_refused_in_the_config_layer() -> None:
    with pytest.raises(ConfigError, match=r"^mode_options\.lerning: got True; allowed: an option of mode overlay: "):
        RunSpec(mode="overlay", mode_options={"lerning": True})
    with pytest.raises(ConfigError, match=r"^mode_options\.x: got 1; allowed: an option of mode host: none"):
        RunSpec(mode="host", mode_options={"x": 1})
