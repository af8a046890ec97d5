"""``perfsim trace``: walk one packet through a network mode and report every hop.

The seed explains Docker's bridge with a 4-step picture (container ``eth0`` -> ``vethxxx`` ->
``docker0`` -> ``vethyyy`` -> ``eth0``).  :func:`trace` produces that picture for any mode in
:data:`~perfsim.topology.modes.MODES`, from the simulation itself: it builds a cluster of
two hosts with two containers each, lets the flow warm the tables the way a running flow
would have (one request and its reply: ARP/neighbour entries, bridge FDBs and conntrack
entries exist, conntrack sees the flow as ESTABLISHED), then sends **one** packet from the
client endpoint to the server and records each hop with
:class:`~perfsim.trace_probes.Probes` — attached from outside, so the traced run is the
normal run.  ``cold=True`` traces the very first packet instead (ARP resolution, FDB
flooding, conntrack NEW).  An idle core's wake-up takes the profile's mean ``idle_wakeup``
(a run draws each from the profile's measured spread, if it has one).

Placement follows ``perfsim.experiment.run``: the client is container 0 of host 0, the
server container 0 of host 1 (cross-host) or container 1 of host 0 (same-host).  UDP sends
one datagram of ``payload_bytes``; TCP opens the connection first and traces the first data
segment of one ``send()`` (``cold=True``: the SYN).  For TCP, the user-to-kernel copy is
application work booked before the segment exists, so it is not part of the trace.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from perfsim.core.packet import DATA, PROTO_TCP, PROTO_UDP, SYN, Packet
from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim
from perfsim.errors import ConfigError, check_number
from perfsim.topology.base import ModeNetwork
from perfsim.topology.cluster import Cluster, ClusterSpec, build_cluster
from perfsim.trace_probes import Hop, Probes
from perfsim.transport import Endpoint, TcpConnection, TcpListener, UdpSocket
from perfsim.transport.udp import MAX_DATAGRAM_BYTES

TRACE_COLUMNS = ["step", "t_us", "host", "namespace", "device", "what", "table", "result", "bytes",
                 "delta_bytes", "cpu_us", "core", "packet", "stages"]
"""Columns of :func:`trace`'s frame (``packet``: the skb id; ``stages``: CPU per stage)."""
SERVER_PORT = 5001
CLIENT_PORT = 32768
CONTAINERS_PER_HOST = 2
QUIET_S = 1e-3
"""Idle time between the warm-up and the traced packet: every core and queue is empty."""
WARM_TIMEOUT_S = 1.0
DELIVERY_TIMEOUT_S = 5.0
"""Simulated time allowed for delivery (a cold packet may wait for ARP retries: 1 s each)."""
FORMATS = ("text", "csv", "json")
PROTOS = {"udp": PROTO_UDP, "tcp": PROTO_TCP}


@dataclass
class TraceScenario:
    """A built, warmed network with a client and a server socket, ready to send one packet."""

    sim: Sim
    cluster: Cluster
    net: ModeNetwork
    placement: str
    proto: str
    payload_bytes: int
    client: Endpoint
    server: Endpoint
    target: tuple[int, int]
    client_sock: Any
    server_sock: Any
    warm: bool
    """True if the warm-up exchange completed (False when ``cold`` or if it was lost)."""

    def matches(self, pkt: Packet) -> bool:
        """Is ``pkt`` the packet to trace (the client's next datagram / data segment / SYN)?"""
        f = pkt.flow
        if f.src_ip != self.client.ip or f.sport != CLIENT_PORT or f.proto != PROTOS[self.proto]:
            return False
        if self.proto == "udp":
            return True
        if self.warm:
            return pkt.kind == DATA and pkt.payload_bytes > 0
        return pkt.kind == SYN

    def send(self, _: Any = None) -> None:
        """Send the packet now (UDP ``sendto``; TCP ``connect`` if cold, else one ``send``)."""
        ip, port = self.target
        if self.proto == "udp":
            self.client_sock.sendto(ip, port, self.payload_bytes)
        elif self.warm:
            self.sim.env.process(_drain(self.client_sock.write(self.payload_bytes)))
        else:
            self.sim.env.process(_drain(self.client_sock.connect()))


def _drain(gen: Generator[Any, Any, Any]) -> Generator[Any, Any, None]:
    yield from gen


