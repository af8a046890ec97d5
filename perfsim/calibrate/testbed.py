"""Docker's datapaths built out of real kernel parts, in network namespaces on this machine.

The testbed mirrors the platform perfsim simulates for calibration (``ClusterSpec(testbed=True)``
in :mod:`perfsim.topology.cluster`): two "hosts" ``h0`` and ``h1`` are network namespaces joined
by one veth pair, the wire (``eth0`` in each, 10.0.0.1/16 and 10.0.0.2/16, perfsim's fabric
subnet); containers are namespaces ``h<h>c<c>`` attached the way each Docker mode attaches them::

    host       h0 (client) eth0 ==wire== eth0 h1 (server 10.0.0.2)
    bridge     h0c0 eth0 --veth-- docker0 (h0, 172.17.0.1/16) --veth-- eth0 h0c1 (172.17.0.3)
    nat        h0c0 (172.17.0.2) -- docker0 -> MASQUERADE -> eth0 ==wire== eth0 -> DNAT
               10.0.0.2:<published> -> 172.17.0.2:<port> -> docker0 -- h1c0 (172.17.0.2)
    overlay    h0c0 (10.1.0.2/16, MTU 1450) -- ovbr0 -- vxlan0 (VNI 4096, UDP 4789) ==wire==
               vxlan0 -- ovbr0 -- h1c0 (10.1.1.2/16); static neighbours and FDB, no ARP/flood
    container  client and server inside h0c0 (on docker0), over loopback to 127.0.0.1
    routed     h0c0 (10.2.0.2/32) --veth-- h0 [10.2.1.0/24 via 10.0.0.2] ==wire== h1
               [10.2.1.2/32 dev veth-h1c0] --veth-- h1c0 (10.2.1.2/32); Calico/host-gw style

iptables (iptables-restore inside each host namespace; containers have no rules):

* every host gets Docker's base nat rule ``-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE``.
  It never matches on the host, overlay and routed paths, but it makes the kernel track
  connections in the host namespace (conntrack is only active in a namespace whose rules need
  it), as every host of the model has conntrack;
* hosts of the bridge, nat, container, overlay and host paths get Docker's filter rules, flattened
  into FORWARD as :mod:`perfsim.topology.bridge_mode` shows (policy DROP; RELATED,ESTABLISHED to
  docker0; per published port; from docker0), and ``h1`` of ``nat`` the DNAT rule and FORWARD
  accept rule of every published port;
* routed hosts keep an empty filter table (policy ACCEPT): the model's routed hosts have
  conntrack but no rules, and Docker's FORWARD DROP would refuse the routed pod traffic.

``bridge-nf-call-iptables`` (per namespace since Linux 5.3) is 1 in the hosts that have docker0
(bridged frames cross iptables, as on a Docker host) and 0 in the overlay hosts (the model's
overlay bridge has no netfilter hook); :attr:`Testbed.metadata` records what the kernel allowed.

Offloads: ``offloads=True`` keeps the kernel's defaults (veth: TSO/GSO on, GRO off);
``offloads=False`` turns tso, gso, gro and tx-udp_tnl-segmentation off on every device of every
namespace of the testbed and records in ``metadata["offloads_unchanged"]`` what could not be
turned off.  IPv6 is disabled in every namespace (the model is IPv4 only; no router
solicitations or DAD on the links).

TCP congestion control is ``reno`` in every namespace (:data:`TCP_CONGESTION_CONTROL`,
recorded in ``metadata["tcp_congestion_control"]``), whatever the machine's default: a new
namespace inherits the root namespace's, and a host set to ``bbr`` (as the machine the default
profile is measured on) paces every TCP flow with a timer per skb (``tcp_internal_pacing``
without the fq qdisc), which perfsim's window-based TCP does not model and which a Docker
host with Linux's defaults does not do.  perfsim's TCP is Reno; ``reno`` is always built in and
always allowed (``net.ipv4.tcp_allowed_congestion_control``; a namespace other than the root
one may not select ``cubic`` unless the root namespace allows it, and nothing here changes
the root namespace); without loss, as in a CPU-bound stream, Reno and CUBIC grow the window
alike.  On that machine, over loopback with the client on cpu0 and the server on cpu1, 1 and
4 streams moved 30.7 and 28.3 Gbit/s with ``reno``, 31.9 and 24.8 with ``cubic``, 14.0 and
17.0 with ``bbr``.

Nothing is configured in the root namespace: links are created directly inside their
namespaces (``ip link add A netns X type veth peer name B netns Y``).  Every namespace is named
``psim-<run>-<role>`` with ``<run>`` = ``ps`` + 4 hex digits; a run holds an flock on
``<lock dir>/<run>.lock`` while it lives, so :func:`cleanup_stale` removes only the namespaces of
runs whose process is gone.  Cleanup kills every process started in the testbed (and anything
else still running in its namespaces: a process keeps a deleted namespace alive) and deletes the
namespaces, also when building fails, on exceptions, on SIGINT/SIGTERM (handlers raising
KeyboardInterrupt / SystemExit(143) are installed while a testbed exists) and at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import IO, Any, NoReturn, Self

from perfsim.errors import ConfigError, PerfsimError

NS_PREFIX = "psim-"
"""Every namespace the harness creates starts with this."""

PATHS = ("host", "bridge", "nat", "overlay", "container", "routed")

HOST_IPS = ("10.0.0.1", "10.0.0.2")
FABRIC_PLEN = 16
DOCKER0_GW = "172.17.0.1"
DOCKER0_NET = "172.17.0.0/16"
OVERLAY_MTU = 1450
OVERLAY_VNI = 4096
VXLAN_PORT = 4789

IPERF3_PORT = 5201
SOCKPERF_PORT = 11111
CRR_PORT = 5301
PUBLISHED: tuple[tuple[str, int], ...] = (
    ("tcp", IPERF3_PORT), ("udp", IPERF3_PORT), ("tcp", SOCKPERF_PORT), ("udp", SOCKPERF_PORT),
    ("tcp", CRR_PORT),
)
"""Container ports published on ``h1`` in the ``nat`` path (``docker run -p H:P``)."""
PUBLISH_OFFSET = 10000
"""The host port of published container port ``P`` is ``P + PUBLISH_OFFSET`` (-p 15201:5201)."""

CLIENT_PORT_RANGE = "10240 65535"
"""``ip_local_port_range`` of the client namespace: room for connection-rate runs."""

COMMAND_TIMEOUT_S = 20.0
TCP_CONGESTION_CONTROL = "reno"
"""Congestion control of every testbed namespace: perfsim's TCP model (see the module docstring
for why not the machine's own default)."""
REQUIRED_TOOLS = ("ip", "ss", "iptables-restore", "ethtool", "taskset", "sysctl")

