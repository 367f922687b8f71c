"""Software GSO (`stack.devices.gso`) and GRO (`stack.devices.gro`) on a plain TAP's frames.

GSO must cut a super-segment into exactly the packets the general `segment_gso_frame` (the copy of the
kernel's tcp_gso_segment) makes; GRO must merge only what Linux's tcp_gro_receive would merge, verify every
frame it merges, and give back a frame whose bytes the host parses to the same stream.
"""

from __future__ import annotations

import struct

from stack.devices.contract import OutgoingFrame
from stack.devices.gro import GroCounters, coalesce
from stack.devices.gso import cut_ipv4_tcp
from stack.devices.virtio_net import segment_gso_frame, tx_header_for_frame, write_partial_tcp_checksum

from .tap_scratch import ethernet, ipv4, parse_ipv4_tcp, tcp
from .test_virtio_net import (
    ACK,
    CWR,
    FIN,
    IP_A,
    IP_B,
    MAC_A,
    MAC_B,
    PSH,
    TIMESTAMPS,
    reference_tcp_checksum_ok,
)


def data_frame(seq: int, payload: bytes, *, flags: int = ACK, options: bytes = TIMESTAMPS,
               ack: int = 7) -> bytes:
    segment = tcp(IP_A, IP_B, 40000, 80, seq & 0xFFFFFFFF, ack, flags, 512, options, payload)
    return ethernet(MAC_B, MAC_A, ipv4(IP_A, IP_B, 6, segment, ident=seq & 0xFFFF))


def stream(count: int, size: int = 1448, start: int = 0xFFFF_F000, **kwargs: object) -> list[bytes]:
    return [data_frame((start + i * size) & 0xFFFFFFFF, bytes([i]) * size, **kwargs)  # type: ignore[arg-type]
            for i in range(count)]


# --- GSO ----------------------------------------------------------------------------------------------


def test_cutting_matches_the_general_software_gso() -> None:
    payload = bytes(range(256)) * 255 + b"tail"
    frame = bytearray(data_frame(0xFFFF_F000, payload, flags=ACK | PSH | FIN | CWR))
    write_partial_tcp_checksum(frame)
    header_end = 14 + 20 + 32
    outgoing = OutgoingFrame(bytes(frame[:header_end]), memoryview(bytes(frame[header_end:])), gso_size=1448,
                             partial_checksum=True)
    packets = cut_ipv4_tcp(outgoing)
    assert packets is not None
    expected = segment_gso_frame(frame, tx_header_for_frame(frame, mss=1448))
    assert [head + bytes(chunk) for head, chunk in packets] == expected
    assert all(reference_tcp_checksum_ok(head + bytes(chunk)) for head, chunk in packets)


def test_cutting_a_frame_without_gso_completes_its_checksum() -> None:
    frame = bytearray(data_frame(5, b"abc" * 101))
    write_partial_tcp_checksum(frame)
    packets = cut_ipv4_tcp(OutgoingFrame(bytes(frame[:66]), bytes(frame[66:]), partial_checksum=True))
    assert packets is not None and len(packets) == 1
    assert reference_tcp_checksum_ok(packets[0][0] + bytes(packets[0][1]))


def test_cutting_leaves_what_is_not_ipv4_tcp_to_the_general_path() -> None:
    arp = ethernet(b"\xff" * 6, MAC_A, bytes(28), ethertype=0x0806)
    assert cut_ipv4_tcp(OutgoingFrame(arp, partial_checksum=True)) is None


# --- GRO ----------------------------------------------------------------------------------------------


def test_in_order_segments_of_one_batch_become_one_frame() -> None:
    frames = stream(10)
    counters = GroCounters()
    ((merged, verified),) = coalesce(frames, counters)
    assert verified and (counters.merged_frames, counters.merged_into) == (10, 1)
    parsed = parse_ipv4_tcp(merged)
    assert parsed is not None and parsed.ip_header_checksum_ok
    assert parsed.seq == 0xFFFF_F000 and parsed.payload == b"".join(bytes([i]) * 1448 for i in range(10))
    assert parsed.options == TIMESTAMPS and parsed.flags == ACK
    assert struct.unpack_from("!H", merged, 16)[0] == len(merged) - 14


def test_a_push_ends_the_run_and_is_kept() -> None:
    frames = stream(3)
    frames[1] = data_frame(0xFFFF_F000 + 1448, bytes([1]) * 1448, flags=ACK | PSH)
    out = coalesce(frames)
    assert len(out) == 2
    first = parse_ipv4_tcp(out[0][0])
    assert first is not None and first.flags == ACK | PSH and len(first.payload) == 2 * 1448


def test_what_differs_or_is_out_of_order_is_not_merged() -> None:
    frames = stream(2)
    other_timestamp = TIMESTAMPS[:4] + struct.pack("!II", 1001, 2000)
    frames.append(data_frame(0xFFFF_F000 + 2 * 1448, b"x" * 1448, options=other_timestamp))
    frames.append(data_frame(0xFFFF_F000 + 2 * 1448, b"x" * 1448, options=other_timestamp, ack=8))
    frames.append(data_frame(0xFFFF_F000 + 9 * 1448, b"x" * 1448, options=other_timestamp, ack=8))
    frames.append(data_frame(0xFFFF_F000 + 10 * 1448, b"", options=other_timestamp, ack=8))
    frames.append(data_frame(0xFFFF_F000 + 10 * 1448, b"x", flags=ACK | FIN, options=other_timestamp, ack=8))
    out = coalesce(frames)
    assert [len(frame) for frame, _ in out] == [len(frames[0]) + 1448] + [len(f) for f in frames[2:]]
    assert [verified for _, verified in out] == [True, True, True, True, False, False]


def test_a_short_segment_ends_the_run() -> None:
    frames = [data_frame(0, b"a" * 1448), data_frame(1448, b"b" * 100), data_frame(1548, b"c" * 1448)]
    assert [len(frame) - 66 for frame, _ in coalesce(frames)] == [1548, 1448]


def test_a_frame_with_a_bad_checksum_passes_through_for_the_host_to_drop() -> None:
    frames = [bytearray(frame) for frame in stream(3)]
    frames[1][-1] ^= 0xFF
    out = coalesce([bytes(frame) for frame in frames])
    assert [(len(frame), verified) for frame, verified in out] == [(len(frames[0]), True),
                                                                   (len(frames[1]), False),
                                                                   (len(frames[2]), True)]


def test_a_merge_stops_at_one_datagram() -> None:
    out = coalesce(stream(60))
    assert [len(frame) - 66 for frame, _ in out] == [45 * 1448, 15 * 1448]
    assert all(len(frame) - 14 <= 0xFFFF for frame, _ in out)
