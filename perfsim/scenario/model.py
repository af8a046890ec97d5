"""The scenario file model (format version 1): frozen, slotted, keyword-only dataclasses.

Every field carries its documentation and its limits in ``dataclasses.field(metadata=...)``
(``doc``, ``minimum``, ``maximum``, ``exclusiveMinimum``, ``enum``, ``pattern``, ``const``).
The same metadata drives three things, so they cannot disagree:

* :func:`check_fields` (called by every ``__post_init__``): types and per-field limits;
* :mod:`perfsim.scenario.schema`: the JSON Schema shipped as ``scenario.schema.json``;
* ``docs/scenario-format.md`` (written by hand from the same docs).

Errors are :class:`~perfsim.errors.ConfigError` whose ``field`` is the path of the value in the
file (``hosts.nic_gbps``, ``workloads[1].message_size``).  A nested object validates its own
fields with paths relative to itself; :func:`perfsim.scenario.load.build` prefixes them with the
object's own path.  :class:`Scenario` then checks what spans several objects (names, placement,
published ports, mode constraints); :func:`perfsim.scenario.compile.check` builds the topology
to catch what only the mode's own rules know (reachability).
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from perfsim.components.codel import QDISCS
from perfsim.errors import ConfigError
from perfsim.experiment.config import WORKLOADS
from perfsim.topology.modes import MODES
from perfsim.transport.udp import MAX_DATAGRAM_BYTES
from perfsim.units import IPIP_OVERHEAD_BYTES, MIN_IPV4_MTU, VXLAN_OVERHEAD_BYTES

FORMAT_VERSION = 1
NAME_PATTERN = r"^[a-z0-9_-]+$"
ENGINES = ("des",)
PROTOS = ("tcp", "udp")
PUBLISH_MODES = ("bridge", "user-bridge")
MAX_TCP_MESSAGE_BYTES = 1 << 22
"""A TCP message must fit the 6 MiB socket buffer the workloads use; 4 MiB is the limit."""
MAX_FLOWS = 32768
"""Client ports are ``32768 + (97 k mod 32768)``: unique for up to 32768 flows."""
MIN_MTU = {"overlay": MIN_IPV4_MTU + VXLAN_OVERHEAD_BYTES, "ipip": MIN_IPV4_MTU + IPIP_OVERHEAD_BYTES}
"""Smallest host MTU per encapsulating mode: the inner MTU must stay >= 68 B (RFC 791)."""


def _f(default: Any = MISSING, doc: str = "", **limits: Any) -> Any:
    """A dataclass field whose metadata holds its doc and its JSON-Schema limits."""
    meta = {"doc": doc, **limits}
    if isinstance(default, type):
        return field(default_factory=default, metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


def _allowed(hint: Any, meta: typing.Mapping[str, Any]) -> str:
    """The 'allowed' text of a field: its type and limits, in words."""
    if "const" in meta:
        return f"exactly {meta['const']!r}"
    if "enum" in meta:
        return "one of " + ", ".join(str(v) for v in meta["enum"])
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    base = _base(hint)
    text = words.get(base, "a mapping" if base is dict else "a list")
    if "pattern" in meta:
        text += f" matching {meta['pattern']}"
    lo = (f" >= {meta['minimum']:g}" if "minimum" in meta else
          f" > {meta['exclusiveMinimum']:g}" if "exclusiveMinimum" in meta else "")
    hi = f" <= {meta['maximum']:g}" if "maximum" in meta else ""
    text += lo + (" and" if lo and hi else "") + hi
    if _optional(hint):
        text += " (or omitted)"
    return text


def _optional(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)


def _base(hint: Any) -> Any:
    """``int | None`` -> int, ``tuple[X, ...]`` -> tuple, ``dict[str, Any]`` -> dict."""
    if isinstance(hint, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


_HINTS: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a model dataclass (cached)."""
    out = _HINTS.get(cls)
    if out is None:
        out = _HINTS[cls] = typing.get_type_hints(cls)
    return out


