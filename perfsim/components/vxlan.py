"""VXLAN tunnel endpoints (VTEPs), as Docker's overlay driver and Flannel's vxlan backend use.

Transmit (``VxlanDevice.xmit``, usually called by the overlay bridge): charge ``vxlan_encap``,
check the inner frame against the device MTU (too large: dropped if DF is set, else cut into
IP fragments, each with its own headers) (1450 by default, leaving room for the 50 B of
outer headers under a 1500 B underlay), look up the remote VTEP for the inner destination MAC
in the device's FDB, pick the outer UDP source port from the inner flow hash (so the receiving
NIC's RSS spreads different inner flows over cores, and keeps one inner flow on one core),
push the outer Ethernet/IPv4/UDP/VXLAN headers (+50 B per frame, VNI in the VXLAN header) and
hand the packet to the underlay namespace's IP output (route, netfilter, ARP, NIC).

Receive: the underlay delivers UDP port 4789 to :class:`VxlanSocket`, which demultiplexes by
VNI to the device: ``vxlan_decap`` is charged, the outer headers are removed, the inner source
MAC is learned (if learning is on) and the inner frame arrives on the device (then the bridge).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perfsim.components.netdev import NetDevice
from perfsim.core.cpu import flow_hash
from perfsim.core.packet import BROADCAST_MAC, PROTO_UDP, FlowKey, Packet
from perfsim.errors import ConfigError, check_number
from perfsim.units import VXLAN_OVERHEAD_BYTES

if TYPE_CHECKING:
    from perfsim.components.host import Host
    from perfsim.components.netns import NetNs

VXLAN_PORT = 4789
SPORT_MIN = 32768
SPORT_MAX = 61000  # Linux's default net.ipv4.ip_local_port_range is 32768..60999


class VxlanSocket:
    """The UDP socket a VTEP listens on (one per underlay namespace and port), demux by VNI."""

    def __init__(self, underlay: NetNs, port: int = VXLAN_PORT) -> None:
        self.underlay = underlay
        self.port = port
        self.devices: dict[int, VxlanDevice] = {}
        underlay.bind(PROTO_UDP, port, self)

    def deliver(self, pkt: Packet) -> None:
        dev = self.devices.get(pkt.outer_tag)
        if dev is None:
            self.underlay.sim.drop(pkt, f"{self.underlay.name}.vxlan{self.port}", "unknown_vni")
            return
        dev.rcv(pkt)


class VxlanDevice(NetDevice):
    """A VXLAN VTEP device.

    Parameters
    ----------
    vni: VXLAN network identifier, 0 .. 2**24-1.
    local_ip: underlay address the outer header comes from.
    underlay: the namespace whose routing, netfilter and NIC carry the outer packets.
    mtu_bytes: inner MTU (default 1450); must leave 50 B under the underlay device MTU.
    learning: learn inner source MAC -> remote VTEP from received packets (flood-and-learn);
        off when a control plane pre-populates the FDB, as Docker's overlay does.
    """

    def __init__(
        self,
        host: Host,
        name: str,
        mac: int,
        vni: int,
        local_ip: int,
        underlay: NetNs,
        mtu_bytes: int = 1450,
        underlay_mtu_bytes: int = 1500,
        learning: bool = False,
        port: int = VXLAN_PORT,
    ) -> None:
        check_number(f"{name}.vni", vni, low=0, high=(1 << 24) - 1, integer=True)
        check_number(f"{name}.underlay_mtu_bytes", underlay_mtu_bytes, low=68 + VXLAN_OVERHEAD_BYTES, high=65535, integer=True)
        limit = underlay_mtu_bytes - VXLAN_OVERHEAD_BYTES
        check_number(f"{name}.mtu_bytes", mtu_bytes, low=68, high=limit, integer=True)
        super().__init__(host, name, mac, mtu_bytes)
        self.vni = vni
        self.local_ip = local_ip
        self.underlay = underlay
        self.learning = learning
        self.fdb: dict[int, int] = {}
        self.flood_remotes: list[int] = []
        sock = underlay.sockets.get((PROTO_UDP, port))
        if sock is None:
            sock = VxlanSocket(underlay, port)
        if not isinstance(sock, VxlanSocket):
            raise ConfigError(f"{name}.port", port, "a UDP port not used by another socket")
        if vni in sock.devices:
            raise ConfigError(f"{name}.vni", vni, "a VNI not already used on this underlay")
        sock.devices[vni] = self
        self._encap = host.stage("vxlan_encap")
        self._decap = host.stage("vxlan_decap")
        self.encapsulated = 0
        self.decapsulated = 0
        self.fragmented = 0

    def add_remote(self, mac: int, remote_ip: int) -> None:
        """``bridge fdb add MAC dev vxlan dst REMOTE``: a static FDB entry."""
        self.fdb[mac] = remote_ip

    def add_flood_remote(self, remote_ip: int) -> None:
        """``bridge fdb append 00:00:00:00:00:00 dev vxlan dst REMOTE``: head-end replication."""
        if remote_ip not in self.flood_remotes:
            self.flood_remotes.append(remote_ip)

    def xmit(self, pkt: Packet) -> None:
        self.tx_packets += 1
        self._encap.charge(pkt)
        l3 = pkt.l3_bytes_per_seg
        if l3 > self.mtu_bytes:
            if pkt.df:
                self.sim.drop(pkt, self.name, "mtu_exceeded_df")
                return
            pkt.fragment(self.mtu_bytes)  # DF clear: IP fragments, each with its own headers
            self.fragmented += 1
        remote = self.fdb.get(pkt.dst_mac) if pkt.dst_mac != BROADCAST_MAC else None
        if remote is None:
            remotes = self.flood_remotes
            if not remotes:
                self.sim.drop(pkt, self.name, "fdb_miss")
                return
            for r in remotes[:-1]:
                self._send(self.sim.clone(pkt), r)
            self._send(pkt, remotes[-1])
            return
        self._send(pkt, remote)

    def _send(self, pkt: Packet, remote_ip: int) -> None:
        sport = SPORT_MIN + flow_hash(pkt.flow) % (SPORT_MAX - SPORT_MIN)
        outer = FlowKey(self.local_ip, remote_ip, PROTO_UDP, sport, VXLAN_PORT)
        pkt.push_outer(outer, 0, 0, VXLAN_OVERHEAD_BYTES, self.vni)
        pkt.ct = None
        self.encapsulated += 1
        self.underlay.ip_output(pkt)

    def rcv(self, pkt: Packet) -> None:
        """An outer packet for our VNI arrived on the underlay's UDP socket."""
        self._decap.charge(pkt)
        outer = pkt.pop_outer()
        self.decapsulated += 1
        if self.learning and pkt.src_mac != BROADCAST_MAC:
            self.fdb[pkt.src_mac] = outer.src_ip
        pkt.ct = None
        self.receive(pkt)
