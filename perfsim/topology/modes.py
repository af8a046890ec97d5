"""The registry of network modes: name -> builder, allowed placements, options, one-line datapath.

``MODES[mode].build(cluster, containers_per_host, **mode_options)`` builds a mode; an option
the mode does not have is refused with a ConfigError naming it (``mode_options.<key>``)
before the builder runs, and each builder validates its options' values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perfsim.errors import ConfigError
from perfsim.topology.base import ModeNetwork
from perfsim.topology.bridge_mode import build_bridge
from perfsim.topology.cluster import Cluster
from perfsim.topology.container_mode import build_container, build_none
from perfsim.topology.host_mode import build_host
from perfsim.topology.overlay_mode import build_overlay
from perfsim.topology.routed_mode import build_ipip, build_routed
from perfsim.topology.user_bridge_mode import build_user_bridge

PLACEMENTS = ("same-host", "cross-host")
SAME_HOST = ("same-host",)


@dataclass(frozen=True)
class ModeInfo:
    """What the run layer needs to know about a mode before building it."""

    build: Callable[..., ModeNetwork]
    """``build(cluster, containers_per_host, **mode_options)``."""
    placements: tuple[str, ...]
    default_placement: str
    datapath: str
    options: tuple[str, ...] = ()
    """The ``mode_options`` keys the builder accepts."""


def _checked(mode: str, builder: Callable[..., ModeNetwork], options: tuple[str, ...]) -> Callable[..., ModeNetwork]:
    """``builder`` behind a check that every option is one the mode has."""

    def build(cl: Cluster, containers_per_host: int, **mode_options: Any) -> ModeNetwork:
        for key, value in mode_options.items():
            if key not in options:
                allowed = f"one of {', '.join(options)}" if options else "no options"
                raise ConfigError(f"mode_options.{key}", value, f"{allowed} for mode {mode}")
        return builder(cl, containers_per_host, **mode_options)

    build.__doc__ = builder.__doc__
    return build


def _mode(
    name: str, builder: Callable[..., ModeNetwork], placements: tuple[str, ...], default: str, datapath: str,
    options: tuple[str, ...] = (),
) -> ModeInfo:
    return ModeInfo(_checked(name, builder, options), placements, default, datapath, options)


MODES: dict[str, ModeInfo] = {
    "host": _mode("host", build_host, PLACEMENTS, "cross-host",
                  "app -> host TCP/IP -> NIC -> fabric -> NIC -> host TCP/IP -> app"),
    "bridge": _mode("bridge", build_bridge, PLACEMENTS, "same-host",
                    "container -> veth -> docker0 (FDB, br_netfilter) -> veth -> container; across hosts "
                    "-> ip_forward -> MASQUERADE -> NIC -> fabric -> NIC -> DNAT (published port) -> docker0 -> veth",
                    ("subnet", "mtu_bytes")),
    "user-bridge": _mode("user-bridge", build_user_bridge, PLACEMENTS, "cross-host",
                         "as bridge on br-<net>, + embedded DNS lookup once per client, isolation DROP between networks",
                         ("networks", "attach_both", "subnets", "mtu_bytes")),
    "container": _mode("container", build_container, SAME_HOST, "same-host",
                       "app -> TCP/IP -> loopback_xmit (shared netns) -> TCP/IP -> app",
                       ("subnet", "mtu_bytes")),
    "none": _mode("none", build_none, SAME_HOST, "same-host",
                  "loopback only: no path to another container"),
    "overlay": _mode("overlay", build_overlay, PLACEMENTS, "cross-host",
                     "container -> veth -> bridge -> VXLAN encap (+50 B) -> host IP -> NIC -> fabric "
                     "-> NIC -> UDP 4789 -> decap -> bridge -> veth -> container",
                     ("vni", "learning", "subnet", "mtu_bytes")),
    "routed": _mode("routed", build_routed, PLACEMENTS, "cross-host",
                    "container -> veth -> host routing + conntrack -> NIC -> fabric -> NIC -> routing -> veth -> container",
                    ("pod_cidr",)),
    "ipip": _mode("ipip", build_ipip, PLACEMENTS, "cross-host",
                  "container -> veth -> routing -> tunl0 encap (+20 B) -> NIC -> fabric -> NIC -> decap "
                  "-> routing -> veth -> container",
                  ("pod_cidr", "mtu_bytes")),
}
