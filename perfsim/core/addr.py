"""IPv4 and MAC addresses as ints, and prefixes."""

from __future__ import annotations

import ipaddress

from perfsim.errors import ConfigError


def ip(text: str) -> int:
    """``'10.0.0.1'`` -> 167772161. Raises ConfigError on a malformed address."""
    try:
        return int(ipaddress.IPv4Address(text))
    except (ipaddress.AddressValueError, ValueError) as exc:
        raise ConfigError("ip", text, "an IPv4 address like 10.0.0.1") from exc


def ip_str(value: int) -> str:
    """167772161 -> ``'10.0.0.1'``."""
    return str(ipaddress.IPv4Address(value))


def prefix(text: str) -> tuple[int, int]:
    """``'10.0.0.0/24'`` -> (network int, prefix length). Host bits must be zero."""
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError) as exc:
        raise ConfigError("prefix", text, "an IPv4 network like 10.0.0.0/24") from exc
    return int(net.network_address), net.prefixlen


def mac_str(value: int) -> str:
    """A 48-bit int as ``'02:42:ac:11:00:02'``."""
    return ":".join(f"{(value >> s) & 0xFF:02x}" for s in range(40, -1, -8))


def mac_for(index: int, oui: int = 0x0242) -> int:
    """A locally administered MAC from a running index (Docker uses the 02:42 prefix)."""
    return (oui << 32) | (index & 0xFFFFFFFF)
