"""The Linux bridge (``docker0``, an overlay's ``br0``): MAC learning, FDB ageing, flooding.

Model
-----
The bridge is itself a :class:`NetDevice` in its namespace (``docker0`` with 172.17.0.1); its own
MAC is the *local port*.  Devices enslaved with :meth:`Bridge.add_port` hand every frame they
receive to :meth:`Bridge.handle` (``br_handle_frame``), synchronously and on the core that
received it (``pkt.core``), which pays:

* ``bridge_forward`` once per frame (FDB learn + lookup + ``br_forward``), and
* ``bridge_flood_copy`` once per copy when the frame is flooded (``br_flood``: one
  ``skb_clone`` + transmit per port, the original skb going to the last destination).

Forwarding database (``br_fdb.c``)
----------------------------------
``mac -> (port, last_seen_s, static)``.  Learning (``br_fdb_update``) records the source MAC of
every frame against its ingress port, refreshes ``last_seen_s`` of a known MAC and moves it if
it shows up on another port (unless the entry is *sticky*).  Nothing is learned when
``ageing_time_s == 0`` (Linux: "some users want to always flood"), nor from a broadcast,
multicast or all-zero source (Linux drops such frames as invalid; here they are only not
learned, so a packet built without a source MAC still gets through).

A dynamic entry expires ``ageing_time_s`` after it was last seen (``has_expired``:
``updated + hold_time <= now``): a lookup that finds an expired entry removes it (counted in
``aged_out``) and treats the frame as a miss.  The kernel's garbage collector
(``br_fdb_cleanup``) is modelled lazily: the table is swept when a MAC is learned and the
earliest possible expiry has passed, at most once per 10 ms as in the kernel, so ``fdb_size``
and the high-water mark stay honest without a timer event.  Static entries
(:meth:`Bridge.add_static`, ``bridge fdb add ... master static``) never age.
``fdb_max_learned`` (``IFLA_BR_FDB_MAX_LEARNED``, 0 = unlimited) caps the *learned* entries:
when it is reached a new MAC is not learned (``learn_refused``) but the frame is still
forwarded — by flooding.

Forwarding (``br_handle_frame_finish``)
---------------------------------------
* to the bridge's own MAC: up the bridge device's IP stack (``ns.ip_rcv(pkt, bridge)``);
* a known unicast MAC on another port: ``out_port.xmit(pkt)``, after ``nf_hook`` for IPv4
  frames (``br_netfilter`` with ``bridge-nf-call-iptables=1``: iptables FORWARD + conntrack);
  a MAC known on the ingress port is dropped (``same_port``: no hairpin mode);
* an unknown or expired unicast, a broadcast or a multicast: flooded to every port but the
  ingress one; a broadcast is also passed up the local stack.

Simplifications: no VLAN filtering, STP or hairpin mode; multicast is flooded without IGMP
snooping and is not passed up locally (the simulated stacks have no multicast listeners);
flooded copies skip ``nf_hook`` (Linux runs FORWARD per copy, but Docker-bridged IPv4 is only
flooded in the instant before the first reply is learned); only the bridge's own MAC is
local (Linux also treats the ports' MACs as local).  Flood copies keep the packet's
conntrack reference but not its ``owner``, so a copy dropped on a wrong port does not tell the
sender its packet was lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from perfsim.components.netdev import NetDevice
from perfsim.core.packet import ARP_REPLY, ARP_REQUEST, BROADCAST_MAC, Packet
from perfsim.errors import ConfigError, check_number

if TYPE_CHECKING:
    from perfsim.components.host import Host

NfHook = Callable[[Packet, NetDevice, NetDevice], bool]
"""``hook(pkt, in_port, out_port) -> bool``; False: the hook dropped (and counted) the packet."""

MAX_AGEING_TIME_S = 42_949_672.95  # IFLA_BR_AGEING_TIME is a u32 in centiseconds
MAX_FDB_LEARNED = 2**32 - 1  # IFLA_BR_FDB_MAX_LEARNED is a u32
GC_MIN_INTERVAL_S = 0.01  # br_fdb_cleanup reschedules itself at least 10 ms later
MAC_MAX = 2**48 - 1


class FdbEntry(NamedTuple):
    """A snapshot of one FDB entry (:meth:`Bridge.fdb_entries`)."""

    port: NetDevice
    last_seen_s: float
    static: bool
    sticky: bool


class _Entry:
    """A live FDB entry (mutable, slotted: touched on every frame)."""

    __slots__ = ("last_seen_s", "port", "static", "sticky")

    def __init__(
        self, port: NetDevice, last_seen_s: float, static: bool = False, sticky: bool = False
    ) -> None:
        self.port = port
        self.last_seen_s = last_seen_s
        self.static = static
        self.sticky = sticky


def is_multicast(mac: int) -> bool:
    """The I/G bit (least significant bit of the first octet): group address, incl. broadcast."""
    return bool((mac >> 40) & 1)


class Bridge(NetDevice):
    """A Linux bridge device with its ports and forwarding database.

    Parameters
    ----------
    host:
        The host whose cores pay for bridging (ports must live on it).
    name:
        Unique element name, ``<namespace>/<ifname>`` (e.g. ``h0/docker0``).
    mac:
        The bridge device's own (unicast) MAC: frames sent to it go up its IP stack.
    mtu_bytes:
        Device MTU (68..65535).
    ageing_time_s:
        ``ageing_time``: seconds after which an unrefreshed learned entry expires (>= 0;
        0 disables learning, so every unicast without a static entry is flooded).
    fdb_max_learned:
        Cap on learned (dynamic) entries, 0 = unlimited (the kernel's default).
    nf_hook:
        ``br_netfilter``: called as ``nf_hook(pkt, in_port, out_port)`` for every IPv4 frame
        forwarded between two ports; returns False when it dropped the frame.

    Attributes
    ----------
    learned, aged_out, learn_refused, moved:
        Entries created by learning, expired, not created because the table was at
        ``fdb_max_learned``, and moved to another port by learning.
    forwarded, floods, flood_copies:
        Unicast frames sent out of one port; frames flooded; copies those floods made
        (each paying ``bridge_flood_copy``, the local copy of a broadcast included).
    fdb_max_seen:
        High-water mark of the FDB size (entries, static ones included).
    """

    def __init__(
        self,
        host: Host,
        name: str,
        mac: int,
        mtu_bytes: int = 1500,
        ageing_time_s: float = 300.0,
        fdb_max_learned: int = 0,
        nf_hook: NfHook | None = None,
    ) -> None:
        check_number(f"{name}.mac", mac, low=0, high=MAC_MAX, integer=True)
        if mac == 0 or is_multicast(mac):
            raise ConfigError(f"{name}.mac", mac, "a unicast, non-zero 48-bit MAC")
        check_number(f"{name}.ageing_time_s", ageing_time_s, low=0, high=MAX_AGEING_TIME_S)
        check_number(
            f"{name}.fdb_max_learned", fdb_max_learned, low=0, high=MAX_FDB_LEARNED, integer=True
        )
        super().__init__(host, name, mac, mtu_bytes)
        self.ageing_time_s = float(ageing_time_s)
        self.fdb_max_learned = fdb_max_learned
        self.nf_hook = nf_hook
        self._ports: list[NetDevice] = []
        self._fdb: dict[int, _Entry] = {}
        self._n_learned = 0  # dynamic entries currently in the table (what the cap counts)
        self._gc_due_s = float("inf")  # no dynamic entry can have expired before this time
        self._fwd_stage = host.stage("bridge_forward")
        self._flood_stage = host.stage("bridge_flood_copy")
        self.learned = 0
        self.aged_out = 0
        self.learn_refused = 0
        self.moved = 0
        self.forwarded = 0
        self.floods = 0
        self.flood_copies = 0
        self.fdb_max_seen = 0

    # -- ports ----------------------------------------------------------------------------------
    @property
    def ports(self) -> tuple[NetDevice, ...]:
        """The enslaved devices, in the order they were added (the flooding order)."""
        return tuple(self._ports)

    def add_port(self, dev: NetDevice) -> None:
        """Enslave ``dev`` (``ip link set dev master br``): its received frames come here."""
        if dev is self or isinstance(dev, Bridge):
            raise ConfigError(f"{self.name}.ports", dev.name, "a device that is not a bridge")
        if dev.master is not None:
            raise ConfigError(f"{self.name}.ports", dev.name, "a device not enslaved to a bridge")
        if dev.host is not self.host:
            raise ConfigError(f"{self.name}.ports", dev.name, f"a device on host {self.host.name}")
        if dev.ns is not None and self.ns is not None and dev.ns is not self.ns:
            raise ConfigError(f"{self.name}.ports", dev.name, "a device in the bridge's namespace")
        dev.master = self
        self._ports.append(dev)

    def remove_port(self, dev: NetDevice) -> None:
        """Release ``dev`` and flush every FDB entry pointing to it, static ones included."""
        if dev.master is not self:
            raise ConfigError(f"{self.name}.ports", dev.name, "a port of this bridge")
        self._ports.remove(dev)
        dev.master = None
        fdb = self._fdb
        for mac in [m for m, e in fdb.items() if e.port is dev]:
            if not fdb.pop(mac).static:
                self._n_learned -= 1

    # -- FDB ------------------------------------------------------------------------------------
    def add_static(self, mac: int, port: NetDevice, sticky: bool = False) -> None:
        """``bridge fdb add MAC dev PORT master static [sticky]``: an entry that never ages.

        Learning still moves a static entry to the port the MAC shows up on, unless ``sticky``.
        """
        check_number(f"{self.name}.fdb.mac", mac, low=0, high=MAC_MAX, integer=True)
        if mac == 0 or is_multicast(mac):
            raise ConfigError(f"{self.name}.fdb.mac", mac, "a unicast, non-zero 48-bit MAC")
        if port.master is not self:
            raise ConfigError(f"{self.name}.fdb.port", port.name, "a port of this bridge")
        old = self._fdb.get(mac)
        if old is not None and not old.static:
            self._n_learned -= 1
        self._fdb[mac] = _Entry(port, self.sim.now, True, sticky)
        self._note_size()

    def fdb_lookup(self, mac: int) -> NetDevice | None:
        """The port ``mac`` is known on now, or None (an expired entry is removed)."""
        return self._lookup(mac, self.sim.now)

    def fdb_size(self) -> int:
        """Unexpired entries now (expired ones are purged and counted in ``aged_out``)."""
        self._gc(self.sim.now)
        return len(self._fdb)

    def fdb_entries(self) -> dict[int, FdbEntry]:
        """A snapshot of the unexpired entries, by MAC."""
        self._gc(self.sim.now)
        fdb = self._fdb
        return {m: FdbEntry(e.port, e.last_seen_s, e.static, e.sticky) for m, e in fdb.items()}

    def occupancy(self) -> dict[str, int]:
        """Table occupancy for metrics: entries now, learned entries now, high-water mark."""
        size = self.fdb_size()
        return {
            "fdb_entries": size,
            "fdb_learned": self._n_learned,
            "fdb_max_seen": self.fdb_max_seen,
        }

    def _lookup(self, mac: int, now: float) -> NetDevice | None:
        e = self._fdb.get(mac)
        if e is None:
            return None
        if not e.static and now - e.last_seen_s >= self.ageing_time_s:
            del self._fdb[mac]
            self._n_learned -= 1
            self.aged_out += 1
            return None
        return e.port

    def _learn(self, mac: int, port: NetDevice, now: float) -> None:
        """``br_fdb_update`` for a source MAC (valid unicast, learning enabled)."""
        e = self._fdb.get(mac)
        if e is not None:
            if not e.static and now - e.last_seen_s >= self.ageing_time_s:
                self.aged_out += 1  # expired, not yet collected: re-learned in place
                self.learned += 1
                self._gc_due_s = min(self._gc_due_s, now + self.ageing_time_s)
            e.last_seen_s = now
            if e.port is not port and not e.sticky:
                e.port = port
                self.moved += 1
            return
        if now >= self._gc_due_s:
            self._gc(now)
        cap = self.fdb_max_learned
        if cap and self._n_learned >= cap:
            self.learn_refused += 1
            return
        self._fdb[mac] = _Entry(port, now)
        self._n_learned += 1
        self.learned += 1
        self._gc_due_s = min(self._gc_due_s, now + self.ageing_time_s)
        self._note_size()

    def _gc(self, now: float) -> None:
        """Sweep expired dynamic entries (``br_fdb_cleanup``) and schedule the next sweep."""
        ageing = self.ageing_time_s
        fdb = self._fdb
        expired = [m for m, e in fdb.items() if not e.static and now - e.last_seen_s >= ageing]
        for m in expired:
            del fdb[m]
        self._n_learned -= len(expired)
        self.aged_out += len(expired)
        soonest = min((e.last_seen_s for e in fdb.values() if not e.static), default=None)
        if soonest is None:
            self._gc_due_s = float("inf")
        else:
            self._gc_due_s = max(soonest + ageing, now + GC_MIN_INTERVAL_S)

    def _note_size(self) -> None:
        n = len(self._fdb)
        self.fdb_max_seen = max(self.fdb_max_seen, n)

    # -- datapath -------------------------------------------------------------------------------
    def handle(self, pkt: Packet, in_port: NetDevice) -> None:
        """A frame received on port ``in_port`` (``br_handle_frame``): learn, then forward."""
        self._fwd_stage.charge(pkt)
        now = self.sim.env._now
        src = pkt.src_mac
        if src and not (src >> 40) & 1 and src != self.mac and self.ageing_time_s > 0.0:
            self._learn(src, in_port, now)
        dst = pkt.dst_mac
        if dst == self.mac:
            self._up(pkt)
            return
        if (dst >> 40) & 1:
            self._flood(pkt, in_port, dst == BROADCAST_MAC)
            return
        out = self._lookup(dst, now)
        if out is None:
            self._flood(pkt, in_port, False)
            return
        if out is in_port:
            self.sim.drop(pkt, self.name, "same_port")
            return
        hook = self.nf_hook
        kind = pkt.kind
        if (
            hook is not None
            and kind != ARP_REQUEST
            and kind != ARP_REPLY
            and not hook(pkt, in_port, out)
        ):
            return  # the hook dropped and counted it
        self.forwarded += 1
        out.xmit(pkt)

    def xmit(self, pkt: Packet) -> None:
        """A frame the host stack sends out of the bridge device (``br_dev_xmit``).

        FDB lookup on the destination, no learning, no netfilter (the packet already crossed
        OUTPUT/POSTROUTING in the IP stack); a miss, broadcast or multicast floods every port.
        """
        self.tx_packets += 1
        self._fwd_stage.charge(pkt)
        dst = pkt.dst_mac
        if (dst >> 40) & 1:
            self._flood(pkt, None, False)
            return
        if dst == self.mac:
            self.sim.drop(pkt, self.name, "local_dst")  # local FDB entry has no port to go to
            return
        out = self._lookup(dst, self.sim.env._now)
        if out is None:
            self._flood(pkt, None, False)
            return
        self.forwarded += 1
        out.xmit(pkt)

    def _up(self, pkt: Packet) -> None:
        """``br_pass_frame_up``: the frame enters the IP stack as received on the bridge."""
        self.rx_packets += 1
        pkt.dev = self
        ns = self.ns
        if ns is None:
            self.sim.drop(pkt, self.name, "device_not_in_namespace")
        else:
            ns.ip_rcv(pkt, self)

    def _flood(self, pkt: Packet, in_port: NetDevice | None, local: bool) -> None:
        """``br_flood``: a copy to every port except ``in_port`` (+ the local stack if asked).

        Each copy pays ``bridge_flood_copy``.  The work already accumulated on the frame is
        carried by the first copy sent (it is served once), and the original object goes to
        the last destination.
        """
        outs = [p for p in self._ports if p is not in_port]
        n = len(outs) + local
        if n == 0:
            self.sim.drop(pkt, self.name, "flood_no_port")
            return
        self.floods += 1
        self.flood_copies += n
        stage = self._flood_stage
        sim = self.sim
        last = n - 1
        for i, port in enumerate(outs):
            if i == last:
                copy = pkt
            else:
                copy = sim.clone(pkt)
                copy.owner = None
                copy.work_s, pkt.work_s = pkt.work_s, 0.0  # the first copy sent carries it
            stage.charge(copy)
            port.xmit(copy)
        if local:
            stage.charge(pkt)
            self._up(pkt)

    def __repr__(self) -> str:
        return f"Bridge({self.name!r}, ports={len(self._ports)}, fdb={len(self._fdb)})"
