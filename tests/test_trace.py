"""``perfsim trace``: one packet walked through a mode, hop by hop, by probes attached from
outside the components."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Generator
from typing import Any

import pandas as pd
import pytest

from perfsim.core.profile import load_profile
from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import run
from perfsim.topology.cluster import ClusterSpec
from perfsim.topology.modes import MODES
from perfsim.trace import (
    QUIET_S,
    TRACE_COLUMNS,
    TraceScenario,
    add_trace_arguments,
    format_trace,
    prepare,
    run_until,
    trace,
    trace_main,
)
from perfsim.trace_probes import Probes

UDP_FRAME = 1000 + 14 + 20 + 8  # payload + Ethernet + IPv4 + UDP
WIRE_S = (UDP_FRAME + 24) * 8 / 10e9  # + preamble/FCS/gap at 10 Gbit/s: 0.8528 us
FABRIC_DELAY_S = 5e-6
WAKE_US = load_profile("default").cost("idle_wakeup").per_packet_s * 1e6
"""An idle core waits this long before it starts work handed to it."""


def _rows(df: pd.DataFrame, what: str) -> pd.DataFrame:
    return df[df["what"] == what]


def _state(sc: TraceScenario) -> dict[str, Any]:
    """Everything a run's results are computed from, to compare two runs exactly."""
    sim = sc.sim
    return {
        "now": sim.now,
        "events": next(sim._eid),
        "counts": (sim.created, sim.delivered, sim.dropped, dict(sim.drops)),
        "stages": {(h.name, n): (st.cpu_s, st.packets) for h in sc.cluster.hosts for n, st in h.stages.items()},
        "cores": {c.name: (c.busy_s, c.busy_until_s) for h in sc.cluster.hosts for c in h.cpus.cores},
        "queued": sc.server_sock.queued_bytes,
    }


def _send_and_wait(sc: TraceScenario) -> float:
    """Send the scenario's packet after the quiet gap; return when the server has it queued."""
    sim = sc.sim
    t_send = sim.now + QUIET_S
    sim.call_at(t_send, sc.send, None)
    run_until(sim, lambda: sc.server_sock.held_packets() > 0, t_send + 1.0)
    return sim.now - t_send


# -- what the trace shows --------------------------------------------------------------------
def test_host_mode_cross_host_crosses_two_wires_and_no_bridge() -> None:
    """Host networking: the packet leaves by the NIC, crosses the NIC's link and the switch
    port, and meets no bridge or veth.  The wires take 0.8528 us to serialize 1066 B at
    10 Gbit/s plus 5 us of propagation each, and everything else is CPU on an idle path, whose
    two cores (the sender's, the receiving NIC's RSS core) each wake up once: latency = CPU +
    2 x 5.8528 us + 2 wake-ups."""
    df = trace("host", "cross-host")
    wires = _rows(df, "wire")
    assert list(wires["device"]) == ["h0/eth0.tx", "switch.port1"]
    assert list(wires["bytes"]) == [UDP_FRAME, UDP_FRAME]
    assert not df["what"].str.contains("bridge|veth").any()
    nic_rx = _rows(df, "nic rx")
    assert nic_rx["host"].tolist() == ["h1"]
    assert wires["t_us"].iloc[1] - wires["t_us"].iloc[0] == pytest.approx((WIRE_S + FABRIC_DELAY_S) * 1e6)
    assert nic_rx["t_us"].iloc[0] - wires["t_us"].iloc[1] == pytest.approx((WIRE_S + FABRIC_DELAY_S) * 1e6)
    assert df.attrs["latency_us"] == pytest.approx(df["cpu_us"].sum() + 2 * (WIRE_S + FABRIC_DELAY_S) * 1e6 + 2 * WAKE_US)
    assert (df["what"].iloc[0], df["what"].iloc[-1]) == ("udp sendmsg", "delivered")
    assert list(_rows(df, "conntrack")["result"].str.split().str[1]) == ["ESTABLISHED", "ESTABLISHED"]


def test_bridge_same_host_is_veth_bridge_veth_without_nic() -> None:
    """The seed's 4-step picture: eth0 -> vethxxx -> docker0 (FDB hit) -> vethyyy -> eth0,
    all on the sender's core (latency = CPU + its wake-up), with no NIC and no wire."""
    df = trace("bridge", "same-host")
    path = [(r.what, r.device) for r in df.itertuples() if r.what in ("veth xmit", "veth rx", "bridge forward")]
    assert path == [
        ("veth xmit", "h0c0/eth0"),
        ("veth rx", "h0/veth-h0c0"),
        ("bridge forward", "h0/docker0"),
        ("veth xmit", "h0/veth-h0c1"),
        ("veth rx", "h0c1/eth0"),
    ]
    fwd = _rows(df, "bridge forward").iloc[0]
    assert fwd["result"] == "FDB hit -> port h0/veth-h0c1"
    assert fwd["table"] == "h0/docker0.fdb"
    assert not df["what"].str.startswith(("nic", "wire")).any()
    assert set(df.loc[df["cpu_us"] > 0, "core"]) == {"h0/cpu0"}
    assert df.attrs["latency_us"] == pytest.approx(df["cpu_us"].sum() + WAKE_US)  # one idle core wakes once
    # br_netfilter: the bridged frame crosses PREROUTING, FORWARD and POSTROUTING, in order.
    hooks = [w for w in df["what"] if w.startswith("iptables")]
    assert hooks == ["iptables PREROUTING", "iptables FORWARD", "iptables POSTROUTING"]


