"""One-line summaries of frames in tcpdump's notation (``tcpdump -nn -t -S``).

A student reads the stack's traffic next to a real capture of the kernel's: the same words,
the same flag letters (``[S.]``, ``[P.]``), the same option list in wire order. Only the common
cases are spelled exactly like tcpdump (ARP, TCP, UDP, ICMP echo and errors); anything else
gets a short, clearly different description. A frame that does not parse is described, never
raised: the summary says what was wrong.
"""

from __future__ import annotations

import socket
import struct

from stack.wire.arp import ARP_REPLY, ARP_REQUEST, parse_arp
from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket
from stack.wire.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, mac_to_str, parse_ethernet
from stack.wire.icmp import (
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_TIME_EXCEEDED,
    TIME_EXCEEDED_REASSEMBLY,
    UNREACH_FRAG_NEEDED,
    UNREACH_HOST,
    UNREACH_NET,
    UNREACH_PORT,
    UNREACH_PROTOCOL,
    parse_icmp,
)
from stack.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Ipv4Packet, parse_ipv4
from stack.wire.tcp import (
    HEADER_LEN as TCP_HEADER_LEN,
)
from stack.wire.tcp import (
    OPT_EOL,
    OPT_MSS,
    OPT_NOP,
    OPT_SACK,
    OPT_SACK_PERMITTED,
    OPT_TIMESTAMP,
    OPT_WSCALE,
    TcpFlags,
    parse_tcp,
)

# tcpdump's order and letters (print-tcp.c tcp_flag_values).
_FLAG_LETTERS = (
    (TcpFlags.FIN, "F"), (TcpFlags.SYN, "S"), (TcpFlags.RST, "R"), (TcpFlags.PSH, "P"),
    (TcpFlags.ACK, "."), (TcpFlags.URG, "U"), (TcpFlags.ECE, "E"), (TcpFlags.CWR, "W"),
)
_UNREACHABLE = {UNREACH_NET: "net {dst} unreachable", UNREACH_HOST: "host {dst} unreachable",
                UNREACH_PROTOCOL: "{dst} protocol {proto} unreachable"}
_UDP = struct.Struct("!HHHH")


def tcp_flag_letters(flags: int) -> str:
    """``S.``, ``FP.``, ``R``: tcpdump's letters in tcpdump's order; ``none`` for no flags."""
    return "".join(letter for flag, letter in _FLAG_LETTERS if flags & flag) or "none"


def describe_tcp_options(options: BytesLike) -> str:
    """The option list in wire order, as tcpdump prints it (``mss 1460,sackOK,TS val 1 ecr 0,...``)."""
    words = []
    index = 0
    while index < len(options):
        kind = options[index]
        if kind == OPT_NOP:
            words.append("nop")
            index += 1
            continue
        if kind == OPT_EOL:
            words.append("eol")
            break
        size = options[index + 1] if index + 1 < len(options) else 0
        if size < 2 or index + size > len(options):
            words.append(f"bad opt {kind} len {size}")
            break
        body = bytes(options[index + 2:index + size])
        if kind == OPT_MSS and size == 4:
            words.append(f"mss {int.from_bytes(body, 'big')}")
        elif kind == OPT_WSCALE and size == 3:
            words.append(f"wscale {body[0]}")
        elif kind == OPT_SACK_PERMITTED and size == 2:
            words.append("sackOK")
        elif kind == OPT_SACK and (size - 2) % 8 == 0:
            edges = struct.unpack(f"!{(size - 2) // 4}I", body)
            pairs = zip(edges[::2], edges[1::2])
            blocks = "".join(f"{{{left}:{right}}}" for left, right in pairs)
            words.append(f"sack {(size - 2) // 8} {blocks}")
        elif kind == OPT_TIMESTAMP and size == 10:
            tsval, tsecr = struct.unpack("!II", body)
            words.append(f"TS val {tsval} ecr {tsecr}")
        else:
            words.append(f"unknown-{kind} 0x{body.hex()}")
        index += size
    return ",".join(words)


def _endpoint(address: bytes, port: int | None = None) -> str:
    text = socket.inet_ntoa(address)
    return text if port is None else f"{text}.{port}"


def _describe_tcp(packet: Ipv4Packet) -> str:
    raw = packet.payload
    segment = parse_tcp(raw, packet.src, packet.dst, verify_checksum=False)
    header_length = (raw[12] >> 4) * 4
    parts = [f"Flags [{tcp_flag_letters(segment.flags)}]"]
    length = len(segment.payload)
    if length or segment.flags & (TcpFlags.SYN | TcpFlags.FIN | TcpFlags.RST):
        end = f":{(segment.seq + length) & 0xFFFFFFFF}" if length else ""
        parts.append(f"seq {segment.seq}{end}")
    if segment.flags & TcpFlags.ACK:
        parts.append(f"ack {segment.ack}")
    parts.append(f"win {segment.window}")
    if segment.flags & TcpFlags.URG:
        parts.append(f"urg {segment.urgent}")
    if header_length > TCP_HEADER_LEN:
        parts.append(f"options [{describe_tcp_options(raw[TCP_HEADER_LEN:header_length])}]")
    parts.append(f"length {length}")
    return (f"IP {_endpoint(packet.src, segment.src_port)} > {_endpoint(packet.dst, segment.dst_port)}: "
            + ", ".join(parts))


