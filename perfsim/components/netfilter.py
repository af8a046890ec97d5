"""iptables (filter and nat tables) with conntrack-based NAT, one instance per namespace.

Hooks and order (Linux hook priorities)
---------------------------------------
============  ==========================================================================
PREROUTING    conntrack in (-200), nat PREROUTING: DNAT / undo SNAT of replies (-100)
INPUT         filter INPUT (0), source manip: undo DNAT of replies (100)
FORWARD       filter FORWARD (0)
OUTPUT        conntrack in (-200), nat OUTPUT: DNAT (-100), filter OUTPUT (0)
POSTROUTING   nat POSTROUTING: SNAT / MASQUERADE / undo DNAT of replies (100)
============  ==========================================================================

Conntrack is entered at the first hook a packet meets in the namespace (PREROUTING for a
received packet, OUTPUT for a locally generated one); later hooks reuse ``pkt.ct``.

NAT as Linux does it (``nf_nat_inet_fn``): the nat table is walked only for a packet in state
NEW, once per binding kind (destination at PREROUTING/OUTPUT, source at POSTROUTING/INPUT);
the decision is stored in the entry's reply tuple (a rule that does not match leaves a null
binding).  Every packet of the connection is then rewritten from the entry alone: the
original direction gets the translated addresses, the reply direction the reverse
translation — its destination at PREROUTING (undo SNAT, before routing), its source at
POSTROUTING/INPUT (undo DNAT).  SNAT and MASQUERADE keep the source port unless the
resulting reply tuple is taken, then pick the next free port of 32768-60999 (a cursor, so the
choice is deterministic).  MASQUERADE uses the out device's first address.

Cost model
----------
Each hook call charges ``nf_hook`` once and ``nf_rule`` once per rule evaluated: chains are
walked linearly until a terminal target (ACCEPT, DROP, a NAT target; RETURN ends a built-in
chain, so the policy applies), so N non-matching rules cost N × ``nf_rule``.  Conntrack charges
``conntrack_lookup`` or ``conntrack_new``; each header rewrite charges ``nat_rewrite``.

User-defined chains are flattened into the built-in ones (Docker's DOCKER, DOCKER-USER,
DOCKER-ISOLATION-*), but a rule can be marked as reached through a jump (``append``/``insert``
with ``jump=``, the matches of the ``-j`` rule, e.g. ``-o docker0`` for ``-o docker0 -j
DOCKER``): a packet the jump does not match skips the whole run of rules behind it for one
``nf_rule`` (the ``-j`` rule itself), as the kernel's ``ipt_do_table`` never enters the chain;
a packet it matches walks them (the jump itself costs nothing, nor does its RETURN).  So a
rule set that grows behind a jump — one DNAT and one ACCEPT per published port — costs only
the packets that enter it: new connections to the host's published ports, not the replies
or other traffic of its containers.

Simplifications: no raw/mangle tables, no RELATED (expectation) or INVALID states, DNAT on
bridged frames does not re-route them.  A device ``None`` stands for ``lo``.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perfsim.components.conntrack import Conntrack, CtEntry, CtRef
from perfsim.core.packet import PROTO_TCP, PROTO_UDP, FlowKey, Packet
from perfsim.errors import ConfigError, check_number

if TYPE_CHECKING:
    from perfsim.components.host import Host
    from perfsim.core.cpu import Stage

TARGETS = ("ACCEPT", "DROP", "RETURN", "DNAT", "SNAT", "MASQUERADE")
_ACCEPT, _DROP, _RETURN, _DNAT, _SNAT, _MASQ = range(6)
CHAINS = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "OUTPUT", "POSTROUTING")}
CTSTATES = {"NEW": 1, "ESTABLISHED": 2, "RELATED": 4}
_NEW, _ESTABLISHED = 1, 2
NAT_PORT_MIN, NAT_PORT_MAX = 32768, 60999
_NO_IN = ("OUTPUT", "POSTROUTING")  # iptables: "-i not valid in OUTPUT/POSTROUTING"
_NO_OUT = ("PREROUTING", "INPUT")


@dataclass(frozen=True, slots=True)
class Rule:
    """One iptables rule: optional matches (all must hold) and a target.

    ``src``/``dst`` are ``(network, prefix_len)``; ``in_if``/``out_if`` are interface names,
    ``"!eth0"`` negates and a trailing ``+`` matches a prefix (``veth+``); ``ctstate`` is a set
    of ``NEW``/``ESTABLISHED``/``RELATED``.  ``to_ip``/``to_port`` belong to DNAT (``to_port``
    ``None`` keeps the port) and ``to_ip`` to SNAT.
    """

    target: str = "ACCEPT"
    proto: int | None = None
    src: tuple[int, int] | None = None
    dst: tuple[int, int] | None = None
    dport: int | None = None
    in_if: str | None = None
    out_if: str | None = None
    ctstate: AbstractSet[str] | None = None
    to_ip: int | None = None
    to_port: int | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError("rule.target", self.target, f"one of {', '.join(TARGETS)}")
        if self.proto is not None:
            check_number("rule.proto", self.proto, low=0, high=255, integer=True)
        for field in ("src", "dst"):
            pfx = getattr(self, field)
            if pfx is None:
                continue
            if not isinstance(pfx, tuple) or len(pfx) != 2:
                raise ConfigError(f"rule.{field}", pfx, "a (network, prefix_len) tuple")
            check_number(f"rule.{field}", pfx[0], low=0, high=2**32 - 1, integer=True)
            check_number(f"rule.{field}.plen", pfx[1], low=0, high=32, integer=True)
        if self.dport is not None:
            check_number("rule.dport", self.dport, low=0, high=65535, integer=True)
            if self.proto not in (PROTO_TCP, PROTO_UDP):
                raise ConfigError("rule.proto", self.proto, "6 (tcp) or 17 (udp) with a dport")
        for field in ("in_if", "out_if"):
            name = getattr(self, field)
            if name is None:
                continue
            bare = name[1:] if isinstance(name, str) and name.startswith("!") else name
            if not isinstance(bare, str) or not 1 <= len(bare) <= 15:
                raise ConfigError(f"rule.{field}", name, "an interface name of 1-15 characters")
        if self.ctstate is not None:
            states = self.ctstate
            if isinstance(states, str) or not isinstance(states, Iterable):
                raise ConfigError("rule.ctstate", states, f"a set of {sorted(CTSTATES)}")
            states = frozenset(states)
            if not states or not states <= CTSTATES.keys():
                allowed = f"a non-empty set of {sorted(CTSTATES)}"
                raise ConfigError("rule.ctstate", self.ctstate, allowed)
            object.__setattr__(self, "ctstate", states)
        if self.target in ("DNAT", "SNAT"):
            check_number("rule.to_ip", self.to_ip, low=0, high=2**32 - 1, integer=True)
        elif self.to_ip is not None:
            raise ConfigError("rule.to_ip", self.to_ip, "None unless the target is DNAT or SNAT")
        if self.to_port is not None:
            if self.target != "DNAT":
                raise ConfigError("rule.to_port", self.to_port, "None unless the target is DNAT")
            check_number("rule.to_port", self.to_port, low=1, high=65535, integer=True)
            if self.proto not in (PROTO_TCP, PROTO_UDP):
                raise ConfigError("rule.proto", self.proto, "6 (tcp) or 17 (udp) with a to_port")


class _Compiled:
    """A rule flattened for the per-packet walk (-1 / 0 mean "any")."""

    __slots__ = (
        "ctbits",
        "dport",
        "dst_mask",
        "dst_net",
        "guard",
        "in_name",
        "in_neg",
        "in_pfx",
        "out_name",
        "out_neg",
        "out_pfx",
        "proto",
        "rule",
        "src_mask",
        "src_net",
        "target",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.target = TARGETS.index(rule.target)
        self.proto = -1 if rule.proto is None else rule.proto
        self.src_net, self.src_mask = _net_mask(rule.src)
        self.dst_net, self.dst_mask = _net_mask(rule.dst)
        self.dport = -1 if rule.dport is None else rule.dport
        self.in_name, self.in_neg, self.in_pfx = _iface(rule.in_if)
        self.out_name, self.out_neg, self.out_pfx = _iface(rule.out_if)
        self.ctbits = sum(CTSTATES[s] for s in rule.ctstate) if rule.ctstate else 0
        self.guard: _Compiled | None = None
        """The jump this rule is reached through (``None``: the built-in chain itself)."""

    def matches(self, flow: FlowKey, ctbits: int, in_name: str | None, out_name: str | None) -> bool:
        """Whether every match of the rule holds for a packet of ``flow`` (the walk inlines it)."""
        if self.proto >= 0 and self.proto != flow.proto:
            return False
        if self.src_mask and flow.src_ip & self.src_mask != self.src_net:
            return False
        if self.dst_mask and flow.dst_ip & self.dst_mask != self.dst_net:
            return False
        if self.dport >= 0 and self.dport != flow.dport:
            return False
        if self.ctbits and not self.ctbits & ctbits:
            return False
        if self.in_name is not None and not _if_match(in_name or "lo", self.in_name, self.in_neg, self.in_pfx):
            return False
        return self.out_name is None or _if_match(out_name or "lo", self.out_name, self.out_neg, self.out_pfx)


def _net_mask(pfx: tuple[int, int] | None) -> tuple[int, int]:
    if pfx is None or pfx[1] == 0:
        return 0, 0
    mask = (0xFFFFFFFF << (32 - pfx[1])) & 0xFFFFFFFF
    return pfx[0] & mask, mask  # iptables masks host bits away too


def _iface(spec: str | None) -> tuple[str | None, bool, bool]:
    if spec is None:
        return None, False, False
    neg = spec.startswith("!")
    name = spec[1:] if neg else spec
    if name.endswith("+"):
        return name[:-1], neg, True
    return name, neg, False


def _if_match(name: str, want: str, neg: bool, pfx: bool) -> bool:
    hit = name.startswith(want) if pfx else name == want
    return hit != neg


class Chain:
    """A built-in chain: its rules, policy and counters (``iptables -L -v``)."""

    __slots__ = (
        "compiled",
        "drops",
        "guards",
        "name",
        "packets",
        "policy_drop",
        "rules",
        "rules_evaluated",
        "table",
    )

    def __init__(self, table: str, name: str) -> None:
        self.table = table
        self.name = name
        self.rules: list[Rule] = []
        self.compiled: list[_Compiled] = []
        self.guards: dict[Rule, _Compiled] = {}
        self.policy_drop = False
        self.packets = 0
        self.rules_evaluated = 0
        self.drops = 0


class Netfilter:
    """iptables + NAT of one namespace, over its :class:`Conntrack` (``None``: no conntrack).

    Every hook returns ``True`` to let the packet go on, or ``False`` when it dropped it
    (counted with ``sim.drop``: ``iptables_drop`` for a DROP rule, ``iptables_policy`` for a
    DROP policy, ``nat_clash``/``nat_no_port``/``masquerade_no_address`` for NAT failures, and
    ``conntrack_full`` at the conntrack table's name).
    """

    def __init__(self, host: Host, name: str, conntrack: Conntrack | None) -> None:
        self.sim = host.sim
        self.host = host
        self.name = name
        self.conntrack = conntrack
        if conntrack is not None:
            conntrack.attach(host)
        self.chains: dict[tuple[str, str], Chain] = {
            (t, c): Chain(t, c) for t, cs in CHAINS.items() for c in cs
        }
        self._hook: Stage = host.stage("nf_hook")
        self._rule: Stage = host.stage("nf_rule")
        self._nat: Stage = host.stage("nat_rewrite")
        self._port_cursor = NAT_PORT_MIN
        self.nat_rewrites = 0
        self.nat_bindings = 0
        self.sim.register(name, self)

    # -- configuration --------------------------------------------------------------------
    def chain(self, table: str, chain: str) -> Chain:
        """The chain ``table``/``chain``; ConfigError names a bad table or chain."""
        if table not in CHAINS:
            raise ConfigError(f"{self.name}.table", table, "filter or nat")
        if chain not in CHAINS[table]:
            allowed = f"one of {', '.join(CHAINS[table])}"
            raise ConfigError(f"{self.name}.{table}.chain", chain, allowed)
        return self.chains[(table, chain)]

    def append(self, table: str, chain: str, rule: Rule, jump: Rule | None = None) -> None:
        """``iptables -t TABLE -A CHAIN``: add ``rule`` at the end.  ``jump``: the rule sits in a
        user chain reached by a ``-j`` rule with these matches (its target is ignored)."""
        c = self._check(table, chain, rule)
        c.rules.append(rule)
        c.compiled.append(self._compiled(table, chain, c, rule, jump))

    def insert(self, table: str, chain: str, rule: Rule, index: int = 0, jump: Rule | None = None) -> None:
        """``iptables -t TABLE -I CHAIN``: add ``rule`` before position ``index`` (0 = first);
        ``jump`` as in :meth:`append`."""
        c = self._check(table, chain, rule)
        where = f"{self.name}.{table}.{chain}.index"
        check_number(where, index, low=0, high=len(c.rules), integer=True)
        c.rules.insert(index, rule)
        c.compiled.insert(index, self._compiled(table, chain, c, rule, jump))

    def _compiled(self, table: str, chain: str, c: Chain, rule: Rule, jump: Rule | None) -> _Compiled:
        comp = _Compiled(rule)
        if jump is not None:
            self._check(table, chain, jump)
            guard = c.guards.get(jump)
            if guard is None:
                guard = c.guards[jump] = _Compiled(jump)
            comp.guard = guard  # one object per jump: the walk skips a run of them at once
        return comp

    def set_policy(self, table: str, chain: str, policy: str) -> None:
        """``iptables -P CHAIN ACCEPT|DROP`` (the verdict when no rule decides)."""
        c = self.chain(table, chain)
        if policy not in ("ACCEPT", "DROP"):
            raise ConfigError(f"{self.name}.{table}.{chain}.policy", policy, "ACCEPT or DROP")
        c.policy_drop = policy == "DROP"

    def rule_count(self, table: str, chain: str) -> int:
        return len(self.chain(table, chain).rules)

    def _check(self, table: str, chain: str, rule: Rule) -> Chain:
        c = self.chain(table, chain)
        where = f"{self.name}.{table}.{chain}"
        if not isinstance(rule, Rule):
            raise ConfigError(f"{where}.rule", rule, "a netfilter.Rule")
        t = rule.target
        if t == "DNAT" and (table, chain) not in (("nat", "PREROUTING"), ("nat", "OUTPUT")):
            raise ConfigError(f"{where}.target", t, "DNAT only in nat PREROUTING or OUTPUT")
        if t in ("SNAT", "MASQUERADE") and (table, chain) != ("nat", "POSTROUTING"):
            raise ConfigError(f"{where}.target", t, f"{t} only in nat POSTROUTING")
        if rule.in_if is not None and chain in _NO_IN:
            raise ConfigError(f"{where}.in_if", rule.in_if, f"None in {chain}")
        if rule.out_if is not None and chain in _NO_OUT:
            raise ConfigError(f"{where}.out_if", rule.out_if, f"None in {chain}")
        if table == "nat" and self.conntrack is None:
            raise ConfigError(f"{self.name}.conntrack", None, "a Conntrack table (nat needs it)")
        return c

    # -- hooks ----------------------------------------------------------------------------
    def prerouting(self, pkt: Packet, in_dev: Any) -> bool:
        """NF_INET_PRE_ROUTING: conntrack, then DNAT (NEW) or the stored translation."""
        self._hook.charge(pkt)
        ref = self._enter(pkt)
        if ref is None:
            return self.conntrack is None
        return self._dst_nat(pkt, ref, "PREROUTING", _ifname(in_dev), None)

    def input(self, pkt: Packet, in_dev: Any) -> bool:
        """NF_INET_LOCAL_IN: filter INPUT, then the source translation of replies."""
        self._hook.charge(pkt)
        ref = self._enter(pkt)
        if ref is None and self.conntrack is not None:
            return False
        if not self._filter(pkt, self.chains[("filter", "INPUT")], ref, _ifname(in_dev), None):
            return False
        if ref is not None:
            e = ref.entry
            if not e.snat_init and not ref.is_reply and not e.seen_reply:
                e.snat_init = True  # null source binding (no nat INPUT chain modelled)
            self._src_manip(pkt, ref)
        return True

    def forward(self, pkt: Packet, in_dev: Any, out_dev: Any) -> bool:
        """NF_INET_FORWARD: filter FORWARD."""
        self._hook.charge(pkt)
        ref = self._enter(pkt)
        if ref is None and self.conntrack is not None:
            return False
        chain = self.chains[("filter", "FORWARD")]
        return self._filter(pkt, chain, ref, _ifname(in_dev), _ifname(out_dev))

    def output(self, pkt: Packet, out_dev: Any) -> bool:
        """NF_INET_LOCAL_OUT: conntrack, DNAT (NEW) or the stored translation, filter OUTPUT."""
        self._hook.charge(pkt)
        ref = self._enter(pkt)
        out_name = _ifname(out_dev)
        if ref is None:
            if self.conntrack is not None:
                return False
        elif not self._dst_nat(pkt, ref, "OUTPUT", None, out_name):
            return False
        return self._filter(pkt, self.chains[("filter", "OUTPUT")], ref, None, out_name)

    def postrouting(self, pkt: Packet, out_dev: Any) -> bool:
        """NF_INET_POST_ROUTING: SNAT/MASQUERADE (NEW) or the stored source translation."""
        self._hook.charge(pkt)
        ref = self._enter(pkt)
        if ref is None:
            return self.conntrack is None
        e = ref.entry
        if not e.snat_init and not ref.is_reply and not e.seen_reply:
            e.snat_init = True
            chain = self.chains[("nat", "POSTROUTING")]
            hit = self._walk(pkt, chain, _NEW, None, _ifname(out_dev))
            if hit is not None and hit.target != _ACCEPT:
                if hit.target == _DROP:
                    return self._drop(pkt, chain, "iptables_drop")
                if not self._bind_src(pkt, e, hit, out_dev):
                    return False
        self._src_manip(pkt, ref)
        return True

    def bridge_hook(self, pkt: Packet, in_port: Any, out_port: Any) -> bool:
        """``br_netfilter`` for a bridged IPv4 frame: PREROUTING, FORWARD, POSTROUTING.

        iptables sees the bridge device as both in and out interface (``-i docker0 -o
        docker0``), as Linux does; use it as a bridge's ``nf_hook``.
        """
        in_dev = getattr(in_port, "master", None) or in_port
        out_dev = getattr(out_port, "master", None) or out_port
        return (
            self.prerouting(pkt, in_dev)
            and self.forward(pkt, in_dev, out_dev)
            and self.postrouting(pkt, out_dev)
        )

    # -- internals ------------------------------------------------------------------------
    def _enter(self, pkt: Packet) -> CtRef | None:
        ct = self.conntrack
        if ct is None:
            return None
        ref: CtRef | None = pkt.ct
        if ref is not None and ref.table is ct:
            return ref
        return ct.track(pkt)

    def _walk(
        self, pkt: Packet, chain: Chain, ctbits: int, in_name: str | None, out_name: str | None
    ) -> _Compiled | None:
        """Walk ``chain`` linearly; the first matching terminal rule, or None (policy)."""
        chain.packets += 1
        flow = pkt.flow
        n = 0
        hit = None
        jump = None  # the jump of the run of rules being walked, and whether it matched
        entered = True
        for r in chain.compiled:
            g = r.guard
            if g is not jump:
                jump = g
                if g is not None:
                    entered = g.matches(flow, ctbits, in_name, out_name)
                    if not entered:
                        n += 1  # the -j rule, evaluated and not taken
            if g is not None and not entered:
                continue
            n += 1
            if r.proto >= 0 and r.proto != flow.proto:
                continue
            if r.src_mask and flow.src_ip & r.src_mask != r.src_net:
                continue
            if r.dst_mask and flow.dst_ip & r.dst_mask != r.dst_net:
                continue
            if r.dport >= 0 and r.dport != flow.dport:
                continue
            if r.ctbits and not r.ctbits & ctbits:
                continue
            want = r.in_name
            if want is not None and not _if_match(in_name or "lo", want, r.in_neg, r.in_pfx):
                continue
            want = r.out_name
            if want is not None and not _if_match(out_name or "lo", want, r.out_neg, r.out_pfx):
                continue
            if r.target != _RETURN:
                hit = r
            break
        if n:
            chain.rules_evaluated += n
            st = self._rule
            c = (st.per_packet_s + st.per_byte_s * pkt.size_bytes) * n
            pkt.work_s += c
            st.cpu_s += c
            st.packets += n
            st.bytes += pkt.size_bytes * n
            st.note(pkt.core, n, pkt.size_bytes * n)
        return hit

    def _filter(
        self, pkt: Packet, chain: Chain, ref: CtRef | None, in_name: str | None,
        out_name: str | None,
    ) -> bool:
        if ref is None:
            ctbits = 0
        else:
            ctbits = _ESTABLISHED if ref.is_reply or ref.entry.seen_reply else _NEW
        hit = self._walk(pkt, chain, ctbits, in_name, out_name)
        if hit is None:
            return not chain.policy_drop or self._drop(pkt, chain, "iptables_policy")
        return hit.target != _DROP or self._drop(pkt, chain, "iptables_drop")

    def _drop(self, pkt: Packet, chain: Chain, reason: str) -> bool:
        chain.drops += 1
        self.sim.drop(pkt, self.name, reason)
        return False

    def _dst_nat(
        self, pkt: Packet, ref: CtRef, hook: str, in_name: str | None, out_name: str | None
    ) -> bool:
        e = ref.entry
        if not e.dnat_init and not ref.is_reply and not e.seen_reply:
            e.dnat_init = True
            chain = self.chains[("nat", hook)]
            hit = self._walk(pkt, chain, _NEW, in_name, out_name)
            if hit is not None and hit.target != _ACCEPT:
                if hit.target == _DROP:
                    return self._drop(pkt, chain, "iptables_drop")
                rule = hit.rule
                r = e.reply
                port = rule.to_port if rule.to_port is not None else r.sport
                assert rule.to_ip is not None
                if not self._set_reply(e, FlowKey(rule.to_ip, r.dst_ip, r.proto, port, r.dport)):
                    self.sim.drop(pkt, self.name, "nat_clash")
                    return False
        # Destination manip: DNAT of the original direction, undo SNAT of replies.
        f = pkt.flow
        if ref.is_reply:
            if e.nat_src:
                o = e.orig
                pkt.flow = FlowKey(f.src_ip, o.src_ip, f.proto, f.sport, o.sport)
                self._rewritten(pkt)
        elif e.nat_dst:
            r = e.reply
            pkt.flow = FlowKey(f.src_ip, r.src_ip, f.proto, f.sport, r.sport)
            self._rewritten(pkt)
        return True

    def _bind_src(self, pkt: Packet, e: CtEntry, hit: _Compiled, out_dev: Any) -> bool:
        if hit.target == _SNAT:
            new_ip = hit.rule.to_ip
        else:
            addrs = getattr(out_dev, "addrs", None)
            if not addrs:
                self.sim.drop(pkt, self.name, "masquerade_no_address")
                return False
            new_ip = addrs[0][0]
        r = e.reply
        ct = self.conntrack
        assert ct is not None and new_ip is not None
        cand = FlowKey(r.src_ip, new_ip, r.proto, r.sport, r.dport)
        if ct.tuple_taken(cand, e):
            span = NAT_PORT_MAX - NAT_PORT_MIN + 1
            port = self._port_cursor
            for _ in range(span):
                cand = FlowKey(r.src_ip, new_ip, r.proto, r.sport, port)
                port = port + 1 if port < NAT_PORT_MAX else NAT_PORT_MIN
                if not ct.tuple_taken(cand, e):
                    self._port_cursor = port
                    break
            else:
                self.sim.drop(pkt, self.name, "nat_no_port")
                return False
        if not self._set_reply(e, cand):
            self.sim.drop(pkt, self.name, "nat_clash")
            return False
        return True

    def _set_reply(self, e: CtEntry, reply: FlowKey) -> bool:
        """Store a NAT binding in ``e`` (its new reply tuple); False on a clash."""
        ct = self.conntrack
        assert ct is not None
        if reply == e.reply:
            return True
        if not ct.set_reply(e, reply):
            return False
        self.nat_bindings += 1
        return True

    def _src_manip(self, pkt: Packet, ref: CtRef) -> None:
        """Source manip: SNAT of the original direction, undo DNAT of replies."""
        e = ref.entry
        f = pkt.flow
        if ref.is_reply:
            if e.nat_dst:
                o = e.orig
                pkt.flow = FlowKey(o.dst_ip, f.dst_ip, f.proto, o.dport, f.dport)
                self._rewritten(pkt)
        elif e.nat_src:
            r = e.reply
            pkt.flow = FlowKey(r.dst_ip, f.dst_ip, f.proto, r.dport, f.dport)
            self._rewritten(pkt)

    def _rewritten(self, pkt: Packet) -> None:
        self._nat.charge(pkt)
        self.nat_rewrites += 1

    # -- metrics --------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        """Flat counters: ``<table>.<chain>.packets|rules_evaluated|drops`` and NAT totals."""
        out: dict[str, float] = {}
        for (t, c), ch in self.chains.items():
            out[f"{t}.{c}.packets"] = ch.packets
            out[f"{t}.{c}.rules_evaluated"] = ch.rules_evaluated
            out[f"{t}.{c}.drops"] = ch.drops
        out["nat_rewrites"] = self.nat_rewrites
        out["nat_bindings"] = self.nat_bindings
        return out

    def held_packets(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"Netfilter({self.name!r})"


def _ifname(dev: Any) -> str | None:
    return None if dev is None else dev.ifname
