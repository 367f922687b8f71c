"""Codecs for the frames a host on a TAP sees: Ethernet II, ARP, IPv4, ICMP and TCP.

Pure functions and dataclasses: no I/O, no clock, no module-level state. Parsers return
memoryview slices of their input (no payload copies) and raise only `MalformedPacket`;
builders concatenate headers and payload once.
"""

from stack.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, arp_reply_for, arp_request, build_arp, parse_arp
from stack.wire.checksum import (
    fold,
    internet_checksum,
    ones_complement_sum,
    pseudo_header_checksum,
    pseudo_header_sum,
    sum_words,
    verify_checksum,
)
from stack.wire.describe import describe_frame, describe_ipv4, tcp_flag_letters
from stack.wire.errors import MalformedPacket
from stack.wire.ethernet import (
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ETHERTYPE_VLAN,
    EthernetFrame,
    build_ethernet,
    ethernet_header,
    is_multicast_mac,
    mac_from_str,
    mac_to_str,
    parse_ethernet,
)
from stack.wire.frames import build_tcp_frame, tcp_frame_headers
from stack.wire.icmp import (
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_ERROR_TYPES,
    ICMP_PARAMETER_PROBLEM,
    ICMP_SOURCE_QUENCH,
    ICMP_TIME_EXCEEDED,
    TIME_EXCEEDED_REASSEMBLY,
    TIME_EXCEEDED_TTL,
    UNREACH_FRAG_NEEDED,
    UNREACH_HOST,
    UNREACH_NET,
    UNREACH_PORT,
    UNREACH_PROTOCOL,
    IcmpMessage,
    QuotedTcp,
    build_icmp,
    destination_unreachable,
    echo_reply_for,
    echo_request,
    may_send_error_about,
    parse_icmp,
    parse_icmp_error_quote,
    time_exceeded,
)
from stack.wire.ipv4 import (
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    FragmentationNeeded,
    Ipv4Packet,
    build_ipv4,
    fragment_ipv4,
    ipv4_header,
    parse_ipv4,
)
from stack.wire.tcp import (
    NO_OPTIONS,
    ChecksumMode,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    build_options,
    build_tcp,
    parse_options,
    parse_tcp,
    tcp_header,
)

__all__ = [
    "ARP_REPLY", "ARP_REQUEST", "BROADCAST_MAC", "ETHERTYPE_ARP", "ETHERTYPE_IPV4", "ETHERTYPE_IPV6",
    "ETHERTYPE_VLAN", "ICMP_DEST_UNREACHABLE", "ICMP_ECHO_REPLY", "ICMP_ECHO_REQUEST", "ICMP_ERROR_TYPES",
    "ICMP_PARAMETER_PROBLEM", "ICMP_SOURCE_QUENCH", "ICMP_TIME_EXCEEDED",
    "NO_OPTIONS", "PROTO_ICMP", "PROTO_TCP", "PROTO_UDP", "TIME_EXCEEDED_REASSEMBLY", "TIME_EXCEEDED_TTL",
    "UNREACH_FRAG_NEEDED", "UNREACH_HOST", "UNREACH_NET", "UNREACH_PORT", "UNREACH_PROTOCOL",
    "ArpPacket", "ChecksumMode", "EthernetFrame", "FragmentationNeeded", "IcmpMessage",
    "Ipv4Packet",
    "MalformedPacket", "QuotedTcp", "TcpFlags", "TcpOptions",
    "TcpSegment", "arp_reply_for", "arp_request", "build_arp", "build_ethernet", "build_icmp", "build_ipv4",
    "build_options", "build_tcp", "build_tcp_frame", "describe_frame", "describe_ipv4",
    "destination_unreachable", "echo_reply_for",
    "echo_request", "ethernet_header", "fold", "fragment_ipv4", "internet_checksum", "ipv4_header",
    "is_multicast_mac", "mac_from_str", "mac_to_str", "may_send_error_about", "ones_complement_sum",
    "parse_arp", "parse_ethernet", "parse_icmp", "parse_icmp_error_quote", "parse_ipv4", "parse_options",
    "parse_tcp", "pseudo_header_checksum", "pseudo_header_sum", "sum_words",
    "tcp_flag_letters", "tcp_frame_headers", "tcp_header", "time_exceeded", "verify_checksum",
]
