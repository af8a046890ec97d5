"""RoutingTable: longest-prefix match, metric tie-break, cache invalidation, validation."""

from __future__ import annotations

import pytest

from perfsim.components.routing import CACHE_LIMIT, Route, RoutingTable
from perfsim.core.addr import ip
from perfsim.errors import ConfigError


class Dev:
    """A stand-in device: the table only needs a ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name


ETH0, ETH1, ETH2 = Dev("eth0"), Dev("eth1"), Dev("eth2")


@pytest.fixture
def table() -> RoutingTable:
    t = RoutingTable("ns1")
    t.add_cidr("default", ETH0, gateway="192.168.1.1")
    t.add_cidr("10.0.0.0/16", ETH1, gateway="10.0.255.254")
    t.add_cidr("10.0.5.0/24", ETH2)
    return t


def test_longest_prefix_wins(table: RoutingTable) -> None:
    """A /24 beats a /16 beats the default route."""
    r24 = table.lookup(ip("10.0.5.7"))
    r16 = table.lookup(ip("10.0.6.7"))
    r0 = table.lookup(ip("8.8.8.8"))
    assert r24 == Route(ip("10.0.5.0"), 24, ETH2, None, 0, None)
    assert r16 == Route(ip("10.0.0.0"), 16, ETH1, ip("10.0.255.254"), 0, None)
    assert r0 == Route(0, 0, ETH0, ip("192.168.1.1"), 0, None)
    assert r24.next_hop(ip("10.0.5.7")) == ip("10.0.5.7")  # type: ignore[union-attr]  # on-link
    assert r16.next_hop(ip("10.0.6.7")) == ip("10.0.255.254")  # type: ignore[union-attr]


def test_prefix_boundaries(table: RoutingTable) -> None:
    """First and last address of the /24 match it; the addresses just outside do not."""
    assert table.lookup(ip("10.0.5.0")).dev is ETH2  # type: ignore[union-attr]
    assert table.lookup(ip("10.0.5.255")).dev is ETH2  # type: ignore[union-attr]
    assert table.lookup(ip("10.0.4.255")).dev is ETH1  # type: ignore[union-attr]
    assert table.lookup(ip("10.0.6.0")).dev is ETH1  # type: ignore[union-attr]
    assert table.lookup(ip("10.1.0.0")).dev is ETH0  # type: ignore[union-attr]


def test_host_route_and_metric_tie_break() -> None:
    """Among equal prefixes the lowest metric wins, whatever the insertion order."""
    t = RoutingTable("ns1")
    t.add(ip("10.0.0.0"), 24, ETH1, metric=200)
    t.add(ip("10.0.0.0"), 24, ETH2, metric=100)
    t.add(ip("10.0.0.0"), 24, ETH0, metric=300)
    t.add(ip("10.0.0.9"), 32, ETH0, metric=500)
    assert t.lookup(ip("10.0.0.1")).dev is ETH2  # type: ignore[union-attr]
    assert t.lookup(ip("10.0.0.9")).dev is ETH0  # type: ignore[union-attr]  # /32 beats metric
    assert t.remove(ip("10.0.0.0"), 24).dev is ETH2  # no metric: lowest one goes
    assert t.lookup(ip("10.0.0.1")).dev is ETH1  # type: ignore[union-attr]
    assert t.remove(ip("10.0.0.0"), 24, metric=300).dev is ETH0
    assert [(r.plen, r.metric) for r in t.routes()] == [(32, 500), (24, 200)]
    assert len(t) == 2


def test_no_route_is_none() -> None:
    t = RoutingTable("ns1")
    assert t.lookup(ip("10.0.0.1")) is None
    t.add_cidr("10.0.0.0/8", ETH0)
    assert t.lookup(ip("11.0.0.1")) is None
    assert t.lookup(ip("10.255.255.255")) is not None


def test_cache_is_invalidated_by_add_and_remove(table: RoutingTable) -> None:
    """A cached answer changes as soon as a more specific route is added or removed."""
    dst = ip("10.0.6.7")
    assert table.lookup(dst).dev is ETH1  # type: ignore[union-attr]
    assert table.lookup(dst).dev is ETH1  # type: ignore[union-attr]
    assert table.lookups == 1  # the second lookup came from the cache
    table.add_cidr("10.0.6.0/23", ETH2)
    assert table.lookup(dst).dev is ETH2  # type: ignore[union-attr]
    table.remove(ip("10.0.6.0"), 23)
    assert table.lookup(dst).dev is ETH1  # type: ignore[union-attr]
    table.remove(ip("10.0.0.0"), 16)
    assert table.lookup(dst).dev is ETH0  # type: ignore[union-attr]
    table.remove(0, 0)
    assert table.lookup(dst) is None
    assert table.lookups == 5


def test_negative_answers_are_cached_and_invalidated() -> None:
    t = RoutingTable("ns1")
    assert t.lookup(ip("1.2.3.4")) is None
    assert t.lookup(ip("1.2.3.4")) is None
    assert t.lookups == 1
    t.add_cidr("0.0.0.0/0", ETH0)
    assert t.lookup(ip("1.2.3.4")) is not None


def test_cache_is_bounded() -> None:
    t = RoutingTable("ns1")
    t.add_cidr("default", ETH0)
    for d in range(CACHE_LIMIT + 10):
        t.lookup(d)
    assert len(t._cache) == 10  # flushed once when it reached the limit
    assert t.lookup(5).dev is ETH0  # type: ignore[union-attr]


def test_route_text() -> None:
    t = RoutingTable("ns1")
    r = t.add_cidr("10.1.0.0/16", ETH1, gateway="10.0.0.1", metric=7, src="10.0.0.2")
    assert str(r) == "10.1.0.0/16 via 10.0.0.1 dev eth1 metric 7 src 10.0.0.2"
    assert r.src == ip("10.0.0.2")


@pytest.mark.parametrize(
    ("args", "kw", "field"),
    [
        ((ip("10.0.0.1"), 24), {}, r"ns1\.routes\[10\.0\.0\.1/24\]"),  # host bits set
        ((ip("10.0.0.0"), 33), {}, r"ns1\.routes\[10\.0\.0\.0/33\]\.plen"),
        ((ip("10.0.0.0"), -1), {}, r"ns1\.routes\[10\.0\.0\.0/-1\]\.plen"),
        ((ip("10.0.0.0"), 24.0), {}, r"ns1\.routes\[10\.0\.0\.0/24\.0\]\.plen"),
        ((1 << 32, 32), {}, r"ns1\.routes\[4294967296/32\]\.prefix"),
        ((-1, 0), {}, r"ns1\.routes\[-1/0\]\.prefix"),
        ((ip("10.0.0.0"), 24), {"metric": -1}, r"ns1\.routes\[10\.0\.0\.0/24\]\.metric"),
        ((ip("10.0.0.0"), 24), {"gateway": 1 << 32}, r"ns1\.routes\[10\.0\.0\.0/24\]\.gateway"),
        ((ip("10.0.0.0"), 24), {"src": "10.0.0.1"}, r"ns1\.routes\[10\.0\.0\.0/24\]\.src"),
    ],
)
def test_bad_routes_name_the_field(args: tuple, kw: dict, field: str) -> None:
    t = RoutingTable("ns1")
    with pytest.raises(ConfigError, match=rf"^{field}: got .*; allowed: "):
        t.add(*args, ETH0, **kw)
    assert len(t) == 0


def test_device_without_name_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^ns1\.routes\[10\.0\.0\.0/24\]\.dev: got "):
        RoutingTable("ns1").add(ip("10.0.0.0"), 24, object())


def test_duplicate_prefix_and_metric_is_rejected() -> None:
    """Same prefix and metric twice is EEXIST in Linux; a different metric is fine."""
    t = RoutingTable("ns1")
    t.add_cidr("10.0.0.0/24", ETH0)
    with pytest.raises(ConfigError, match=r"^ns1\.routes\[10\.0\.0\.0/24\]: got 'metric 0'"):
        t.add_cidr("10.0.0.0/24", ETH1)
    t.add_cidr("10.0.0.0/24", ETH1, metric=10)
    assert len(t) == 2


@pytest.mark.parametrize(
    ("cidr", "kw", "field"),
    [
        ("10.0.0.1/24", {}, r"ns1\.routes\[10\.0\.0\.1/24\]"),
        ("10.0.0.0/40", {}, r"ns1\.routes\[10\.0\.0\.0/40\]"),
        ("nonsense", {}, r"ns1\.routes\[nonsense\]"),
        ("10.0.0.0/24", {"gateway": "10.0.0.300"}, r"ns1\.routes\[10\.0\.0\.0/24\]\.gateway"),
        ("10.0.0.0/24", {"src": "x"}, r"ns1\.routes\[10\.0\.0\.0/24\]\.src"),
    ],
)
def test_bad_cidr_text_names_the_field(cidr: str, kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: got "):
        RoutingTable("ns1").add_cidr(cidr, ETH0, **kw)


def test_removing_a_missing_route_is_an_error(table: RoutingTable) -> None:
    with pytest.raises(ConfigError, match=r"^ns1\.routes\[10\.9\.0\.0/16\]: got None"):
        table.remove(ip("10.9.0.0"), 16)
    with pytest.raises(ConfigError, match=r"^ns1\.routes\[10\.0\.0\.0/16\]: got 5"):
        table.remove(ip("10.0.0.0"), 16, metric=5)
    assert len(table) == 3
