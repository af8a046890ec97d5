"""Probes that record one packet's walk through a built network, attached from outside.

After desmod's ``probe.attach``: no component knows it is observed.  Once a mode is built,
:meth:`Probes.attach` replaces methods *on the instances* of the built objects (device
``xmit``/``receive``/``put``/``rcv``, ``Bridge.handle``, the namespaces' IP-layer entry points,
``RoutingTable.lookup``, ``NeighbourTable.lookup``/``queue``, ``Conntrack.track``, the
netfilter hooks, ``Link.enqueue`` and a few :class:`~perfsim.core.sim.Sim` methods) with
wrappers that record a :class:`Hop` when the packet is a traced one, then call the original.
:class:`~perfsim.core.cpu.Stage` has ``__slots__``, so its ``charge*`` methods are observed by
switching each stage object to a layout-identical subclass instead.  Nothing is scheduled
and neither packets nor components are changed: a probed run produces exactly the events of
an unprobed one.  :meth:`Probes.detach` undoes everything.

What a hop records
------------------
* ``t_s``: when the packet *reaches* the hop.  A softirq chain runs at one simulated instant
  and its CPU work is served afterwards (``Sim.after_work``), so the time at a hop is
  estimated as ``max(now, core.busy_until_s) + pkt.work_s``: the core serves FIFO, so the
  packet gets there once the core has done what it was given before plus the work
  accumulated on the packet so far.  A packet arriving from a wire is at ``now``.  Times
  are kept non-decreasing along one packet and its copies.
* ``cpu_s``: every ``Stage`` charge on the traced packet while the hop is the packet's
  current one, plus the ``nf_rule`` cost that netfilter adds without ``Stage.charge``.  Table
  lookups and netfilter hooks are *sub-steps*: when they return, charges go back to the hop
  that called them.
* ``bytes_in`` / ``bytes_out``: ``pkt.size_bytes`` when the hop starts and when the packet's
  next hop starts (+50 B across a VXLAN encapsulation).

Copies made by ``Sim.clone`` (bridge floods, VTEP head-end replication, frames split without
GRO) are followed: they inherit the traced status and the current hop of their original.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from perfsim.components.conntrack import Conntrack
from perfsim.components.link import Link
from perfsim.components.netdev import NetDevice
from perfsim.components.netfilter import Netfilter
from perfsim.core.addr import ip_str, mac_str
from perfsim.core.cpu import Stage
from perfsim.core.packet import PROTO_ICMP, PROTO_IPIP, PROTO_TCP, PROTO_UDP, FlowKey, Packet
from perfsim.core.sim import Sim

_PROTOS = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_IPIP: "ipip"}
_KINDS = {"VethEnd": "veth", "Nic": "nic", "Bridge": "bridge", "VxlanDevice": "vxlan"}
_HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
_NS_HOPS = {"ip_output": "ip output", "ip_rcv": "ip rcv", "_forward": "ip forward",
            "_deliver_local": "local deliver", "_loopback_deliver": "loopback xmit"}
Orig = Callable[..., Any]


@dataclass(eq=False)
class Hop:
    """One step of a traced packet (see the module docstring for times and CPU)."""

    seq: int
    pid: int
    t_s: float
    host: str
    namespace: str
    device: str
    what: str
    table: str = ""
    result: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    cpu_s: float = 0.0
    core: str = ""
    stages: dict[str, float] = field(default_factory=dict)


def flow_text(f: FlowKey) -> str:
    """``10.0.0.1:32768 -> 10.0.0.2:5001 udp``."""
    proto = _PROTOS.get(f.proto, str(f.proto))
    if f.proto in (PROTO_TCP, PROTO_UDP):
        return f"{ip_str(f.src_ip)}:{f.sport} -> {ip_str(f.dst_ip)}:{f.dport} {proto}"
    return f"{ip_str(f.src_ip)} -> {ip_str(f.dst_ip)} {proto}"


def device_kind(dev: Any) -> str:
    """``veth``, ``nic``, ``bridge``, ``vxlan`` (subclasses too); other classes by their
    lower-cased name (``IpipDevice`` -> ``ipip``)."""
    for cls in type(dev).__mro__:
        if cls.__name__ in _KINDS:
            return _KINDS[cls.__name__]
    name = type(dev).__name__
    return name.removesuffix("Device").removesuffix("End").lower() or "dev"


def _name(obj: Any, attr: str = "name") -> str:
    return "" if obj is None else str(getattr(obj, attr, ""))


class Probes:
    """Observe every hop of the next packet created that matches :meth:`arm`'s predicate.

    Parameters
    ----------
    sim: the run.
    hosts: the hosts whose stages and namespaces are observed; devices, links, conntrack
        and netfilter instances are found among the elements registered with ``sim``.
    """

    def __init__(self, sim: Sim, hosts: Iterable[Any]) -> None:
        self.sim = sim
        self.hosts = list(hosts)
        self.ids: set[int] = set()
        """Ids of the traced packets (the original and its copies)."""
        self.hops: list[Hop] = []
        self.t0_s: float | None = None
        """Creation time of the traced packet."""
        self.delivered_s: float | None = None
        """When the traced packet was delivered to the watched socket (its receive work done)."""
        self._cur: dict[int, Hop] = {}
        self._floor: dict[int, float] = {}
        self._charged: dict[int, float] = {}
        self._finish: dict[int, float] = {}
        self._ctx: list[Packet | None] = []
        self._match: Callable[[Packet], bool] | None = None
        self._first = ("", "", "")
        self._undo: list[tuple[Any, str, bool, Any]] = []
        self._swapped: list[tuple[Any, type]] = []

    # -- public -------------------------------------------------------------------------------
    def arm(self, match: Callable[[Packet], bool], host: str, namespace: str, what: str) -> None:
        """Trace the next packet created for which ``match(pkt)`` holds; its first hop is
        ``what`` (e.g. ``udp sendmsg``) in ``host``/``namespace``."""
        self._match = match
        self._first = (host, namespace, what)

    def watch_socket(self, sock: Any) -> None:
        """Count the traced packet as delivered when ``sock.deliver`` has done its work."""
        self._wrap(sock, "deliver", self._on_socket, sock)

    def stage_total_s(self) -> float:
        """CPU seconds charged so far to every stage of the observed hosts."""
        return float(sum(st.cpu_s for h in self.hosts for st in h.stages.values()))

    def attach(self) -> Probes:
        """Wrap the methods of every built object; returns ``self``."""
        sim = self.sim
        for method in ("new_packet", "clone", "after_work"):
            self._wrap(sim, method, getattr(self, f"_on_{method}"))
        self._wrap(sim, "drop", self._on_drop, "drop")
        self._wrap(sim, "filter", self._on_drop, "discard")
        self._swap_stages()
        nss = [ns for h in self.hosts for ns in list(h.namespaces.values())]
        for ns in nss:
            for method, what in _NS_HOPS.items():
                self._wrap(ns, method, self._on_ns, ns, method, what)
            self._wrap(ns, "_neigh_xmit", self._on_context)
            self._wrap(getattr(ns, "routes", None), "lookup", self._on_route, ns)
            neigh = getattr(ns, "neigh", None)
            self._wrap(neigh, "lookup", self._on_neigh, ns, neigh)
            self._wrap(neigh, "queue", self._on_neigh_queue, ns, neigh)
        nf_ns = {id(ns.nf): ns for ns in nss if getattr(ns, "nf", None) is not None}
        for el in list(sim.elements.values()):
            if isinstance(el, NetDevice):
                self._attach_device(el)
            elif isinstance(el, Link):
                # Link.put is Link.enqueue: probe both entries (each calls the original once)
                self._wrap(el, "enqueue", self._on_link, el, self._link_owner(el))
                self._wrap(el, "put", self._on_link, el, self._link_owner(el))
            elif isinstance(el, Conntrack):
                ns = next((n for n in nf_ns.values() if n.nf.conntrack is el), None)
                self._wrap(el, "track", self._on_track, el, ns)
            elif isinstance(el, Netfilter):
                for h in _HOOKS:
                    self._wrap(el, h, self._on_hook, el, nf_ns.get(id(el)), h.upper())
        return self

    def detach(self) -> None:
        """Restore every wrapped method and stage class."""
        for obj, name, had, prev in reversed(self._undo):
            if had:
                setattr(obj, name, prev)
            else:
                delattr(obj, name)
        for st, cls in self._swapped:
            st.__class__ = cls
        self._undo.clear()
        self._swapped.clear()

    # -- recording ----------------------------------------------------------------------------
    def _open(self, pkt: Packet, host: str, ns: str, dev: str, what: str, table: str = "",
              result: str = "", on_cpu: bool = True) -> Hop:
        pid = pkt.id
        prev = self._cur.get(pid)
        now = self.sim.now
        t = now
        core = pkt.core
        if on_cpu and core is not None and not (prev is not None and prev.what == "wire"):
            t = max(now, core.busy_until_s) + pkt.work_s
        t = max(t, self._floor.get(pid, 0.0))
        self._floor[pid] = t
        if prev is not None and prev.pid == pid:
            prev.bytes_out = pkt.size_bytes
        size = pkt.size_bytes
        hop = Hop(len(self.hops), pid, t, host, ns, dev, what, table, result, size, size)
        self.hops.append(hop)
        self._cur[pid] = hop
        return hop

    def _sub(self, pkt: Packet, host: str, ns: str, dev: str, what: str, table: str) -> tuple[Hop, Hop | None]:
        """Open a sub-step; :meth:`_resume` gives the charges back to the caller's hop."""
        parent = self._cur.get(pkt.id)
        return self._open(pkt, host, ns, dev, what, table), parent

    def _resume(self, pkt: Packet, hop: Hop, parent: Hop | None) -> None:
        hop.bytes_out = pkt.size_bytes
        if parent is not None and self._cur.get(pkt.id) is hop:
            self._cur[pkt.id] = parent

    def _charge(self, stage: str, pkt: Packet, c: float, hop: Hop | None = None) -> None:
        hop = self._cur.get(pkt.id) if hop is None else hop
        if hop is None:
            return
        hop.cpu_s += c
        hop.stages[stage] = hop.stages.get(stage, 0.0) + c
        if not hop.core and pkt.core is not None:
            hop.core = str(pkt.core.name)
        self._charged[pkt.id] = self._charged.get(pkt.id, 0.0) + c

    def _traced_ctx(self) -> Packet | None:
        return self._ctx[-1] if self._ctx else None

    def _wrap(self, obj: Any, name: str, probe: Callable[..., Any], *bound: Any) -> None:
        """``obj.name = probe(original, *bound, *args)`` on the instance (if it has a dict)."""
        orig = getattr(obj, name, None)
        d = getattr(obj, "__dict__", None)
        if orig is None or not callable(orig) or d is None:
            return
        self._undo.append((obj, name, name in d, d.get(name)))
        setattr(obj, name, partial(probe, orig, *bound))

    def _swap_stages(self) -> None:
        classes: dict[type, type] = {}
        for host in self.hosts:
            for st in host.stages.values():
                base = type(st)
                if issubclass(base, Stage):
                    if base not in classes:
                        classes[base] = self._stage_class(base)
                    st.__class__ = classes[base]
                    self._swapped.append((st, base))

    def _stage_class(self, base: type) -> type:
        """A subclass of ``base`` with no new slots whose ``charge*`` also report to us."""
        ids, rec = self.ids, self

        def observed(orig: Orig) -> Orig:
            def method(st: Stage, pkt: Packet, *a: Any) -> None:
                if pkt.id not in ids:
                    orig(st, pkt, *a)
                    return
                w = pkt.work_s
                orig(st, pkt, *a)
                rec._charge(st.name, pkt, pkt.work_s - w)

            return method

        ns = {m: observed(getattr(base, m)) for m in ("charge", "charge_frames", "charge_bytes")}
        return type(f"Probed{base.__name__}", (base,), {"__slots__": (), **ns})

    # -- the run ------------------------------------------------------------------------------
    def _on_new_packet(self, orig: Orig, *a: Any, **kw: Any) -> Packet:
        pkt: Packet = orig(*a, **kw)
        if self._match is not None and self._match(pkt):
            self._match = None
            self.ids.add(pkt.id)
            self.t0_s = pkt.t_created
            host, ns, what = self._first
            self._open(pkt, host, ns, "", what, "", flow_text(pkt.flow))
        return pkt

    def _on_clone(self, orig: Orig, pkt: Packet) -> Packet:
        copy: Packet = orig(pkt)
        if pkt.id in self.ids:
            self.ids.add(copy.id)
            if pkt.id in self._cur:
                self._cur[copy.id] = self._cur[pkt.id]
            self._floor[copy.id] = self._floor.get(pkt.id, 0.0)
        return copy

    def _on_after_work(self, orig: Orig, pkt: Packet, fn: Callable[[Packet], None]) -> float:
        finish: float = orig(pkt, fn)
        if pkt.id in self.ids:
            self._finish[pkt.id] = finish
        return finish

    def _on_drop(self, orig: Orig, verb: str, pkt: Packet, site: str, reason: str) -> None:
        if pkt.id in self.ids:
            host, ns = "", ""
            for h in self.hosts:
                if site in h.namespaces:
                    host, ns = h.name, site
            el = self.sim.elements.get(site)
            if el is not None:
                host, ns = _name(getattr(el, "host", None)), _name(getattr(el, "ns", None))
            self._open(pkt, host, ns, site, verb, "", reason)
        orig(pkt, site, reason)

    def _on_socket(self, orig: Orig, sock: Any, pkt: Packet) -> None:
        if pkt.id not in self.ids:
            orig(pkt)
            return
        ns, name = sock.ns, _name(sock) or type(sock).__name__
        host = ns.host.name
        self._open(pkt, host, ns.name, "", f"{_PROTOS.get(pkt.flow.proto, 'l4')} rcv", name, "socket receive")
        self._finish.pop(pkt.id, None)
        orig(pkt)
        done = self._finish.get(pkt.id, self.sim.now)
        hop = self._open(pkt, host, ns.name, "", "delivered", name, f"delivered to {name}")
        hop.t_s = self._floor[pkt.id] = max(hop.t_s, done)
        self.delivered_s = hop.t_s

    def _on_context(self, orig: Orig, pkt: Packet, *a: Any) -> Any:
        self._ctx.append(pkt if pkt.id in self.ids else None)
        try:
            return orig(pkt, *a)
        finally:
            self._ctx.pop()

    # -- namespaces and their tables ----------------------------------------------------------
    def _on_ns(self, orig: Orig, ns: Any, method: str, what: str, pkt: Packet, *a: Any) -> None:
        if pkt.id in self.ids:
            result = flow_text(pkt.flow)
            dev = "lo" if method == "_loopback_deliver" else _name(a[0] if a else None)
            if method == "_deliver_local":
                sock = ns.sockets.get((pkt.flow.proto, pkt.flow.dport))
                dev, result = "", f"socket {_name(sock) or type(sock).__name__}" if sock else "no socket"
            self._open(pkt, ns.host.name, ns.name, dev, what, "", result)
        self._on_context(orig, pkt, *a)

    def _on_route(self, orig: Orig, ns: Any, dst_ip: int) -> Any:
        pkt = self._traced_ctx()
        if pkt is None:
            return orig(dst_ip)
        hop, parent = self._sub(pkt, ns.host.name, ns.name, "", "route lookup", f"{ns.name}.routes")
        route = orig(dst_ip)
        if route is None:
            hop.result = f"no route to {ip_str(dst_ip)}"
        else:
            via = "" if route.gateway is None else f" via {ip_str(route.gateway)}"
            hop.device = _name(route.dev)
            dev = _name(route.dev, "ifname") or hop.device
            hop.result = f"route {ip_str(route.prefix)}/{route.plen}{via} dev {dev}"
        self._resume(pkt, hop, parent)
        return route

    def _on_neigh(self, orig: Orig, ns: Any, neigh: Any, ip: int) -> int | None:
        pkt = self._traced_ctx()
        if pkt is None:
            return orig(ip)  # type: ignore[no-any-return]
        hop, parent = self._sub(pkt, ns.host.name, ns.name, "", "neighbour lookup", _name(neigh))
        mac = orig(ip)
        if mac is None:
            hop.result = f"neighbour {ip_str(ip)} miss"
        else:
            state = neigh.state(ip)
            hop.result = f"neighbour {ip_str(ip)} -> {mac_str(mac)} ({getattr(state, 'name', state)})"
        self._resume(pkt, hop, parent)
        return mac  # type: ignore[no-any-return]

    def _on_neigh_queue(self, orig: Orig, ns: Any, neigh: Any, ip: int, pkt: Packet, dev: Any) -> bool:
        if pkt.id not in self.ids:
            return bool(orig(ip, pkt, dev))
        hop, parent = self._sub(pkt, ns.host.name, ns.name, _name(dev), "neighbour queue", _name(neigh))
        ok = bool(orig(ip, pkt, dev))
        hop.result = f"ARP for {ip_str(ip)}: " + ("packet queued" if ok else "dropped")
        self._resume(pkt, hop, parent)
        return ok

    def _on_track(self, orig: Orig, ct: Any, ns: Any, pkt: Packet) -> Any:
        cur = pkt.ct
        if pkt.id not in self.ids or (cur is not None and cur.table is ct):
            return orig(pkt)
        host = _name(getattr(ct, "host", None)) or _name(getattr(ns, "host", None))
        hop, parent = self._sub(pkt, host, _name(ns), "", "conntrack", _name(ct))
        inserted = ct.inserted
        ref = orig(pkt)
        if ref is None:
            hop.result = "conntrack: dropped (table full or clash)"
        else:
            e = ref.entry
            state = "ESTABLISHED" if ref.is_reply or e.seen_reply else "NEW"
            new = "new entry, " if ct.inserted > inserted else ""
            way = "reply" if ref.is_reply else "original"
            hop.result = f"conntrack {state} ({new}{e.state_name}, {way} direction)"
        self._resume(pkt, hop, parent)
        return ref

    def _on_hook(self, orig: Orig, nf: Any, ns: Any, chain: str, pkt: Packet, *devs: Any) -> bool:
        if pkt.id not in self.ids:
            return bool(orig(pkt, *devs))
        dev = next((d for d in reversed(devs) if d is not None), None)
        host = _name(getattr(nf, "host", None))
        hop, parent = self._sub(pkt, host, _name(ns), _name(dev) or "lo", f"iptables {chain}", _name(nf))
        chains = getattr(nf, "chains", {}).values()
        rules = sum(c.rules_evaluated for c in chains)
        flow, w, charged = pkt.flow, pkt.work_s, self._charged.get(pkt.id, 0.0)
        ok = bool(orig(pkt, *devs))
        # The rule walk (nf_rule) is charged without Stage.charge: it is the work the hook
        # added that no stage probe saw.
        rest = (pkt.work_s - w) - (self._charged.get(pkt.id, 0.0) - charged)
        if rest > 1e-15:
            self._charge("nf_rule", pkt, rest, hop)
        hop.result = _nf_result(ok, flow, pkt.flow, sum(c.rules_evaluated for c in chains) - rules)
        self._resume(pkt, hop, parent)
        return ok

    # -- devices and links --------------------------------------------------------------------
    def _attach_device(self, dev: NetDevice) -> None:
        kind = device_kind(dev)
        self._wrap(dev, "xmit", self._on_xmit, dev, kind)
        self._wrap(dev, "receive", self._on_receive, dev, kind)
        if type(dev).put is not NetDevice.put:  # a device fed by a wire (NIC): "rx" starts here
            self._wrap(dev, "put", self._on_put, dev, kind)
        self._wrap(dev, "rcv", self._on_rcv, dev, kind)
        if hasattr(dev, "handle"):
            self._wrap(dev, "handle", self._on_handle, dev)
            self._wrap(dev, "_lookup", self._on_fdb, dev)

    def _on_xmit(self, orig: Orig, dev: Any, kind: str, pkt: Packet) -> None:
        if pkt.id in self.ids:
            what = "vxlan encap" if kind == "vxlan" else f"{kind} xmit"
            self._open(pkt, dev.host.name, _name(dev.ns), dev.name, what, *_xmit_detail(dev, kind, pkt))
        self._on_context(orig, pkt)

    def _on_receive(self, orig: Orig, dev: Any, kind: str, pkt: Packet) -> None:
        if pkt.id in self.ids:
            up = f"-> bridge {dev.master.name}" if dev.master is not None else f"-> {_name(dev.ns)} IP stack"
            cur = self._cur.get(pkt.id)
            if cur is not None and cur.device == dev.name and cur.what == f"{kind} rx":
                cur.result = f"RSS -> {_name(pkt.core)}, {up}"  # continues the NIC's put
            else:
                self._open(pkt, dev.host.name, _name(dev.ns), dev.name, f"{kind} rx", "", up)
        orig(pkt)

    def _on_put(self, orig: Orig, dev: Any, kind: str, pkt: Packet) -> None:
        if pkt.id in self.ids:
            self._open(pkt, dev.host.name, _name(dev.ns), dev.name, f"{kind} rx")
        orig(pkt)

    def _on_rcv(self, orig: Orig, dev: Any, kind: str, pkt: Packet) -> None:
        if pkt.id in self.ids:
            detail = f"from {ip_str(pkt.flow.src_ip)}"
            if kind == "vxlan":
                detail += f", VNI {pkt.outer_tag}"
            self._open(pkt, dev.host.name, _name(dev.ns), dev.name, f"{kind} decap", "", detail)
        orig(pkt)

    def _on_handle(self, orig: Orig, br: Any, pkt: Packet, in_port: Any) -> None:
        if pkt.id in self.ids:
            dst = pkt.dst_mac
            result = ("to the bridge's own MAC -> local stack" if dst == br.mac
                      else "broadcast/multicast -> flood" if (dst >> 40) & 1 else "")
            self._open(pkt, br.host.name, _name(br.ns), br.name, "bridge forward", f"{br.name}.fdb", result)
        self._on_context(orig, pkt, in_port)

    def _on_fdb(self, orig: Orig, br: Any, mac: int, *a: Any) -> Any:
        port = orig(mac, *a)
        pkt = self._traced_ctx()
        hop = self._cur.get(pkt.id) if pkt is not None else None
        if hop is not None and hop.device == br.name:
            hop.table = f"{br.name}.fdb"
            hop.result = f"FDB hit -> port {port.name}" if port is not None else f"FDB miss for {mac_str(mac)} -> flood"
        return port

    def _link_owner(self, link: Any) -> Any:
        return next((d for d in self.sim.elements.values() if getattr(d, "tx_link", None) is link), None)

    def _on_link(self, orig: Orig, link: Any, owner: Any, pkt: Packet) -> float:
        if pkt.id not in self.ids:
            return float(orig(pkt))
        host = _name(getattr(owner, "host", None)) or "fabric"
        hop = self._open(pkt, host, _name(getattr(owner, "ns", None)), link.name, "wire", on_cpu=False)
        now = self.sim.now
        departure = float(orig(pkt))
        if departure < 0.0:
            hop.result = "dropped at the transmit queue"
        else:
            tx = (pkt.size_bytes + pkt.segs * link.overhead_bytes) * 8.0 / link.rate_bps
            wait = max(0.0, departure - now - tx)
            hop.result = (f"serialize {tx * 1e6:.3f} us (queued {wait * 1e6:.3f} us), "
                          f"propagate {link.delay_s * 1e6:.3f} us")
        return departure