def test_overlay_encap_adds_50_bytes_that_the_wire_carries_and_decap_removes() -> None:
    df = trace("overlay", "cross-host")
    encap, decap = _rows(df, "vxlan encap").iloc[0], _rows(df, "vxlan decap").iloc[0]
    assert (encap["delta_bytes"], encap["bytes"]) == (50, UDP_FRAME + 50)
    assert (decap["delta_bytes"], decap["bytes"]) == (-50, UDP_FRAME)
    assert encap["result"] == "VNI 4096 -> VTEP 10.0.0.2"
    wires = _rows(df, "wire")
    assert list(wires["bytes"]) == [UDP_FRAME + 50] * 2
    assert encap["step"] < wires["step"].min() < wires["step"].max() < decap["step"]
    assert df["delta_bytes"].sum() == 0
    assert df["bytes"].iloc[-1] == UDP_FRAME


def test_cold_first_packet_resolves_arp_and_creates_the_conntrack_entry() -> None:
    df = trace("bridge", "same-host", cold=True)
    assert (df.attrs["cold"], df.attrs["delivered"]) == (True, True)
    queued = _rows(df, "neighbour queue")
    assert queued["result"].tolist() == ["ARP for 172.17.0.3: packet queued"]
    assert _rows(df, "conntrack")["result"].iloc[0].startswith("conntrack NEW (new entry")
    # The packet waits for the ARP reply: the veth transmit after the queue starts later.
    after = df[df["step"] > queued["step"].iloc[0]]["t_us"].iloc[0]
    assert after > queued["t_us"].iloc[0]


def test_tcp_traces_the_first_data_segment_of_an_established_connection() -> None:
    df = trace("host", "cross-host", workload_proto="tcp")
    first = df.iloc[0]
    assert (first["what"], first["bytes"]) == ("tcp xmit", 1000 + 14 + 20 + 32)
    assert df.attrs["delivered"]
    assert _rows(df, "tcp rcv")["host"].tolist() == ["h1"]


# -- times, CPU and neutrality ---------------------------------------------------------------
@pytest.mark.parametrize(("mode", "placement"), [("host", "cross-host"), ("bridge", "same-host"), ("overlay", "cross-host")])
def test_times_are_cumulative_and_end_at_the_unprobed_delivery_time(mode: str, placement: str) -> None:
    df = trace(mode, placement)
    assert df["t_us"].is_monotonic_increasing
    assert df["t_us"].iloc[0] == 0.0
    assert df["what"].iloc[-1] == "delivered"
    assert df["t_us"].iloc[-1] == pytest.approx(df.attrs["latency_us"], abs=1e-9)
    # The same scenario without probes delivers at the same instant.
    latency_s = _send_and_wait(prepare(mode, placement))
    assert df["t_us"].iloc[-1] == pytest.approx(latency_s * 1e6, abs=1e-9)


@pytest.mark.parametrize("mode", ["host", "bridge", "overlay"])
def test_cpu_per_hop_sums_to_what_the_stages_were_charged(mode: str) -> None:
    """Every stage charge between the send and the delivery belongs to the traced packet
    (the flow is warm and alone), so the hops' CPU adds up to the stages' totals, stage by
    stage (nf_rule included, which netfilter charges without Stage.charge)."""
    sc = prepare(mode)
    hosts = sc.cluster.hosts
    probes = Probes(sc.sim, hosts).attach()
    probes.arm(sc.matches, "h0", sc.client.ns.name, "udp sendmsg")
    probes.watch_socket(sc.server_sock)
    snaps: list[Counter[str]] = []

    def snapshot() -> None:
        snaps.append(Counter({n: sum(h.stages[n].cpu_s for h in hosts) for n in hosts[0].stages}))

    def send(_: Any) -> None:
        snapshot()
        sc.send()

    t_send = sc.sim.now + QUIET_S
    sc.sim.call_at(t_send, send, None)
    run_until(sc.sim, lambda: probes.delivered_s is not None, t_send + 1.0)
    snapshot()  # at the delivery's softirq: nothing else has run since
    probes.detach()
    seen: Counter[str] = Counter()
    for hop in probes.hops:
        seen.update(hop.stages)
    assert sum(seen.values()) == pytest.approx(sum(h.cpu_s for h in probes.hops))
    before, after = snaps
    for name in after:
        assert seen.get(name, 0.0) == pytest.approx(after[name] - before[name], abs=1e-15), name
    if mode == "bridge":
        assert seen["nf_rule"] > 0  # docker0's FORWARD rule, walked without Stage.charge
    df = trace(mode)
    assert df["cpu_us"].sum() == pytest.approx(df.attrs["stage_cpu_us"])
    assert df["cpu_us"].sum() == pytest.approx(sum(seen.values()) * 1e6)


