"""Transport layer and netperf-style workloads: TCP and UDP endpoints on top of a namespace.

A socket talks to its namespace through a small interface: ``ns.bind(proto, port, sock)``,
``ns.unbind(proto, port)``, ``ns.ip_output(pkt)``, ``ns.host`` (stages, cores, offloads),
``ns.sim`` and ``ns.name``; the namespace calls ``sock.deliver(pkt)`` in softirq context.
"""

from perfsim.transport.stats import FlowStats
from perfsim.transport.tcp import TCP_FRAME_HDR_BYTES, TcpConnection, TcpListener
from perfsim.transport.udp import UDP_FRAME_HDR_BYTES, UdpSocket, udp_segs
from perfsim.transport.workloads import WORKLOADS, Endpoint, Flow, start_workload

__all__ = [
    "TCP_FRAME_HDR_BYTES",
    "UDP_FRAME_HDR_BYTES",
    "WORKLOADS",
    "Endpoint",
    "Flow",
    "FlowStats",
    "TcpConnection",
    "TcpListener",
    "UdpSocket",
    "start_workload",
    "udp_segs",
]
