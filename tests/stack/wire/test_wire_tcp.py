"""TCP header and options: a real Linux SYN, Linux's option layouts, edge cases, round trips."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire import (
    NO_OPTIONS,
    MalformedPacket,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    build_options,
    build_tcp,
    build_tcp_frame,
    parse_ethernet,
    parse_ipv4,
    parse_options,
    parse_tcp,
    pseudo_header_checksum,
    tcp_header,
)

SRC = socket.inet_aton("10.77.0.1")
DST = socket.inet_aton("10.77.0.2")

# A SYN that Linux 6.18 sent from 10.77.0.1 to 10.77.0.2 (captured on a TAP by linux_peer.py).
LINUX_SYN = bytes.fromhex("c6ec005088f7b91500000000a002faf009280000020405b40402080a24bb0143000000000103030a")


def slow_tcp_checksum(segment: bytes, src: bytes, dst: bytes) -> int:
    """Reference checksum over an explicit pseudo-header, word by word (checksum field zeroed)."""
    data = src + dst + bytes([0, 6]) + len(segment).to_bytes(2, "big") + segment
    data += b"\x00" * (len(data) & 1)
    total = 0
    for index in range(0, len(data), 2):
        total += data[index] << 8 | data[index + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def zero_checksum(segment: bytes) -> bytes:
    return segment[:16] + b"\x00\x00" + segment[18:]


def test_real_linux_syn_parses() -> None:
    segment = parse_tcp(LINUX_SYN, SRC, DST)
    assert (segment.src_port, segment.dst_port) == (0xC6EC, 80)
    assert segment.seq == 0x88F7B915 and segment.ack == 0
    assert segment.flags == TcpFlags.SYN
    assert segment.window == 64240
    assert segment.options == TcpOptions(mss=1460, wscale=10, sack_permitted=True, timestamp=(0x24BB0143, 0))
    assert len(segment.payload) == 0 and segment.seg_len == 1


def test_real_linux_syn_rebuilds_byte_for_byte() -> None:
    assert build_tcp(parse_tcp(LINUX_SYN, SRC, DST), SRC, DST) == LINUX_SYN
    assert slow_tcp_checksum(zero_checksum(LINUX_SYN), SRC, DST) == 0x0928


def test_checksum_error_names_the_field() -> None:
    corrupted = LINUX_SYN[:4] + b"\x00" + LINUX_SYN[5:]
    with pytest.raises(MalformedPacket, match=r"tcp: bad checksum 0x0928"):
        parse_tcp(corrupted, SRC, DST)
    assert parse_tcp(corrupted, SRC, DST, verify_checksum=False).seq == 0x00F7B915
    with pytest.raises(MalformedPacket):  # the pseudo-header covers the addresses
        parse_tcp(LINUX_SYN, SRC, socket.inet_aton("10.77.0.3"))


@pytest.mark.parametrize(("options", "layout"), [
    (TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 0)),
     "020405b4" "0402080a0000000100000000" "01030307"),
    (TcpOptions(mss=1460, wscale=7, timestamp=(1, 0)), "020405b4" "0101080a0000000100000000" "01030307"),
    (TcpOptions(mss=1460, wscale=7, sack_permitted=True), "020405b4" "01010402" "01030307"),
    (TcpOptions(mss=536), "02040218"),
    (TcpOptions(timestamp=(5, 6)), "0101080a0000000500000006"),
    (TcpOptions(timestamp=(5, 6), sack_blocks=((10, 20),)),
     "0101080a0000000500000006" "0101050a" "0000000a00000014"),
])
def test_options_are_laid_out_like_linux(options: TcpOptions, layout: str) -> None:
    assert build_options(options).hex() == layout
    assert parse_options(bytes.fromhex(layout)) == options


def test_sack_blocks_that_do_not_fit_are_dropped_keeping_the_first() -> None:
    blocks = ((1, 2), (3, 4), (5, 6), (7, 8))
    with_ts = build_options(TcpOptions(timestamp=(1, 1), sack_blocks=blocks))
    assert len(with_ts) == 40 and parse_options(with_ts).sack_blocks == blocks[:3]
    without_ts = build_options(TcpOptions(sack_blocks=(*blocks, (9, 10))))
    assert len(without_ts) == 36 and parse_options(without_ts).sack_blocks == blocks


@pytest.mark.parametrize(("raw", "expected"), [
    ("", NO_OPTIONS),
    ("00020405b4", NO_OPTIONS),  # EOL ends the list
    ("01010101020405b4", TcpOptions(mss=1460)),  # NOPs are skipped
    ("fe06aabbccdd020405b4", TcpOptions(mss=1460)),  # unknown option skipped by its length
    ("020405b40200", TcpOptions(mss=1460)),  # zero length: stop, keep what was read
    ("020405b40201", TcpOptions(mss=1460)),  # length 1: stop
    ("020405b4080a0000", TcpOptions(mss=1460)),  # runs past the header: stop
    ("020405b402", TcpOptions(mss=1460)),  # kind without a length byte: stop
    ("02030501010402", TcpOptions(sack_permitted=True)),  # MSS with the wrong length is ignored
    ("0303ff", TcpOptions(wscale=255)),  # reported as received; clamping to 14 is TCP's policy
    ("050600000001", NO_OPTIONS),  # SACK of no whole block
    ("0512" + "00000001" * 4, TcpOptions(sack_blocks=((1, 1), (1, 1)))),
])
def test_option_parsing_edge_cases(raw: str, expected: TcpOptions) -> None:
    assert parse_options(bytes.fromhex(raw)) == expected


@pytest.mark.parametrize(("segment", "message"), [
    (b"\x00" * 19, r"tcp: segment 19 bytes < 20-byte header"),
    (b"\x00" * 12 + b"\x30" + b"\x00" * 7, r"tcp: data offset 3 < 5"),
    (b"\x00" * 12 + b"\xf0" + b"\x00" * 27, r"tcp: data offset 15 \(60 bytes\) > 40 bytes received"),
])
def test_malformed_headers_raise_one_clear_error(segment: bytes, message: str) -> None:
    with pytest.raises(MalformedPacket, match=message):
        parse_tcp(segment, SRC, DST, verify_checksum=False)


def test_reserved_bits_are_ignored_and_urgent_pointer_kept() -> None:
    segment = TcpSegment(1, 2, 3, 4, TcpFlags.URG | TcpFlags.ACK, 100, urgent=7, payload=b"abcdefgh")
    raw = bytearray(build_tcp(segment, SRC, DST))
    raw[12] |= 0x0F  # reserved bits and AE set
    raw[16:18] = b"\x00\x00"
    raw[16:18] = slow_tcp_checksum(bytes(raw), SRC, DST).to_bytes(2, "big")
    parsed = parse_tcp(bytes(raw), SRC, DST)
    assert parsed.flags == TcpFlags.URG | TcpFlags.ACK and parsed.urgent == 7
    assert build_tcp(parsed, SRC, DST)[12] == 0x50  # built with the reserved bits zero


def test_payload_is_a_view_not_a_copy() -> None:
    raw = bytearray(build_tcp(TcpSegment(1, 2, 3, 4, TcpFlags.ACK, 5, payload=b"hello"), SRC, DST))
    parsed = parse_tcp(raw, SRC, DST)
    assert isinstance(parsed.payload, memoryview)
    raw[-5:] = b"HELLO"
    assert bytes(parsed.payload) == b"HELLO"


def test_data_segment_with_timestamps_uses_the_32_byte_layout() -> None:
    segment = TcpSegment(40000, 80, 2**32 - 1, 7, TcpFlags.ACK | TcpFlags.PSH, 501,
                         TcpOptions(timestamp=(2**32 - 1, 12345)), b"x" * 1461)
    raw = build_tcp(segment, SRC, DST)
    assert raw[12] == 0x80 and raw[20:24] == b"\x01\x01\x08\x0a"
    assert slow_tcp_checksum(zero_checksum(raw), SRC, DST) == int.from_bytes(raw[16:18], "big")
    parsed = parse_tcp(raw, SRC, DST)
    assert parsed.options.timestamp == (2**32 - 1, 12345) and bytes(parsed.payload) == b"x" * 1461


def test_partial_checksum_holds_the_folded_pseudo_header_sum() -> None:
    segment = TcpSegment(1, 2, 3, 4, TcpFlags.ACK, 5, TcpOptions(timestamp=(1, 2)), b"payload!")
    raw = build_tcp(segment, SRC, DST, checksum="partial")
    assert int.from_bytes(raw[16:18], "big") == pseudo_header_checksum(SRC, DST, 6, len(raw))
    # A device that sums the segment with the partial field in place and complements the result
    # writes exactly the full checksum.
    total = 0
    for index in range(0, len(raw), 2):
        total += raw[index] << 8 | raw[index + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    device_checksum = ~total & 0xFFFF
    assert device_checksum == int.from_bytes(build_tcp(segment, SRC, DST)[16:18], "big")
    assert build_tcp(segment, SRC, DST, checksum="none")[16:18] == b"\x00\x00"
    with pytest.raises(ValueError, match="checksum mode"):
        build_tcp(segment, SRC, DST, checksum="bogus")  # type: ignore[arg-type]


def test_out_of_range_field_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="out of range"):
        build_tcp(TcpSegment(70000, 2, 3, 4, TcpFlags.ACK, 5), SRC, DST)


def test_header_alone_plus_payload_equals_the_whole_segment() -> None:
    segment = TcpSegment(1, 2, 3, 4, TcpFlags.ACK, 5, TcpOptions(sack_blocks=((1, 9),)), b"abc")
    assert tcp_header(segment, SRC, DST) + b"abc" == build_tcp(segment, SRC, DST)


def test_whole_frame_parses_back_through_every_layer() -> None:
    segment = TcpSegment(5000, 80, 1, 2, TcpFlags.ACK, 9, TcpOptions(timestamp=(3, 4)), b"z" * 1000)
    frame = build_tcp_frame(b"\x02" * 6, b"\x04" * 6, SRC, DST, segment, ident=77, ttl=3,
                            prefix=b"\x00" * 10)
    assert frame[:10] == b"\x00" * 10
    ethernet = parse_ethernet(frame[10:])
    ip = parse_ipv4(ethernet.payload)
    assert (ip.ident, ip.ttl, ip.dont_fragment, ip.src, ip.dst) == (77, 3, True, SRC, DST)
    parsed = parse_tcp(ip.payload, ip.src, ip.dst)
    assert parsed.options == segment.options and bytes(parsed.payload) == segment.payload


uint16 = st.integers(0, 0xFFFF)
uint32 = st.integers(0, 0xFFFFFFFF)
options_strategy = st.builds(
    TcpOptions,
    mss=st.none() | uint16,
    wscale=st.none() | st.integers(0, 255),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(uint32, uint32), max_size=4).map(tuple),
    timestamp=st.none() | st.tuples(uint32, uint32),
)


@given(uint16, uint16, uint32, uint32, st.integers(0, 255), uint16, options_strategy, st.binary(max_size=300),
       uint16, st.sampled_from(["full", "partial"]))
def test_build_parse_round_trip(src_port: int, dst_port: int, seq: int, ack: int, flags: int, window: int,
                                options: TcpOptions, payload: bytes, urgent: int, mode: str) -> None:
    segment = TcpSegment(src_port, dst_port, seq, ack, TcpFlags(flags), window, options, payload, urgent)
    raw = build_tcp(segment, SRC, DST, checksum=mode)  # type: ignore[arg-type]
    assert len(raw) <= 60 + len(payload) and (raw[12] >> 4) * 4 == len(raw) - len(payload)
    parsed = parse_tcp(raw, SRC, DST, verify_checksum=(mode == "full"))
    room = (40 - len(build_options(TcpOptions(options.mss, options.wscale, options.sack_permitted, (),
                                              options.timestamp))) - 4) // 8
    kept_blocks = options.sack_blocks[:max(0, room)]
    assert parsed.options == TcpOptions(options.mss, options.wscale, options.sack_permitted, kept_blocks,
                                        options.timestamp)
    assert (parsed.src_port, parsed.dst_port, parsed.seq, parsed.ack, parsed.flags, parsed.window,
            parsed.urgent) == (src_port, dst_port, seq, ack, flags, window, urgent)
    assert bytes(parsed.payload) == payload
    if mode == "full":
        assert slow_tcp_checksum(zero_checksum(raw), SRC, DST) == int.from_bytes(raw[16:18], "big")


def test_out_of_range_option_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="option value out of range"):
        build_tcp(TcpSegment(1, 2, 3, 4, TcpFlags.SYN, 5, TcpOptions(mss=70000)), SRC, DST)
