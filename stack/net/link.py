"""One Ethernet interface: frames in and out, and the ARP that finds each next hop's MAC (sans-IO).

A Host has one `EthernetLink`; a Router has one per port.  Input: `receive(frame, now)` drops what is not
for this interface (another host's unicast, VLAN-tagged frames, unknown ethertypes), answers and learns
from ARP itself, and returns the IPv4 payload for the layer above.  Output: `send_ipv4(next_hop, packet,
now)` frames a packet for a known neighbour or parks it in the ARP cache while the neighbour is resolved;
`transmit(frame)` takes a frame the IP layer built whole (its fast path, after `resolve`).  `poll(now)` runs
the ARP timers and returns the packets whose next hop never answered: the layer above decides what that
means (a host tells its TCP "host unreachable", a router sends ICMP back to the packet's source).

Counters use nstat-like names: EthInFrames, EthInErrors, EthInOtherHost, ArpInRequests, ArpOutReplies, ...
"""

from __future__ import annotations

from stack.devices.contract import OutgoingFrame
from stack.net.arp import ArpCache
from stack.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, arp_reply_for, arp_request, build_arp, parse_arp
from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket
from stack.wire.ethernet import BROADCAST_MAC, ETHERTYPE_ARP, ETHERTYPE_IPV4, ethernet_header, parse_ethernet

UNSPECIFIED_IP = b"\x00\x00\x00\x00"  # the sender of an RFC 5227 probe: nothing to learn
ARP_PADDING = bytes(18)  # an ARP frame is padded to Ethernet's 60-byte minimum


class EthernetLink:
    """The Ethernet side of one interface with IPv4 `address` and hardware address `mac`."""

    def __init__(self, mac: bytes, address: bytes, arp: ArpCache, counters: dict[str, int], *,
                 announce: bool = True) -> None:
        self.mac = mac
        self.address = address
        self.arp = arp
        self.counters = counters
        self._announce = announce  # a gratuitous ARP leaves with the first poll
        self._outbox: list[OutgoingFrame] = []

    # -- input ---------------------------------------------------------------------------------------

    def receive(self, frame: BytesLike, now: float) -> memoryview | None:
        """The IPv4 payload of `frame` when it carries one for this interface; ARP is handled here."""
        counters = self.counters
        counters["EthInFrames"] += 1
        try:
            parsed = parse_ethernet(frame)
        except MalformedPacket:
            counters["EthInErrors"] += 1
            return None
        dst = parsed.dst
        if dst != self.mac and dst != BROADCAST_MAC:
            counters["EthInOtherHost"] += 1  # another host's unicast, or multicast we did not join
            return None
        if parsed.vlan_ids:
            counters["EthInOtherVlan"] += 1  # an untagged interface does not belong to any VLAN
            return None
        if parsed.ethertype == ETHERTYPE_IPV4:
            return parsed.payload
        if parsed.ethertype == ETHERTYPE_ARP:
            self._arp_input(parsed.payload, now)
        else:
            counters["EthInUnknownType"] += 1
        return None

    def _arp_input(self, payload: BytesLike, now: float) -> None:
        counters = self.counters
        try:
            packet = parse_arp(payload)
        except MalformedPacket:
            counters["ArpInErrors"] += 1
            return
        counters["ArpInRequests" if packet.op == ARP_REQUEST else "ArpInReplies"] += 1
        if packet.sender_ip == self.address:
            if packet.sender_mac != self.mac:
                counters["ArpAddressConflicts"] += 1  # someone else claims our address: keep ours
            return
        to_us = packet.target_ip == self.address
        if packet.sender_ip != UNSPECIFIED_IP:
            for waiting in self.arp.learn(packet.sender_ip, packet.sender_mac, now,
                                          is_reply=packet.op == ARP_REPLY, to_us=to_us):
                self._frame_ipv4(packet.sender_mac, waiting)
        if packet.op == ARP_REQUEST and to_us:
            self._send_arp(arp_reply_for(packet, self.mac), packet.sender_mac)

    # -- output --------------------------------------------------------------------------------------

    def resolve(self, next_hop: bytes, now: float) -> bytes | None:
        """The MAC of `next_hop` when the ARP cache has one (a STALE entry counts: it is re-probed)."""
        return self.arp.lookup(next_hop, now)

    def transmit(self, frame: OutgoingFrame) -> None:
        """Queue a frame built whole by the layer above (it resolved the next hop first)."""
        self._outbox.append(frame)

    def send_ipv4(self, next_hop: bytes, packet: bytes, now: float) -> None:
        """Frame an IPv4 packet for `next_hop`, or park it in the ARP cache while resolving."""
        mac = self.arp.lookup(next_hop, now)
        if mac is None:
            self.arp.enqueue(next_hop, packet, now)
        else:
            self._frame_ipv4(mac, packet)

    def _frame_ipv4(self, mac: bytes, packet: bytes) -> None:
        self._outbox.append(OutgoingFrame(b"".join((ethernet_header(mac, self.mac, ETHERTYPE_IPV4), packet))))

    def _send_arp(self, packet: ArpPacket, dst_mac: bytes) -> None:
        self.counters["ArpOutRequests" if packet.op == ARP_REQUEST else "ArpOutReplies"] += 1
        header = ethernet_header(dst_mac, self.mac, ETHERTYPE_ARP)
        self._outbox.append(OutgoingFrame(b"".join((header, build_arp(packet), ARP_PADDING))))

    # -- timers --------------------------------------------------------------------------------------

    def poll(self, now: float) -> list[bytes]:
        """Announce ourselves once, send the ARP requests that are due; return the packets whose next hop
        never answered (the caller reports them)."""
        if not self._announce and not self.arp.due(now):
            return []  # the common poll: no ARP timer due, nothing to ask
        if self._announce:
            self._announce = False
            self._send_arp(arp_request(self.mac, self.address, self.address), BROADCAST_MAC)  # gratuitous
        requests, failures = self.arp.poll(now)
        for request in requests:
            self._send_arp(arp_request(self.mac, self.address, request.target_ip),
                           request.dst_mac or BROADCAST_MAC)
        undeliverable: list[bytes] = []
        for failure in failures:
            self.counters["ArpResolveFailed"] += 1
            undeliverable.extend(failure.packets)
        return undeliverable

    def take_frames(self) -> list[OutgoingFrame]:
        """The frames queued since the last call, in order."""
        frames, self._outbox = self._outbox, []
        return frames

    @property
    def has_frames(self) -> bool:
        return bool(self._outbox) or self._announce

    def next_deadline(self) -> float | None:
        """The ARP cache's next timer (frames waiting to leave are the caller's "at once")."""
        return self.arp.next_deadline()
