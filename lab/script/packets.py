"""Segments on the wire: building the script's inbound IPv4 packets, reading the local TCP's outbound ones.

Both sides of the runner meet here at the IPv4 packet: the Linux side writes and reads a TUN device, the
stack side wraps the same packets in Ethernet for its Host. Options are laid out exactly in the script's
order (with EOL padding to 4 bytes), so a script can send any option sequence, and an observed segment
keeps its options in their wire order, so a script can check it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from lab.script.model import Option
from stack.wire.checksum import fold, pseudo_header_sum, sum_words
from stack.wire.errors import MalformedPacket
from stack.wire.icmp import ICMP_DEST_UNREACHABLE, ICMP_TIME_EXCEEDED, IcmpMessage, build_icmp
from stack.wire.ipv4 import Ipv4Packet, build_ipv4, parse_ipv4

PROTO_TCP = 6
PROTO_ICMP = 1
FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, ".": 0x10, "U": 0x20, "E": 0x40, "W": 0x80}
FLAG_ORDER = "SFRPUEW."  # the order packetdrill prints flags in
_HEADER = struct.Struct("!HHIIBBHHH")
ICMP_CODES = {"net_unreachable": 0, "host_unreachable": 1, "protocol_unreachable": 2, "port_unreachable": 3,
              "frag_needed": 4, "ttl_exceeded": 0}


def flags_text(bits: int) -> str:
    return "".join(letter for letter in FLAG_ORDER if bits & FLAG_BITS[letter])


def flags_bits(text: str) -> int:
    bits = 0
    for letter in text:
        bits |= FLAG_BITS[letter]
    return bits


@dataclass(frozen=True, slots=True)
class Observed:
    """One TCP segment the local TCP sent, as read off the wire, at `time` seconds into the script."""

    time: float
    src_port: int
    dst_port: int
    flags: int
    seq: int
    ack: int
    window: int
    options: tuple[Option, ...]
    length: int
    ip_length: int

    def describe(self, local_isn: int) -> str:
        start = (self.seq - local_isn) % (1 << 32)
        text = f"{flags_text(self.flags)} {start}:{(start + self.length) % (1 << 32)}({self.length})"
        if self.flags & FLAG_BITS["."]:
            text += f" ack {self.ack}"
        text += f" win {self.window}"
        if self.options:
            text += " <" + ",".join(map(str, self.options)) + ">"
        return text


def encode_options(options: tuple[Option, ...]) -> bytes:
    out = bytearray()
    for option in options:
        kind, values = option.kind, option.values
        if kind == "nop":
            out.append(1)
        elif kind == "eol":
            out.append(0)
        elif kind == "mss":
            out += struct.pack("!BBH", 2, 4, values[0])
        elif kind == "wscale":
            out += struct.pack("!BBB", 3, 3, values[0])
        elif kind == "sackOK":
            out += b"\x04\x02"
        elif kind == "TS":
            out += struct.pack("!BBII", 8, 10, values[0], values[1])
        elif kind == "sack":
            out += struct.pack(f"!BB{len(values)}I", 5, 2 + 4 * len(values), *values)
    if len(out) > 40:
        raise ValueError(f"the options take {len(out)} bytes, over TCP's 40")
    out += bytes(-len(out) % 4)
    return bytes(out)


def decode_options(area: bytes) -> tuple[Option, ...]:
    """The options in wire order, NOPs and EOL included (a script may check the padding)."""
    options: list[Option] = []
    index = 0
    while index < len(area):
        kind = area[index]
        if kind in (0, 1):
            options.append(Option("eol" if kind == 0 else "nop"))
            index += 1
            if kind == 0:
                break
            continue
        if index + 1 >= len(area) or area[index + 1] < 2 or index + area[index + 1] > len(area):
            options.append(Option(f"kind{kind}"))
            break
        size = area[index + 1]
        if kind == 2 and size == 4:
            options.append(Option("mss", struct.unpack_from("!H", area, index + 2)))
        elif kind == 3 and size == 3:
            options.append(Option("wscale", (area[index + 2],)))
        elif kind == 4 and size == 2:
            options.append(Option("sackOK"))
        elif kind == 8 and size == 10:
            options.append(Option("TS", struct.unpack_from("!II", area, index + 2)))
        elif kind == 5 and size >= 10 and (size - 2) % 8 == 0:
            options.append(Option("sack", struct.unpack_from(f"!{(size - 2) // 4}I", area, index + 2)))
        else:
            options.append(Option(f"kind{kind}"))
        index += size
    return tuple(options)


def tcp_packet(src: str, dst: str, src_port: int, dst_port: int, *, flags: int, seq: int, ack: int,
               window: int, options: tuple[Option, ...], payload: bytes, urgent: int = 0,
               ident: int = 0) -> bytes:
    """An IPv4 packet carrying one TCP segment, checksums filled in."""
    src_ip, dst_ip = socket.inet_aton(src), socket.inet_aton(dst)
    area = encode_options(options)
    header = bytearray(_HEADER.pack(src_port, dst_port, seq % (1 << 32), ack % (1 << 32),
                                    (5 + len(area) // 4) << 4, flags, window, 0, urgent))
    segment = bytes(header) + area + payload
    checksum = 0xFFFF - fold(sum_words(segment) + pseudo_header_sum(src_ip, dst_ip, PROTO_TCP, len(segment)))
    segment = segment[:16] + struct.pack("!H", checksum) + segment[18:]
    return build_ipv4(Ipv4Packet(src_ip, dst_ip, PROTO_TCP, segment, ttl=64, ident=ident))


def icmp_packet(src: str, dst: str, type_name: str, code_name: str, mtu: int | None, quoted: bytes) -> bytes:
    """An ICMP error from `src` quoting the IP header and first 8 bytes of TCP of `quoted` (RFC 792)."""
    kind = ICMP_DEST_UNREACHABLE if type_name == "unreachable" else ICMP_TIME_EXCEEDED
    rest = struct.pack("!HH", 0, mtu or 0)
    header_length = (quoted[0] & 0x0F) * 4
    message = IcmpMessage(kind, ICMP_CODES[code_name], rest, quoted[:header_length + 8])
    return build_icmp_packet(src, dst, build_icmp(message))


def build_icmp_packet(src: str, dst: str, icmp: bytes) -> bytes:
    return build_ipv4(Ipv4Packet(socket.inet_aton(src), socket.inet_aton(dst), PROTO_ICMP, icmp, ttl=64))


def parse_outbound(data: bytes, time: float) -> Observed | None:
    """The TCP segment in an IPv4 packet the local side sent (None: not IPv4 TCP, or malformed)."""
    if not data or data[0] >> 4 != 4:
        return None
    try:
        packet = parse_ipv4(data)
    except MalformedPacket:
        return None
    if packet.protocol != PROTO_TCP or packet.is_fragment:
        return None
    tcp = bytes(packet.payload)
    if len(tcp) < 20:
        return None
    src_port, dst_port, seq, ack, offset, flags, window, _checksum, _urgent = _HEADER.unpack_from(tcp)
    header_length = (offset >> 4) * 4
    if header_length < 20 or header_length > len(tcp):
        return None
    return Observed(time, src_port, dst_port, flags, seq, ack, window, decode_options(tcp[20:header_length]),
                    len(tcp) - header_length, len(data))