def _xmit_detail(dev: Any, kind: str, pkt: Packet) -> tuple[str, str]:
    """(table, result) of a device transmit, read before the device acts."""
    if kind == "veth" and getattr(dev, "peer", None) is not None:
        return "", f"-> peer {dev.peer.name}"
    if kind == "nic" and getattr(dev, "tx_link", None) is not None:
        return "", f"-> {dev.tx_link.name}"
    fdb = getattr(dev, "fdb", None)
    if kind == "vxlan" and isinstance(fdb, dict):
        remote = fdb.get(pkt.dst_mac)
        if remote is None:
            return f"{dev.name}.fdb", f"FDB miss for {mac_str(pkt.dst_mac)} -> flood remotes"
        return f"{dev.name}.fdb", f"VNI {getattr(dev, 'vni', '?')} -> VTEP {ip_str(remote)}"
    return "", ""


def _nf_result(ok: bool, before: FlowKey, after: FlowKey, rules: int) -> str:
    """``ACCEPT (2 rules)``, ``DNAT 10.0.0.2:8080 -> 172.17.0.2:80 (1 rule)``, ``DROP (3 rules)``."""
    parts = []
    if after.dst_ip != before.dst_ip or after.dport != before.dport:
        parts.append(f"DNAT {ip_str(before.dst_ip)}:{before.dport} -> {ip_str(after.dst_ip)}:{after.dport}")
    if after.src_ip != before.src_ip or after.sport != before.sport:
        parts.append(f"SNAT {ip_str(before.src_ip)}:{before.sport} -> {ip_str(after.src_ip)}:{after.sport}")
    text = "; ".join(parts) if parts and ok else ("ACCEPT" if ok else "DROP")
    return f"{text} ({rules} rule{'' if rules == 1 else 's'})"
