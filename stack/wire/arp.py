"""ARP for IPv4 over Ethernet (RFC 826): the only kind a host on a TAP needs.

Any other hardware or protocol type, address length or opcode (RARP, InARP) is rejected
with MalformedPacket so the host never acts on a packet it does not understand.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.compat import SLOTS
from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket

ARP_REQUEST = 1
ARP_REPLY = 2
HARDWARE_ETHERNET = 1
PROTOCOL_IPV4 = 0x0800
PACKET_LEN = 28

_PACKET = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(frozen=True, **SLOTS)
class ArpPacket:
    op: int  # ARP_REQUEST or ARP_REPLY
    sender_mac: bytes
    sender_ip: bytes  # 4 bytes
    target_mac: bytes  # all zeros in a request
    target_ip: bytes

    @property
    def is_gratuitous(self) -> bool:
        """An announcement of the sender's own address (sender IP == target IP, RFC 5227)."""
        return self.sender_ip == self.target_ip


def parse_arp(data: BytesLike) -> ArpPacket:
    """Parse an Ethernet/IPv4 ARP packet; trailing Ethernet padding is ignored."""
    if len(data) < PACKET_LEN:
        raise MalformedPacket(f"arp: packet {len(data)} bytes < {PACKET_LEN}")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _PACKET.unpack_from(data)
    if htype != HARDWARE_ETHERNET:
        raise MalformedPacket(f"arp: hardware type {htype}, only Ethernet (1) is supported")
    if ptype != PROTOCOL_IPV4:
        raise MalformedPacket(f"arp: protocol type 0x{ptype:04x}, only IPv4 (0x0800) is supported")
    if hlen != 6 or plen != 4:
        raise MalformedPacket(f"arp: address lengths {hlen}/{plen}, want 6/4")
    if op not in (ARP_REQUEST, ARP_REPLY):
        raise MalformedPacket(f"arp: opcode {op}, only request (1) and reply (2) are supported")
    return ArpPacket(op, sha, spa, tha, tpa)


def build_arp(packet: ArpPacket) -> bytes:
    """The 28-byte ARP packet (the Ethernet layer pads the frame if it wants to)."""
    if packet.op not in (ARP_REQUEST, ARP_REPLY):
        raise ValueError(f"arp: opcode {packet.op}, want 1 or 2")
    for name in ("sender_mac", "target_mac"):
        if len(getattr(packet, name)) != 6:
            raise ValueError(f"arp: {name} must be 6 bytes")
    for name in ("sender_ip", "target_ip"):
        if len(getattr(packet, name)) != 4:
            raise ValueError(f"arp: {name} must be 4 bytes")
    return _PACKET.pack(HARDWARE_ETHERNET, PROTOCOL_IPV4, 6, 4, packet.op, packet.sender_mac,
                        packet.sender_ip, packet.target_mac, packet.target_ip)


def arp_request(sender_mac: bytes, sender_ip: bytes, target_ip: bytes) -> ArpPacket:
    """Who has `target_ip`? (A gratuitous announcement when target_ip == sender_ip.)"""
    return ArpPacket(ARP_REQUEST, sender_mac, sender_ip, b"\x00" * 6, target_ip)


def arp_reply_for(request: ArpPacket, my_mac: bytes) -> ArpPacket:
    """The reply telling the requester that `request.target_ip` is at `my_mac`."""
    return ArpPacket(ARP_REPLY, my_mac, request.target_ip, request.sender_mac, request.sender_ip)