def prepare(
    mode: str,
    placement: str | None = None,
    workload_proto: str = "udp",
    payload_bytes: int = 1000,
    cluster: ClusterSpec | None = None,
    seed: int = 0,
    cold: bool = False,
    profile: str = "default",
) -> TraceScenario:
    """Build ``mode`` on a cluster, open the sockets and (unless ``cold``) warm the path.

    Raises ConfigError for an unknown mode, a placement the mode does not allow, a bad
    protocol or payload, or a flow the mode cannot carry (``net.target``).
    """
    from perfsim.topology.modes import MODES

    if mode not in MODES:
        raise ConfigError("mode", mode, f"one of {', '.join(MODES)}")
    info = MODES[mode]
    placement = info.default_placement if placement is None else placement
    if placement not in info.placements:
        raise ConfigError("placement", placement, f"{' or '.join(info.placements)} for mode {mode}")
    if workload_proto not in PROTOS:
        raise ConfigError("workload_proto", workload_proto, "udp or tcp")
    high = MAX_DATAGRAM_BYTES if workload_proto == "udp" else 1 << 24
    check_number("payload_bytes", payload_bytes, low=1, high=high, integer=True)
    if not isinstance(cold, bool):
        raise ConfigError("cold", cold, "True or False")
    spec = ClusterSpec() if cluster is None else cluster
    if not isinstance(spec, ClusterSpec):
        raise ConfigError("cluster", spec, "a ClusterSpec")
    if placement == "cross-host" and spec.hosts < 2:
        raise ConfigError("hosts", spec.hosts, ">= 2 for cross-host placement")
    check_number("seed", seed, low=0, high=2**63 - 1, integer=True)
    prof = load_profile(profile)
    # one packet's timeline adds up to the profile's constants: every idle core's wake-up
    # takes its mean, not a draw from the measured spread
    sim = Sim(seed=seed, profile=prof.with_idle_wakeup(prof.cost("idle_wakeup").per_packet_s))
    cl = build_cluster(sim, spec)
    net = info.build(cl, CONTAINERS_PER_HOST)
    cslot, sslot = ((0, 0), (1, 0)) if placement == "cross-host" else ((0, 0), (0, 1))
    proto = PROTOS[workload_proto]
    target = net.target(cslot, sslot, SERVER_PORT, proto)
    client, server = net.endpoint(*cslot), net.endpoint(*sslot)
    ip, port = int(target[0]), int(target[1])
    if workload_proto == "udp":
        srv: Any = UdpSocket(server.ns, server.app_core, server.ip, SERVER_PORT, server.mtu_bytes)
        cli: Any = UdpSocket(client.ns, client.app_core, client.ip, CLIENT_PORT, client.mtu_bytes)
    else:
        mss = min(client.mss_bytes, server.mss_bytes)
        srv = TcpListener(server.ns, server.app_core, SERVER_PORT, mss)
        cli = TcpConnection.client(client.ns, client.app_core, client.ip, CLIENT_PORT, ip, port, mss)
    sc = TraceScenario(sim, cl, net, placement, workload_proto, payload_bytes, client, server,
                       (ip, port), cli, srv, warm=False)
    if not cold:
        sc.warm = _warm_up(sc)
    return sc


def _warm_up(sc: TraceScenario) -> bool:
    """One request and its reply (UDP), or the handshake (TCP): the state of a running flow."""
    env = sc.sim.env
    ip, port = sc.target
    n = sc.payload_bytes

    def udp() -> Generator[Any, Any, None]:
        yield from sc.client_sock.send(ip, port, n)
        _, src, sport = yield from sc.server_sock.recv()
        yield from sc.server_sock.send(src, sport, n)
        yield from sc.client_sock.recv()

    def tcp() -> Generator[Any, Any, None]:
        env.process(_drain(sc.server_sock.accept()))
        ok = yield from sc.client_sock.connect()
        if not ok:
            yield env.timeout(2 * WARM_TIMEOUT_S)

    proc = env.process(udp() if sc.proto == "udp" else tcp())
    run_until(sc.sim, lambda: proc.processed, env.now + WARM_TIMEOUT_S)
    return bool(proc.processed)


def run_until(sim: Sim, done: Any, deadline_s: float) -> None:
    """Process events one by one until ``done()`` or the next event is after ``deadline_s``."""
    env = sim.env
    while not done() and env.peek() <= deadline_s:
        env.step()