def _type_ok(value: Any, hint: Any) -> bool:
    if value is None:
        return _optional(hint)
    base = _base(hint)
    if base is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if base is int:
        return isinstance(value, int)
    if base is float:
        return isinstance(value, int | float) and math.isfinite(value)
    if base is str:
        return isinstance(value, str)
    if base is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if base is tuple:
        item = typing.get_args(_base_hint(hint))[0]
        return isinstance(value, tuple) and all(isinstance(v, item) for v in value)
    return isinstance(value, base)


def _base_hint(hint: Any) -> Any:
    if isinstance(hint, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def check_fields(obj: Any) -> None:
    """Check every field of model dataclass ``obj`` against its type hint and metadata.

    Raises ConfigError(field name, value, allowed) on the first bad field, in field order.
    """
    for f in fields(obj):
        value = getattr(obj, f.name)
        hint = hints(type(obj))[f.name]
        meta = f.metadata
        bad = not _type_ok(value, hint)
        if not bad and value is not None:
            if "const" in meta:
                bad = value != meta["const"]
            elif "enum" in meta:
                bad = value not in meta["enum"]
            elif isinstance(value, str) and "pattern" in meta:
                bad = re.fullmatch(meta["pattern"].strip("^$"), value) is None
            elif isinstance(value, int | float):
                bad = (("minimum" in meta and value < meta["minimum"])
                       or ("exclusiveMinimum" in meta and value <= meta["exclusiveMinimum"])
                       or ("maximum" in meta and value > meta["maximum"]))
            elif isinstance(value, tuple) and "minItems" in meta:
                bad = len(value) < meta["minItems"]
        if bad:
            raise ConfigError(f.name, value, _allowed(hint, meta))


@dataclass(frozen=True, slots=True, kw_only=True)
class Hosts:
    """The cluster's hosts: all alike, one NIC each, joined by one switch."""

    count: int = _f(2, "number of hosts", minimum=1, maximum=65000)
    cores: int = _f(4, "CPU cores per host", minimum=1, maximum=4096)
    nic_gbps: float = _f(10.0, "NIC (and switch port) rate in Gbit/s", exclusiveMinimum=0, maximum=10000)
    mtu_bytes: int = _f(1500, "MTU of the NICs and the fabric, bytes", minimum=68, maximum=65535)
    offloads: bool = _f(True, "TSO/GSO/GRO on (64 KiB super-segments) or off (every frame pays)")
    rps: bool = _f(False, "Receive Packet Steering: spread receive work over cores")
    qdisc: str = _f("fq_codel", "queueing discipline of each NIC: fq_codel (Linux's default, CoDel AQM) "
                                "or pfifo (tail drop at fabric.queue_packets)", enum=QDISCS)
    nf_conntrack_max: int = _f(262144, "conntrack table size per host (net.netfilter.nf_conntrack_max)",
                               minimum=1, maximum=1 << 31)
    gc_thresh3: int = _f(1024, "neighbour table hard limit per namespace (net.ipv4.neigh.default.gc_thresh3)",
                         minimum=1, maximum=1 << 31)
    testbed: bool = _f(False, "simulate the calibration testbed: the hosts are network namespaces on one machine "
                              "sharing its cores, joined by a veth wire (at most 2 hosts; nic_gbps and fabric unused)")
    scheduler: str = _f("auto", "how application tasks pinned to one core share it: eevdf (Linux's scheduler; the "
                                "udp_stream sender and reader take part), fifo (work in arrival order) or auto "
                                "(eevdf on the testbed, fifo elsewhere: the fluid engine has no scheduler model)",
                        enum=("auto", "eevdf", "fifo"))

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fabric:
    """The switch that joins the hosts."""

    delay_us: float = _f(5.0, "propagation delay of each switch port, microseconds", minimum=0, maximum=1e6)
    queue_packets: int = _f(1000, "tail-drop queue of each switch port (and of a NIC with hosts.qdisc pfifo), packets",
                            minimum=1, maximum=10_000_000)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    """A published port, ``docker run -p HOST_PORT:CONTAINER_PORT/PROTO``."""

    container: str = _f(doc="name of the container whose port is published", pattern=NAME_PATTERN)
    host_port: int = _f(doc="port on the host's address", minimum=1, maximum=65535)
    container_port: int = _f(doc="port inside the container", minimum=1, maximum=65535)
    proto: str = _f("tcp", "transport protocol", enum=PROTOS)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    """The Docker network every container is attached to (one per scenario in version 1)."""

    mode: str = _f(doc="network mode (datapath)", enum=tuple(MODES))
    options: dict[str, Any] = _f(  # noqa: RUF009
        {}, "the mode's options: bridge/container {subnet, mtu_bytes}; user-bridge {networks, "
        "attach_both, subnets, mtu_bytes}; overlay {vni, learning, subnet, mtu_bytes}; routed "
        "{pod_cidr}; ipip {pod_cidr, mtu_bytes}")
    publish: tuple[Publish, ...] = _f((), "published ports (bridge and user-bridge only)")

    def __post_init__(self) -> None:
        check_fields(self)
        allowed = MODES[self.mode].options
        for key, value in self.options.items():
            if key not in allowed:
                names = ", ".join(allowed) if allowed else "none"
                raise ConfigError(f"options.{key}", value, f"an option of mode {self.mode}: {names}")
        if self.publish and self.mode not in PUBLISH_MODES:
            raise ConfigError("publish", "a list of ports", f"no published ports for mode {self.mode} "
                              f"(only {', '.join(PUBLISH_MODES)} publish ports)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    """A named container and the host it runs on (placement)."""

    name: str = _f(doc="unique container name", pattern=NAME_PATTERN)
    host: int = _f(doc="index of the host it runs on (0 .. hosts.count - 1)", minimum=0, maximum=64999)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """A netperf workload: ``streams`` parallel flows from ``client`` to ``server``."""

    name: str = _f(doc="unique workload name (the flows' group in the results)", pattern=NAME_PATTERN)
    type: str = _f(doc="netperf test", enum=WORKLOADS)
    client: str = _f(doc="name of the client container", pattern=NAME_PATTERN)
    server: str = _f(doc="name of the server container", pattern=NAME_PATTERN)
    port: int = _f(5001, "server port of the first stream (stream k listens on port + k)",
                   minimum=1, maximum=65535)
    message_size: int | None = _f(None, "bytes per send (stream) or per request and response (rr, crr); "
                                  "omitted: netperf's default for the type", minimum=1, maximum=MAX_TCP_MESSAGE_BYTES)
    streams: int = _f(1, "parallel flows of this workload", minimum=1, maximum=MAX_FLOWS)
    rate_bps: float = _f(0.0, "pacing of each stream's payload, bit/s; 0 = unpaced (stream types only)",
                         minimum=0, maximum=1e13)
    start_s: float = _f(0.0, "simulated time the flows start, seconds", minimum=0, maximum=3600)
    stop_s: float | None = _f(None, "simulated time the clients stop starting new writes, transactions "
                              "or connections, seconds; omitted: run to the end", minimum=0, maximum=3600)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.type.startswith("udp") and self.message_size is not None and self.message_size > MAX_DATAGRAM_BYTES:
            raise ConfigError("message_size", self.message_size, f"<= {MAX_DATAGRAM_BYTES} for {self.type} "
                              "(the largest UDP payload over IPv4)")
        if self.rate_bps > 0 and not self.type.endswith("stream"):
            raise ConfigError("rate_bps", self.rate_bps, f"0 for {self.type} (request/response runs one "
                              "transaction at a time)")
        if self.port + self.streams - 1 > 65535:
            raise ConfigError("streams", self.streams, f"<= {65536 - self.port} (ports port .. port + streams - 1 "
                              "must be <= 65535)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A whole experiment: cluster, network, containers and workloads (format version 1)."""

    version: int = _f(doc="format version", const=FORMAT_VERSION)
    name: str = _f(doc="scenario name; default output directory results/<name>", pattern=NAME_PATTERN)
    description: str = _f("", "free text")
    seed: int = _f(0, "random seed (same seed, same results, byte for byte)", minimum=0, maximum=2**63 - 1)
    duration_s: float = _f(0.05, "simulated seconds, warm-up included", exclusiveMinimum=0, maximum=3600)
    warmup_s: float = _f(0.01, "simulated seconds before the measurement window (< duration_s)",
                         minimum=0, maximum=3600)
    engine: str = _f("des", "simulation engine (only the packet-level discrete-event engine for now)",
                     enum=ENGINES)
    profile: str = _f("default", "cost profile: a built-in name or a YAML file (relative to the scenario file)")
    hosts: Hosts = _f(Hosts, "the hosts")  # noqa: RUF009
    fabric: Fabric = _f(Fabric, "the switch")  # noqa: RUF009
    network: Network = _f(doc="the network mode")  # noqa: RUF009
    containers: tuple[Container, ...] = _f(doc="containers and their hosts", minItems=1)
    workloads: tuple[Workload, ...] = _f(doc="netperf workloads between containers", minItems=1)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.warmup_s >= self.duration_s:
            raise ConfigError("warmup_s", self.warmup_s, f"a number >= 0 and < duration_s ({self.duration_s:g})")
        mode = self.network.mode
        if mode == "overlay" and self.hosts.count < 2:
            raise ConfigError("network.mode", mode, "a mode other than overlay on one host "
                              "(network.mode: overlay needs hosts.count >= 2)")
        if mode in MIN_MTU and self.hosts.mtu_bytes < MIN_MTU[mode]:
            raise ConfigError("hosts.mtu_bytes", self.hosts.mtu_bytes, f">= {MIN_MTU[mode]} for mode {mode} "
                              f"({MIN_MTU[mode] - MIN_IPV4_MTU} B of encapsulation + the 68 B IPv4 minimum)")
        where: dict[str, int] = {}
        for i, c in enumerate(self.containers):
            if c.name in where:
                raise ConfigError(f"containers[{i}].name", c.name, "a name not used by another container")
            if c.host >= self.hosts.count:
                raise ConfigError(f"containers[{i}].host", c.host, f"a host index 0 .. {self.hosts.count - 1} "
                                  f"(hosts.count = {self.hosts.count})")
            where[c.name] = c.host
        self._check_publish(where)
        self._check_workloads(where)

    def _check_publish(self, where: dict[str, int]) -> None:
        taken: dict[tuple[int, str, int], int] = {}
        for i, p in enumerate(self.network.publish):
            path = f"network.publish[{i}]"
            if p.container not in where:
                raise ConfigError(f"{path}.container", p.container, f"one of the containers: {', '.join(where)}")
            key = (where[p.container], p.proto, p.host_port)
            if key in taken:
                raise ConfigError(f"{path}.host_port", p.host_port, f"a {p.proto} port not already published on "
                                  f"host {key[0]} by network.publish[{taken[key]}] (Docker: port is already allocated)")
            taken[key] = i

    def _check_workloads(self, where: dict[str, int]) -> None:
        mode = self.network.mode
        names: set[str] = set()
        total = 0
        for i, w in enumerate(self.workloads):
            path = f"workloads[{i}]"
            if w.name in names:
                raise ConfigError(f"{path}.name", w.name, "a name not used by another workload")
            names.add(w.name)
            for role in ("client", "server"):
                name = getattr(w, role)
                if name not in where:
                    raise ConfigError(f"{path}.{role}", name, f"one of the containers: {', '.join(where)}")
            if mode == "container" and where[w.client] != where[w.server]:
                raise ConfigError(f"{path}.server", w.server, f"a container on host {where[w.client]} like the "
                                  "client (mode container shares a namespace; it cannot cross hosts)")
            if w.start_s >= self.duration_s:
                raise ConfigError(f"{path}.start_s", w.start_s, f"a number >= 0 and < duration_s ({self.duration_s:g})")
            if w.stop_s is not None and w.stop_s <= w.start_s:
                raise ConfigError(f"{path}.stop_s", w.stop_s, f"a number > start_s ({w.start_s:g})")
            total += w.streams
        if total > MAX_FLOWS:
            raise ConfigError("workloads", f"{total} streams in all", f"at most {MAX_FLOWS} streams in all")


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default value (fields with a default only)."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out
