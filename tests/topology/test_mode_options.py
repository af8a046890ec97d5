"""Address and MTU options of the modes: subnets, pod CIDRs and MTUs change exactly the built
addresses, routes and MTUs; every bad value is one ConfigError naming ``mode_options.<key>``."""

from __future__ import annotations

from typing import Any

import pytest

from perfsim.components.netfilter import Rule
from perfsim.core.addr import ip, ip_str
from perfsim.core.packet import DATA, Packet
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import run
from perfsim.scenario.compile import check
from perfsim.scenario.load import load_text
from perfsim.topology.cluster import ClusterSpec, build_cluster
from perfsim.topology.modes import MODES
from perfsim.transport.workloads import start_workload


def _build(mode: str, cph: int = 2, hosts: int = 2, mtu: int = 1500, offloads: bool = True, **options: Any):  # type: ignore[no-untyped-def]
    sim = Sim(seed=1)
    cl = build_cluster(sim, ClusterSpec(hosts=hosts, cores=2, mtu_bytes=mtu, offloads=offloads))
    return sim, cl, MODES[mode].build(cl, cph, **options)


def _error(mode: str, cph: int = 2, hosts: int = 2, mtu: int = 1500, **options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _build(mode, cph, hosts, mtu, **options)
    return info.value


def _addrs(dev: Any) -> list[tuple[str, int]]:
    return [(ip_str(a), plen) for a, plen in dev.addrs]


# -- bridge ----------------------------------------------------------------------------------------
def test_bridge_subnet_sets_gateway_first_then_containers_and_masquerade() -> None:
    _sim, cl, net = _build("bridge", cph=2, subnet="192.168.100.0/24")
    for h in (0, 1):
        assert _addrs(cl.roots[h].devices["docker0"]) == [("192.168.100.1", 24)]
        assert net.endpoint(h, 0).ip == ip("192.168.100.2")
        assert net.endpoint(h, 1).ip == ip("192.168.100.3")
        ns = net.endpoint(h, 1).ns
        assert _addrs(ns.devices["eth0"]) == [("192.168.100.3", 24)]
        assert [str(r) for r in ns.routes.routes()] == [
            f"192.168.100.0/24 dev h{h}c1/eth0 metric 0 src 192.168.100.3",
            f"0.0.0.0/0 via 192.168.100.1 dev h{h}c1/eth0 metric 0",
        ]
        nf = cl.roots[h].nf
        assert nf is not None
        assert nf.chain("nat", "POSTROUTING").rules == [
            Rule("MASQUERADE", src=(ip("192.168.100.0"), 24), out_if="!docker0")]


def test_explicit_default_options_build_exactly_the_default_addresses() -> None:
    cases: list[tuple[str, dict[str, Any]]] = [("bridge", {"subnet": "172.17.0.0/16", "mtu_bytes": 1500}),
             ("container", {"subnet": "172.17.0.0/16", "mtu_bytes": 1500}),
             ("user-bridge", {"networks": 2, "subnets": ["172.18.0.0/16", "172.19.0.0/16"], "mtu_bytes": 1500}),
             ("overlay", {"subnet": "10.1.0.0/16", "mtu_bytes": 1450}),
             ("routed", {"pod_cidr": "10.2.0.0/16"}),
             ("ipip", {"pod_cidr": "10.2.0.0/16", "mtu_bytes": 1480})]
    for mode, options in cases:
        defaults = {k: v for k, v in options.items() if k == "networks"}
        _s1, _c1, plain = _build(mode, cph=4, **defaults)
        _s2, _c2, explicit = _build(mode, cph=4, **options)
        for slot, ep in plain.endpoints.items():
            other = explicit.endpoints[slot]
            assert (ep.ip, ep.mtu_bytes, ep.mss_bytes) == (other.ip, other.mtu_bytes, other.mss_bytes), mode
            assert _addrs(ep.ns.devices["eth0"]) == _addrs(other.ns.devices["eth0"]), mode


def test_bridge_mtu_sets_docker0_both_veth_ends_and_the_mss() -> None:
    _sim, cl, net = _build("bridge", cph=1, hosts=1, mtu_bytes=9000)
    ep = net.endpoint(0, 0)
    assert cl.roots[0].devices["docker0"].mtu_bytes == 9000
    assert ep.ns.devices["eth0"].mtu_bytes == 9000
    assert cl.roots[0].devices["veth-h0c0"].mtu_bytes == 9000
    assert cl.nics[0].mtu_bytes == 1500
    assert (ep.mtu_bytes, ep.mss_bytes) == (9000, 9000 - 52)


@pytest.mark.parametrize("placement", ["same-host", "cross-host"])
def test_bridge_tcp_rr_runs_end_to_end_on_a_custom_subnet(placement: str) -> None:
    r = run(RunSpec(mode="bridge", workload="tcp_rr", placement=placement, containers_per_host=2,
                    duration_s=0.006, warmup_s=0.002, cluster=ClusterSpec(hosts=2, cores=2),
                    mode_options={"subnet": "192.168.100.0/24", "mtu_bytes": 1400}))
    row = r.summary()
    assert row["transactions_per_s"] > 1000
    assert row["drops"] == 0


@pytest.mark.parametrize(("value", "allowed"), [
    ("192.168.100/24", "an IPv4 network in CIDR notation like 192.168.100.0/24"),
    ("192.168.100.0/33", "an IPv4 network in CIDR notation like 192.168.100.0/24"),
    ("192.168.100.0", "an IPv4 network in CIDR notation like 192.168.100.0/24"),
    ("bridge", "an IPv4 network in CIDR notation like 192.168.100.0/24"),
    (24, "an IPv4 network in CIDR notation like 192.168.100.0/24"),
    (None, None),  # None means "default": accepted
    ("192.168.100.1/24", "a network address with no host bits set (192.168.100.0/24)"),
    ("192.168.100.0/30", ("a subnet of at least 5 addresses (prefix length <= 29) for "
                         "2 container addresses + gateway, network and broadcast")),
    ("10.0.0.0/8", "a subnet not overlapping the fabric (hosts' addresses) 10.0.0.0/16"),
    ("10.0.3.0/24", "a subnet not overlapping the fabric (hosts' addresses) 10.0.0.0/16"),
    ("127.1.0.0/16", "a subnet not overlapping loopback 127.0.0.0/8"),
    ("169.254.0.0/24", "a subnet not overlapping link-local (the routed modes' gateway 169.254.1.1) 169.254.0.0/16"),
    ("224.1.0.0/16", "a subnet not overlapping multicast and reserved 224.0.0.0/3"),
])
def test_bad_bridge_subnets_name_the_option(value: Any, allowed: str | None) -> None:
    if allowed is None:
        _build("bridge", subnet=value)
        return
    exc = _error("bridge", subnet=value)
    assert (exc.field, exc.value, exc.allowed) == ("mode_options.subnet", value, allowed)


def test_a_29_holds_exactly_five_addresses_for_two_containers_and_the_container_mode_counts_pods() -> None:
    _build("bridge", cph=3, subnet="192.168.100.0/29")  # .1 gateway, .2-.4, .7 broadcast
    exc = _error("bridge", cph=6, subnet="192.168.100.0/29")
    assert exc.allowed == ("a subnet of at least 9 addresses (prefix length <= 28) for "
                           "6 container addresses + gateway, network and broadcast")
    _sim, cl, net = _build("container", cph=6, hosts=1, subnet="192.168.100.0/29")  # 3 pods
    assert [net.endpoint(0, c).ip for c in range(6)] == [ip(f"192.168.100.{2 + c // 2}") for c in range(6)]
    assert _addrs(cl.roots[0].devices["docker0"]) == [("192.168.100.1", 29)]
    assert _error("container", cph=12, hosts=1, subnet="192.168.100.0/29").field == "mode_options.subnet"


@pytest.mark.parametrize(("value", "allowed"), [
    (67, "an integer >= 68 and <= 65535"),
    (65536, "an integer >= 68 and <= 65535"),
    (1500.0, "an integer >= 68 and <= 65535"),
    (True, "an integer >= 68 and <= 65535"),
    ("1500", "an integer >= 68 and <= 65535"),
])
@pytest.mark.parametrize("mode", ["bridge", "user-bridge", "container"])
def test_bad_bridge_mtus_name_the_option(mode: str, value: Any, allowed: str) -> None:
    exc = _error(mode, mtu_bytes=value)
    assert (exc.field, exc.value, exc.allowed) == ("mode_options.mtu_bytes", value, allowed)


def test_too_many_containers_without_a_subnet_is_still_a_containers_per_host_error() -> None:
    exc = _error("bridge", cph=65534, hosts=1)
    assert str(exc) == "containers_per_host: got 65534; allowed: an integer >= 1 and <= 65533"


# -- user-bridge -----------------------------------------------------------------------------------
def test_user_bridge_subnets_one_per_network() -> None:
    _sim, cl, net = _build("user-bridge", cph=2, hosts=1, networks=2, attach_both=True,
                           subnets=["192.168.1.0/24", "192.168.2.0/25"], mtu_bytes=1400)
    root = cl.roots[0]
    assert _addrs(root.devices["br-net1"]) == [("192.168.1.1", 24)]
    assert _addrs(root.devices["br-net2"]) == [("192.168.2.1", 25)]
    assert [(a.bridge, a.ip) for a in net.attachments[(0, 0)]] == [("br-net1", ip("192.168.1.2")),
                                                                    ("br-net2", ip("192.168.2.2"))]
    assert [(a.bridge, a.ip) for a in net.attachments[(0, 1)]] == [("br-net2", ip("192.168.2.3")),
                                                                    ("br-net1", ip("192.168.1.3"))]
    ns = net.endpoint(0, 1).ns
    assert _addrs(ns.devices["eth0"]) == [("192.168.2.3", 25)]
    assert ns.routes.lookup(ip("8.8.8.8")).gateway == ip("192.168.2.1")
    assert {d.mtu_bytes for d in (root.devices["br-net1"], root.devices["br-net2"], ns.devices["eth1"])} == {1400}
    assert net.endpoint(0, 1).mss_bytes == 1348
    # the client reaches the server over their shared network
    assert net.target((0, 0), (0, 1), 5001, 6) == (ip("192.168.1.3"), 5001)


@pytest.mark.parametrize(("subnets", "field", "allowed"), [
    (["172.18.0.0/16", "172.18.5.0/24"], "mode_options.subnets[1]", "a subnet not overlapping 172.18.0.0/16 (network 0)"),
    (["192.168.0.0/24", "192.168.0.0/16"], "mode_options.subnets[1]", "a subnet not overlapping 192.168.0.0/24 (network 0)"),
    (["192.168.1.0/24"], "mode_options.subnets", "a list of 2 CIDR subnets, one per network (networks = 2)"),
    (["192.168.1.0/24"] * 3, "mode_options.subnets", "a list of 2 CIDR subnets, one per network (networks = 2)"),
    ("192.168.1.0/24", "mode_options.subnets", "a list of 2 CIDR subnets, one per network (networks = 2)"),
    (["192.168.1.0/24", "x"], "mode_options.subnets[1]", "an IPv4 network in CIDR notation like 192.168.100.0/24"),
    (["192.168.1.1/24", "192.168.2.0/24"], "mode_options.subnets[0]",
     "a network address with no host bits set (192.168.1.0/24)"),
    (["192.168.1.0/24", "10.0.0.0/24"], "mode_options.subnets[1]",
     "a subnet not overlapping the fabric (hosts' addresses) 10.0.0.0/16"),
    (["192.168.1.0/24", "192.168.2.0/30"], "mode_options.subnets[1]",
     "a subnet of at least 6 addresses (prefix length <= 29) for 3 container addresses + gateway, network and broadcast"),
])
def test_bad_user_bridge_subnets_name_the_entry(subnets: Any, field: str, allowed: str) -> None:
    exc = _error("user-bridge", cph=3, networks=2, subnets=subnets)
    assert (exc.field, exc.value, exc.allowed) == (field, subnets if field.endswith("subnets") else
                                                   subnets[int(field[-2])], allowed)


def test_user_bridge_container_index_sets_the_address_on_every_network() -> None:
    """Container ``c`` sits at ``subnet + 2 + c`` whatever its network, so a /29 holds 5 containers."""
    _build("user-bridge", cph=5, hosts=1, networks=2, subnets=["192.168.1.0/29", "192.168.1.8/29"])
    assert _error("user-bridge", cph=6, hosts=1, networks=2,
                  subnets=["192.168.1.0/29", "192.168.1.8/29"]).field == "mode_options.subnets[0]"


# -- overlay ---------------------------------------------------------------------------------------
def test_overlay_subnet_gives_each_host_a_24_block_and_its_prefix_length() -> None:
    _sim, _cl, net = _build("overlay", cph=2, hosts=2, subnet="172.20.0.0/23")
    assert [net.endpoint(h, c).ip for h in (0, 1) for c in (0, 1)] == [
        ip("172.20.0.2"), ip("172.20.0.3"), ip("172.20.1.2"), ip("172.20.1.3")]
    assert _addrs(net.endpoint(1, 1).ns.devices["eth0"]) == [("172.20.1.3", 23)]
    exc = _error("overlay", hosts=2, subnet="172.20.0.0/24")
    assert (exc.field, exc.allowed) == ("mode_options.subnet",
                                        "a subnet of at least 512 addresses (prefix length <= 23) for 2 hosts (one /24 per host)")
    assert _error("overlay", hosts=3, subnet="172.20.0.0/23").allowed.startswith("a subnet of at least 768 addresses "
                                                                                "(prefix length <= 22)")
    _build("overlay", cph=1, hosts=3, subnet="172.20.0.0/22")
    assert _error("overlay", subnet="10.0.0.0/15").field == "mode_options.subnet"


def test_overlay_mtu_must_leave_room_for_vxlan() -> None:
    exc = _error("overlay", mtu_bytes=1451)
    assert str(exc) == ("mode_options.mtu_bytes: got 1451; allowed: an integer >= 68 and <= 1450: "
                        "MTU too large for the 50 B VXLAN encapsulation on the 1500 B underlay")
    assert _error("overlay", mtu=9000, mtu_bytes=8951).allowed.startswith("an integer >= 68 and <= 8950: ")
    assert _error("overlay", mtu_bytes=67).allowed == "an integer >= 68 and <= 1450"


def _record_max_l3(obj: object, attr: str, out: list[int]) -> None:
    inner = getattr(obj, attr)

    def wrapper(pkt: Packet) -> None:
        if pkt.kind == DATA:
            out.append(pkt.l3_bytes_per_seg)
        inner(pkt)

    setattr(obj, attr, wrapper)


def test_overlay_mtu_1400_sets_vtep_bridge_and_container_mtu_and_the_flow_mss() -> None:
    sim, cl, net = _build("overlay", cph=1, offloads=False, mtu_bytes=1400)
    client, server = net.endpoint(0, 0), net.endpoint(1, 0)
    for h in (0, 1):
        assert cl.roots[h].devices["vxlan0"].mtu_bytes == 1400
        assert cl.roots[h].devices["ovbr0"].mtu_bytes == 1400
        assert net.endpoint(h, 0).ns.devices["eth0"].mtu_bytes == 1400
    assert client.mss_bytes == 1400 - 52
    inner: list[int] = []
    wire: list[int] = []
    _record_max_l3(client.ns.devices["eth0"], "xmit", inner)
    assert cl.switch is not None
    _record_max_l3(cl.switch, "put", wire)
    flow = start_workload(sim, "tcp_stream", client, server, 65536, server_port=5001, client_port=40000)
    sim.run(0.002)
    assert flow.client_sock.mss == 1348
    assert max(inner) == 1400  # a full segment: 1348 + 32 TCP + 20 IP
    assert max(wire) == 1450  # plus the 50 B of VXLAN, under the 1500 B NIC MTU
    assert sim.dropped == 0


def test_overlay_with_options_carries_tcp_rr_across_hosts() -> None:
    r = run(RunSpec(mode="overlay", workload="tcp_rr", placement="cross-host", duration_s=0.006, warmup_s=0.002,
                    cluster=ClusterSpec(hosts=2, cores=2),
                    mode_options={"subnet": "172.20.0.0/16", "mtu_bytes": 1400, "vni": 42}))
    assert r.summary()["transactions_per_s"] > 1000
    assert r.summary()["drops"] == 0


# -- routed / ipip ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["routed", "ipip"])
def test_pod_cidr_gives_each_host_a_24_and_routes_to_the_others(mode: str) -> None:
    _sim, cl, net = _build(mode, cph=2, hosts=4, pod_cidr="192.168.0.0/22")
    assert net.endpoint(3, 1).ip == ip("192.168.3.3")
    routes = [str(r) for r in cl.roots[0].routes.routes()]
    dev = "h0/tunl0" if mode == "ipip" else "h0/eth0"
    assert f"192.168.3.0/24 via 10.0.0.4 dev {dev} metric 0" in routes
    assert "192.168.0.3/32 dev h0/veth-h0c1 metric 0" in routes
    if mode == "ipip":
        assert _addrs(cl.roots[2].devices["tunl0"]) == [("192.168.2.1", 32)]
    exc = _error(mode, hosts=5, pod_cidr="192.168.0.0/22")
    assert (exc.field, exc.value, exc.allowed) == (
        "mode_options.pod_cidr", "192.168.0.0/22",
        "a subnet of at least 1280 addresses (prefix length <= 21) for 5 hosts (one /24 per host)")
    assert _error(mode, pod_cidr="169.254.0.0/16").field == "mode_options.pod_cidr"
    assert _error(mode, pod_cidr="192.168.0.1/22").field == "mode_options.pod_cidr"


def test_ipip_mtu_option_and_its_limit() -> None:
    _sim, cl, net = _build("ipip", cph=1, mtu_bytes=1400)
    assert cl.roots[0].devices["tunl0"].mtu_bytes == 1400
    assert net.endpoint(1, 0).ns.devices["eth0"].mtu_bytes == 1400
    assert net.endpoint(1, 0).mss_bytes == 1348
    exc = _error("ipip", mtu_bytes=1481)
    assert str(exc) == ("mode_options.mtu_bytes: got 1481; allowed: an integer >= 68 and <= 1480: "
                        "MTU too large for the 20 B IPIP encapsulation on the 1500 B underlay")


def test_routed_pod_cidr_carries_a_flow_end_to_end() -> None:
    r = run(RunSpec(mode="routed", workload="tcp_rr", placement="cross-host", duration_s=0.006, warmup_s=0.002,
                    cluster=ClusterSpec(hosts=2, cores=2), mode_options={"pod_cidr": "192.168.0.0/16"}))
    assert r.summary()["transactions_per_s"] > 1000
    assert r.summary()["drops"] == 0


# -- unknown options, RunSpec and scenario files --------------------------------------------------
def test_unknown_options_are_still_refused() -> None:
    assert str(_error("bridge", bip="172.17.0.1/16")) == (
        "mode_options.bip: got '172.17.0.1/16'; allowed: one of subnet, mtu_bytes for mode bridge")
    assert _error("routed", mtu_bytes=1400).allowed == "one of pod_cidr for mode routed"
    assert _error("overlay", subnets=["10.1.0.0/16"]).field == "mode_options.subnets"
    assert _error("host", subnet="192.168.0.0/24").allowed == "no options for mode host"
    with pytest.raises(ConfigError, match=r"^mode_options\.pod_cidr: got '10\.2\.0\.0/16'; allowed: an option of "
                                          r"mode overlay: vni, learning, subnet, mtu_bytes$"):
        RunSpec(mode="overlay", mode_options={"pod_cidr": "10.2.0.0/16"})


SCENARIO = """
version: 1
name: options
duration_s: 0.004
warmup_s: 0.001
hosts: {{count: 2, cores: 2}}
network:
  mode: {mode}
  options: {options}
containers:
  - {{name: a, host: 0}}
  - {{name: b, host: 0}}
  - {{name: c, host: 1}}
workloads:
  - {{name: rr, type: tcp_rr, client: a, server: b}}
  - {{name: far, type: tcp_rr, client: a, server: c, port: 6001}}
"""


def test_perfsim_check_accepts_a_scenario_with_address_and_mtu_options() -> None:
    text = SCENARIO.format(mode="user-bridge", options="{networks: 2, attach_both: true, "
                                                      "subnets: [192.168.1.0/24, 192.168.2.0/24], mtu_bytes: 1400}")
    checked = check(load_text(text))
    assert checked.flows == 2
    assert checked.experiment.mode_options == {"networks": 2, "attach_both": True,
                                               "subnets": ["192.168.1.0/24", "192.168.2.0/24"], "mtu_bytes": 1400}
    for mode, options in [("bridge", "{subnet: 192.168.100.0/24, mtu_bytes: 9000}"),
                          ("overlay", "{subnet: 172.20.0.0/16, mtu_bytes: 1400}"),
                          ("ipip", "{pod_cidr: 192.168.0.0/16, mtu_bytes: 1480}")]:
        assert check(load_text(SCENARIO.format(mode=mode, options=options))).flows == 2


@pytest.mark.parametrize(("mode", "options", "message"), [
    ("user-bridge", "{networks: 2, subnets: [172.18.0.0/16, 172.18.1.0/24]}",
     "network.options.subnets[1]: got '172.18.1.0/24'; allowed: a subnet not overlapping 172.18.0.0/16 (network 0)"),
    ("overlay", "{mtu_bytes: 1451}",
     ("network.options.mtu_bytes: got 1451; allowed: an integer >= 68 and <= 1450: "
     "MTU too large for the 50 B VXLAN encapsulation on the 1500 B underlay")),
    ("bridge", "{subnet: 10.0.0.0/24}",
     ("network.options.subnet: got '10.0.0.0/24'; allowed: a subnet not overlapping the fabric (hosts' addresses) "
     "10.0.0.0/16")),
    ("routed", "{pod_cidr: 192.168.0.0/24}",
     ("network.options.pod_cidr: got '192.168.0.0/24'; allowed: a subnet of at least 512 addresses "
     "(prefix length <= 23) for 2 hosts (one /24 per host)")),
])
def test_perfsim_check_names_the_bad_option_by_its_path_in_the_file(mode: str, options: str, message: str) -> None:
    scenario = load_text(SCENARIO.format(mode=mode, options=options))
    with pytest.raises(ConfigError) as info:
        check(scenario)
    assert str(info.value) == message
