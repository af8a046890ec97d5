"""The registry of network modes: name -> builder, allowed placements, one-line datapath."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from perfsim.topology.base import ModeNetwork
from perfsim.topology.bridge_mode import build_bridge
from perfsim.topology.host_mode import build_host
from perfsim.topology.overlay_mode import build_overlay

PLACEMENTS = ("same-host", "cross-host")


@dataclass(frozen=True)
class ModeInfo:
    """What the run layer needs to know about a mode before building it."""

    build: Callable[..., ModeNetwork]
    """``build(cluster, containers_per_host, **mode_options)``."""
    placements: tuple[str, ...]
    default_placement: str
    datapath: str


MODES: dict[str, ModeInfo] = {
    "host": ModeInfo(build_host, PLACEMENTS, "cross-host",
                     "app -> host TCP/IP -> NIC -> fabric -> NIC -> host TCP/IP -> app"),
    "bridge": ModeInfo(build_bridge, ("same-host",), "same-host",
                       "container -> veth -> docker0 (FDB, br_netfilter) -> veth -> container"),
    "overlay": ModeInfo(build_overlay, PLACEMENTS, "cross-host",
                        "container -> veth -> bridge -> VXLAN encap (+50 B) -> host IP -> NIC -> fabric "
                        "-> NIC -> UDP 4789 -> decap -> bridge -> veth -> container"),
}
