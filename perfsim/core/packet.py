"""Packets, flow keys and the encapsulation stack.

A :class:`Packet` is one skb: either a single frame (``segs == 1``) or a GSO/GRO
super-segment that stands for ``segs`` wire frames of the same flow.  With ``frags`` set, the
``segs`` frames are IP fragments instead: separate skbs that every stage pays for one by one
until the destination's IP layer reassembles them.  A super-segment pays a
stage's per-packet cost once and its per-byte cost for every byte, which is why offloads make
the kernel cheap per byte (DESIGN.md, "The cost model").

Sizes
-----
``size_bytes`` counts every byte of every frame the packet stands for, Ethernet header
included (no preamble, FCS or inter-frame gap; a physical link adds those itself):
``size_bytes == payload_bytes + segs * hdr_bytes``, where ``hdr_bytes`` is the per-frame header
total (Ethernet + IP + L4, plus 50 per VXLAN layer).  An encapsulation therefore grows
``size_bytes`` by ``segs * overhead``: exactly 50 B per frame for VXLAN.

Addresses are plain ``int`` (IPv4 as a 32-bit number, MAC as a 48-bit number) for speed;
:mod:`perfsim.core.addr` converts to and from text.
"""

from __future__ import annotations

from typing import Any, NamedTuple

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPIP = 4

# Packet kinds (what the transport put in it).
DATA = 0
ACK = 1
SYN = 2
SYNACK = 3
FIN = 4
ARP_REQUEST = 10
ARP_REPLY = 11

BROADCAST_MAC = (1 << 48) - 1


class FlowKey(NamedTuple):
    """The 5-tuple. IPs are 32-bit ints; ports are 0 for protocols without ports."""

    src_ip: int
    dst_ip: int
    proto: int
    sport: int
    dport: int

    def reversed(self) -> FlowKey:
        """The key of the reply direction."""
        return FlowKey(self.dst_ip, self.src_ip, self.proto, self.dport, self.sport)


class Packet:
    """One skb (possibly a GSO super-segment) walking the simulated datapath.

    Attributes are public and mutated by the elements the packet crosses (NAT rewrites
    ``flow``, a VTEP pushes an outer header, the CPU model accumulates ``work_s``).
    """

    __slots__ = (
        "ack",
        "core",
        "ct",
        "dev",
        "df",
        "frags",
        "dst_mac",
        "encap",
        "flow",
        "hdr_bytes",
        "id",
        "kind",
        "owner",
        "payload_bytes",
        "segs",
        "seq",
        "size_bytes",
        "src_mac",
        "t_created",
        "ttl",
        "wnd",
        "work_s",
    )

    def __init__(
        self,
        pid: int,
        flow: FlowKey,
        payload_bytes: int,
        hdr_bytes: int,
        segs: int = 1,
        kind: int = DATA,
        t_created: float = 0.0,
        src_mac: int = 0,
        dst_mac: int = 0,
        seq: int = 0,
        ack: int = 0,
        owner: Any = None,
    ) -> None:
        self.id = pid
        self.flow = flow
        self.src_mac = src_mac
        self.dst_mac = dst_mac
        self.kind = kind
        self.payload_bytes = payload_bytes
        self.hdr_bytes = hdr_bytes
        self.segs = segs
        self.size_bytes = payload_bytes + segs * hdr_bytes
        self.seq = seq
        self.ack = ack
        self.wnd = 0
        self.t_created = t_created
        self.df = True
        self.frags = False
        self.ttl = 64
        self.encap: list[tuple[FlowKey, int, int, int, int, int]] | None = None
        self.ct: Any = None
        self.core: Any = None
        self.work_s = 0.0
        self.dev: Any = None
        self.owner = owner

    # -- encapsulation -------------------------------------------------------------------
    def push_outer(
        self, outer: FlowKey, src_mac: int, dst_mac: int, overhead_bytes: int, tag: int = 0
    ) -> None:
        """Encapsulate: remember the inner addresses, add ``overhead_bytes`` to every frame.

        ``tag`` is carried by the outer header (the VNI of a VXLAN header).  The outer packet is
        a plain datagram (``kind`` DATA): an encapsulated ARP or TCP SYN must not look like one
        to the underlay's stack and conntrack; the inner kind comes back on decapsulation.
        """
        if self.encap is None:
            self.encap = []
        self.encap.append((self.flow, self.src_mac, self.dst_mac, overhead_bytes, tag, self.kind))
        self.kind = DATA
        self.flow = outer
        self.src_mac = src_mac
        self.dst_mac = dst_mac
        self.hdr_bytes += overhead_bytes
        self.size_bytes += overhead_bytes * self.segs

    def pop_outer(self) -> FlowKey:
        """Decapsulate: restore the inner addresses and sizes; return the outer flow key."""
        assert self.encap, "pop_outer on a packet without encapsulation"
        outer = self.flow
        self.flow, self.src_mac, self.dst_mac, overhead, _tag, self.kind = self.encap.pop()
        self.hdr_bytes -= overhead
        self.size_bytes -= overhead * self.segs
        return outer

    @property
    def outer_tag(self) -> int:
        """The tag (VNI) of the outermost encapsulation header, -1 if none."""
        return self.encap[-1][4] if self.encap else -1

    @property
    def l3_bytes_per_seg(self) -> int:
        """IP length of the largest frame: what an MTU check compares (headers minus Ethernet)."""
        per_seg_payload = -(-self.payload_bytes // self.segs) if self.segs else 0
        return per_seg_payload + self.hdr_bytes - 14

    def fragment(self, mtu_bytes: int) -> None:
        """IP fragmentation to ``mtu_bytes``: the payload is cut into frames that each carry
        the full header stack; the frames travel as separate skbs (``frags``)."""
        per_frame = mtu_bytes - (self.hdr_bytes - 14)
        self.segs = -(-self.payload_bytes // per_frame)
        self.size_bytes = self.payload_bytes + self.segs * self.hdr_bytes
        self.frags = True

    def clone(self, pid: int) -> Packet:
        """A copy with a new id (bridge flooding, multicast)."""
        p = Packet.__new__(Packet)
        for name in Packet.__slots__:
            setattr(p, name, getattr(self, name))
        p.id = pid
        p.encap = list(self.encap) if self.encap else None
        return p

    def __repr__(self) -> str:
        return (
            f"Packet(id={self.id}, kind={self.kind}, flow={self.flow}, size={self.size_bytes}, "
            f"segs={self.segs})"
        )
