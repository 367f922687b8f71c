"""Hostile input: random bytes and mutated valid frames raise MalformedPacket or parse, nothing else.

Each example runs under hypothesis's per-example deadline, so a parser that looped on a zero-length
option or a quadratic path would fail here, not hang.
"""

from __future__ import annotations

import io
import signal
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.devices.pcap import read_pcap
from stack.net.reassembly import Reassembler
from stack.wire import (
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    NO_OPTIONS,
    PROTO_ICMP,
    PROTO_TCP,
    UNREACH_FRAG_NEEDED,
    EthernetFrame,
    Ipv4Packet,
    MalformedPacket,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    arp_request,
    build_arp,
    build_ethernet,
    build_icmp,
    build_ipv4,
    build_tcp,
    build_tcp_frame,
    destination_unreachable,
    fragment_ipv4,
    parse_arp,
    parse_ethernet,
    parse_icmp,
    parse_icmp_error_quote,
    parse_ipv4,
    parse_options,
    parse_tcp,
)

MAC_A, MAC_B = b"\x02" * 6, b"\x04" * 6
IP_A, IP_B = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")


def valid_frames() -> list[bytes]:
    syn = TcpSegment(40000, 80, 1, 0, TcpFlags.SYN, 64240,
                     TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 0)))
    data = TcpSegment(40000, 80, 2, 3, TcpFlags.ACK | TcpFlags.PSH, 501,
                      TcpOptions(timestamp=(5, 6), sack_blocks=((10, 20), (30, 40))), b"hello" * 40)
    quoted = build_ipv4(Ipv4Packet(IP_B, IP_A, PROTO_TCP, build_tcp(data, IP_B, IP_A)))
    icmp = build_icmp(destination_unreachable(UNREACH_FRAG_NEEDED, quoted, mtu=1280))
    fragments = fragment_ipv4(Ipv4Packet(IP_A, IP_B, PROTO_TCP, build_tcp(data, IP_A, IP_B),
                                         dont_fragment=False, ident=5), 100)

    def ip_frame(packet: bytes) -> bytes:
        return build_ethernet(EthernetFrame(MAC_B, MAC_A, ETHERTYPE_IPV4, packet))

    return [
        build_tcp_frame(MAC_B, MAC_A, IP_A, IP_B, syn),
        build_tcp_frame(MAC_B, MAC_A, IP_A, IP_B, data),
        ip_frame(build_ipv4(Ipv4Packet(IP_A, IP_B, PROTO_ICMP, icmp))),
        build_ethernet(EthernetFrame(MAC_B, MAC_A, ETHERTYPE_ARP, build_arp(arp_request(MAC_A, IP_A, IP_B)))),
        build_ethernet(EthernetFrame(MAC_B, MAC_A, ETHERTYPE_IPV4, b"", (5,))) + fragments[0],
        *(ip_frame(fragment) for fragment in fragments[1:3]),
    ]


VALID = valid_frames()


def receive_like_a_host(frame: bytes, reassembler: Reassembler, verify: bool) -> None:
    """Everything a host does with a frame, layer by layer, as far as the bytes allow."""
    ethernet = parse_ethernet(frame)
    if ethernet.ethertype == ETHERTYPE_ARP:
        parse_arp(ethernet.payload)
        return
    if ethernet.ethertype != ETHERTYPE_IPV4:
        return
    packet = reassembler.add(parse_ipv4(ethernet.payload, verify_checksum=verify), 0.0)
    if packet is None:
        return
    if packet.protocol == PROTO_TCP:
        parse_tcp(packet.payload, packet.src, packet.dst, verify_checksum=verify)
    elif packet.protocol == PROTO_ICMP:
        message = parse_icmp(packet.payload, verify_checksum=verify)
        if message.is_error:
            parse_icmp_error_quote(message.payload)


def test_valid_frames_go_all_the_way_through() -> None:
    reassembler = Reassembler()
    for frame in VALID:
        receive_like_a_host(frame, reassembler, verify=True)
    assert reassembler.stats.fragments == 3 and reassembler.pending == 1


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_malformed_packet(data: bytes) -> None:
    parsers = (
        parse_ethernet, parse_arp, parse_ipv4, parse_icmp, parse_icmp_error_quote, parse_options,
        lambda d: parse_ipv4(d, verify_checksum=False),
        lambda d: parse_icmp(d, verify_checksum=False),
        lambda d: parse_tcp(d, IP_A, IP_B),
        lambda d: parse_tcp(d, IP_A, IP_B, verify_checksum=False),
        lambda d: list(read_pcap(io.BytesIO(d))),
    )
    for parse in parsers:
        try:
            parse(data)
        except MalformedPacket:
            pass


mutation = st.tuples(st.integers(0, 10_000), st.integers(0, 255))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(VALID))), st.lists(mutation, min_size=1, max_size=6),
       st.none() | st.integers(0, 600), st.booleans())
def test_mutated_frames_only_raise_malformed_packet(index: int, changes: list[tuple[int, int]],
                                                    cut: int | None, verify: bool) -> None:
    frame = bytearray(VALID[index])
    for position, value in changes:
        frame[position % len(frame)] = value
    if cut is not None:
        frame = frame[:cut]
    try:
        receive_like_a_host(bytes(frame), Reassembler(), verify)
    except MalformedPacket:
        pass


@pytest.mark.parametrize("options", [
    bytes([2, 0] * 20), bytes([5, 0] * 20), bytes([99, 1] * 20), bytes([8, 255]) + bytes(38), bytes([1] * 40),
])
def test_zero_and_short_option_lengths_terminate(options: bytes) -> None:
    header = (b"\x00\x01\x00\x02" + bytes(8) + bytes([(20 + len(options)) // 4 << 4, 0x10]) + bytes(6)
              + options)

    def hung(_signum: int, _frame: object) -> None:
        raise TimeoutError("option parsing did not terminate within 1 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        segment = parse_tcp(header, IP_A, IP_B, verify_checksum=False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert segment.options == NO_OPTIONS and segment.dst_port == 2
