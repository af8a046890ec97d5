"""Parsing and validation of the address and MTU options of the network modes.

A subnet option is an IPv4 network in CIDR notation (``"192.168.100.0/24"``), as ``docker
network create --subnet`` or ``dockerd --bip`` take it.  It is held as ``(network, prefix
length)`` with the network as an int.  Rules, each a ConfigError naming the option
(``mode_options.subnet``, ``mode_options.subnets[1]``), the value and what is allowed:

* a string ``a.b.c.d/n`` with the prefix length given and no host bits set (``dockerd`` also
  refuses ``172.17.0.1/16`` as a ``--subnet``: "invalid network address");
* not overlapping a range the simulation uses itself or that cannot hold unicast hosts: the
  fabric ``10.0.0.0/16`` (the hosts' own addresses, see :mod:`perfsim.topology.cluster`),
  loopback ``127.0.0.0/8``, link-local ``169.254.0.0/16`` (the routed modes' gateway
  169.254.1.1), ``0.0.0.0/8`` and multicast / reserved ``224.0.0.0/3``;
* large enough for the addresses the mode's builder hands out (each builder says how many).

An MTU option is an integer 68 (RFC 791's minimum) .. an upper bound the mode sets: 65535 for a
bridge (Docker accepts any bridge MTU), the underlay MTU minus the encapsulation overhead for a
tunnel.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from perfsim.errors import ConfigError, check_number
from perfsim.topology.cluster import FABRIC_NET, FABRIC_PLEN
from perfsim.units import MIN_IPV4_MTU

Subnet = tuple[int, int]
"""(network address as an int, prefix length)."""

CIDR_TEXT = "an IPv4 network in CIDR notation like 192.168.100.0/24"

RESERVED: tuple[tuple[int, int, str], ...] = (
    (FABRIC_NET, FABRIC_PLEN, "the fabric (hosts' addresses)"),
    (0x7F000000, 8, "loopback"),
    (0xA9FE0000, 16, "link-local (the routed modes' gateway 169.254.1.1)"),
    (0x00000000, 8, "'this network'"),
    (0xE0000000, 3, "multicast and reserved"),
)
"""Ranges no mode subnet may overlap: (network, prefix length, what it is)."""


def cidr(subnet: Subnet) -> str:
    """``(0xC0A86400, 24)`` -> ``'192.168.100.0/24'``."""
    return f"{ipaddress.IPv4Address(subnet[0])}/{subnet[1]}"


def size(subnet: Subnet) -> int:
    """Number of addresses in the subnet, network and broadcast included."""
    return 1 << (32 - subnet[1])


def overlaps(a: Subnet, b: Subnet) -> bool:
    """Whether two subnets share an address (one contains the other)."""
    plen = min(a[1], b[1])
    mask = ((1 << plen) - 1) << (32 - plen)
    return (a[0] & mask) == (b[0] & mask)


def parse_subnet(field: str, value: Any) -> Subnet:
    """``value`` (``'a.b.c.d/n'``) -> (network, prefix length), not overlapping :data:`RESERVED`.

    Raises ConfigError(``field``, value, ...) on a non-string, a malformed network, a missing
    prefix length, host bits set, or an overlap with a reserved range.
    """
    if not isinstance(value, str) or "/" not in value:
        raise ConfigError(field, value, CIDR_TEXT)
    try:
        loose = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise ConfigError(field, value, CIDR_TEXT) from None
    if int(ipaddress.IPv4Interface(value).ip) != int(loose.network_address):
        raise ConfigError(field, value, f"a network address with no host bits set ({loose.with_prefixlen})")
    subnet = (int(loose.network_address), loose.prefixlen)
    for net, plen, what in RESERVED:
        if overlaps(subnet, (net, plen)):
            raise ConfigError(field, value, f"a subnet not overlapping {what} {cidr((net, plen))}")
    return subnet


def check_room(field: str, value: Any, subnet: Subnet, needed: int, what: str) -> None:
    """``subnet`` must hold ``needed`` addresses (``what`` says for what), else ConfigError."""
    if size(subnet) < needed:
        plen = 32 - (needed - 1).bit_length()
        raise ConfigError(field, value, f"a subnet of at least {needed} addresses (prefix length <= {plen}) for {what}")


def check_disjoint(field: str, value: Any, subnet: Subnet, others: list[Subnet], label: str = "network") -> None:
    """``subnet`` must not overlap any of ``others`` (``others[k]`` is ``label k``)."""
    for k, other in enumerate(others):
        if overlaps(subnet, other):
            raise ConfigError(field, value, f"a subnet not overlapping {cidr(other)} ({label} {k})")


def check_mtu(field: str, value: Any, high: int, why: str = "") -> int:
    """``value`` must be an integer 68 .. ``high``; ``why`` (said when ``value`` is above
    ``high``) explains the upper bound."""
    try:
        check_number(field, value, low=MIN_IPV4_MTU, high=high, integer=True)
    except ConfigError as exc:
        above = bool(why) and isinstance(value, int) and value > high
        raise ConfigError(field, value, exc.allowed + (f": {why}" if above else "")) from None
    return int(value)
