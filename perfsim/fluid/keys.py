"""Receive-side steering of many flows at once: the DES's RSS hash, vectorised, and key templates.

Which core receives a flow is decided, in the DES, by :meth:`perfsim.core.cpu.CpuPool.rss` from
the 5-tuple the packet carries *at that point* (the outer header of a VXLAN packet, the NATed
addresses after MASQUERADE/DNAT, the inner header at an RPS hand-off).  The fluid engine must
pick the same core for each of 10^5 flows without building their namespaces, so it learns,
from one probe flow run through the real DES datapath, *how* each steered 5-tuple is made of
the flow's own identifiers — a :class:`KeyTemplate` whose fields are symbols (client address,
server host address, client port, ...), constants (4789, the protocol) or a derived value (the
VXLAN outer source port, a hash of the inner 5-tuple) — and then instantiates that template
for every flow with numpy and hashes it exactly as the DES does.

Assumption: a field whose value the probe cannot explain by a symbol or a derivation is a
constant for every flow of the class (true of protocol numbers and well-known ports; a port
that NAT had to remap on a collision would be mis-read, and the probe has no collisions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

import numpy as np
import numpy.typing as npt

from perfsim.components.vxlan import SPORT_MAX, SPORT_MIN
from perfsim.core.cpu import flow_hash
from perfsim.core.packet import FlowKey

U64 = npt.NDArray[np.uint64]
_M32 = np.uint64(0xFFFFFFFF)

SYMBOLS = ("cip", "sip", "chip", "ship", "cport", "sport")
"""Per-flow identifiers a steered 5-tuple is made of: client/server container address, client/
server host address, client port, server port (the one the client connects to)."""


@dataclass(frozen=True)
class Derived:
    """A field computed from another 5-tuple of the flow: ``vxlan_sport`` is the VXLAN outer UDP
    source port (``SPORT_MIN + hash(inner) % range``, as :mod:`perfsim.components.vxlan`)."""

    kind: str
    inner: KeyTemplate


Field = Union[str, int, Derived]
"""A symbol name, a constant, or a derived value."""


@dataclass(frozen=True)
class KeyTemplate:
    """A 5-tuple (src_ip, dst_ip, proto, sport, dport) expressed in the flow's identifiers."""

    fields: tuple[Field, Field, Field, Field, Field]

    def instantiate(self, values: Mapping[str, U64], n: int) -> tuple[U64, ...]:
        """The five fields for ``n`` flows, as uint64 arrays (``values``: symbol -> array)."""
        out = []
        for f in self.fields:
            if isinstance(f, str):
                out.append(np.asarray(values[f], dtype=np.uint64))
            elif isinstance(f, Derived):
                h = hash_keys(*f.inner.instantiate(values, n))
                out.append(np.uint64(SPORT_MIN) + h % np.uint64(SPORT_MAX - SPORT_MIN))
            else:
                out.append(np.full(n, f, dtype=np.uint64))
        return tuple(out)

    def uses(self, symbol: str) -> bool:
        """Whether the template depends on ``symbol`` (directly or through a derived field)."""
        return any(f == symbol or (isinstance(f, Derived) and f.inner.uses(symbol)) for f in self.fields)

    def describe(self) -> str:
        def one(f: Field) -> str:
            if isinstance(f, Derived):
                return f"{f.kind}({f.inner.describe()})"
            return str(f)

        return "(" + ", ".join(one(f) for f in self.fields) + ")"


def hash_keys(src: U64, dst: U64, proto: U64, sport: U64, dport: U64) -> U64:
    """:func:`perfsim.core.cpu.flow_hash` of many 5-tuples (uint64 arithmetic; every product
    either fits in 64 bits or is masked to its low 32 bits, which wrap-around keeps exact)."""
    with np.errstate(over="ignore"):
        h = (src * np.uint64(0x9E3779B1)) ^ (dst * np.uint64(0x85EBCA77)) ^ ((sport << np.uint64(16)) | dport)
        h ^= proto * np.uint64(0xC2B2AE3D)
        h ^= h >> np.uint64(15)
        h = (h * np.uint64(0x2C1B3C6D)) & _M32
    return h ^ (h >> np.uint64(12))


def rss_cores(hashes: U64, rss_keys: U64, n_cores: int) -> npt.NDArray[np.int64]:
    """:meth:`perfsim.core.cpu.CpuPool.rss` of many flows: the core index for each flow hash on
    a host whose RSS key is ``rss_keys`` (one per flow)."""
    with np.errstate(over="ignore"):
        h = ((hashes ^ rss_keys) * np.uint64(0x9E3779B1)) & _M32
    return ((h >> np.uint64(16)) % np.uint64(n_cores)).astype(np.int64)


def _vxlan_sport(key: FlowKey) -> int:
    return SPORT_MIN + flow_hash(key) % (SPORT_MAX - SPORT_MIN)


def learn_template(key: FlowKey, values: Mapping[str, int], proto: int) -> KeyTemplate:
    """Explain the probe's steered ``key`` by the probe flow's identifiers ``values``.

    Each field is matched to the first symbol with its value; an unmatched port may be a VXLAN
    outer source port derived from the flow's inner 5-tuple in either direction (with the
    container or the host addresses, as NAT leaves them); anything else is a constant.
    """
    fields: list[Field] = []
    for pos, v in enumerate(key):
        sym = next((s for s in SYMBOLS if values[s] == v), None)
        if pos == 2:  # the protocol is a constant of the class even if it equals a value
            sym = None
        if sym is not None:
            fields.append(sym)
            continue
        derived = None
        if pos == 3:
            for inner in _inner_candidates(proto):
                if _vxlan_sport(_concrete(inner, values)) == v:
                    derived = Derived("vxlan_sport", inner)
                    break
        fields.append(derived if derived is not None else int(v))
    return KeyTemplate(tuple(fields))  # type: ignore[arg-type]


def _inner_candidates(proto: int) -> list[KeyTemplate]:
    out = []
    for src, dst in (("cip", "sip"), ("chip", "ship"), ("cip", "ship"), ("chip", "sip")):
        out.append(KeyTemplate((src, dst, proto, "cport", "sport")))
        out.append(KeyTemplate((dst, src, proto, "sport", "cport")))
    return out


def _concrete(t: KeyTemplate, values: Mapping[str, int]) -> FlowKey:
    vals = [values[f] if isinstance(f, str) else f for f in t.fields]
    return FlowKey(*(int(v) for v in vals))  # type: ignore[arg-type]
