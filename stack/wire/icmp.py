"""ICMP for IPv4 (RFC 792, RFC 1122 3.2.2): echo, destination unreachable, time exceeded.

The TCP layer learns about its own lost or refused segments from ICMP errors, which quote
the offending IP header and at least the first 8 bytes of the TCP header:
`parse_icmp_error_quote` turns that quote into the 4-tuple and sequence number TCP needs to
find the connection (and, per RFC 5927, to check the sequence number is in flight).

Source quench (type 4) is deprecated (RFC 6633): it is parsed but not in ICMP_ERROR_TYPES,
so the host ignores it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.compat import SLOTS
from stack.wire.buffer import BytesLike
from stack.wire.checksum import internet_checksum, sum_words
from stack.wire.errors import MalformedPacket
from stack.wire.ipv4 import HEADER_LEN as IPV4_HEADER_LEN
from stack.wire.ipv4 import PROTO_ICMP, PROTO_TCP

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACHABLE = 3
ICMP_SOURCE_QUENCH = 4
ICMP_REDIRECT = 5
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETER_PROBLEM = 12

# Destination unreachable codes (RFC 792, RFC 1122, RFC 1812).
UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_FRAG_NEEDED = 4  # "fragmentation needed and DF set": next-hop MTU in `rest` (RFC 1191)
UNREACH_SOURCE_ROUTE_FAILED = 5
UNREACH_NET_UNKNOWN = 6
UNREACH_HOST_UNKNOWN = 7
UNREACH_NET_PROHIBITED = 9
UNREACH_HOST_PROHIBITED = 10
UNREACH_ADMIN_PROHIBITED = 13

# Time exceeded codes.
TIME_EXCEEDED_TTL = 0
TIME_EXCEEDED_REASSEMBLY = 1

# Types that report a problem with a datagram we sent (source quench deliberately left out).
ICMP_ERROR_TYPES = frozenset({ICMP_DEST_UNREACHABLE, ICMP_TIME_EXCEEDED, ICMP_PARAMETER_PROBLEM})

HEADER_LEN = 8
QUOTE_LIMIT = 576 - IPV4_HEADER_LEN - HEADER_LEN  # RFC 1812 4.3.2.3 and Linux: the error fits in 576 bytes

_HEADER = struct.Struct("!BBH4s")
_ECHO = struct.Struct("!HH")
_QUOTED_IP = struct.Struct("!BBHHHBBH4s4s")
_QUOTED_TCP = struct.Struct("!HHI")


@dataclass(**SLOTS)
class IcmpMessage:
    type: int
    code: int
    rest: bytes = b"\x00\x00\x00\x00"  # the 4 "rest of header" bytes: echo id/seq, next-hop MTU, ...
    payload: BytesLike = b""

    @property
    def is_error(self) -> bool:
        return self.type in ICMP_ERROR_TYPES

    @property
    def echo_id(self) -> int:
        return _ECHO.unpack(self.rest)[0]

    @property
    def echo_sequence(self) -> int:
        return _ECHO.unpack(self.rest)[1]

    @property
    def next_hop_mtu(self) -> int | None:
        """The MTU a fragmentation-needed error reports (RFC 1191), None if absent or another type."""
        if self.type != ICMP_DEST_UNREACHABLE or self.code != UNREACH_FRAG_NEEDED:
            return None
        mtu = _ECHO.unpack(self.rest)[1]
        return mtu or None  # 0: an old router that predates RFC 1191


@dataclass(frozen=True, **SLOTS)
class QuotedTcp:
    """What an ICMP error's quote says about the TCP segment it is about (our own segment)."""

    src: bytes  # our address: the original segment's source
    dst: bytes
    src_port: int
    dst_port: int
    seq: int


def parse_icmp(data: BytesLike, verify_checksum: bool = True) -> IcmpMessage:
    """Parse an ICMP message; the payload is a memoryview slice (no copy)."""
    if len(data) < HEADER_LEN:
        raise MalformedPacket(f"icmp: message {len(data)} bytes < {HEADER_LEN}-byte header")
    icmp_type, code, checksum, rest = _HEADER.unpack_from(data)
    if verify_checksum and sum_words(data) != 0xFFFF:
        raise MalformedPacket(f"icmp: bad checksum 0x{checksum:04x}")
    return IcmpMessage(icmp_type, code, rest, memoryview(data)[HEADER_LEN:])


def build_icmp(message: IcmpMessage) -> bytes:
    """Header with checksum plus payload, concatenated once."""
    if len(message.rest) != 4:
        raise ValueError(f"icmp: rest of header must be 4 bytes, got {len(message.rest)}")
    header = _HEADER.pack(message.type, message.code, 0, message.rest)
    checksum = internet_checksum(message.payload, sum_words(header))
    return b"".join((_HEADER.pack(message.type, message.code, checksum, message.rest), message.payload))


