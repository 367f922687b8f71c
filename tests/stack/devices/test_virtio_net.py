"""The virtio_net_hdr codec, the offload rules and TapMedium, without a kernel (slow reference sums)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.devices.contract import OutgoingFrame
from stack.devices.tap import TapCounters, TapMedium
from stack.devices.virtio_net import (
    NO_OFFLOAD,
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN,
    VirtioNetError,
    VirtioNetHdr,
    build_virtio_net_hdr,
    locate_tcp,
    parse_virtio_net_hdr,
    segment_gso_frame,
    tcp_checksum_trusted,
    tcp_checksum_valid,
    tx_header_for_frame,
    write_full_tcp_checksum,
    write_partial_tcp_checksum,
)
from stack.wire.frames import build_tcp_frame
from stack.wire.tcp import TcpFlags, TcpOptions, TcpSegment

from .tap_scratch import ethernet, internet_checksum, ipv4, parse_ipv4_tcp, tcp

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
IP_A = bytes([10, 0, 0, 1])
IP_B = bytes([10, 0, 0, 2])
IP6_A = bytes.fromhex("fd000000000000000000000000000001")
IP6_B = bytes.fromhex("fd000000000000000000000000000002")
SYN, FIN, PSH, ACK, CWR = 0x02, 0x01, 0x08, 0x10, 0x80
TIMESTAMPS = b"\x01\x01\x08\x0a" + struct.pack("!II", 1000, 2000)


def tcp_frame(payload: bytes = b"", flags: int = ACK, options: bytes = b"", checksum: bool = True) -> bytes:
    segment = tcp(IP_A, IP_B, 40000, 80, 0xFFFF_F000, 7, flags, 512, options, payload, checksum=checksum)
    return ethernet(MAC_B, MAC_A, ipv4(IP_A, IP_B, 6, segment, ident=0xFFFE))


def tcp6_frame(payload: bytes, flags: int = ACK) -> bytes:
    segment = tcp(IP6_A, IP6_B, 40000, 80, 1, 7, flags, 512, b"", payload, checksum=False)
    header = struct.pack("!IHBB16s16s", 6 << 28, len(segment), 6, 64, IP6_A, IP6_B)
    frame = bytearray(ethernet(MAC_B, MAC_A, header + segment, ethertype=0x86DD))
    write_full_tcp_checksum(frame)
    return bytes(frame)


def reference_tcp_checksum_ok(frame: bytes) -> bool:
    """Independent check: pseudo-header + segment sums to zero with the slow reference (IPv4 or IPv6)."""
    if frame[12:14] == b"\x86\xdd":
        length = struct.unpack_from("!H", frame, 18)[0]
        segment = frame[54 : 54 + length]
        pseudo = frame[22:54] + struct.pack("!IxxxB", length, 6)
    else:
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        segment = frame[14 + ihl : 14 + total]
        pseudo = frame[26:34] + struct.pack("!xBH", 6, len(segment))
    return internet_checksum(pseudo + segment) == 0


# --- the header codec ---------------------------------------------------------------------------------------


def test_header_bytes_match_what_the_kernel_sent_for_a_syn() -> None:
    # Read from a real TAP in offload mode: a SYN from a kernel socket, checksum left to do at 34 + 16.
    raw = bytes.fromhex("01 00 0000 0000 2200 1000")
    hdr = parse_virtio_net_hdr(raw)
    assert hdr == VirtioNetHdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=16)
    assert hdr.needs_csum and not hdr.data_valid and not hdr.is_gso
    assert build_virtio_net_hdr(hdr) == raw
    assert len(raw) == VIRTIO_NET_HDR_LEN


def test_tso_header_layout_is_little_endian() -> None:
    hdr = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 66, 1448, 34, 16)
    assert build_virtio_net_hdr(hdr) == bytes([1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])


@given(
    st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
)  # fmt: skip
def test_header_round_trip(flags: int, gso: int, hdr_len: int, gso_size: int, start: int, off: int) -> None:
    hdr = VirtioNetHdr(flags, gso, hdr_len, gso_size, start, off)
    assert parse_virtio_net_hdr(build_virtio_net_hdr(hdr) + b"frame") == hdr


def test_short_header_is_a_clear_error() -> None:
    with pytest.raises(VirtioNetError, match="need 10 bytes, got 9"):
        parse_virtio_net_hdr(bytes(9))


def test_out_of_range_field_is_a_clear_error() -> None:
    with pytest.raises(VirtioNetError, match="gso_size=70000"):
        build_virtio_net_hdr(VirtioNetHdr(gso_size=70000))


def test_ecn_bit_is_not_part_of_the_gso_protocol() -> None:
    hdr = VirtioNetHdr(gso_type=VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN)
    assert hdr.gso_protocol == VIRTIO_NET_HDR_GSO_TCPV4 and hdr.is_gso


# --- finding TCP in a frame ---------------------------------------------------------------------------------


def test_locate_tcp_in_ipv4_with_options() -> None:
    layout = locate_tcp(tcp_frame(b"abc", options=TIMESTAMPS))
    assert layout is not None
    assert (layout.ip_version, layout.ip_offset, layout.tcp_offset, layout.payload_offset) == (4, 14, 34, 66)
    assert layout.payload_len == 3


def test_locate_tcp_ignores_ethernet_padding() -> None:
    frame = tcp_frame(b"") + bytes(6)  # a 54-byte frame padded to the 60-byte minimum
    layout = locate_tcp(frame)
    assert layout is not None and layout.end == 54


def test_locate_tcp_rejects_fragments_and_other_protocols() -> None:
    frame = bytearray(tcp_frame(b"x" * 8))
    frame[20] |= 0x20  # more fragments
    assert locate_tcp(frame) is None
    arp = ethernet(b"\xff" * 6, MAC_A, bytes(28), ethertype=0x0806)
    assert locate_tcp(arp) is None
    udp = ethernet(MAC_B, MAC_A, ipv4(IP_A, IP_B, 17, bytes(28)))
    assert locate_tcp(udp) is None


def test_locate_tcp_rejects_lengths_that_lie() -> None:
    frame = bytearray(tcp_frame(b"data"))
    struct.pack_into("!H", frame, 16, 2000)  # IP total length beyond the frame
    assert locate_tcp(frame) is None
    frame = bytearray(tcp_frame(b"data"))
    frame[46] = 0xF0  # TCP data offset 60 > segment
    assert locate_tcp(frame) is None


@given(st.binary(max_size=120))
def test_locate_tcp_never_raises_on_garbage(junk: bytes) -> None:
    hdr = VirtioNetHdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=16)
    for frame in (junk, tcp_frame()[:14] + junk, tcp_frame()[:34] + junk):
        layout = locate_tcp(frame)
        assert tcp_checksum_trusted(hdr, frame) == (layout is not None and layout.tcp_offset == 34)


# --- inbound: when the kernel vouches for the checksum ------------------------------------------------------


def test_plain_mode_never_skips_verification() -> None:
    assert not tcp_checksum_trusted(None, tcp_frame(b"x"))


def test_needs_csum_at_the_tcp_checksum_is_trusted() -> None:
    hdr = VirtioNetHdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=16)
    assert tcp_checksum_trusted(hdr, tcp_frame(b"x", checksum=False))


def test_needs_csum_pointing_elsewhere_is_not_trusted() -> None:
    hdr = VirtioNetHdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=6)  # UDP's field
    assert not tcp_checksum_trusted(hdr, tcp_frame(b"x"))
    hdr = VirtioNetHdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=14, csum_offset=16)
    assert not tcp_checksum_trusted(hdr, tcp_frame(b"x"))


def test_data_valid_is_trusted_for_tcp_only() -> None:
    hdr = VirtioNetHdr(flags=VIRTIO_NET_HDR_F_DATA_VALID)
    assert tcp_checksum_trusted(hdr, tcp_frame(b"x"))
    assert not tcp_checksum_trusted(hdr, ethernet(MAC_B, MAC_A, ipv4(IP_A, IP_B, 17, bytes(28))))


def test_no_flags_means_verify() -> None:
    assert not tcp_checksum_trusted(NO_OFFLOAD, tcp_frame(b"x"))


# --- checksums ----------------------------------------------------------------------------------------------


@given(st.binary(max_size=3000))
def test_full_checksum_matches_the_reference(payload: bytes) -> None:
    frame = bytearray(tcp_frame(payload, checksum=False))
    write_full_tcp_checksum(frame)
    assert bytes(frame) == tcp_frame(payload, checksum=True)
    assert tcp_checksum_valid(frame)


def test_corrupted_payload_fails_the_checksum() -> None:
    frame = bytearray(tcp_frame(b"hello world"))
    assert tcp_checksum_valid(frame)
    frame[-1] ^= 0x01
    assert not tcp_checksum_valid(frame)


@given(st.binary(max_size=3000))
def test_partial_sum_completed_over_the_segment_gives_the_full_checksum(payload: bytes) -> None:
    """What the kernel does with NEEDS_CSUM: sum from csum_start including the partial value, complement."""
    frame = bytearray(tcp_frame(payload, checksum=False))
    write_partial_tcp_checksum(frame)
    partial = struct.unpack_from("!H", frame, 50)[0]
    pseudo = IP_A + IP_B + struct.pack("!xBH", 6, 20 + len(payload))
    assert partial == (~internet_checksum(pseudo) & 0xFFFF) or partial == 0  # folded sum, not complemented
    completed = ~internet_checksum(bytes(frame[34:])) & 0xFFFF  # the one's complement sum of the segment
    assert struct.pack("!H", ~completed & 0xFFFF) == tcp_frame(payload)[50:52]


def test_partial_checksum_refuses_a_frame_without_tcp() -> None:
    with pytest.raises(VirtioNetError, match="not Ethernet"):
        write_partial_tcp_checksum(bytearray(60))


def test_ipv6_checksum_matches_the_reference() -> None:
    assert reference_tcp_checksum_ok(tcp6_frame(b"odd-length!"))


# --- outbound: the header for what the stack sends ----------------------------------------------------------


def test_small_tcp_frame_asks_the_kernel_to_checksum() -> None:
    hdr = tx_header_for_frame(tcp_frame(b"x" * 1460, options=TIMESTAMPS), mss=1460)
    assert hdr == VirtioNetHdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=16)


def test_large_tcp_frame_asks_for_tso() -> None:
    hdr = tx_header_for_frame(tcp_frame(b"x" * 60000, options=TIMESTAMPS), mss=1448)
    assert hdr == VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 66, 1448, 34, 16)


def test_cwr_sets_the_gso_ecn_bit() -> None:
    hdr = tx_header_for_frame(tcp_frame(b"x" * 3000, flags=ACK | CWR), mss=1460)
    assert hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN


def test_large_ipv6_frame_asks_for_tso6() -> None:
    hdr = tx_header_for_frame(tcp6_frame(b"x" * 5000), mss=1440)
    assert (hdr.gso_type, hdr.gso_size, hdr.csum_start) == (VIRTIO_NET_HDR_GSO_TCPV6, 1440, 54)
    assert hdr.hdr_len == 74


def test_non_tcp_frames_go_without_offload() -> None:
    arp = ethernet(b"\xff" * 6, MAC_A, bytes(28), ethertype=0x0806)
    assert tx_header_for_frame(arp, mss=1460) is NO_OFFLOAD
    icmp = ethernet(MAC_B, MAC_A, ipv4(IP_A, IP_B, 1, bytes(64)))
    assert tx_header_for_frame(icmp, mss=1460) is NO_OFFLOAD


def test_mss_must_be_positive() -> None:
    with pytest.raises(VirtioNetError, match="mss must be positive, got 0"):
        tx_header_for_frame(tcp_frame(b"x"), mss=0)


# --- software GSO -------------------------------------------------------------------------------------------


def test_segmenting_a_super_segment_like_the_kernel() -> None:
    payload = bytes(range(256)) * 255 + b"tail"  # 65284 bytes
    frame = bytearray(tcp_frame(payload, flags=ACK | PSH | FIN | CWR, options=TIMESTAMPS, checksum=False))
    write_partial_tcp_checksum(frame)
    hdr = tx_header_for_frame(frame, mss=1448)
    segments = segment_gso_frame(frame, hdr)
    assert len(segments) == -(-len(payload) // 1448) == 46
    parsed = [parse_ipv4_tcp(s) for s in segments]
    assert all(p is not None for p in parsed)
    assert b"".join(p.payload for p in parsed) == payload
    assert all(len(p.payload) == 1448 for p in parsed[:-1])
    assert [p.seq for p in parsed] == [(0xFFFF_F000 + 1448 * i) % 2**32 for i in range(46)]  # wraps past 2^32
    assert [p.flags for p in parsed] == [ACK | CWR] + [ACK] * 44 + [ACK | PSH | FIN]
    assert all(p.options == TIMESTAMPS and p.ip_header_checksum_ok for p in parsed)
    ip_ids = [struct.unpack_from("!H", s, 18)[0] for s in segments]
    assert ip_ids == [(0xFFFE + i) & 0xFFFF for i in range(46)]  # wraps too
    assert all(len(s) <= 14 + 20 + 32 + 1448 for s in segments)
    assert all(reference_tcp_checksum_ok(s) for s in segments)


def test_segmenting_ipv6() -> None:
    frame = bytearray(tcp6_frame(b"y" * 4000))
    write_partial_tcp_checksum(frame)
    segments = segment_gso_frame(frame, tx_header_for_frame(frame, mss=1440))
    assert [len(s) - 74 for s in segments] == [1440, 1440, 1120]
    assert all(reference_tcp_checksum_ok(s) for s in segments)


def test_frame_without_gso_only_gets_its_checksum_completed() -> None:
    frame = bytearray(tcp_frame(b"abc" * 100, checksum=False))
    write_partial_tcp_checksum(frame)
    (out,) = segment_gso_frame(frame, tx_header_for_frame(frame, mss=1460))
    assert out == tcp_frame(b"abc" * 100)
    (same,) = segment_gso_frame(tcp_frame(b"z"), None)
    assert same == tcp_frame(b"z")


def test_software_gso_refuses_what_it_cannot_do() -> None:
    frame = tcp_frame(b"x" * 3000)
    with pytest.raises(VirtioNetError, match="only TCP"):
        segment_gso_frame(frame, VirtioNetHdr(gso_type=VIRTIO_NET_HDR_GSO_UDP_L4, gso_size=1400))
    with pytest.raises(VirtioNetError, match="gso_size must be positive"):
        segment_gso_frame(frame, VirtioNetHdr(gso_type=VIRTIO_NET_HDR_GSO_TCPV4))
    with pytest.raises(VirtioNetError, match="beyond a frame"):
        needs_csum = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 34, 16)
        segment_gso_frame(b"short", needs_csum)


# --- the contract with the wire codecs ---------------------------------------------------------------------


@given(st.binary(max_size=4000), st.integers(0, 2**32 - 1))
def test_wire_partial_mode_is_what_the_offload_header_expects(payload: bytes, seq: int) -> None:
    """build_tcp_frame(checksum="partial") + tx_header_for_frame is a frame the kernel can finish."""
    flags = TcpFlags.ACK | TcpFlags.PSH
    segment = TcpSegment(40000, 80, seq, 7, flags, 512, TcpOptions(timestamp=(1, 2)), payload)
    partial = build_tcp_frame(MAC_B, MAC_A, IP_A, IP_B, segment, checksum="partial")
    ours = bytearray(partial)
    write_partial_tcp_checksum(ours)
    assert ours == partial  # the same folded pseudo-header sum, bit for bit
    hdr = tx_header_for_frame(partial, mss=1448)
    assert hdr.needs_csum and hdr.is_gso == (len(payload) > 1448)
    checksum_only = VirtioNetHdr(hdr.flags, 0, 0, 0, hdr.csum_start, hdr.csum_offset)
    (finished,) = segment_gso_frame(partial, checksum_only)
    assert finished == build_tcp_frame(MAC_B, MAC_A, IP_A, IP_B, segment, checksum="full")


# --- TapMedium: the node side, with a stand-in for the device --------------------------------------------


class FakeTap:
    """Duck-types the part of TapDevice the medium uses: queued reads, recorded writes with their headers."""

    def __init__(self, incoming: list[tuple[VirtioNetHdr | None, memoryview]], offload: bool = True) -> None:
        self.incoming = incoming
        self.offload = offload
        self.written: list[bytes] = []
        self.headers: list[VirtioNetHdr | None] = []
        self.counters = TapCounters()

    def read_batch(self, max_frames: int) -> list[tuple[VirtioNetHdr | None, memoryview]]:
        batch, self.incoming = self.incoming[:max_frames], self.incoming[max_frames:]
        return batch

    def write(self, frame: bytes, hdr: VirtioNetHdr | None = None) -> bool:
        self.written.append(bytes(frame))
        self.headers.append(hdr)
        return True

    def write_parts(self, parts: tuple[bytes, ...], hdr: VirtioNetHdr | None = None) -> bool:
        return self.write(b"".join(parts), hdr)

    def fileno(self) -> int:
        return -1


class RecordingNode:
    """A FrameNode that sends the frames it is given and records what it receives."""

    def __init__(self, outgoing: list[OutgoingFrame]) -> None:
        self.outgoing = outgoing
        self.received: list[tuple[bytes, bool]] = []

    def receive_frame(self, frame: bytes, now: float, checksum_verified: bool = False) -> None:
        self.received.append((bytes(frame), checksum_verified))

    def poll(self, now: float) -> list[OutgoingFrame]:
        frames, self.outgoing = self.outgoing, []
        return frames

    def next_deadline(self) -> float | None:
        return None


def test_medium_trusts_the_kernels_checksums_and_completes_the_rest() -> None:
    big = bytearray(tcp_frame(b"q" * 20000, checksum=False))
    write_partial_tcp_checksum(big)
    tso = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1460, 34, 16)
    broken = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 4000)  # points past the frame
    elsewhere = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6)  # not the TCP checksum field
    plain = tcp_frame(b"already fine")
    odd = bytearray(plain)
    tap = FakeTap([(tso, memoryview(bytes(big))), (broken, memoryview(plain)), (None, memoryview(plain)),
                   (elsewhere, memoryview(bytes(odd)))])
    node = RecordingNode([OutgoingFrame(b"out-1"), OutgoingFrame(b"out-2")])
    medium = TapMedium(node, tap, batch=2)
    assert medium.step(0.0) == 2 + 1  # two written; of the two read, the broken one is dropped
    assert tap.written == [b"out-1", b"out-2"] and tap.headers == [None, None]
    # One 20 KB segment handed over as the kernel wrote it (partial sum in the field), marked verified.
    assert node.received == [(bytes(big), True)]
    assert tap.counters.rx_bad_header == 1 and medium.checksums_trusted == 1
    assert medium.step(0.1) == 2
    assert node.received[1] == (plain, False)
    completed, verified = node.received[2]
    assert not verified and medium.checksums_completed == 1 and completed != plain  # summed in software
    assert medium.next_deadline() is None and medium.nodes == (node,)


def partial_frame(payload: bytes) -> bytes:
    frame = bytearray(tcp_frame(payload, checksum=False))
    write_partial_tcp_checksum(frame)
    return bytes(frame)


def test_medium_sends_partial_checksums_with_needs_csum_and_super_segments_with_gso() -> None:
    small, large = partial_frame(b"s" * 100), partial_frame(b"L" * 5000)
    arp_like = b"\xff" * 60
    node = RecordingNode([OutgoingFrame(small[:54], small[54:], partial_checksum=True),
                          OutgoingFrame(large[:54], large[54:], gso_size=1448, partial_checksum=True),
                          OutgoingFrame(arp_like)])
    tap = FakeTap([])
    medium = TapMedium(node, tap)
    assert medium.step(0.0) == 3
    assert tap.written == [small, large, arp_like]
    needs_csum, gso, none = tap.headers
    assert needs_csum == VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 16)
    assert gso is not None and gso.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 and gso.gso_size == 1448
    assert gso.hdr_len == 54 and none is None and medium.gso_frames_sent == 1


def test_medium_in_plain_mode_finishes_offloaded_frames_in_software() -> None:
    small, large = partial_frame(b"s" * 100), partial_frame(b"L" * 3000)
    node = RecordingNode([OutgoingFrame(small, partial_checksum=True),
                          OutgoingFrame(large, gso_size=1000, partial_checksum=True)])
    tap = FakeTap([], offload=False)
    medium = TapMedium(node, tap)
    medium.step(0.0)
    assert tap.written[0] == tcp_frame(b"s" * 100)  # the checksum completed
    assert [len(frame) - 54 for frame in tap.written[1:]] == [1000, 1000, 1000]
    assert all(reference_tcp_checksum_ok(frame) for frame in tap.written)
    assert tap.headers == [None] * 4 and medium.segmented_in_software == 2
