"""The IPv4 routing table of one network namespace (Linux FIB ``main`` table).

Model
-----
A route sends packets for ``prefix/plen`` out of ``dev``, either *on-link* (``gateway is
None``: the destination itself is the next hop, ``scope link`` in ``ip route``) or through
``gateway``.  :meth:`RoutingTable.lookup` is a longest-prefix match; among routes with the same
prefix the one with the lowest ``metric`` wins, as in ``ip route add ... metric N``.  The
default route is ``0.0.0.0/0``.

Linux removed its per-destination route cache in 3.6 and looks the FIB trie up for every
packet; perfsim keeps a per-destination cache instead, purely to make the simulator's hot path
a single dict lookup.  The cache is flushed on every change to the table (and when it grows
past :data:`CACHE_LIMIT` destinations), so results are always those of a fresh lookup.

Not modelled: policy routing (``ip rule``), TOS, route types other than unicast, multipath
and ECMP, and the ``local``/``broadcast`` routes of the ``local`` table (the namespace decides
itself which addresses are its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perfsim.core import addr
from perfsim.errors import ConfigError, check_number

CACHE_LIMIT = 65536
"""Destinations remembered by a table's lookup cache before it is flushed."""

_MASKS: tuple[int, ...] = tuple(((1 << 32) - 1) ^ ((1 << (32 - n)) - 1) for n in range(33))
_MISS = object()


