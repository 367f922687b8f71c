"""The link forwarder's core over in-memory ports: what passes whole, what is cut into wire packets, and
changing a direction while frames are in flight."""

from __future__ import annotations

from stack.devices.forwarder import PLAIN_HEADER, LinkForwarder
from stack.devices.impairment import Impairment
from stack.devices.virtio_net import (
    VIRTIO_NET_HDR_LEN,
    build_virtio_net_hdr,
    parse_virtio_net_hdr,
    tcp_checksum_valid,
    tx_header_for_frame,
    write_partial_tcp_checksum,
)

from .test_virtio_net import tcp_frame


class MemoryPort:
    """Frames queued to be read, and frames written, like a `PacketPort` on a veth end."""

    def __init__(self) -> None:
        self.waiting: list[bytes] = []
        self.written: list[bytes] = []

    def read_batch(self, max_frames: int) -> list[bytes]:
        taken, self.waiting = self.waiting[:max_frames], self.waiting[max_frames:]
        return taken

    def write(self, frame: bytes) -> bool:
        self.written.append(bytes(frame))
        return True

    def fileno(self) -> int:
        return -1


def super_segment(payload_bytes: int = 14_480, mss: int = 1448) -> bytes:
    """A 10-segment TSO frame as a sender's kernel hands it to a veth: partial checksum, GSO header."""
    frame = bytearray(tcp_frame(bytes(range(256)) * (payload_bytes // 256) + bytes(payload_bytes % 256)))
    write_partial_tcp_checksum(frame)
    return build_virtio_net_hdr(tx_header_for_frame(frame, mss)) + bytes(frame)


CLEAN = Impairment()


def forwarder(a_to_b: Impairment, b_to_a: Impairment = CLEAN) -> tuple[LinkForwarder, MemoryPort, MemoryPort]:
    a, b = MemoryPort(), MemoryPort()
    return LinkForwarder(a, b, names=("h1->h2", "h2->h1"), profiles=(a_to_b, b_to_a), seed=1), a, b


def test_a_clean_direction_passes_super_segments_whole_and_at_once() -> None:
    link, a, b = forwarder(Impairment())
    frame = super_segment()
    a.waiting.append(frame)
    link.step(0.0)
    assert b.written == [frame] and link.next_deadline() is None


def test_a_delay_only_direction_keeps_frames_whole_and_delivers_them_late() -> None:
    link, a, b = forwarder(Impairment(delay=0.02))
    frame = super_segment()
    a.waiting.append(frame)
    link.step(1.0)
    assert b.written == [] and link.next_deadline() == 1.02
    link.step(1.02)
    assert b.written == [frame]


def test_loss_cuts_super_segments_into_checked_wire_packets() -> None:
    link, a, b = forwarder(Impairment(loss=0.5))
    a.waiting += [super_segment() for _ in range(20)]
    link.step(0.0)
    direction = link.direction("h1->h2")
    assert direction.segmented == 20 and direction.stats.offered == 200
    assert len(b.written) == 200 - direction.stats.lost and 60 < direction.stats.lost < 140
    for packet in b.written:
        assert packet[:VIRTIO_NET_HDR_LEN] == PLAIN_HEADER and not parse_virtio_net_hdr(packet).is_gso
        assert tcp_checksum_valid(packet[VIRTIO_NET_HDR_LEN:]) and len(packet) <= VIRTIO_NET_HDR_LEN + 1514


def test_corruption_is_caught_by_the_receivers_checksum() -> None:
    link, a, b = forwarder(Impairment(corrupt=1.0))
    a.waiting.append(super_segment())
    link.step(0.0)
    assert len(b.written) == 10
    assert sum(not tcp_checksum_valid(p[VIRTIO_NET_HDR_LEN:]) for p in b.written) >= 9  # a flipped bit may
    # land in the IPv4 header, whose own checksum catches it


def test_a_direction_made_clean_delivers_what_is_in_flight_then_goes_straight() -> None:
    link, a, b = forwarder(Impairment(delay=1.0))
    a.waiting.append(b"x" * 10 + b"late")
    link.step(0.0)
    link.direction("h1->h2").set_profile(Impairment())
    a.waiting.append(b"x" * 10 + b"now")
    link.step(0.5)
    assert b.written == [b"x" * 10 + b"now"] and link.next_deadline() == 1.0
    link.step(1.0)
    assert b.written[-1] == b"x" * 10 + b"late" and link.direction("h1->h2").link is None


def test_the_two_directions_are_independent() -> None:
    link, a, b = forwarder(Impairment(delay=0.5), Impairment())
    a.waiting.append(bytes(10) + b"to h2")
    b.waiting.append(bytes(10) + b"to h1")
    link.step(0.0)
    assert a.written == [bytes(10) + b"to h1"] and b.written == []
