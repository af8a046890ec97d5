"""netperf-style workloads between two application endpoints.

=============  ============================================================================
``tcp_stream``  client connects once and writes ``message_size`` bytes per ``send()``
                forever (optionally paced to ``rate_bps``); the server reads up to 64 KiB
                per ``recv()``.  One-way latency per data skb.
``udp_stream``  client sends datagrams of ``message_size`` as fast as its core (and its send
                buffer: a blocking ``sendmsg``) allows, or at a constant bit rate
                ``rate_bps`` (of payload); the server reads them.
``tcp_rr``      one long connection; the client writes a request of ``message_size``, the
                server reads it whole and writes a response of ``message_size``, the client
                reads it whole: one transaction, one round-trip sample, next request at once.
``udp_rr``      the same with one datagram each way (a lost datagram stalls the test, as in
                netperf).
``tcp_crr``     connect, request, response, close, repeat; each connection uses the next
                client port (ephemeral range 32768..60999, cycling, starting at
                ``client_port``).  The sample runs from the start of ``connect()`` to the end
                of the response read.
=============  ============================================================================

A :class:`StreamThread` serves several ``tcp_stream`` flows between the same two endpoints from
one application thread per side, as iperf3 before 3.16 serves its ``-P`` streams.

For request/response workloads ``bytes`` and ``packets`` count both directions.  Stats before
``measure_from_s`` are ignored (:class:`~perfsim.transport.stats.FlowStats`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perfsim.errors import ConfigError, check_number
from perfsim.transport.common import DEFAULT_RCVBUF_BYTES, DEFAULT_SNDBUF_BYTES, reserve_app_work
from perfsim.transport.stats import FlowStats
from perfsim.transport.tcp import TcpConnection, TcpListener
from perfsim.transport.tcp_rx import wait_readable
from perfsim.transport.tsq import DEFAULT_TCP_LIMIT_OUTPUT_BYTES, DEFAULT_UDP_SNDBUF_BYTES
from perfsim.transport.udp import DEFAULT_UDP_RCVBUF_BYTES, MAX_DATAGRAM_BYTES, UdpSocket, udp_segs

if TYPE_CHECKING:
    from perfsim.core.cpu import Core, Stage
    from perfsim.core.sched import Task
    from perfsim.core.sim import Sim

IPERF3_MULTISEND = 10
"""Datagrams an iperf3 UDP client writes per ``select()`` (``strace``: 39,619 writes, 3,967 selects)."""
WORKLOADS = ("tcp_stream", "udp_stream", "tcp_rr", "udp_rr", "tcp_crr")
EPHEMERAL_LOW = 32768
EPHEMERAL_HIGH = 60999
STREAM_READ_BYTES = 65536
LOOPBACK_MSS_BYTES = 65483
"""MSS of a connection over ``lo`` (MTU 65536 - IPv4 20 - TCP with timestamps 32, minus 1 as
perfsim's lo carries 65535)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one side of a workload runs.

    ``mss_bytes`` is derived by the caller from the path MTU (``mtu - 20 - 32``); the
    connection uses the smaller MSS of the two ends, as the SYN options negotiate.
    """

    ns: Any
    ip: int
    app_core: Core
    mss_bytes: int
    mtu_bytes: int = 1500

    def __post_init__(self) -> None:
        check_number("endpoint.mtu_bytes", self.mtu_bytes, low=68, high=65535, integer=True)
        check_number("endpoint.mss_bytes", self.mss_bytes, low=8, high=65483, integer=True)


class Flow:
    """A running workload: its stats and the sockets it uses (for inspection)."""

    def __init__(self, workload: str, client: Endpoint, server: Endpoint, stats: FlowStats) -> None:
        self.workload = workload
        self.client = client
        self.server = server
        self.stats = stats
        self.client_sock: Any = None
        """The client's current TcpConnection or its UdpSocket."""
        self.server_sock: Any = None
        """The server's TcpListener or UdpSocket."""
        self.server_conn: TcpConnection | None = None
        """The connection the server accepted last (TCP)."""
        self.stop_s = float("inf")
        """The client starts no new write, transaction or connection from this time on."""

    def summary(self, until_s: float) -> dict[str, Any]:
        """One flat row: :meth:`FlowStats.summary` of the measurement window."""
        return self.stats.summary(until_s)

    def __repr__(self) -> str:
        return f"Flow({self.workload!r})"


def start_workload(
    sim: Sim,
    name: str,
    client: Endpoint,
    server: Endpoint,
    message_size: int,
    server_port: int,
    client_port: int,
    start_s: float = 0.0,
    rate_bps: float = 0.0,
    stop_s: float | None = None,
    *,
    measure_from_s: float = 0.0,
    sndbuf_bytes: int | None = None,
    rcvbuf_bytes: int | None = None,
    connect_ip: int | None = None,
    connect_port: int | None = None,
    tcp_limit_output_bytes: int = DEFAULT_TCP_LIMIT_OUTPUT_BYTES,
    tsq: bool = True,
    thread: StreamThread | None = None,
    iperf3: bool = False,
) -> Flow:
    """Bind the sockets now and start the client (at ``start_s``) and server processes.

    ``connect_ip``/``connect_port`` is where the client sends (default: the server endpoint's
    address and ``server_port``), e.g. a published host port that DNAT maps to the server.
    ``sndbuf_bytes`` defaults to 4 MiB for TCP and 212992 (``net.core.wmem_default``) for UDP,
    ``rcvbuf_bytes`` to 6 MiB for TCP and 212992 for UDP.  ``rate_bps`` (application payload
    bits per second, 0 = unpaced) applies to the stream workloads only.
    ``tcp_limit_output_bytes`` (bytes, 0 .. 2**31 - 1, default 1 MiB) caps TCP Small Queues;
    ``tsq=False`` turns TSQ off (see :mod:`perfsim.transport.tsq`).  Both apply to TCP only.
    ``thread``: the application thread pair that serves this flow with others (``tcp_stream``
    only, unpaced); by default the flow has a client and a server process of its own.
    ``iperf3``: the ``udp_stream`` ends are iperf3's (the testbed's measurements): its server
    calls ``select()`` before every read, its client before every :data:`IPERF3_MULTISEND`
    writes.
    """
    if name not in WORKLOADS:
        raise ConfigError("workload", name, f"one of {', '.join(WORKLOADS)}")
    tcp = name.startswith("tcp")
    if sndbuf_bytes is None:
        sndbuf_bytes = DEFAULT_SNDBUF_BYTES if tcp else DEFAULT_UDP_SNDBUF_BYTES
    check_number("sndbuf_bytes", sndbuf_bytes, low=2048, high=1 << 31, integer=True)
    if rcvbuf_bytes is None:
        rcvbuf_bytes = DEFAULT_RCVBUF_BYTES if tcp else DEFAULT_UDP_RCVBUF_BYTES
    check_number("rcvbuf_bytes", rcvbuf_bytes, low=2048, high=1 << 31, integer=True)
    check_number("tcp_limit_output_bytes", tcp_limit_output_bytes, low=0, high=2**31 - 1, integer=True)
    if not isinstance(tsq, bool):
        raise ConfigError("tsq", tsq, "True or False")
    check_number("message_size", message_size, low=1, high=sndbuf_bytes if tcp else MAX_DATAGRAM_BYTES, integer=True)
    check_number("server_port", server_port, low=1, high=65535, integer=True)
    check_number("client_port", client_port, low=1, high=65535, integer=True)
    check_number("start_s", start_s, low=0)
    if stop_s is not None:
        check_number("stop_s", stop_s, low=start_s, low_inclusive=False)
    check_number("measure_from_s", measure_from_s, low=0)
    check_number("rate_bps", rate_bps, low=0, high=1e13)
    if rate_bps > 0 and not name.endswith("stream"):
        raise ConfigError("rate_bps", rate_bps, "0 for request/response workloads (they run one transaction at a time)")
    if thread is not None:
        if name != "tcp_stream" or rate_bps > 0:
            raise ConfigError("thread", thread, "None unless the workload is an unpaced tcp_stream")
        thread.check(client, server)
    dst_ip = server.ip if connect_ip is None else check_number("connect_ip", connect_ip, low=0, high=2**32 - 1, integer=True)
    dst_port = server_port if connect_port is None else check_number("connect_port", connect_port, low=1, high=65535, integer=True)
    stats = FlowStats(name, measure_from_s=measure_from_s, one_way=name.endswith("stream"))
    flow = Flow(name, client, server, stats)
    if stop_s is not None:
        flow.stop_s = float(stop_s)
    env = sim.env
    # one namespace: the route goes through lo, whose 64 KiB MTU sets the MSS (Linux's 65483),
    # so even with offloads off a loopback flow sends 64 KiB segments
    mss = LOOPBACK_MSS_BYTES if client.ns is server.ns else min(client.mss_bytes, server.mss_bytes)
    bufs: dict[str, Any] = {"sndbuf_bytes": sndbuf_bytes, "rcvbuf_bytes": rcvbuf_bytes,
                            "tcp_limit_output_bytes": tcp_limit_output_bytes, "tsq": tsq}
    if tcp:
        listener = TcpListener(server.ns, server.app_core, server_port, mss, stats=stats, **bufs)
        flow.server_sock = listener
        conn = TcpConnection.client(client.ns, client.app_core, client.ip, client_port, int(dst_ip), int(dst_port), mss,
                                    stats=stats, **bufs)
        flow.client_sock = conn
        if thread is not None:
            thread.add(flow, message_size, start_s)
            return flow
        env.process(_tcp_server(flow, listener, message_size))
        if name == "tcp_stream":
            env.process(_tcp_stream_client(flow, conn, message_size, start_s, rate_bps))
        elif name == "tcp_rr":
            env.process(_tcp_rr_client(flow, conn, message_size, start_s))
        else:
            env.process(_tcp_crr_client(flow, conn, message_size, start_s, int(dst_ip), int(dst_port), mss, bufs))
        return flow
    srv = UdpSocket(server.ns, server.app_core, server.ip, server_port, server.mtu_bytes, stats=stats,
                    rcvbuf_bytes=rcvbuf_bytes, sndbuf_bytes=sndbuf_bytes)
    cli = UdpSocket(client.ns, client.app_core, client.ip, client_port, client.mtu_bytes, stats=stats,
                    rcvbuf_bytes=rcvbuf_bytes, sndbuf_bytes=sndbuf_bytes)
    flow.server_sock, flow.client_sock = srv, cli
    if name == "udp_stream":
        host = client.ns.host
        own = (host.stage("sock_tx_copy").per_packet_s + host.stage("sock_tx_copy").per_byte_s * message_size
               + host.stage("udp_tx").per_packet_s * udp_segs(message_size, client.mtu_bytes))
        if rate_bps == 0 and own <= 0:
            raise ConfigError("rate_bps", rate_bps, "> 0 when the profile's sock_tx_copy and udp_tx cost nothing")
        # the sender and the reader are tasks of their cores' schedulers: where they share a
        # core (taskset on the testbed), EEVDF decides who runs (perfsim.core.sched)
        for sock, end in ((cli, client), (srv, server)):
            sched = end.app_core.scheduler(env)
            sock.task = sched.add(sock.name, end.ns.host.stage("task_switch")) if sched is not None else None
        if iperf3:
            srv.select = server.ns.host.stage("select")
        select = client.ns.host.stage("select") if iperf3 else None
        env.process(_udp_stream_client(flow, cli, int(dst_ip), int(dst_port), message_size, start_s, rate_bps, select))
        env.process(_udp_sink(srv))
    else:
        env.process(_udp_rr_client(flow, cli, int(dst_ip), int(dst_port), message_size, start_s))
        env.process(_udp_rr_server(srv, message_size))
    return flow


# -- TCP processes -------------------------------------------------------------------------
def _wait_until(env: Any, t_s: float) -> Generator[Any, Any, None]:
    if t_s > env.now:
        yield env.timeout(t_s - env.now)


def _read_exact(conn: TcpConnection, nbytes: int) -> Generator[Any, Any, bool]:
    """Read one whole message; False at end of stream."""
    got = 0
    while got < nbytes:
        n = yield from conn.read(nbytes - got)
        if n == 0:
            return False
        got += n
    return True


def _tcp_server(flow: Flow, listener: TcpListener, message_size: int) -> Generator[Any, Any, None]:
    """netperf's server loop: accept, serve the connection until EOF, close, accept again."""
    stream = flow.workload == "tcp_stream"
    while True:
        conn = yield from listener.accept()
        flow.server_conn = conn
        if stream:
            while (yield from conn.read(STREAM_READ_BYTES)):
                pass
        else:
            while (yield from _read_exact(conn, message_size)):
                if not (yield from conn.write(message_size)):
                    break
        conn.close()


def _tcp_stream_client(flow: Flow, conn: TcpConnection, size: int, start_s: float, rate_bps: float) -> Generator[Any, Any, None]:
    env = conn.env
    yield from _wait_until(env, start_s)
    if not (yield from conn.connect()):
        return
    flow.stats.on_connection(env.now)
    interval = size * 8.0 / rate_bps if rate_bps > 0 else 0.0
    t_next = env.now
    while env.now < flow.stop_s and (yield from conn.write(size)):
        if interval:
            t_next += interval
            yield from _wait_until(env, t_next)
    if env.now >= flow.stop_s:
        conn.close()


def _tcp_rr_client(flow: Flow, conn: TcpConnection, size: int, start_s: float) -> Generator[Any, Any, None]:
    env = conn.env
    yield from _wait_until(env, start_s)
    if not (yield from conn.connect()):
        return
    flow.stats.on_connection(env.now)
    while env.now < flow.stop_s:
        t0 = env.now
        if not (yield from conn.write(size)):
            return
        if not (yield from _read_exact(conn, size)):
            return
        flow.stats.on_transaction(env.now, env.now - t0)
    conn.close()


class StreamThread:
    """One application thread per side serving several ``tcp_stream`` flows, as iperf3 before
    3.16 (one thread, ``select()``) serves its ``-P`` streams.

    * The client connects its flows one after another (each at its ``start_s``), then writes
      ``message_size`` bytes to each in turn, blocking while a socket's send buffer is full
      (iperf3's client sockets are blocking; ``select()`` reports them all writable).
    * The server accepts them one after another, then sleeps in ``select()`` until one of its
      sockets is readable and reads up to ``message_size`` bytes from each readable socket
      (non-blocking reads of iperf3's block size), and selects again.

    One wake-up of the reader thus serves every socket with data, where one process per socket
    wakes a reader per socket.  ``select()`` itself is not charged here: once per 128 KiB
    block its 1.6 µs is lost in the copy (the ``udp_stream``'s iperf3 ends, one datagram per
    call, pay the ``select`` stage).  Flows are added with :func:`start_workload` (``thread=``) before
    the simulation runs; the threads start when the first flow is added.
    """

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self._flows: list[tuple[Flow, int, float]] = []

    def check(self, client: Endpoint, server: Endpoint) -> None:
        """Raise ConfigError unless a flow between ``client`` and ``server`` may join: its two
        applications run on the cores of the first flow's."""
        if self._flows:
            first = self._flows[0][0]
            if client.app_core is not first.client.app_core or server.app_core is not first.server.app_core:
                raise ConfigError("thread", self, "flows whose client and server run on the cores of the thread's first flow")

    def add(self, flow: Flow, message_size: int, start_s: float) -> None:
        """Serve ``flow`` (its sockets are bound; :meth:`check` passed) from these threads."""
        if not self._flows:
            self.sim.env.process(self._client())
            self.sim.env.process(self._server())
        self._flows.append((flow, message_size, start_s))

    def __repr__(self) -> str:
        return f"StreamThread({len(self._flows)} flows)"

    def _client(self) -> Generator[Any, Any, None]:
        env = self.sim.env
        active: list[tuple[Flow, TcpConnection, int]] = []
        for flow, size, start_s in sorted(self._flows, key=lambda f: f[2]):
            yield from _wait_until(env, start_s)
            conn = flow.client_sock
            if (yield from conn.connect()):
                flow.stats.on_connection(env.now)
                active.append((flow, conn, size))
        while active:
            for entry in list(active):
                flow, conn, size = entry
                if env.now >= flow.stop_s:
                    conn.close()
                    active.remove(entry)
                elif not (yield from conn.write(size)):
                    active.remove(entry)

    def _server(self) -> Generator[Any, Any, None]:
        open_: list[tuple[TcpConnection, int]] = []
        for flow, size, _ in self._flows:
            conn = yield from flow.server_sock.accept()
            flow.server_conn = conn
            open_.append((conn, size))
        while open_:
            ready = [e for e in open_ if e[0].readable()]
            if not ready:
                yield from wait_readable([c for c, _ in open_])
                continue
            for entry in ready:
                conn, size = entry
                if not (yield from conn.read(size)):
                    conn.close()
                    open_.remove(entry)


def _next_port(port: int) -> int:
    return EPHEMERAL_LOW if port >= EPHEMERAL_HIGH or port < EPHEMERAL_LOW - 1 else port + 1


def _tcp_crr_client(
    flow: Flow, conn: TcpConnection, size: int, start_s: float, dst_ip: int, dst_port: int, mss: int,
    bufs: dict[str, Any],
) -> Generator[Any, Any, None]:
    env = conn.env
    ep = flow.client
    yield from _wait_until(env, start_s)
    port = conn.flow.sport
    while env.now < flow.stop_s:
        t0 = env.now
        if (yield from conn.connect()):
            flow.stats.on_connection(env.now)
            if (yield from conn.write(size)) and (yield from _read_exact(conn, size)):
                flow.stats.on_transaction(env.now, env.now - t0)
            conn.close()
        for _ in range(EPHEMERAL_HIGH - EPHEMERAL_LOW + 1):
            port = _next_port(port)
            try:
                conn = TcpConnection.client(ep.ns, ep.app_core, ep.ip, port, dst_ip, dst_port, mss,
                                            stats=flow.stats, **bufs)
                break
            except ConfigError:
                continue
        else:
            raise ConfigError("client_port", port, "a free port in 32768..60999 (all are in use)")
        flow.client_sock = conn


# -- UDP processes -------------------------------------------------------------------------
def _udp_stream_client(
    flow: Flow, sock: UdpSocket, dst_ip: int, dst_port: int, size: int, start_s: float, rate_bps: float,
    select: Stage | None = None,
) -> Generator[Any, Any, None]:
    env = sock.sim.env
    yield from _wait_until(env, start_s)
    interval = size * 8.0 / rate_bps if rate_bps > 0 else 0.0
    t_next = env.now
    wmem = sock.wmem
    sndbuf = sock.sndbuf
    task = sock.task
    if task is not None and (turn := task.wake()) is not None:
        yield turn
    sent = 0
    while env.now < flow.stop_s:
        if wmem.level() >= sndbuf:  # blocking sendmsg: no room in the send buffer
            yield from _task_wait(task, sock.wait_sndbuf())
        if task is not None and (turn := task.checkpoint()) is not None:
            yield turn
        if select is not None and sent % IPERF3_MULTISEND == 0:
            reserve_app_work(select, sock.app_core, env.now, 0)
        sent += 1
        t_free = sock.sendto(dst_ip, dst_port, size)
        t_next += interval
        if t_next > t_free and task is not None and not task.sched.single:
            yield env.timeout(t_free - env.now)  # paced: the task sleeps until the next is due
            yield from _task_wait(task, _wait_until(env, t_next))
        else:
            yield env.timeout(max(t_free, t_next) - env.now)
    if task is not None:
        task.block()


def _task_wait(task: Task | None, wait: Generator[Any, Any, None]) -> Generator[Any, Any, None]:
    """Run ``wait`` (a blocking wait) as a task that gives up its core meanwhile."""
    if task is None:
        yield from wait
        return
    task.block()
    yield from wait
    if (turn := task.wake()) is not None:
        yield turn


def _udp_sink(sock: UdpSocket) -> Generator[Any, Any, None]:
    while True:
        yield from sock.recv()


def _udp_rr_client(
    flow: Flow, sock: UdpSocket, dst_ip: int, dst_port: int, size: int, start_s: float,
) -> Generator[Any, Any, None]:
    env = sock.sim.env
    yield from _wait_until(env, start_s)
    while env.now < flow.stop_s:
        t0 = env.now
        yield from sock.send(dst_ip, dst_port, size)
        yield from sock.recv()
        flow.stats.on_transaction(env.now, env.now - t0)


def _udp_rr_server(sock: UdpSocket, size: int) -> Generator[Any, Any, None]:
    while True:
        _, src_ip, src_port = yield from sock.recv()
        yield from sock.send(src_ip, src_port, size)
