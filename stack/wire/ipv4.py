"""IPv4 headers (RFC 791): parse, build and fragment.

Reassembly lives in `stack.net.reassembly` (`Reassembler`). Addresses are 4-byte
`bytes`; convert with `socket.inet_aton`/`inet_ntoa` at the edges. Fragment offsets are in
bytes here (the wire field counts 8-byte units) so callers never multiply by 8 themselves.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.compat import SLOTS
from stack.wire.buffer import BytesLike
from stack.wire.checksum import fold, sum_words
from stack.wire.errors import MalformedPacket
from stack.wire.tlv import walk_options

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

HEADER_LEN = 20  # without options
MAX_HEADER_LEN = 60
MAX_PACKET_LEN = 65535  # the total-length field is 16 bits
MIN_MTU = 68  # RFC 791: every host must forward a 68-octet datagram without further fragmentation
DEFAULT_TTL = 64  # Linux's net.ipv4.ip_default_ttl

FLAG_RESERVED = 0x8000
FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF

OPTION_COPIED = 0x80  # high bit of the option type: repeat the option in every fragment

_HEADER = struct.Struct("!BBHHHBBH4s4s")


@dataclass(**SLOTS)
class Ipv4Packet:
    src: bytes
    dst: bytes
    protocol: int
    payload: BytesLike
    ttl: int = DEFAULT_TTL
    ident: int = 0
    dont_fragment: bool = True
    more_fragments: bool = False
    fragment_offset: int = 0  # in bytes (a multiple of 8), not in the wire's 8-byte units
    tos: int = 0  # DSCP << 2 | ECN
    options: bytes = b""  # raw option bytes, padded to a multiple of 4 when built

    @property
    def is_fragment(self) -> bool:
        """True for any piece of a fragmented datagram (first, middle or last)."""
        return self.more_fragments or self.fragment_offset != 0

    @property
    def header_length(self) -> int:
        return HEADER_LEN + _padded_len(len(self.options))


class FragmentationNeeded(ValueError):
    """A DF packet is larger than the MTU: the sender must shrink it (EMSGSIZE / PMTUD)."""

    def __init__(self, size: int, mtu: int) -> None:
        super().__init__(f"ipv4: packet of {size} bytes with DF set exceeds MTU {mtu}")
        self.size = size
        self.mtu = mtu


def _padded_len(length: int) -> int:
    return (length + 3) & ~3


def parse_ipv4(data: BytesLike, verify_checksum: bool = True) -> Ipv4Packet:
    """Parse an IPv4 header; the payload is a memoryview slice cut at the total length.

    Bytes after the total length (Ethernet padding of short frames) are ignored. Options are
    kept as raw bytes and otherwise skipped.
    """
    received = len(data)
    if received < HEADER_LEN:
        raise MalformedPacket(f"ipv4: packet {received} bytes < {HEADER_LEN}-byte header")
    (version_ihl, tos, total_length, ident, flags_offset, ttl, protocol, _checksum,
     src, dst) = _HEADER.unpack_from(data)
    version = version_ihl >> 4
    if version != 4:
        raise MalformedPacket(f"ipv4: version {version}, want 4")
    header_length = (version_ihl & 0x0F) * 4
    if header_length < HEADER_LEN:
        raise MalformedPacket(f"ipv4: header length {header_length} < {HEADER_LEN}")
    if header_length > received:
        raise MalformedPacket(f"ipv4: header length {header_length} > {received} bytes received")
    if total_length < header_length:
        raise MalformedPacket(f"ipv4: total length {total_length} < header length {header_length}")
    if total_length > received:
        raise MalformedPacket(f"ipv4: total length {total_length} > {received} bytes received")
    view = memoryview(data)
    if verify_checksum and sum_words(view[:header_length]) != 0xFFFF:
        raise MalformedPacket(f"ipv4: bad header checksum 0x{_checksum:04x}")
    fragment_offset = (flags_offset & OFFSET_MASK) * 8
    fragment_end = fragment_offset + total_length - header_length
    if fragment_end > MAX_PACKET_LEN:
        raise MalformedPacket(f"ipv4: fragment ends at byte {fragment_end} > {MAX_PACKET_LEN}")
    return Ipv4Packet(
        src, dst, protocol, view[header_length:total_length], ttl, ident,
        bool(flags_offset & FLAG_DF), bool(flags_offset & FLAG_MF), fragment_offset, tos,
        bytes(view[HEADER_LEN:header_length]) if header_length > HEADER_LEN else b"",
    )


def ipv4_header(packet: Ipv4Packet, payload_length: int | None = None) -> bytes:
    """The header alone (checksum filled in), for callers that join all layers in one go.

    `payload_length` defaults to ``len(packet.payload)``; pass it when the payload is built
    separately (e.g. a TCP header plus data that are joined later).
    """
    if payload_length is None:
        payload_length = len(packet.payload)
    options = packet.options
    if options:
        if len(options) > MAX_HEADER_LEN - HEADER_LEN:
            raise ValueError(f"ipv4: {len(options)} bytes of options > {MAX_HEADER_LEN - HEADER_LEN}")
        options = options + bytes(_padded_len(len(options)) - len(options))  # pad with End of Options
    if packet.fragment_offset & 7 or not 0 <= packet.fragment_offset <= OFFSET_MASK * 8:
        raise ValueError(f"ipv4: fragment offset {packet.fragment_offset} is not a multiple of 8 in 0..65528")
    flags_offset = ((FLAG_DF if packet.dont_fragment else 0) | (FLAG_MF if packet.more_fragments else 0)
                    | packet.fragment_offset >> 3)
    return _header(packet.src, packet.dst, packet.protocol, payload_length, packet.ttl, packet.ident,
                   flags_offset, packet.tos, options)


def datagram_header(src: bytes, dst: bytes, protocol: int, payload_length: int, ttl: int = DEFAULT_TTL,
                    ident: int = 0, dont_fragment: bool = True, tos: int = 0) -> bytes:
    """The header of a whole datagram without options: `ipv4_header` for what every TCP segment the
    host sends is, without an `Ipv4Packet` built for each."""
    return _header(src, dst, protocol, payload_length, ttl, ident, FLAG_DF if dont_fragment else 0, tos, b"")


def _header(src: bytes, dst: bytes, protocol: int, payload_length: int, ttl: int, ident: int,
            flags_offset: int, tos: int, options: bytes) -> bytes:
    header_length = HEADER_LEN + len(options)
    total_length = header_length + payload_length
    if total_length > MAX_PACKET_LEN:
        raise ValueError(f"ipv4: total length {total_length} > {MAX_PACKET_LEN}")
    version_ihl = 0x40 | header_length >> 2
    # The header's word sum computed from the fields: cheaper than packing twice. Values wider than
    # 16 bits (the 8 address bytes as one integer) are fine: fold() reduces modulo 0xFFFF.
    total = ((version_ihl << 8 | tos) + total_length + ident + flags_offset + (ttl << 8 | protocol)
             + int.from_bytes(src + dst, "big"))
    if options:
        total += sum_words(options)
    checksum = ~fold(total) & 0xFFFF
    header = _HEADER.pack(version_ihl, tos, total_length, ident, flags_offset, ttl, protocol, checksum,
                          src, dst)
    return header + options if options else header


def build_ipv4(packet: Ipv4Packet) -> bytes:
    """Header and payload, concatenated once."""
    return b"".join((ipv4_header(packet), packet.payload))


def copied_options(options: BytesLike) -> bytes:
    """The options whose copy flag says they belong in every fragment, not only the first.

    Malformed option lists are cut at the first bad option rather than looped over.
    """
    kept = [bytes(options[index:index + size]) for kind, index, size in walk_options(options)
            if kind & OPTION_COPIED]
    return b"".join(kept)


def fragment_ipv4(packet: Ipv4Packet, mtu: int) -> list[bytes]:
    """Split a packet into wire-ready fragments of at most `mtu` bytes (RFC 791 section 3.2).

    A packet that fits is returned whole. A packet with DF set that does not fit raises
    FragmentationNeeded. An already fragmented packet can be fragmented again: offsets add
    up and the last piece keeps the original More Fragments flag.
    """
    if mtu < MIN_MTU:
        raise ValueError(f"ipv4: MTU {mtu} < minimum {MIN_MTU}")
    size = packet.header_length + len(packet.payload)
    if size <= mtu:
        return [build_ipv4(packet)]
    if packet.dont_fragment:
        raise FragmentationNeeded(size, mtu)
    later_options = copied_options(packet.options)
    payload = memoryview(packet.payload) if not isinstance(packet.payload, memoryview) else packet.payload
    fragments = []
    position = 0
    options = packet.options
    while position < len(payload):
        room = (mtu - HEADER_LEN - _padded_len(len(options))) & ~7
        chunk = payload[position:position + room]
        last = position + len(chunk) >= len(payload)
        piece = Ipv4Packet(
            packet.src, packet.dst, packet.protocol, chunk, packet.ttl, packet.ident, False,
            packet.more_fragments if last else True, packet.fragment_offset + position, packet.tos, options,
        )
        fragments.append(build_ipv4(piece))
        position += len(chunk)
        options = later_options
    return fragments