def _describe_icmp(packet: Ipv4Packet) -> str:
    message = parse_icmp(packet.payload, verify_checksum=False)
    prefix = f"IP {_endpoint(packet.src)} > {_endpoint(packet.dst)}: ICMP "
    length = len(packet.payload)
    if message.type in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
        kind = "request" if message.type == ICMP_ECHO_REQUEST else "reply"
        return f"{prefix}echo {kind}, id {message.echo_id}, seq {message.echo_sequence}, length {length}"
    if message.type == ICMP_DEST_UNREACHABLE and len(message.payload) >= 20:
        quoted = bytes(message.payload)
        dst, proto = _endpoint(quoted[16:20]), quoted[9]
        header_length = (quoted[0] & 0x0F) * 4
        if message.code == UNREACH_PORT and len(quoted) >= header_length + 4:
            name = {PROTO_TCP: "tcp", PROTO_UDP: "udp"}.get(proto, f"proto-{proto}")
            port = int.from_bytes(quoted[header_length + 2:header_length + 4], "big")
            return f"{prefix}{dst} {name} port {port} unreachable, length {length}"
        if message.code == UNREACH_FRAG_NEEDED:
            return f"{prefix}{dst} unreachable - need to frag (mtu {message.next_hop_mtu}), length {length}"
        if message.code in _UNREACHABLE:
            return f"{prefix}{_UNREACHABLE[message.code].format(dst=dst, proto=proto)}, length {length}"
    if message.type == ICMP_TIME_EXCEEDED:
        if message.code == TIME_EXCEEDED_REASSEMBLY:
            return f"{prefix}ip reassembly time exceeded, length {length}"
        return f"{prefix}time exceeded in-transit, length {length}"
    return f"{prefix}type-#{message.type}, length {length}"


def _describe_ipv4(packet: Ipv4Packet) -> str:
    if packet.fragment_offset:  # no transport header in later fragments: tcpdump names the protocol only
        return f"IP {_endpoint(packet.src)} > {_endpoint(packet.dst)}: ip-proto-{packet.protocol}"
    if packet.protocol == PROTO_TCP and not packet.more_fragments:
        return _describe_tcp(packet)
    if packet.protocol == PROTO_ICMP and not packet.more_fragments:
        return _describe_icmp(packet)
    if packet.protocol == PROTO_UDP and len(packet.payload) >= _UDP.size:
        src_port, dst_port, udp_length, _checksum = _UDP.unpack_from(packet.payload)
        return (f"IP {_endpoint(packet.src, src_port)} > {_endpoint(packet.dst, dst_port)}: "
                f"UDP, length {udp_length - _UDP.size}")
    return (f"IP {_endpoint(packet.src)} > {_endpoint(packet.dst)}: "
            f"ip-proto-{packet.protocol} {len(packet.payload)}")


def describe_ipv4(data: BytesLike) -> str:
    """Summarise one IPv4 packet (no link header)."""
    try:
        return _describe_ipv4(parse_ipv4(data, verify_checksum=False))
    except MalformedPacket as error:
        return f"[malformed: {error}]"


def describe_frame(frame: BytesLike) -> str:
    """Summarise one Ethernet frame the way ``tcpdump -nn -t -S`` prints it (common cases)."""
    try:
        ethernet = parse_ethernet(frame)
        vlan = "".join(f"vlan {vid}, " for vid in ethernet.vlan_ids)
        if ethernet.ethertype == ETHERTYPE_IPV4:
            return vlan + _describe_ipv4(parse_ipv4(ethernet.payload, verify_checksum=False))
        if ethernet.ethertype == ETHERTYPE_ARP:
            arp = parse_arp(ethernet.payload)
            length = len(ethernet.payload)
            if arp.op == ARP_REQUEST:
                return (f"{vlan}ARP, Request who-has {_endpoint(arp.target_ip)} "
                        f"tell {_endpoint(arp.sender_ip)}, length {length}")
            assert arp.op == ARP_REPLY
            return (f"{vlan}ARP, Reply {_endpoint(arp.sender_ip)} is-at {mac_to_str(arp.sender_mac)}, "
                    f"length {length}")
        if ethernet.ethertype == ETHERTYPE_IPV6:
            return f"{vlan}IP6, length {len(ethernet.payload)}"
        return f"{vlan}ethertype 0x{ethernet.ethertype:04x}, length {len(ethernet.payload)}"
    except MalformedPacket as error:
        return f"[malformed: {error}]"