def _check_u32(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise ConfigError(field, value, "an integer >= 0 and <= 4294967295 (32 bits)")


def _where(prefix: object, plen: object) -> str:
    """``10.0.0.0/24`` for error messages, tolerating invalid values."""
    ok = isinstance(prefix, int) and not isinstance(prefix, bool) and 0 <= prefix <= 0xFFFFFFFF
    return f"{addr.ip_str(prefix) if ok else repr(prefix)}/{plen!r}"  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Route:
    """One route: ``prefix/plen`` via ``gateway`` (``None`` = on-link) out of ``dev``.

    Attributes
    ----------
    prefix: network address as a 32-bit int, host bits zero.
    plen: prefix length, 0..32.
    dev: the output device (anything with a ``name``).
    gateway: next-hop IPv4 address as an int, or ``None`` for a directly connected network.
    metric: route priority; lower wins among routes with the same prefix.
    src: preferred source address (``ip route ... src``), or ``None``.
    """

    prefix: int
    plen: int
    dev: Any
    gateway: int | None = None
    metric: int = 0
    src: int | None = None

    def next_hop(self, dst_ip: int) -> int:
        """The address to resolve with ARP for ``dst_ip``: the gateway, or ``dst_ip`` on-link."""
        return dst_ip if self.gateway is None else self.gateway

    def __str__(self) -> str:
        via = "" if self.gateway is None else f" via {addr.ip_str(self.gateway)}"
        src = "" if self.src is None else f" src {addr.ip_str(self.src)}"
        return (
            f"{addr.ip_str(self.prefix)}/{self.plen}{via} dev {self.dev.name}"
            f" metric {self.metric}{src}"
        )


class RoutingTable:
    """Longest-prefix-match IPv4 routing table with a per-destination lookup cache.

    Parameters
    ----------
    name: the owner's name (usually the namespace), used in error messages:
        ``<name>.routes[10.0.0.0/24]``.

    Notes
    -----
    Routes are kept per prefix length (``{plen: {prefix: [routes by metric]}}``); a miss in
    the cache probes the prefix lengths in use from longest to shortest, at most 33 dict
    lookups.  A hit costs one dict lookup.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._by_plen: dict[int, dict[int, list[Route]]] = {}
        self._plens: list[int] = []  # prefix lengths in use, longest first
        self._cache: dict[int, Route | None] = {}
        self._count = 0
        self.lookups = 0
        """Lookups answered by a full longest-prefix match (cache misses)."""

    # -- configuration -----------------------------------------------------------------------
    def add(
        self,
        prefix: int,
        plen: int,
        dev: Any,
        gateway: int | None = None,
        metric: int = 0,
        src: int | None = None,
    ) -> Route:
        """Add a route (``ip route add prefix/plen [via gateway] dev dev [metric m] [src s]``).

        Raises
        ------
        ConfigError
            If ``plen`` is not in 0..32, ``prefix`` is not a 32-bit address or has host bits
            set, an address or the metric is out of range, ``dev`` has no ``name``, or a route
            with the same prefix and metric exists (Linux: ``RTNETLINK answers: File exists``).
        """
        key = f"{self.name}.routes[{_where(prefix, plen)}]"
        check_number(f"{key}.plen", plen, low=0, high=32, integer=True)
        _check_u32(f"{key}.prefix", prefix)
        if prefix & ~_MASKS[plen]:
            raise ConfigError(
                key, f"{addr.ip_str(prefix)}/{plen}", "a prefix whose host bits are zero"
            )
        if not hasattr(dev, "name"):
            raise ConfigError(f"{key}.dev", dev, "a network device (an object with a name)")
        if gateway is not None:
            _check_u32(f"{key}.gateway", gateway)
        if src is not None:
            _check_u32(f"{key}.src", src)
        _check_u32(f"{key}.metric", metric)
        table = self._by_plen.setdefault(plen, {})
        same = table.setdefault(prefix, [])
        if any(r.metric == metric for r in same):
            raise ConfigError(key, f"metric {metric}", "one route per prefix and metric")
        route = Route(prefix, plen, dev, gateway, metric, src)
        same.append(route)
        same.sort(key=lambda r: r.metric)
        if plen not in self._plens:
            self._plens.append(plen)
            self._plens.sort(reverse=True)
        self._count += 1
        self._cache.clear()
        return route

    def add_cidr(
        self,
        cidr: str,
        dev: Any,
        gateway: str | None = None,
        metric: int = 0,
        src: str | None = None,
    ) -> Route:
        """:meth:`add` with text addresses: ``add_cidr("10.0.0.0/24", eth0, gateway="10.0.0.1")``.

        ``"default"`` is accepted for ``0.0.0.0/0``.
        """
        key = f"{self.name}.routes[{cidr}]"
        text = "0.0.0.0/0" if cidr == "default" else cidr
        try:
            prefix, plen = addr.prefix(text)
        except ConfigError as exc:
            raise ConfigError(
                key, cidr, "an IPv4 network like 10.0.0.0/24 (host bits zero)"
            ) from exc
        gw = self._parse_ip(f"{key}.gateway", gateway)
        source = self._parse_ip(f"{key}.src", src)
        return self.add(prefix, plen, dev, gateway=gw, metric=metric, src=source)

    def remove(self, prefix: int, plen: int, metric: int | None = None) -> Route:
        """Delete a route (``ip route del prefix/plen [metric m]``) and return it.

        Without ``metric`` the lowest-metric route for the prefix is deleted, as Linux deletes
        the first match.  Raises ConfigError if there is no such route (Linux: ``ESRCH``).
        """
        routes = self._by_plen.get(plen, {}).get(prefix)
        victim = None
        if routes:
            if metric is None:
                victim = routes[0]
            else:
                victim = next((r for r in routes if r.metric == metric), None)
        if routes is None or victim is None:
            key = f"{self.name}.routes[{_where(prefix, plen)}]"
            raise ConfigError(key, metric, "an existing route")
        routes.remove(victim)
        if not routes:
            table = self._by_plen[plen]
            del table[prefix]
            if not table:
                del self._by_plen[plen]
                self._plens.remove(plen)
        self._count -= 1
        self._cache.clear()
        return victim

    def clear(self) -> None:
        """Delete every route (``ip route flush table main``)."""
        self._by_plen.clear()
        self._plens.clear()
        self._cache.clear()
        self._count = 0

    # -- lookup ------------------------------------------------------------------------------
    def lookup(self, dst_ip: int) -> Route | None:
        """The route for ``dst_ip`` (longest prefix, then lowest metric), or ``None``.

        O(1) amortized: answered from the per-destination cache after the first lookup.
        """
        route = self._cache.get(dst_ip, _MISS)
        if route is not _MISS:
            return route  # type: ignore[return-value]
        return self._resolve(dst_ip)

    def _resolve(self, dst_ip: int) -> Route | None:
        self.lookups += 1
        found: Route | None = None
        by_plen = self._by_plen
        for plen in self._plens:
            routes = by_plen[plen].get(dst_ip & _MASKS[plen])
            if routes:
                found = routes[0]
                break
        cache = self._cache
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[dst_ip] = found
        return found

    # -- inspection --------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        """All routes, most specific first (then by prefix, then by metric)."""
        out = [r for table in self._by_plen.values() for rs in table.values() for r in rs]
        out.sort(key=lambda r: (-r.plen, r.prefix, r.metric))
        return out

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"RoutingTable({self.name!r}, {self._count} routes)"

    @staticmethod
    def _parse_ip(field: str, text: str | None) -> int | None:
        if text is None:
            return None
        try:
            return addr.ip(text)
        except ConfigError as exc:
            raise ConfigError(field, text, "an IPv4 address like 10.0.0.1") from exc