def test_probes_only_observe() -> None:
    """Two identical scenarios, one probed: after the traced packet and a burst of 20 more
    datagrams, every counter, stage, core and event id is the same; detaching restores the
    original methods and stage classes."""
    a, b = prepare("overlay"), prepare("overlay")
    probes = Probes(a.sim, a.cluster.hosts).attach()
    probes.arm(a.matches, "h0", a.client.ns.name, "udp sendmsg")
    probes.watch_socket(a.server_sock)

    def burst(sc: TraceScenario) -> Generator[Any, Any, None]:
        for _ in range(20):
            yield from sc.client_sock.send(*sc.target, 1400)

    for sc in (a, b):
        _send_and_wait(sc)
        sc.sim.env.process(burst(sc))
        sc.sim.run(sc.sim.now + 1e-3)
    assert probes.delivered_s is not None
    assert len(probes.ids) == 1
    assert _state(a) == _state(b)
    probes.detach()
    stage = a.cluster.hosts[0].stages["veth_xmit"]
    assert type(stage).__name__ == "Stage"
    assert not {"new_packet", "clone", "after_work", "drop"} & set(vars(a.sim))
    assert "xmit" not in vars(a.client.ns.devices["eth0"])


def test_tracing_leaves_normal_runs_unchanged() -> None:
    spec = RunSpec(mode="overlay", workload="udp_rr", duration_s=0.002, warmup_s=0.0005)
    before = run(spec).summary()
    trace("overlay")
    assert run(spec).summary() == before


# -- every mode -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_traces_or_refuses_with_config_error(mode: str) -> None:
    if mode == "none":
        with pytest.raises(ConfigError):
            trace(mode)
        return
    df = trace(mode)
    assert list(df.columns) == TRACE_COLUMNS
    assert df.attrs["warmed"]
    assert df.attrs["delivered"], format_trace(df)
    assert (df["what"].iloc[0], df["what"].iloc[-1]) == ("udp sendmsg", "delivered")
    assert df["t_us"].is_monotonic_increasing
    assert list(df["step"]) == list(range(1, len(df) + 1))
    assert df["cpu_us"].sum() == pytest.approx(df.attrs["stage_cpu_us"])
    assert df["delta_bytes"].sum() == 0
    text = format_trace(df)
    assert text.count("\n") == len(df) + 2
    assert "latency" in text.splitlines()[-1]


# -- errors and the command line -------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mode": "macvlan"}, "mode"),
        ({"mode": "container", "placement": "cross-host"}, "placement"),
        ({"mode": "host", "workload_proto": "sctp"}, "workload_proto"),
        ({"mode": "host", "payload_bytes": 0}, "payload_bytes"),
        ({"mode": "host", "payload_bytes": 70000}, "payload_bytes"),
        ({"mode": "host", "cluster": ClusterSpec(hosts=1)}, "hosts"),
    ],
)
def test_bad_arguments_raise_config_error_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        trace(**kwargs)
    assert exc.value.field == field


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_trace_arguments(p)
    return p.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--mode", "macvlan"], "--mode"),
        (["--mode", "bridge", "--placement", "far"], "--placement"),
        (["--mode", "host", "--payload-bytes", "many"], "--payload-bytes"),
        (["--mode", "host", "--payload-bytes", "0"], "--payload-bytes"),
        (["--mode", "host", "--cores", "0"], "--cores"),
        (["--mode", "host", "--nic-gbps", "0"], "--nic-gbps"),
        (["--mode", "host", "--format", "xml"], "--format"),
        (["--mode", "host", "--proto", "icmp"], "--proto"),
    ],
)
def test_cli_bad_values_name_the_option(argv: list[str], option: str) -> None:
    with pytest.raises(ConfigError) as exc:
        trace_main(_args(*argv))
    assert exc.value.field == option


def test_cli_prints_text_csv_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert trace_main(_args("--mode", "bridge")) == 0
    text = capsys.readouterr().out
    assert text.startswith("perfsim trace: bridge (same-host)")
    assert "FDB hit -> port h0/veth-h0c1" in text
    assert text.rstrip().splitlines()[-1].startswith("total: latency")
    assert trace_main(_args("--mode", "host", "--format", "csv", "--nic-gbps", "1", "--cores", "2")) == 0
    csv = capsys.readouterr().out
    assert csv.splitlines()[0] == ",".join(TRACE_COLUMNS)
    assert "serialize 8.528 us" in csv  # 1066 B at 1 Gbit/s
    assert trace_main(_args("--mode", "overlay", "--format", "json", "--cold")) == 0
    assert '"what":"vxlan encap"' in capsys.readouterr().out
