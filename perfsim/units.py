"""Unit helpers. perfsim works in SI floats: seconds, bytes, bits per second."""

from __future__ import annotations

KB = 1024
ETH_HDR_BYTES = 14
"""Ethernet II header (dst MAC, src MAC, ethertype); no FCS, preamble or gap."""
IPV4_HDR_BYTES = 20
TCP_HDR_BYTES = 32
"""TCP header with the timestamp option Linux sends on every segment (20 + 12)."""
UDP_HDR_BYTES = 8
VXLAN_HDR_BYTES = 8
VXLAN_OVERHEAD_BYTES = ETH_HDR_BYTES + IPV4_HDR_BYTES + UDP_HDR_BYTES + VXLAN_HDR_BYTES
"""What a VXLAN VTEP adds to every frame: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 = 50."""
IPIP_OVERHEAD_BYTES = IPV4_HDR_BYTES
ETH_WIRE_OVERHEAD_BYTES = 24
"""Preamble 8 + FCS 4 + inter-frame gap 12: what a physical Ethernet link adds per frame."""
ARP_FRAME_BYTES = 42
MIN_IPV4_MTU = 68
GSO_MAX_BYTES = 65536


def gbps(x: float) -> float:
    """Gigabits per second to bits per second."""
    return x * 1e9


def mbps(x: float) -> float:
    """Megabits per second to bits per second."""
    return x * 1e6


def us(x: float) -> float:
    """Microseconds to seconds."""
    return x * 1e-6


def ms(x: float) -> float:
    """Milliseconds to seconds."""
    return x * 1e-3


def ns(x: float) -> float:
    """Nanoseconds to seconds."""
    return x * 1e-9
