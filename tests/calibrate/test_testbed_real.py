"""The real-kernel testbed: topology as built, plausible measurements, complete cleanup.

Everything here runs on this machine's kernel in namespaces the tests create (``kernel``
fixture: skipped with the reason where that is impossible).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from perfsim.calibrate import measure as m
from perfsim.calibrate.testbed import (
    NS_PREFIX,
    TCP_CONGESTION_CONTROL,
    CommandError,
    Testbed,
    cleanup_stale,
    leftovers,
    list_namespaces,
    run,
)
from perfsim.errors import ConfigError

# --- configurations (no kernel needed) ----------------------------------------------------------


def test_config_id_defaults_and_cpu_placement() -> None:
    cfg = m.MeasureConfig("overlay", "tcp_stream")
    assert cfg.id == "overlay/tcp_stream/s1/m131072/on/c1"
    assert cfg.cpus == (0, 0)
    two = m.MeasureConfig("nat", "udp_rr", offloads=False, cores=2)
    assert two.id == "nat/udp_rr/s1/m64/off/c2"
    assert two.cpus == (0, 1)
    assert m.MeasureConfig("host", "tcp_crr").message_bytes == 1
    assert m.MeasureConfig("host", "udp_stream") == m.MeasureConfig("host", "udp_stream", message_bytes=64)


def test_config_id_matches_the_simulation_side() -> None:
    configs = pytest.importorskip("perfsim.calibrate.configs")
    for cfg in m.full_plan():
        row = {k: getattr(cfg, k) for k in m.CONFIG_COLUMNS}
        assert configs.config_id(row) == cfg.id


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"path": "ipip", "workload": "tcp_stream"}, "path"),
        ({"path": "host", "workload": "tcp_maerts"}, "workload"),
        ({"path": "host", "workload": "tcp_rr", "streams": 2}, "streams"),
        ({"path": "host", "workload": "tcp_stream", "streams": 0}, "streams"),
        ({"path": "host", "workload": "udp_rr", "message_bytes": 8}, "message_bytes"),
        ({"path": "host", "workload": "tcp_stream", "cores": 3}, "cores"),
        ({"path": "host", "workload": "tcp_stream", "offloads": "yes"}, "offloads"),
    ],
)
def test_bad_configs_are_config_errors(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        m.MeasureConfig(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_plans() -> None:
    full = m.full_plan()
    assert len(full) == 6 * 2 * 7
    assert len({c.id for c in full}) == len(full)
    assert {c.cores for c in full} == {1, 2}
    quick = m.quick_plan()
    assert {c.path for c in quick} == {"host", "bridge", "overlay"}
    assert {c.workload for c in quick} == {"tcp_stream", "udp_rr", "tcp_crr"}
    assert {c.cores for c in quick} == {1}


def test_sockperf_output_is_parsed_as_full_round_trips() -> None:
    text = (
        "sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=11000; ReceivedMessages=11000\n"
        "sockperf: \x1b[2;35m====> avg-rtt=20.5 (std-dev=3.1)\x1b[0m\n"
        "sockperf: ---> percentile 99.000 =   52.000\n"
        "sockperf: ---> percentile 50.000 =   18.250\n"
    )
    got = m.parse_sockperf(text)
    assert got == {"latency_s": pytest.approx(18.25e-6), "latency_p99_s": pytest.approx(52e-6),
                   "transaction_rate": pytest.approx(20000.0)}
    with pytest.raises(RuntimeError, match="full round trips"):
        m.parse_sockperf(text.replace("avg-rtt", "avg-latency"))


def test_bad_measure_arguments(tmp_path: object) -> None:
    cfg = [m.MeasureConfig("host", "tcp_stream")]
    with pytest.raises(ConfigError):
        m.measure([], progress=False)
    with pytest.raises(ConfigError):
        m.measure(cfg, duration_s=0, progress=False)
    with pytest.raises(ConfigError):
        m.measure(cfg, repeats=0, progress=False)
    assert m.main(["--paths", "host,ipip"]) == 2
    assert m.main(["--duration", "abc"]) == 2


def test_without_root_the_command_says_why_and_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert m.main(["--quick"]) == 3
    assert capsys.readouterr().err.strip() == "cannot measure: network namespaces need root (run as root, e.g. with sudo)"


# --- real kernel ---------------------------------------------------------------------------------


def _ns_py(tb: Testbed, ns: str, code: str, timeout_s: float = 10) -> str:
    """Run a Python snippet inside namespace ``ns``; its stdout."""
    return tb.call(ns, [sys.executable, "-c", code], timeout_s=timeout_s).stdout.strip()


def _source_seen_by_server(tb: Testbed, addr: str, port: int) -> str:
    """Connect from the client namespace to ``addr:port``; return the source address the
    server (listening on port 5301 in the server namespace) saw."""
    srv = tb.start(tb.server_ns, [sys.executable, "-c", (
        "import socket\n"
        "s = socket.create_server(('0.0.0.0', 5301))\n"
        "c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()\n")])
    tb.wait_listening(tb.server_ns, "tcp", 5301, srv)
    return _ns_py(tb, tb.client_ns, (
        "import socket\n"
        f"c = socket.create_connection(('{addr}', {port}), timeout=3); print(c.recv(100).decode())\n"))


@pytest.mark.usefixtures("kernel")
def test_quick_measurement_is_plausible_and_leaves_nothing() -> None:
    configs = [m.MeasureConfig(p, w) for p in ("host", "bridge", "overlay") for w in ("tcp_stream", "udp_rr")]
    t0 = time.monotonic()
    df = m.measure(configs, duration_s=1.0, repeats=1, progress=False)
    elapsed = time.monotonic() - t0
    assert list(df.columns) == m.COLUMNS
    summary = m.summarize(df).set_index(["config_id", "metric"])["value"]
    for path in ("host", "bridge", "overlay"):
        assert summary[(f"{path}/tcp_stream/s1/m131072/on/c1", "throughput_bps")] > 100e6
        rtt = summary[(f"{path}/udp_rr/s1/m64/on/c1", "latency_s")]
        assert 1e-6 < rtt < 10e-3
        assert summary[(f"{path}/udp_rr/s1/m64/on/c1", "latency_p99_s")] >= rtt
        # one transaction at a time: the rate cannot beat 1 / median RTT by much
        assert 100 < summary[(f"{path}/udp_rr/s1/m64/on/c1", "transaction_rate")] < 2 / rtt
    meta = df.attrs["testbeds"]
    assert meta["overlay/on"]["br_netfilter"] is False  # the overlay bridge has no netfilter hook
    assert meta["overlay/on"]["mtu_bytes"] == 1450
    assert elapsed < 30
    run_ids = [tb["run_id"] for tb in meta.values()]
    assert len(run_ids) == 3
    for run_id in run_ids:  # (other runs may be measuring on this machine at the same time)
        assert leftovers(run_id) == []
    assert not [x for x in leftovers() if not x.startswith("netns ")]


@pytest.mark.usefixtures("kernel")
def test_overlay_carries_1450_byte_frames_over_vxlan_without_arp() -> None:
    with Testbed("overlay") as tb:
        h0, c0 = tb.ns("h0"), tb.client_ns
        mtus = {d["ifname"]: d["mtu"] for d in json.loads(run(["ip", "-n", h0, "-j", "link", "show"]).stdout)}
        assert mtus["vxlan0"] == mtus["ovbr0"] == 1450
        assert mtus["eth0"] == 1500
        assert "mtu 1450" in run(["ip", "-n", c0, "link", "show", "eth0"]).stdout
        assert "vxlan id 4096" in run(["ip", "-n", h0, "-d", "link", "show", "vxlan0"]).stdout
        fdb = run(["bridge", "-n", h0, "fdb", "show", "dev", "vxlan0"]).stdout
        assert "dst 10.0.0.2" in fdb
        assert "permanent" in fdb
        assert "10.1.1.2" in run(["ip", "-n", c0, "neigh", "show", "nud", "permanent"]).stdout
        echo = tb.start(tb.server_ns, [sys.executable, "-c", (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.1.1.2', 9999))\n"
            "while True:\n"
            "    data, peer = s.recvfrom(65535); s.sendto(str(len(data)).encode(), peer)\n")])
        tb.wait_listening(tb.server_ns, "udp", 9999, echo)
        got = _ns_py(tb, c0, (
            "import socket, errno\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n"
            "s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF, no fragments\n"
            "s.sendto(b'x' * 1422, ('10.1.1.2', 9999)); print(s.recv(100).decode())\n"
            "try:\n"
            "    s.sendto(b'x' * 1423, ('10.1.1.2', 9999)); print('sent')\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno])\n"))
        assert got.split() == ["1422", "EMSGSIZE"]  # 1422 + 28 = 1450 crosses; one more does not fit
        stats = json.loads(run(["ip", "-n", h0, "-s", "-j", "link", "show", "vxlan0"]).stdout)[0]["stats64"]
        assert stats["tx"]["packets"] >= 1
        assert stats["rx"]["packets"] >= 1
        # the 1450 B inner frame went out as one 1500 B underlay packet, no ARP: nothing else
        assert "10.1.1.2" in run(["ip", "-n", c0, "neigh", "show"]).stdout
        run_id = tb.run_id
    assert leftovers(run_id) == []


@pytest.mark.usefixtures("kernel")
def test_nat_path_rules_and_published_port_reach_the_container() -> None:
    with Testbed("nat") as tb:
        h0, h1 = tb.ns("h0"), tb.ns("h1")
        rules1 = run(["ip", "netns", "exec", h1, "iptables-save"]).stdout
        assert ("-A PREROUTING -d 10.0.0.2/32 ! -i docker0 -p tcp -m tcp --dport 15301 "
                "-j DNAT --to-destination 172.17.0.2:5301") in rules1
        assert "-A PREROUTING -d 10.0.0.2/32 ! -i docker0 -p udp -m udp --dport 15201" in rules1
        assert "-A FORWARD -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 5301 -j ACCEPT" in rules1
        assert ":FORWARD DROP" in rules1
        rules0 = run(["ip", "netns", "exec", h0, "iptables-save"]).stdout
        assert "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE" in rules0
        assert "DNAT" not in rules0
        assert "default via 172.17.0.1" in run(["ip", "-n", tb.client_ns, "route"]).stdout
        assert (tb.server_addr, tb.port("tcp", 5301), tb.port("udp", 11111)) == ("10.0.0.2", 15301, 21111)
        with pytest.raises(ConfigError):
            tb.port("tcp", 22)
        # a connection to 10.0.0.2:15301 reaches the container's port 5301, seen from 10.0.0.1
        seen = _source_seen_by_server(tb, "10.0.0.2", 15301)
        assert seen == "10.0.0.1"  # MASQUERADE on h0, DNAT on h1
        for ns in (h0, h1):  # both hosts tracked the connection
            count = tb.call(ns, ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout
            assert int(count) >= 1
        assert tb.metadata["br_netfilter"] is True
        run_id = tb.run_id
    assert leftovers(run_id) == []


@pytest.mark.usefixtures("kernel")
def test_routed_path_routes_without_bridge_or_nat() -> None:
    with Testbed("routed") as tb:
        h0 = tb.ns("h0")
        routes = run(["ip", "-n", h0, "route"]).stdout
        assert "10.2.1.0/24 via 10.0.0.2 dev eth0" in routes
        assert "10.2.0.2 dev veth-h0c0" in routes
        ctr = run(["ip", "-n", tb.client_ns, "route"]).stdout
        assert "default via 169.254.1.1 dev eth0" in ctr
        assert "169.254.1.1 dev eth0 scope link" in ctr
        assert "PERMANENT" in run(["ip", "-n", tb.client_ns, "neigh", "show", "169.254.1.1"]).stdout
        rules = run(["ip", "netns", "exec", h0, "iptables-save"]).stdout
        assert "*filter" not in rules  # no FORWARD DROP: pod traffic is routed
        assert "MASQUERADE" in rules  # conntrack on, as on every host of the model
        seen = _source_seen_by_server(tb, "10.2.1.2", 5301)
        assert seen == "10.2.0.2"  # no NAT on the way
        # every namespace runs perfsim's congestion control, whatever the machine's default
        for ns in tb.namespaces:
            cc = run(["ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.tcp_congestion_control"]).stdout.strip()
            assert cc == TCP_CONGESTION_CONTROL == "reno", ns
        assert tb.metadata["tcp_congestion_control"] == "reno"
        assert not any(ln.startswith("psim") for ln in run(["ip", "-o", "link"]).stdout.split())


@pytest.mark.usefixtures("kernel")
def test_offloads_off_and_the_container_path() -> None:
    with Testbed("container", offloads=False) as tb:
        assert tb.client_ns == tb.server_ns
        assert tb.server_addr == "127.0.0.1"
        feats = tb.features(tb.client_ns, "eth0")
        assert feats["tcp-segmentation-offload"].startswith("off")
        assert feats["generic-segmentation-offload"].startswith("off")
        assert feats["generic-receive-offload"].startswith("off")
        assert isinstance(tb.metadata["offloads_unchanged"], dict)
        assert "h0c0/lo" in tb.metadata["offload_features"]
        port_range = tb.call(tb.client_ns, ["sysctl", "-n", "net.ipv4.ip_local_port_range"]).stdout.split()
        assert port_range == ["10240", "65535"]


class _Broken(Testbed):
    def _apply_offloads(self) -> None:
        raise CommandError(["ethtool", "-K"], "exit status 1", "simulated failure half-way")


@pytest.mark.usefixtures("kernel")
def test_a_build_failing_half_way_removes_everything() -> None:
    tb = _Broken("bridge")
    with pytest.raises(CommandError, match="simulated failure"), tb:
        pass
    assert tb.namespaces  # it had built some
    assert leftovers(tb.run_id) == []


@pytest.mark.usefixtures("kernel")
def test_processes_are_killed_on_exit_and_stale_runs_are_removed() -> None:
    with Testbed("host") as tb:
        proc = tb.start(tb.server_ns, ["sleep", "60"])
        pid = proc.pid
    assert proc.poll() is not None
    assert not any(x == f"pid {pid}" for x in leftovers())
    # a crashed run: a namespace with a process inside and no lock
    stale = f"{NS_PREFIX}ps{time.time_ns() % 0xffff:04x}-h0"
    run(["ip", "netns", "add", stale])
    sleeper = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while not run(["ip", "netns", "pids", stale]).stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stale in cleanup_stale()
        assert sleeper.wait(timeout=5) != 0
    finally:
        sleeper.kill()
        sleeper.wait()
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, check=False)
    assert stale not in list_namespaces()
