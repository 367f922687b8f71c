"""TSO: a Host whose TCP may build super-segments, cut on the wire the way a TAP in offload mode cuts them.

`SegmentingWire` plays the kernel behind an offload TAP: frames from the TSO host go through
`tx_header_for_frame` + `segment_gso_frame` (the software copy of the kernel's GSO), so the peer sees only
MSS-sized packets with complete checksums, and the test sees which frames were super-segments.
"""

from __future__ import annotations

import pytest

from stack.devices.virtio_net import segment_gso_frame, tx_header_for_frame
from stack.host import Host
from stack.loops.runner import Runner
from stack.tcp.config import TSO_MAX_PAYLOAD, TcpConfig

from .transfer import bulk

SERVER = ("10.0.0.2", 8080)
MTU = 1500


class SegmentingWire:
    """A lossless wire between a TSO host (partial checksums) and a plain one; cuts super-segments."""

    def __init__(self, tso_host: Host, peer: Host) -> None:
        self.nodes = (tso_host, peer)
        self.tso_host = tso_host
        self.peer = peer
        self.super_segments: list[tuple[int, int]] = []  # (payload bytes, gso_size)
        self.packets_to_peer: list[bytes] = []

    def step(self, now: float) -> int:
        moved = 0
        for outgoing in self.tso_host.poll(now):
            frame = outgoing.joined()
            gso_size = outgoing.gso_size or None
            if gso_size is not None:
                self.super_segments.append((len(frame) - 14 - 20 - 32, gso_size))
            hdr = tx_header_for_frame(frame, gso_size or MTU)
            for packet in segment_gso_frame(frame, hdr):
                self.packets_to_peer.append(packet)
                self.peer.receive_frame(packet, now)
                moved += 1
        for frame in self.peer.poll(now):
            self.tso_host.receive_frame(frame.joined(), now)
            moved += 1
        return moved

    def next_deadline(self) -> float | None:
        return None


def transfer(tso_max_bytes: int, size: int) -> tuple[SegmentingWire, bytes]:
    sender = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tx_checksum="partial",
                  tcp=TcpConfig(tso_max_bytes=tso_max_bytes, sndbuf=1 << 20))
    receiver = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2, tcp=TcpConfig(rcvbuf=1 << 20))
    wire = SegmentingWire(sender, receiver)
    Runner([sender, receiver], [wire])
    payload = bulk(sender, receiver, size, SERVER)
    return wire, payload


def test_tso_sends_super_segments_that_the_device_cuts_into_mss_packets() -> None:
    wire, _ = transfer(65000, 2_000_000)
    assert wire.super_segments, "no super-segment was sent"
    largest, gso_size = max(wire.super_segments)
    assert gso_size == MTU - 20 - 20 - 12  # the connection's payload limit: MSS less the timestamps option
    assert largest > 20 * gso_size  # cwnd grew: tens of segments per write
    assert all(gso < payload <= 65000 for payload, gso in wire.super_segments)
    # Whole segments, except where the data the application had written ran out.
    assert sum(payload % gso == 0 for payload, gso in wire.super_segments) > len(wire.super_segments) // 2
    assert max(len(packet) for packet in wire.packets_to_peer) <= 14 + MTU


def test_without_tso_every_segment_is_at_most_one_mss() -> None:
    wire, _ = transfer(0, 300_000)
    assert wire.super_segments == []
    assert max(len(packet) for packet in wire.packets_to_peer) <= 14 + MTU


def test_tso_max_bytes_is_validated() -> None:
    with pytest.raises(ValueError, match="tso_max_bytes"):
        TcpConfig(tso_max_bytes=TSO_MAX_PAYLOAD + 1)
    with pytest.raises(ValueError, match="tso_max_bytes"):
        TcpConfig(tso_max_bytes=-1)