def trace(
    mode: str,
    placement: str | None = None,
    workload_proto: str = "udp",
    payload_bytes: int = 1000,
    cluster: ClusterSpec | None = None,
    seed: int = 0,
    cold: bool = False,
    profile: str = "default",
) -> pd.DataFrame:
    """Walk one packet from the client to the server of ``mode``; one row per hop.

    Parameters
    ----------
    mode: a key of :data:`~perfsim.topology.modes.MODES`.
    placement: ``same-host`` or ``cross-host``; ``None`` takes the mode's default.
    workload_proto: ``udp`` (one datagram) or ``tcp`` (one segment of an open connection).
    payload_bytes: application bytes in the packet (UDP: up to 65507, fragmented above the
        path MTU; TCP: one ``send()``, of which the first skb is traced).
    cluster: the hardware (default: 2 hosts of 4 cores, 10 Gbit/s NICs, 5 us fabric).
    seed: root seed of the run (RSS keys).
    cold: trace the flow's first packet instead of a packet of a warm flow.
    profile: cost profile name or YAML path.

    Returns
    -------
    A frame with :data:`TRACE_COLUMNS`, rows in time order.  ``t_us`` is the cumulative
    latency since the packet was created when it reaches the hop (the last row,
    ``delivered``, is the end of the socket's receive work); ``cpu_us`` the CPU charged to the
    packet at that hop on ``core``; ``bytes`` the packet's size after the hop (all frames,
    Ethernet headers included) and ``delta_bytes`` the change the hop made.  ``df.attrs``
    holds ``mode``, ``placement``, ``proto``, ``cold``, ``warmed`` (the warm-up exchange
    completed), ``delivered``, ``latency_us``, ``cpu_us`` and ``stage_cpu_us`` (all CPU the
    stages were charged between the send and the delivery: equal to ``cpu_us`` for a warm
    UDP packet; it also holds ARP work when cold and the TCP user copy).
    """
    sc = prepare(mode, placement, workload_proto, payload_bytes, cluster, seed, cold, profile)
    sim = sc.sim
    probes = Probes(sim, sc.cluster.hosts).attach()
    try:
        ns = sc.client.ns
        what = "udp sendmsg" if sc.proto == "udp" else ("tcp xmit" if sc.warm else "tcp connect (SYN)")
        probes.arm(sc.matches, ns.host.name, ns.name, what)
        probes.watch_socket(sc.server_sock)
        t_send = sim.now + QUIET_S
        cpu0: list[float] = []
        cpu1: list[float] = []

        def send(_: Any) -> None:
            cpu0.append(probes.stage_total_s())
            sc.send()

        sim.call_at(t_send, send, None)

        def delivered() -> bool:
            if probes.delivered_s is None:
                return False
            if not cpu1:
                cpu1.append(probes.stage_total_s())
            return True

        run_until(sim, delivered, t_send + DELIVERY_TIMEOUT_S)
        if probes.delivered_s is not None:
            run_until(sim, lambda: False, probes.delivered_s)
        stage_cpu = (cpu1[0] if cpu1 else probes.stage_total_s()) - (cpu0[0] if cpu0 else 0.0)
    finally:
        probes.detach()
    t0 = probes.t0_s if probes.t0_s is not None else t_send
    df = hops_frame(probes.hops, t0)
    done = probes.delivered_s
    df.attrs.update({
        "mode": mode, "placement": sc.placement, "proto": sc.proto, "cold": cold, "warmed": sc.warm,
        "payload_bytes": payload_bytes, "delivered": done is not None,
        "latency_us": (done - t0) * 1e6 if done is not None else float("nan"),
        "cpu_us": float(df["cpu_us"].sum()), "stage_cpu_us": stage_cpu * 1e6,
    })
    return df


def hops_frame(hops: list[Hop], t0_s: float) -> pd.DataFrame:
    """The recorded hops as a frame, sorted by time (record order breaks ties)."""
    rows = []
    for i, h in enumerate(sorted(hops, key=lambda h: (h.t_s, h.seq))):
        delta = h.bytes_out - h.bytes_in
        what = h.what
        if what.endswith(" xmit") and delta > 0:
            what = what.removesuffix(" xmit") + " encap"
        rows.append({
            "step": i + 1, "t_us": (h.t_s - t0_s) * 1e6, "host": h.host, "namespace": h.namespace,
            "device": h.device, "what": what, "table": h.table, "result": h.result,
            "bytes": h.bytes_out, "delta_bytes": delta, "cpu_us": h.cpu_s * 1e6, "core": h.core,
            "packet": h.pid,
            "stages": ", ".join(f"{k} {v * 1e6:.3f}" for k, v in h.stages.items()),
        })
    return pd.DataFrame(rows, columns=TRACE_COLUMNS)


