"""IPv4 headers and fragmentation: a real Linux header, every rejection, options, fragments."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import (
    PROTO_TCP,
    PROTO_UDP,
    FragmentationNeeded,
    Ipv4Packet,
    MalformedPacket,
    build_ipv4,
    fragment_ipv4,
    ipv4_header,
    parse_ipv4,
)
from stack.wire.ipv4 import copied_options, datagram_header

SRC = socket.inet_aton("10.78.0.1")
DST = socket.inet_aton("10.78.0.2")
# The IPv4 header of a SYN Linux sent from 10.78.0.1 to 10.78.0.2 (40-byte TCP segment follows).
LINUX_IP_HEADER = bytes.fromhex("4500003c172d400040060ef10a4e00010a4e0002")
RECORD_ROUTE = bytes([7, 7, 4]) + bytes(4)  # not copied into fragments
SECURITY = bytes([130, 11]) + bytes(9)  # copied into every fragment (type has the copy bit)


def test_real_linux_header_parses_and_rebuilds() -> None:
    packet = parse_ipv4(LINUX_IP_HEADER + bytes(40))
    fields = (packet.src, packet.dst, packet.protocol, packet.ttl, packet.ident)
    assert fields == (SRC, DST, PROTO_TCP, 64, 0x172D)
    assert packet.dont_fragment and not packet.is_fragment and len(packet.payload) == 40
    assert ipv4_header(packet) == LINUX_IP_HEADER


def test_trailing_ethernet_padding_is_ignored() -> None:
    raw = build_ipv4(Ipv4Packet(SRC, DST, PROTO_UDP, b"12345678")) + bytes(18)
    assert bytes(parse_ipv4(raw).payload) == b"12345678"


def _with(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value):]


GOOD = build_ipv4(Ipv4Packet(SRC, DST, PROTO_UDP, bytes(100)))


@pytest.mark.parametrize(("raw", "message"), [
    (GOOD[:19], r"ipv4: packet 19 bytes < 20-byte header"),
    (_with(GOOD, 0, b"\x65"), r"ipv4: version 6, want 4"),
    (_with(GOOD, 0, b"\x44"), r"ipv4: header length 16 < 20"),
    (_with(GOOD[:40], 0, b"\x4f"), r"ipv4: header length 60 > 40 bytes received"),
    (_with(GOOD, 2, b"\x00\x10"), r"ipv4: total length 16 < header length 20"),
    (_with(GOOD, 2, b"\x4e\x20"), r"ipv4: total length 20000 > 120 bytes received"),
    (_with(GOOD, 8, b"\x05"), r"ipv4: bad header checksum"),
    (_with(GOOD, 6, b"\x1f\xff"), r"ipv4: fragment ends at byte 65628 > 65535"),
])
def test_malformed_headers(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedPacket, match=message):
        parse_ipv4(raw, verify_checksum="checksum" in message)


def test_options_are_kept_padded_and_skipped() -> None:
    packet = Ipv4Packet(SRC, DST, PROTO_UDP, b"data", options=RECORD_ROUTE)
    raw = build_ipv4(packet)
    assert raw[0] == 0x47 and len(raw) == 28 + 4
    parsed = parse_ipv4(raw)
    assert parsed.options == RECORD_ROUTE + b"\x00" and bytes(parsed.payload) == b"data"
    with pytest.raises(ValueError, match="44 bytes of options > 40"):
        build_ipv4(Ipv4Packet(SRC, DST, PROTO_UDP, b"", options=bytes(44)))


def test_copied_options_keep_only_copy_flagged_ones_and_stop_at_garbage() -> None:
    assert copied_options(RECORD_ROUTE + b"\x01" + SECURITY) == SECURITY
    assert copied_options(SECURITY + b"\x00" + SECURITY) == SECURITY  # End of Options list
    assert copied_options(SECURITY + bytes([130, 0])) == SECURITY  # zero length: stop, no loop
    assert copied_options(bytes([130, 50, 1])) == b""  # runs past the end: stop


def test_small_packet_is_not_fragmented() -> None:
    packet = Ipv4Packet(SRC, DST, PROTO_UDP, bytes(1480), dont_fragment=False)
    assert fragment_ipv4(packet, 1500) == [build_ipv4(packet)]


def test_df_packet_too_big_raises_fragmentation_needed() -> None:
    with pytest.raises(FragmentationNeeded) as caught:
        fragment_ipv4(Ipv4Packet(SRC, DST, PROTO_UDP, bytes(1481)), 1500)
    assert (caught.value.size, caught.value.mtu) == (1501, 1500)
    with pytest.raises(ValueError, match="MTU 60 < minimum 68"):
        fragment_ipv4(Ipv4Packet(SRC, DST, PROTO_UDP, bytes(100), dont_fragment=False), 60)


def test_fragments_have_8_byte_offsets_and_copy_only_copied_options() -> None:
    payload = bytes(range(256)) * 20  # 5120 bytes
    packet = Ipv4Packet(SRC, DST, PROTO_UDP, payload, ident=99, dont_fragment=False,
                        options=RECORD_ROUTE + b"\x01" + SECURITY)
    fragments = [parse_ipv4(raw) for raw in fragment_ipv4(packet, 1500)]
    assert all(len(build_ipv4(f)) <= 1500 for f in fragments)
    assert fragments[0].options == RECORD_ROUTE + b"\x01" + SECURITY + b"\x00"
    assert all(f.options == SECURITY + b"\x00" for f in fragments[1:])
    assert [f.more_fragments for f in fragments] == [True] * (len(fragments) - 1) + [False]
    assert all(f.fragment_offset % 8 == 0 and f.ident == 99 for f in fragments)
    assert b"".join(bytes(f.payload) for f in fragments) == payload
    assert [f.fragment_offset for f in fragments] == [
        sum(len(g.payload) for g in fragments[:i]) for i in range(len(fragments))]


def test_refragmenting_a_fragment_keeps_offsets_and_more_fragments() -> None:
    middle = Ipv4Packet(SRC, DST, PROTO_UDP, bytes(2000), dont_fragment=False, more_fragments=True,
                        fragment_offset=1480)
    pieces = [parse_ipv4(raw) for raw in fragment_ipv4(middle, 576)]
    assert pieces[0].fragment_offset == 1480 and all(p.more_fragments for p in pieces)
    assert sum(len(p.payload) for p in pieces) == 2000


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.integers(0, 255),
       st.binary(max_size=600), st.integers(1, 255), st.integers(0, 0xFFFF), st.booleans(), st.booleans(),
       st.integers(0, 1000).map(lambda n: n * 8), st.integers(0, 255),
       st.sampled_from([b"", RECORD_ROUTE, SECURITY, b"\x01\x01\x01\x01"]))
def test_round_trip(src: bytes, dst: bytes, protocol: int, payload: bytes, ttl: int, ident: int, df: bool,
                    mf: bool, offset: int, tos: int, options: bytes) -> None:
    packet = Ipv4Packet(src, dst, protocol, payload, ttl, ident, df, mf, offset, tos, options)
    parsed = parse_ipv4(build_ipv4(packet))
    padded = options + bytes(-len(options) % 4)
    assert parsed == Ipv4Packet(src, dst, protocol, parsed.payload, ttl, ident, df, mf, offset, tos, padded)
    assert bytes(parsed.payload) == payload


@given(st.binary(min_size=1, max_size=9000), st.integers(68, 9000))
def test_fragments_cover_the_payload_exactly(payload: bytes, mtu: int) -> None:
    packet = Ipv4Packet(SRC, DST, PROTO_UDP, payload, dont_fragment=False)
    fragments = [parse_ipv4(raw) for raw in fragment_ipv4(packet, mtu)]
    assert all(len(f.payload) + 20 <= mtu for f in fragments)
    assert b"".join(bytes(f.payload) for f in fragments) == payload


def test_a_datagram_header_is_the_packet_header_of_a_whole_datagram() -> None:
    """The send path's shortcut (no Ipv4Packet per segment) gives the very bytes `ipv4_header` does."""
    for ttl, ident, df, tos in ((64, 0, True, 0), (1, 0xFFFF, False, 0xB8), (255, 1234, True, 3)):
        packet = Ipv4Packet(b"\x0a\x00\x00\x01", b"\xc0\xa8\x01\x02", 6, b"", ttl, ident, df, False, 0, tos)
        shortcut = datagram_header(packet.src, packet.dst, 6, 1460, ttl, ident, df, tos)
        assert shortcut == ipv4_header(packet, 1460)