def echo_request(ident: int, sequence: int, payload: BytesLike = b"") -> IcmpMessage:
    return IcmpMessage(ICMP_ECHO_REQUEST, 0, _ECHO.pack(ident, sequence), payload)


def echo_reply_for(request: IcmpMessage) -> IcmpMessage:
    """The reply to an echo request: same identifier, sequence and data (RFC 1122 3.2.2.6)."""
    if request.type != ICMP_ECHO_REQUEST:
        raise ValueError(f"icmp: type {request.type} is not an echo request")
    return IcmpMessage(ICMP_ECHO_REPLY, 0, request.rest, request.payload)


def _quote(original_ip_packet: BytesLike, limit: int) -> BytesLike:
    """The leading bytes of the original packet, never past its total length (no link padding)."""
    if len(original_ip_packet) < IPV4_HEADER_LEN:
        raise ValueError("icmp: an error must quote at least the original 20-byte IP header")
    total_length = original_ip_packet[2] << 8 | original_ip_packet[3]
    return memoryview(original_ip_packet)[:min(limit, max(total_length, IPV4_HEADER_LEN))]


def destination_unreachable(code: int, original_ip_packet: BytesLike, mtu: int | None = None,
                            limit: int = QUOTE_LIMIT) -> IcmpMessage:
    """A destination-unreachable error quoting the original packet (header and leading data).

    `mtu` is required for code 4 (fragmentation needed) and goes in the low 16 bits of `rest`.
    """
    if code == UNREACH_FRAG_NEEDED:
        if mtu is None or not 0 < mtu <= 0xFFFF:
            raise ValueError("icmp: fragmentation needed requires the next-hop MTU (1..65535)")
        rest = _ECHO.pack(0, mtu)
    else:
        rest = b"\x00\x00\x00\x00"
    return IcmpMessage(ICMP_DEST_UNREACHABLE, code, rest, _quote(original_ip_packet, limit))


def time_exceeded(code: int, original_ip_packet: BytesLike, limit: int = QUOTE_LIMIT) -> IcmpMessage:
    """TTL exceeded in transit (code 0) or fragment reassembly time exceeded (code 1)."""
    return IcmpMessage(ICMP_TIME_EXCEEDED, code, b"\x00\x00\x00\x00", _quote(original_ip_packet, limit))


def may_send_error_about(original_ip_packet: BytesLike) -> bool:
    """RFC 1122 3.2.2: never send an ICMP error about an ICMP error, a non-first fragment,
    a broadcast/multicast destination, or a packet from an address that names no host.

    The subnet's directed broadcast address depends on the prefix, which only the host
    knows: it checks that one itself."""
    if len(original_ip_packet) < IPV4_HEADER_LEN:
        return False
    version_ihl, _tos, _total, _ident, flags_offset, _ttl, protocol, _sum, src, dst = (
        _QUOTED_IP.unpack_from(original_ip_packet))
    header_length = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or flags_offset & 0x1FFF:
        return False
    if dst[0] >= 224 or src[0] == 0 or src[0] >= 224 or src[0] == 127:
        return False  # multicast, class E or limited broadcast; unspecified or loopback source
    if protocol == PROTO_ICMP:
        if len(original_ip_packet) <= header_length:
            return False
        return original_ip_packet[header_length] not in ICMP_ERROR_TYPES | {ICMP_SOURCE_QUENCH, ICMP_REDIRECT}
    return True


def parse_icmp_error_quote(payload: BytesLike) -> QuotedTcp | None:
    """The TCP 4-tuple and sequence number quoted in an ICMP error, or None if it is not TCP.

    Only the quote's IP header and the first 8 TCP bytes are used: the quote is truncated and
    its total length and checksum refer to the original packet, so they are not checked.
    A quote too short or too broken to read raises MalformedPacket.
    """
    if len(payload) < IPV4_HEADER_LEN:
        raise MalformedPacket(f"icmp: quoted packet {len(payload)} bytes < {IPV4_HEADER_LEN}-byte IP header")
    version_ihl, _tos, _total, _ident, flags_offset, _ttl, protocol, _sum, src, dst = (
        _QUOTED_IP.unpack_from(payload))
    if version_ihl >> 4 != 4:
        raise MalformedPacket(f"icmp: quoted packet has IP version {version_ihl >> 4}")
    header_length = (version_ihl & 0x0F) * 4
    if header_length < IPV4_HEADER_LEN:
        raise MalformedPacket(f"icmp: quoted IP header length {header_length} < {IPV4_HEADER_LEN}")
    if protocol != PROTO_TCP or flags_offset & 0x1FFF:
        return None  # not TCP, or a later fragment that carries no TCP header
    if len(payload) < header_length + _QUOTED_TCP.size:
        raise MalformedPacket(
            f"icmp: quote holds {len(payload) - header_length} TCP bytes < {_QUOTED_TCP.size}")
    src_port, dst_port, seq = _QUOTED_TCP.unpack_from(payload, header_length)
    return QuotedTcp(src, dst, src_port, dst_port, seq)
