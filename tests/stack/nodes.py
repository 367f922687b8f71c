"""Test helpers: a raw frame endpoint to inject and capture frames next to a Host, and frame builders."""

from __future__ import annotations

import socket

from stack.devices.contract import OutgoingFrame
from stack.wire.arp import ArpPacket, parse_arp
from stack.wire.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, EthernetFrame, build_ethernet, parse_ethernet
from stack.wire.ipv4 import Ipv4Packet, build_ipv4, parse_ipv4

RAW_MAC = bytes.fromhex("0200000000aa")


class RawEndpoint:
    """The far end of a wire that only records what it receives and sends what a test queues."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []
        self.outbox: list[bytes] = []
        self.driver = None

    def receive_frame(self, frame: bytes, now: float, checksum_verified: bool = False) -> None:
        self.received.append((now, bytes(frame)))

    def poll(self, now: float) -> list[OutgoingFrame]:
        frames, self.outbox = self.outbox, []
        return [OutgoingFrame(frame) for frame in frames]

    def next_deadline(self) -> float | None:
        return None

    def inject(self, frame: bytes) -> None:
        self.outbox.append(frame)

    def arp_packets(self) -> list[tuple[float, bytes, ArpPacket]]:
        """(time, Ethernet destination, ARP packet) for every ARP frame received."""
        found = []
        for now, frame in self.received:
            parsed = parse_ethernet(frame)
            if parsed.ethertype == ETHERTYPE_ARP:
                found.append((now, parsed.dst, parse_arp(parsed.payload)))
        return found

    def ipv4_packets(self) -> list[Ipv4Packet]:
        packets = []
        for _, frame in self.received:
            parsed = parse_ethernet(frame)
            if parsed.ethertype == ETHERTYPE_IPV4:
                packets.append(parse_ipv4(parsed.payload))
        return packets


def ip(text: str) -> bytes:
    return socket.inet_aton(text)


def ipv4_frame(dst_mac: bytes, src: str, dst: str, protocol: int, payload: bytes, **fields: object) -> bytes:
    packet = Ipv4Packet(ip(src), ip(dst), protocol, payload, **fields)  # type: ignore[arg-type]
    return build_ethernet(EthernetFrame(dst_mac, RAW_MAC, ETHERTYPE_IPV4, build_ipv4(packet)))


class ArpOnlyPeer(RawEndpoint):
    """A neighbour that answers ARP for ``address`` and silently drops everything else (a black hole)."""

    def __init__(self, address: str, mac: bytes = RAW_MAC) -> None:
        super().__init__()
        self.address = ip(address)
        self.mac = mac

    def receive_frame(self, frame: bytes, now: float, checksum_verified: bool = False) -> None:
        super().receive_frame(frame, now)
        from stack.wire.arp import ARP_REQUEST, arp_reply_for, build_arp

        parsed = parse_ethernet(frame)
        if parsed.ethertype != ETHERTYPE_ARP:
            return
        packet = parse_arp(parsed.payload)
        if packet.op == ARP_REQUEST and packet.target_ip == self.address:
            reply = arp_reply_for(packet, self.mac)
            self.outbox.append(build_ethernet(EthernetFrame(packet.sender_mac, self.mac, ETHERTYPE_ARP,
                                                            build_arp(reply))))

    def tcp_segments(self) -> list[tuple[float, bytes]]:
        """(time, IPv4 packet bytes) of every TCP packet that reached the black hole."""
        found = []
        for now, frame in self.received:
            parsed = parse_ethernet(frame)
            if parsed.ethertype == ETHERTYPE_IPV4 and parsed.payload[9] == 6:
                found.append((now, bytes(parsed.payload)))
        return found