_CONTAINERS: dict[str, tuple[tuple[int, int], ...]] = {
    "host": (),
    "bridge": ((0, 0), (0, 1)),
    "nat": ((0, 0), (1, 0)),
    "overlay": ((0, 0), (1, 0)),
    "container": ((0, 0),),
    "routed": ((0, 0), (1, 0)),
}
_ENDPOINTS: dict[str, tuple[str, str, str]] = {
    # path -> (client role, server role, address the client dials)
    "host": ("h0", "h1", HOST_IPS[1]),
    "bridge": ("h0c0", "h0c1", "172.17.0.3"),
    "nat": ("h0c0", "h1c0", HOST_IPS[1]),
    "overlay": ("h0c0", "h1c0", "10.1.1.2"),
    "container": ("h0c0", "h0c0", "127.0.0.1"),
    "routed": ("h0c0", "h1c0", "10.2.1.2"),
}
_DOCKER0_PATHS = ("bridge", "nat", "container")
_OFFLOAD_FEATURES = {  # ethtool -K name -> ethtool -k name
    "tso": "tcp-segmentation-offload",
    "gso": "generic-segmentation-offload",
    "gro": "generic-receive-offload",
    "tx-udp_tnl-segmentation": "tx-udp_tnl-segmentation",
}


class CommandError(PerfsimError, RuntimeError):
    """A command of the testbed failed: the command line, why, and its stderr (a
    :class:`PerfsimError`: the CLI prints it on one line)."""

    def __init__(self, argv: Sequence[str], why: str, stderr: str = "") -> None:
        self.argv = list(argv)
        self.stderr = stderr.strip()
        text = f"command failed ({why}): {' '.join(self.argv)}"
        if self.stderr:
            text += f": {self.stderr.splitlines()[-1] if len(self.stderr) > 400 else self.stderr}"
        super().__init__(text)


