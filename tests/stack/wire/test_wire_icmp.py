"""ICMP: echo, errors with their quotes, and reading a quoted TCP header back out."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import (
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_SOURCE_QUENCH,
    ICMP_TIME_EXCEEDED,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TIME_EXCEEDED_REASSEMBLY,
    UNREACH_FRAG_NEEDED,
    UNREACH_PORT,
    IcmpMessage,
    Ipv4Packet,
    MalformedPacket,
    QuotedTcp,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    build_icmp,
    build_ipv4,
    build_tcp,
    destination_unreachable,
    echo_reply_for,
    echo_request,
    may_send_error_about,
    parse_icmp,
    parse_icmp_error_quote,
    time_exceeded,
)

US = socket.inet_aton("10.0.0.2")
PEER = socket.inet_aton("10.0.0.1")


def our_segment() -> bytes:
    segment = TcpSegment(40000, 443, 0xDEADBEEF, 1, TcpFlags.ACK, 100, TcpOptions(timestamp=(1, 2)),
                         bytes(1400))
    return build_ipv4(Ipv4Packet(US, PEER, PROTO_TCP, build_tcp(segment, US, PEER)))


def test_echo_request_and_reply() -> None:
    built = build_icmp(echo_request(0x1234, 7, b"abcdefgh"))
    message = parse_icmp(built)
    assert (message.type, message.echo_id, message.echo_sequence) == (ICMP_ECHO_REQUEST, 0x1234, 7)
    assert built == bytes.fromhex("0800") + built[2:4] + bytes.fromhex("12340007") + b"abcdefgh"
    reply = parse_icmp(build_icmp(echo_reply_for(message)))
    assert (reply.type, reply.rest, bytes(reply.payload)) == (ICMP_ECHO_REPLY, message.rest, b"abcdefgh")
    with pytest.raises(ValueError, match="not an echo request"):
        echo_reply_for(reply)


def test_checksum_of_odd_length_payload_and_rejection() -> None:
    raw = build_icmp(echo_request(1, 1, b"odd"))
    assert parse_icmp(raw).payload == b"odd"
    with pytest.raises(MalformedPacket, match="icmp: bad checksum"):
        parse_icmp(raw[:-1] + b"x")
    with pytest.raises(MalformedPacket, match="icmp: message 7 bytes < 8-byte header"):
        parse_icmp(raw[:7])


def test_port_unreachable_quotes_the_original_packet() -> None:
    original = build_ipv4(Ipv4Packet(PEER, US, PROTO_UDP, bytes(1000)))
    message = destination_unreachable(UNREACH_PORT, original)
    assert (message.type, message.code, message.rest) == (ICMP_DEST_UNREACHABLE, UNREACH_PORT, bytes(4))
    assert 20 + 8 + len(message.payload) == 576 and bytes(message.payload) == original[:548]
    assert message.is_error and message.next_hop_mtu is None
    short = build_ipv4(Ipv4Packet(PEER, US, PROTO_UDP, bytes(8)))
    assert bytes(destination_unreachable(UNREACH_PORT, short).payload) == short


def test_fragmentation_needed_carries_the_mtu() -> None:
    message = parse_icmp(build_icmp(destination_unreachable(UNREACH_FRAG_NEEDED, our_segment(), mtu=1280)))
    assert message.rest == b"\x00\x00\x05\x00" and message.next_hop_mtu == 1280
    with pytest.raises(ValueError, match="next-hop MTU"):
        destination_unreachable(UNREACH_FRAG_NEEDED, our_segment())
    assert IcmpMessage(ICMP_DEST_UNREACHABLE, UNREACH_FRAG_NEEDED).next_hop_mtu is None  # pre-RFC 1191 router


def test_time_exceeded() -> None:
    message = parse_icmp(build_icmp(time_exceeded(TIME_EXCEEDED_REASSEMBLY, our_segment())))
    assert (message.type, message.code) == (ICMP_TIME_EXCEEDED, TIME_EXCEEDED_REASSEMBLY)
    assert message.is_error
    assert not IcmpMessage(ICMP_SOURCE_QUENCH, 0).is_error  # RFC 6633: ignored


def test_quote_gives_back_the_tcp_four_tuple_and_sequence() -> None:
    error = parse_icmp(build_icmp(destination_unreachable(UNREACH_FRAG_NEEDED, our_segment(), mtu=1280)))
    assert parse_icmp_error_quote(error.payload) == QuotedTcp(US, PEER, 40000, 443, 0xDEADBEEF)
    # RFC 792's minimum quote: the IP header and the first 8 bytes of the TCP header are enough
    assert parse_icmp_error_quote(our_segment()[:28]) == QuotedTcp(US, PEER, 40000, 443, 0xDEADBEEF)


def test_quote_of_something_else_or_broken() -> None:
    assert parse_icmp_error_quote(build_ipv4(Ipv4Packet(US, PEER, PROTO_UDP, bytes(8)))) is None
    later_fragment = Ipv4Packet(US, PEER, PROTO_TCP, bytes(8), dont_fragment=False, fragment_offset=1480)
    assert parse_icmp_error_quote(build_ipv4(later_fragment)) is None
    with pytest.raises(MalformedPacket, match="quote holds 7 TCP bytes < 8"):
        parse_icmp_error_quote(our_segment()[:27])
    with pytest.raises(MalformedPacket, match="quoted packet 10 bytes"):
        parse_icmp_error_quote(bytes(10))
    with pytest.raises(MalformedPacket, match="IP version 6"):
        parse_icmp_error_quote(b"\x60" + bytes(40))
    with pytest.raises(MalformedPacket, match="header length 8 < 20"):
        parse_icmp_error_quote(b"\x42" + bytes(40))


def test_when_not_to_send_an_error() -> None:
    udp = Ipv4Packet(PEER, US, PROTO_UDP, bytes(8))
    assert may_send_error_about(build_ipv4(udp))
    for group in ("255.255.255.255", "224.0.0.1"):
        to_group = Ipv4Packet(PEER, socket.inet_aton(group), PROTO_UDP, bytes(8))
        assert not may_send_error_about(build_ipv4(to_group))
    assert not may_send_error_about(build_ipv4(Ipv4Packet(bytes(4), US, PROTO_UDP, b"")))
    later = Ipv4Packet(PEER, US, PROTO_UDP, bytes(8), dont_fragment=False, fragment_offset=8)
    assert not may_send_error_about(build_ipv4(later))
    an_error = build_icmp(destination_unreachable(UNREACH_PORT, build_ipv4(udp)))
    assert not may_send_error_about(build_ipv4(Ipv4Packet(PEER, US, PROTO_ICMP, an_error)))
    assert may_send_error_about(build_ipv4(Ipv4Packet(PEER, US, PROTO_ICMP, build_icmp(echo_request(1, 1)))))


@given(st.integers(0, 255), st.integers(0, 255), st.binary(min_size=4, max_size=4), st.binary(max_size=600))
def test_round_trip(icmp_type: int, code: int, rest: bytes, payload: bytes) -> None:
    parsed = parse_icmp(build_icmp(IcmpMessage(icmp_type, code, rest, payload)))
    assert (parsed.type, parsed.code, parsed.rest, bytes(parsed.payload)) == (icmp_type, code, rest, payload)


def test_quote_stops_at_the_original_total_length() -> None:
    original = build_ipv4(Ipv4Packet(PEER, US, PROTO_UDP, bytes(8)))
    padded = original + bytes(18)  # Ethernet padding of a short frame
    assert bytes(destination_unreachable(UNREACH_PORT, padded).payload) == original