def format_trace(df: pd.DataFrame) -> str:
    """A readable rendering: a title, one numbered line per hop, then the totals."""
    a = df.attrs
    lines = []
    if a:
        state = "cold first packet" if a.get("cold") else "warm flow"
        lines.append(f"perfsim trace: {a.get('mode')} ({a.get('placement')}), one {a.get('proto')} packet "
                     f"of {a.get('payload_bytes')} B payload, {state}")
    lines.append(f"{'step':>4} {'t_us':>9}  {'where':<24} {'what':<20} {'result':<50} {'bytes':>11} "
                 f"{'cpu_us':>7}  core")
    for r in df.to_dict("records"):
        # Device names are "<namespace>/<ifname>", so they say where the hop is.
        where = str(r["device"]) or "/".join(str(x) for x in (r["host"], r["namespace"]) if x) or "-"
        d = f"{r['delta_bytes']:+d}" if r["delta_bytes"] else ""
        result, table = str(r["result"]), str(r["table"])
        if table and table not in result:
            result = f"{result} [{table}]"
        lines.append(f"{r['step']:>4} {r['t_us']:>9.3f}  {where:<24} {r['what']:<20} {result:<50} "
                     f"{r['bytes']:>6}{d:>5} {r['cpu_us']:>7.3f}  {r['core']}")
    wire = df[df["what"] == "wire"]
    if len(wire):
        sizes = "/".join(str(b) for b in dict.fromkeys(wire["bytes"]))
        on_wire = f"{sizes} B on the wire ({len(wire)} link{'s' if len(wire) != 1 else ''})"
    else:
        on_wire = "no wire (same host)"
    done = df[df["what"] == "delivered"]
    if len(done):
        outcome = f"latency {done['t_us'].iloc[0]:.3f} us (delivered)"
    elif len(df):
        end = df.iloc[-1]
        outcome = f"NOT delivered: last hop {end['what']} ({end['result']}) at {end['t_us']:.3f} us"
    else:
        outcome = "no packet traced"
    lines.append(f"total: {outcome}, CPU {df['cpu_us'].sum():.3f} us, {on_wire}")
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------
def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``perfsim trace`` (values are validated by :func:`trace_main`)."""
    from perfsim.topology.modes import MODES, PLACEMENTS

    p.add_argument("--mode", required=True, help=f"one of {', '.join(MODES)}")
    p.add_argument("--placement", default=None, help=f"{' or '.join(PLACEMENTS)} (default: the mode's)")
    p.add_argument("--cold", action="store_true", help="trace the first packet (ARP, FDB, conntrack NEW)")
    p.add_argument("--proto", default="udp", help="udp or tcp")
    p.add_argument("--payload-bytes", default="1000", help="payload of the traced packet")
    p.add_argument("--cores", default="4", help="cores per host")
    p.add_argument("--nic-gbps", default="10", help="NIC and fabric rate in Gbit/s")
    p.add_argument("--seed", default="0")
    p.add_argument("--profile", default="default", help="built-in profile name or YAML file")
    p.add_argument("--format", default="text", help="text, csv or json")


def _option_number(option: str, value: Any, integer: bool, low: float, high: float,
                   low_inclusive: bool = True) -> Any:
    """Parse ``value`` (text or number) and range-check it; ConfigError names ``option``."""
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ConfigError(option, value, kind) from None
    return check_number(option, value, low=low, high=high, integer=integer, low_inclusive=low_inclusive)


def trace_main(args: argparse.Namespace) -> int:
    """Run ``perfsim trace`` from parsed arguments and print the trace; returns 0."""
    from perfsim.topology.modes import MODES

    if args.mode not in MODES:
        raise ConfigError("--mode", args.mode, f"one of {', '.join(MODES)}")
    info = MODES[args.mode]
    if args.placement is not None and args.placement not in info.placements:
        raise ConfigError("--placement", args.placement, f"{' or '.join(info.placements)} for mode {args.mode}")
    if args.format not in FORMATS:
        raise ConfigError("--format", args.format, f"one of {', '.join(FORMATS)}")
    if args.proto not in PROTOS:
        raise ConfigError("--proto", args.proto, "udp or tcp")
    high = MAX_DATAGRAM_BYTES if args.proto == "udp" else 1 << 24
    payload = _option_number("--payload-bytes", args.payload_bytes, True, 1, high)
    cores = _option_number("--cores", args.cores, True, 1, 4096)
    gbps = _option_number("--nic-gbps", args.nic_gbps, False, 0, 1e4, low_inclusive=False)
    seed = _option_number("--seed", args.seed, True, 0, 2**63 - 1)
    spec = ClusterSpec(hosts=2, cores=int(cores), nic_rate_bps=float(gbps) * 1e9)
    df = trace(args.mode, args.placement, args.proto, int(payload), spec, int(seed), bool(args.cold),
               args.profile)
    if args.format == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(df.to_json(orient="records", indent=1) + "\n")
    else:
        sys.stdout.write(format_trace(df) + "\n")
    return 0