def run(
    argv: Sequence[str], *, timeout_s: float = COMMAND_TIMEOUT_S, input_text: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell) with a timeout; raise :class:`CommandError` when it fails."""
    try:
        cp = subprocess.run(
            list(argv), check=False, input=input_text, capture_output=True, text=True, timeout=timeout_s,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise CommandError(argv, f"timed out after {timeout_s:g} s", err) from None
    except OSError as e:
        raise CommandError(argv, f"cannot run: {e.strerror}") from None
    if check and cp.returncode != 0:
        raise CommandError(argv, f"exit status {cp.returncode}", cp.stderr)
    return cp


def missing_tools(extra: Sequence[str] = ()) -> list[str]:
    """The programs of :data:`REQUIRED_TOOLS` (and ``extra``) that are not on PATH."""
    return [t for t in (*REQUIRED_TOOLS, *extra) if shutil.which(t) is None]


def can_create_namespaces() -> tuple[bool, str]:
    """(True, "") when this process can create network namespaces, else (False, why)."""
    if sys.platform != "linux":
        return False, f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return False, "network namespaces need root (run as root, e.g. with sudo)"
    missing = missing_tools()
    if missing:
        return False, f"missing tools: {', '.join(missing)} (make kernel-tools installs them)"
    probe = f"{NS_PREFIX}probe{os.getpid()}x{secrets.token_hex(2)}"
    try:
        run(["ip", "netns", "add", probe], timeout_s=10)
    except CommandError as e:
        return False, f"'ip netns add' does not work here: {e.stderr or e}"
    with contextlib.suppress(CommandError):
        run(["ip", "netns", "del", probe], timeout_s=10)
    return True, ""


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = run(["ip", "netns", "list"], timeout_s=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _lock_dir() -> str:
    for base in ("/run", tempfile.gettempdir()):
        path = os.path.join(base, "psim-calibrate")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise RuntimeError("no writable directory for the testbed's lock files (/run or $TMPDIR)")


def _run_of(ns: str) -> str:
    """``psim-ps1a2b-h0`` -> ``ps1a2b``."""
    return ns[len(NS_PREFIX):].split("-", 1)[0]


def _run_alive(run_id: str) -> bool:
    """True while the process that created run ``run_id`` holds its lock."""
    if run_id.startswith("probe"):
        pid = run_id[len("probe"):].split("x", 1)[0]
        return pid.isdigit() and os.path.exists(f"/proc/{pid}")
    path = os.path.join(_lock_dir(), f"{run_id}.lock")
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _kill_namespace_processes(ns: str) -> None:
    """SIGKILL every process living in namespace ``ns`` (only ever one of ours)."""
    try:
        out = run(["ip", "netns", "pids", ns], timeout_s=10).stdout
    except CommandError:
        return
    for pid in (int(p) for p in out.split() if p.isdigit()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _delete_namespaces(names: Sequence[str]) -> list[str]:
    """Kill the processes in and delete each namespace; returns the errors."""
    errors: list[str] = []
    for ns in names:
        _kill_namespace_processes(ns)
    for ns in names:
        try:
            run(["ip", "netns", "del", ns], timeout_s=10)
        except CommandError as e:
            if "No such file" not in e.stderr:
                errors.append(str(e))
    return errors


def cleanup_stale() -> list[str]:
    """Remove the ``psim-`` namespaces of runs whose process is gone (a crashed or killed run):
    kill what still runs in them, delete them and their lock files.  Namespaces of live runs
    (another process measuring right now) are left alone.  Returns the namespaces removed."""
    stale = [ns for ns in list_namespaces() if ns.startswith(NS_PREFIX) and not _run_alive(_run_of(ns))]
    errors = _delete_namespaces(stale)
    for run_id in {_run_of(ns) for ns in stale}:
        with contextlib.suppress(OSError, RuntimeError):
            os.unlink(os.path.join(_lock_dir(), f"{run_id}.lock"))
    if errors:
        raise RuntimeError("; ".join(errors))
    return stale


def _new_run_id() -> str:
    """``ps`` + 4 random hex digits, not used by any existing namespace."""
    taken = {_run_of(ns) for ns in list_namespaces() if ns.startswith(NS_PREFIX)}
    while True:
        run_id = "ps" + secrets.token_hex(2)
        if run_id not in taken:
            return run_id


_STARTED: dict[int, str] = {}
"""pid -> start time (``/proc/<pid>/stat`` field 22) of every process started in a testbed, so
a recycled pid is never mistaken for one of ours."""


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process, None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def _remember(pid: int) -> None:
    st = _stat(pid)
    if st is not None:
        _STARTED[pid] = st[1]


def _ours_running(pid: int, started: str) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == started and st[0] not in ("Z", "X")


def leftovers(run_id: str | None = None) -> list[str]:
    """What the harness left behind: ``netns <name>`` for each ``psim-`` namespace (of run
    ``run_id`` only, if given), ``link <name>`` for a root-namespace link named after it and
    ``pid <n>`` for each process this interpreter started in a testbed that still runs."""
    prefix = NS_PREFIX + (f"{run_id}-" if run_id else "")
    found = [f"netns {ns}" for ns in list_namespaces() if ns.startswith(prefix)]
    links = run(["ip", "-o", "link", "show"], timeout_s=10).stdout
    for line in links.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if name.startswith(NS_PREFIX) or (run_id is not None and run_id in name):
            found.append(f"link {name}")
    found += [f"pid {pid}" for pid, started in sorted(_STARTED.items()) if _ours_running(pid, started)]
    return found


# --- signals and exit: every live testbed is removed ------------------------------------------

_LIVE: dict[int, Testbed] = {}
_SAVED_HANDLERS: dict[int, Any] = {}
_DEFER = [0]
_PENDING: list[int] = []
_ATEXIT_INSTALLED = [False]
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_for(signum: int) -> NoReturn:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _DEFER[0]:
        _PENDING.append(signum)  # cleanup is running: finish it, then stop
        return
    _raise_for(signum)


def _register(tb: Testbed) -> None:
    if not _ATEXIT_INSTALLED[0]:
        atexit.register(_close_all)
        _ATEXIT_INSTALLED[0] = True
    if not _LIVE and threading.current_thread() is threading.main_thread():
        for sig in _SIGNALS:
            _SAVED_HANDLERS[sig] = signal.getsignal(sig)
            signal.signal(sig, _on_signal)
    _LIVE[id(tb)] = tb


def _unregister(tb: Testbed) -> None:
    _LIVE.pop(id(tb), None)
    if not _LIVE and _SAVED_HANDLERS and threading.current_thread() is threading.main_thread():
        for sig, handler in _SAVED_HANDLERS.items():
            signal.signal(sig, handler)
        _SAVED_HANDLERS.clear()


def _close_all() -> None:
    for tb in list(_LIVE.values()):
        with contextlib.suppress(Exception):
            tb.close()


def close_all() -> None:
    """Remove every testbed this interpreter still has (also run at interpreter exit)."""
    _close_all()


class Testbed:
    """One datapath of :data:`PATHS`, built on enter and removed on exit.

    >>> with Testbed("overlay", offloads=True) as tb:   # doctest: +SKIP
    ...     tb.start(tb.server_ns, ["iperf3", "-s"], cpu=1)
    ...     tb.call(tb.client_ns, ["iperf3", "-c", tb.server_addr, "-p", str(tb.port("tcp", 5201))], cpu=0)

    Attributes: ``run_id`` (``ps`` + 4 hex), ``client_ns`` / ``server_ns`` (namespace names),
    ``server_addr`` (the address the client dials), ``metadata`` (what the kernel allowed:
    br_netfilter, offloads, MTUs), ``commands`` (every configuration command, in order).
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, path: str, offloads: bool = True, *, published: Sequence[tuple[str, int]] = PUBLISHED) -> None:
        if path not in PATHS:
            raise ConfigError("path", path, f"one of {', '.join(PATHS)}")
        if not isinstance(offloads, bool):
            raise ConfigError("offloads", offloads, "True or False")
        for proto, port in published:
            if proto not in ("tcp", "udp") or not isinstance(port, int) or not 1 <= port <= 65535 - PUBLISH_OFFSET:
                raise ConfigError("published", (proto, port), f"(tcp|udp, port 1..{65535 - PUBLISH_OFFSET})")
        self.path = path
        self.offloads = offloads
        self.published = tuple(published)
        self.run_id = _new_run_id()
        client, server, addr = _ENDPOINTS[path]
        self.client_ns = self.ns(client)
        self.server_ns = self.ns(server)
        self.server_addr = addr
        self.namespaces: list[str] = []
        self.commands: list[list[str]] = []
        self.metadata: dict[str, Any] = {"path": path, "offloads": offloads, "run_id": self.run_id}
        self._procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self.overlay_forward_accept = False
        self._lock_fd: int | None = None
        self._closed = False

    # --- naming ---------------------------------------------------------------------------
    def ns(self, role: str) -> str:
        """The namespace name of ``role`` (``h0``, ``h1``, ``h0c0``, ...)."""
        return f"{NS_PREFIX}{self.run_id}-{role}"

    def port(self, proto: str, port: int) -> int:
        """The port the client dials to reach a server listening on ``proto``/``port``: the
        published host port on ``nat``, the port itself elsewhere."""
        if proto not in ("tcp", "udp"):
            raise ConfigError("proto", proto, "tcp or udp")
        if self.path != "nat":
            return port
        if (proto, port) not in self.published:
            pub = ", ".join(f"{p}/{n}" for p, n in self.published)
            raise ConfigError("port", f"{proto}/{port}", f"a published port of the nat path ({pub})")
        return port + PUBLISH_OFFSET

    # --- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.build()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close(raise_errors=ev is None)

    def build(self) -> None:
        """Create the namespaces, links, addresses, routes and rules of the path.  On any
        failure (or interrupt) everything built so far is removed before the error propagates."""
        if self.namespaces or self._closed:
            raise RuntimeError("a Testbed is built once")
        _register(self)
        try:
            self._take_lock()
            self._build()
        except BaseException:
            self.close(raise_errors=False)
            raise

    def close(self, raise_errors: bool = True) -> None:
        """Kill every process started in the testbed, delete its namespaces (idempotent)."""
        if self._closed:
            return
        self._closed = True
        _DEFER[0] += 1
        errors: list[str] = []
        try:
            for proc, err in self._procs:
                _stop_process(proc)
                err.close()
            self._procs.clear()
            errors = _delete_namespaces(self.namespaces)
            self._release_lock()
        finally:
            _DEFER[0] -= 1
            _unregister(self)
        if errors:
            text = f"testbed {self.run_id} not fully removed: {'; '.join(errors)}"
            if raise_errors and sys.exc_info()[0] is None:
                raise RuntimeError(text)
            sys.stderr.write(f"warning: {text}\n")
        if _PENDING and not _DEFER[0]:
            # a signal came while cleaning up: act on it now, unless an exception is already
            # unwinding the program (then that one ends it)
            signum = _PENDING.pop(0)
            _PENDING.clear()
            if sys.exc_info()[0] is None:
                _raise_for(signum)

    def _take_lock(self) -> None:
        path = os.path.join(_lock_dir(), f"{self.run_id}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"run id {self.run_id} is held by another live run; try again") from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError, RuntimeError):
            os.unlink(os.path.join(_lock_dir(), f"{self.run_id}.lock"))
        os.close(self._lock_fd)
        self._lock_fd = None

    # --- processes --------------------------------------------------------------------------
    def _wrap(self, ns: str, argv: Sequence[str], cpu: int | None) -> list[str]:
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        return ["ip", "netns", "exec", ns, *pin, *argv]

    def start(self, ns: str, argv: Sequence[str], *, cpu: int | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process (a server) in namespace ``ns``, pinned to ``cpu``; it is
        killed by :meth:`stop` or when the testbed is removed."""
        self._check_open(ns)
        err = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the process, closed in stop()/close()
        cmd = self._wrap(ns, argv, cpu)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
        except OSError as e:
            err.close()
            raise CommandError(cmd, f"cannot run: {e.strerror}") from None
        self._procs.append((proc, err))
        _remember(proc.pid)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> str:
        """Stop a process of :meth:`start`; returns what it wrote to stderr."""
        for i, (p, err) in enumerate(self._procs):
            if p is proc:
                _stop_process(p)
                del self._procs[i]
                err.seek(0)
                text = err.read().decode(errors="replace")
                err.close()
                return text
        return ""

    def call(
        self, ns: str, argv: Sequence[str], *, cpu: int | None = None, timeout_s: float = COMMAND_TIMEOUT_S,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in namespace ``ns`` (pinned to ``cpu``) to completion within
        ``timeout_s``; killed if it takes longer or if the caller is interrupted."""
        self._check_open(ns)
        cmd = self._wrap(ns, argv, cpu)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
        except OSError as e:
            raise CommandError(cmd, f"cannot run: {e.strerror}") from None
        _remember(proc.pid)
        with proc:  # closes the pipes whatever happens
            try:
                out, err = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _stop_process(proc)
                raise CommandError(cmd, f"timed out after {timeout_s:g} s") from None
            finally:
                if proc.returncode is None:
                    _stop_process(proc)
        cp = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise CommandError(cmd, f"exit status {proc.returncode}", err or out[-400:])
        return cp

    def wait_listening(self, ns: str, proto: str, port: int, proc: subprocess.Popen[bytes] | None = None,
                       timeout_s: float = 5.0) -> None:
        """Wait until a socket listens on ``proto``/``port`` in ``ns`` (``ss``)."""
        flag = "-Hltn" if proto == "tcp" else "-Hlun"
        deadline = time.monotonic() + timeout_s
        while True:
            out = self._ns_run(ns, ["ss", flag, "sport", "=", f":{port}"]).stdout
            if out.strip():
                return
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server {proc.args!r} exited with status {proc.returncode}: {self.stop(proc).strip()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {proto}/{port} in {ns} after {timeout_s:g} s")
            time.sleep(0.02)

    def _check_open(self, ns: str) -> None:
        if self._closed or ns not in self.namespaces:
            raise RuntimeError(f"namespace {ns} is not part of the live testbed {self.run_id}")

    # --- configuration helpers --------------------------------------------------------------
    def _cmd(self, argv: Sequence[str], input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        self.commands.append(list(argv))
        return run(argv, input_text=input_text)

    def _ip(self, ns: str, *args: str) -> None:
        self._cmd(["ip", "-n", ns, *args])

    def _ns_run(self, ns: str, argv: Sequence[str], input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        return self._cmd(["ip", "netns", "exec", ns, *argv], input_text)

    def _set(self, ns: str, key: str, value: str | int) -> bool:
        """Set one sysctl ``key`` in ``ns``; False if the namespace does not have it."""
        try:
            self._ns_run(ns, ["sysctl", "-q", "-w", f"{key}={value}"])
        except CommandError:
            return False
        return True

    def mac(self, ns: str, ifname: str) -> str:
        out = self._cmd(["ip", "-n", ns, "-j", "link", "show", "dev", ifname]).stdout
        return str(json.loads(out)[0]["address"])

    def _add_ns(self, role: str) -> str:
        name = self.ns(role)
        self._cmd(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self._ns_run(name, ["sysctl", "-q", "-e", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"])
        self._ns_run(name, ["sysctl", "-q", "-w", f"net.ipv4.tcp_congestion_control={TCP_CONGESTION_CONTROL}"])
        self.metadata["tcp_congestion_control"] = TCP_CONGESTION_CONTROL
        self._ip(name, "link", "set", "lo", "up")
        return name

    def _veth(self, a_ns: str, a: str, b_ns: str, b: str, mtu: int | None = None) -> None:
        m = ["mtu", str(mtu)] if mtu else []
        self._cmd(["ip", "link", "add", a, "netns", a_ns, *m, "type", "veth", "peer", "name", b, "netns", b_ns, *m])

    # --- the topology ---------------------------------------------------------------------------
    def _build(self) -> None:
        path = self.path
        hosts = [self._add_ns("h0"), self._add_ns("h1")]
        self._veth(hosts[0], "eth0", hosts[1], "eth0")
        for h, ns in enumerate(hosts):
            self._ns_run(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
            self._ip(ns, "addr", "add", f"{HOST_IPS[h]}/{FABRIC_PLEN}", "dev", "eth0")
            self._ip(ns, "link", "set", "eth0", "up")
        if path in _DOCKER0_PATHS:
            for ns in hosts:
                self._ip(ns, "link", "add", "docker0", "type", "bridge")
                self._ip(ns, "addr", "add", f"{DOCKER0_GW}/16", "dev", "docker0")
                self._ip(ns, "link", "set", "docker0", "up")
        if path == "overlay":
            self._build_vteps(hosts)
        for h, c in _CONTAINERS[path]:
            ctr = self._add_ns(f"h{h}c{c}")
            if path in _DOCKER0_PATHS:
                self._attach_docker0(hosts[h], ctr, f"172.17.0.{c + 2}", f"veth-h{h}c{c}")
            elif path == "overlay":
                self._attach_overlay(hosts[h], ctr, f"10.1.{h}.{c + 2}", f"veth-h{h}c{c}")
            else:
                self._attach_routed(hosts[h], ctr, f"10.2.{h}.{c + 2}", f"veth-h{h}c{c}")
        if path == "overlay":
            self._prepopulate_overlay()
        if path == "routed":
            for h, ns in enumerate(hosts):
                self._ip(ns, "route", "add", f"10.2.{1 - h}.0/24", "via", HOST_IPS[1 - h])
        self._bridge_nf(hosts)
        for h, ns in enumerate(hosts):
            self._ns_run(ns, ["iptables-restore"], self.iptables_rules(h))
        client_sysctls: dict[str, str | int] = {"net.ipv4.ip_local_port_range": CLIENT_PORT_RANGE,
                                                "net.ipv4.tcp_tw_reuse": 1}
        self.metadata["client_sysctls"] = {k: v for k, v in client_sysctls.items() if self._set(self.client_ns, k, v)}
        self._apply_offloads()

    def _attach_docker0(self, host: str, ctr: str, ip: str, hv: str) -> None:
        self._veth(ctr, "eth0", host, hv)
        self._ip(host, "link", "set", hv, "master", "docker0", "up")
        self._ip(ctr, "addr", "add", f"{ip}/16", "dev", "eth0")
        self._ip(ctr, "link", "set", "eth0", "up")
        self._ip(ctr, "route", "add", "default", "via", DOCKER0_GW)

    def _build_vteps(self, hosts: list[str]) -> None:
        for h, ns in enumerate(hosts):
            self._ip(ns, "link", "add", "ovbr0", "mtu", str(OVERLAY_MTU), "type", "bridge")
            self._ip(ns, "link", "add", "vxlan0", "mtu", str(OVERLAY_MTU), "type", "vxlan", "id", str(OVERLAY_VNI),
                     "dstport", str(VXLAN_PORT), "local", HOST_IPS[h], "nolearning", "dev", "eth0")
            self._ip(ns, "link", "set", "vxlan0", "master", "ovbr0", "up")
            self._ip(ns, "link", "set", "ovbr0", "up")

    def _attach_overlay(self, host: str, ctr: str, ip: str, hv: str) -> None:
        self._veth(ctr, "eth0", host, hv, OVERLAY_MTU)
        self._ip(host, "link", "set", hv, "master", "ovbr0", "up")
        self._ip(host, "link", "set", "ovbr0", "mtu", str(OVERLAY_MTU))
        self._ip(ctr, "addr", "add", f"{ip}/16", "dev", "eth0")
        self._ip(ctr, "link", "set", "eth0", "up")

    def _prepopulate_overlay(self) -> None:
        """Docker's control plane: each container knows the others' MACs, each VTEP the remote
        containers' MAC -> remote host (no ARP, no flooding on the overlay)."""
        ctrs = [(h, c, self.ns(f"h{h}c{c}"), f"10.1.{h}.{c + 2}") for h, c in _CONTAINERS["overlay"]]
        macs = {ns: self.mac(ns, "eth0") for _, _, ns, _ in ctrs}
        for h, _, ns, _ in ctrs:
            for h2, _, ns2, ip2 in ctrs:
                if ns2 == ns:
                    continue
                self._ip(ns, "neigh", "add", ip2, "lladdr", macs[ns2], "dev", "eth0", "nud", "permanent")
                if h2 != h:
                    self._cmd(["bridge", "-n", self.ns(f"h{h}"), "fdb", "add", macs[ns2], "dev", "vxlan0",
                               "dst", HOST_IPS[h2], "self", "permanent"])
        self.metadata["mtu_bytes"] = OVERLAY_MTU

    def _attach_routed(self, host: str, ctr: str, ip: str, hv: str) -> None:
        self._veth(ctr, "eth0", host, hv)
        self._ip(host, "link", "set", hv, "up")
        self._ip(ctr, "addr", "add", f"{ip}/32", "dev", "eth0")
        self._ip(ctr, "link", "set", "eth0", "up")
        self._ip(ctr, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        self._ip(ctr, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        self._ip(ctr, "neigh", "add", "169.254.1.1", "lladdr", self.mac(host, hv), "dev", "eth0", "nud", "permanent")
        self._ip(host, "route", "add", f"{ip}/32", "dev", hv)
        self._ip(host, "neigh", "add", ip, "lladdr", self.mac(ctr, "eth0"), "dev", hv, "nud", "permanent")

    def _bridge_nf(self, hosts: list[str]) -> None:
        """bridge-nf-call-iptables: 1 with docker0, 0 on the overlay hosts (see module doc).

        Records ``bridge_nf_call_iptables`` per host, whether the setting is per namespace, and
        ``br_netfilter``: whether bridged frames of the path cross iptables (None: no bridge)."""
        if shutil.which("modprobe"):
            run(["modprobe", "br_netfilter"], check=False)
        want = 1 if self.path in _DOCKER0_PATHS else 0 if self.path == "overlay" else None
        key = "net.bridge.bridge-nf-call-iptables"
        values: dict[str, int | None] = {}
        for ns in hosts:
            if want is not None:
                self._set(ns, key, want)
            out = self._cmd(["ip", "netns", "exec", ns, "sysctl", "-n", "-e", key]).stdout.strip()
            values[ns.rsplit("-", 1)[1]] = int(out) if out.isdigit() else None
        per_netns = all(v is not None for v in values.values())
        if not per_netns:
            # br_netfilter not loaded (bridged frames skip iptables), or a kernel < 5.3 where the
            # setting is global: read (never write) the root namespace's value
            try:
                with open("/proc/sys/" + key.replace(".", "/")) as f:
                    shared = int(f.read().strip())
            except (OSError, ValueError):
                shared = 0
            values = dict.fromkeys(values, shared)
        self.metadata["bridge_nf_call_iptables"] = values
        self.metadata["bridge_nf_per_netns"] = per_netns
        has_bridge = self.path in (*_DOCKER0_PATHS, "overlay")
        self.metadata["br_netfilter"] = all(v == 1 for v in values.values()) if has_bridge else None
        # overlay hosts whose bridged frames cross iptables anyway need FORWARD to let them pass
        self.overlay_forward_accept = self.path == "overlay" and any(v == 1 for v in values.values())

    def iptables_rules(self, h: int) -> str:
        """The ``iptables-restore`` input of host ``h`` (see the module docstring)."""
        nat = [f"-A POSTROUTING -s {DOCKER0_NET} ! -o docker0 -j MASQUERADE"]
        filt: list[str] = []
        if self.path != "routed":
            filt = ["-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
            if self.path == "nat" and h == 1:
                for proto, port in self.published:
                    nat.insert(0, f"-A PREROUTING -d {HOST_IPS[1]}/32 ! -i docker0 -p {proto} -m {proto} "
                                  f"--dport {port + PUBLISH_OFFSET} -j DNAT --to-destination 172.17.0.2:{port}")
                    filt.append(f"-A FORWARD -d 172.17.0.2/32 ! -i docker0 -o docker0 -p {proto} -m {proto} "
                                f"--dport {port} -j ACCEPT")
            filt += ["-A FORWARD -i docker0 ! -o docker0 -j ACCEPT", "-A FORWARD -i docker0 -o docker0 -j ACCEPT"]
            if self.overlay_forward_accept:
                filt.append("-A FORWARD -i ovbr0 -o ovbr0 -j ACCEPT")
        lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                 ":POSTROUTING ACCEPT [0:0]", *nat, "COMMIT"]
        if filt:
            lines += ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]", *filt, "COMMIT"]
        return "\n".join(lines) + "\n"

    def links(self, ns: str) -> list[str]:
        """Interface names in namespace ``ns``."""
        out = self._cmd(["ip", "-n", ns, "-j", "link", "show"]).stdout
        return [str(d["ifname"]) for d in json.loads(out)]

    def features(self, ns: str, ifname: str) -> dict[str, str]:
        """``ethtool -k``: feature name -> ``on``/``off`` (``[fixed]`` appended when fixed)."""
        out = self._cmd(["ip", "netns", "exec", ns, "ethtool", "-k", ifname]).stdout
        feats: dict[str, str] = {}
        for line in out.splitlines()[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                feats[k.strip()] = v.strip()
        return feats

    def _apply_offloads(self) -> None:
        unchanged: dict[str, list[str]] = {}
        state: dict[str, dict[str, str]] = {}
        for ns in self.namespaces:
            for dev in self.links(ns):
                where = f"{ns.rsplit('-', 1)[1]}/{dev}"
                feats = self.features(ns, dev)
                if not self.offloads:
                    todo = [k for k, name in _OFFLOAD_FEATURES.items()
                            if feats.get(name, "off").startswith("on") and "[fixed]" not in feats.get(name, "")]
                    if todo:
                        cmd = ["ip", "netns", "exec", ns, "ethtool", "-K", dev, *(x for k in todo for x in (k, "off"))]
                        self.commands.append(cmd)
                        run(cmd, check=False)  # a refusal shows below as a feature still on
                        feats = self.features(ns, dev)
                    still = [k for k, name in _OFFLOAD_FEATURES.items() if feats.get(name, "off").startswith("on")]
                    if still:
                        unchanged[where] = still
                state[where] = {k: feats.get(name, "absent") for k, name in _OFFLOAD_FEATURES.items()}
        self.metadata["offloads_unchanged"] = unchanged
        self.metadata["offload_features"] = state


def _stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after 1 s."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
