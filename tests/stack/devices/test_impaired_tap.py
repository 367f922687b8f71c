"""The impaired TAP path: a delay- or rate-only profile carries TSO super-segments whole, with offload,
while the rate counts the wire packets they become; per-packet impairments still cut them."""

from __future__ import annotations

from stack.devices.contract import OutgoingFrame
from stack.devices.impaired_tap import ImpairedTapMedium, gso_wire_bytes
from stack.devices.impairment import Impairment
from stack.devices.tap import TapCounters
from stack.devices.virtio_net import VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VirtioNetHdr

from .test_gso_gro import data_frame

MSS = 1448
HEADERS = 14 + 20 + 32  # Ethernet, IPv4, TCP with timestamps


class FakeTap:
    """Frames to hand out on the next read, and what was written (with its virtio_net header)."""

    def __init__(self) -> None:
        self.offload = True
        self.counters = TapCounters()
        self.pending: list[tuple[VirtioNetHdr | None, memoryview]] = []
        self.written: list[tuple[VirtioNetHdr | None, bytes]] = []

    def read_batch(self, max_frames: int = 64) -> list[tuple[VirtioNetHdr | None, memoryview]]:
        batch, self.pending = self.pending[:max_frames], self.pending[max_frames:]
        return batch

    def write(self, frame: bytes, hdr: VirtioNetHdr | None = None) -> bool:
        self.written.append((hdr, bytes(frame)))
        return True

    def write_parts(self, parts: tuple[bytes, ...], hdr: VirtioNetHdr | None = None) -> bool:
        self.written.append((hdr, b"".join(bytes(part) for part in parts)))
        return True


class FakeNode:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, float, bool]] = []
        self.outgoing: list[OutgoingFrame] = []

    def receive_frame(self, frame: bytes, now: float, checksum_verified: bool = False) -> None:
        self.received.append((bytes(frame), now, checksum_verified))

    def poll(self, now: float) -> list[OutgoingFrame]:
        out, self.outgoing = self.outgoing, []
        return out


def super_segment(seq: int, packets: int) -> OutgoingFrame:
    """A partial-checksum TSO frame of `packets` full segments, as the Host builds one for offload."""
    frame = data_frame(seq, bytes(range(256)) * (packets * MSS // 256) + bytes(packets * MSS % 256))
    return OutgoingFrame(frame[:HEADERS], frame[HEADERS:], gso_size=MSS, partial_checksum=True)


CLEAN = Impairment()


def medium(egress: Impairment, ingress: Impairment = CLEAN) -> tuple[ImpairedTapMedium, FakeTap, FakeNode]:
    tap, node = FakeTap(), FakeNode()
    return ImpairedTapMedium(node, tap, egress, ingress, seed=1), tap, node  # type: ignore[arg-type]


def test_a_delay_only_profile_delays_a_super_segment_whole_and_keeps_its_offload() -> None:
    path, tap, node = medium(Impairment(delay=0.005))
    node.outgoing = [super_segment(1000, 10), super_segment(1000 + 10 * MSS, 10)]
    path.step(0.0)
    assert tap.written == []
    assert path.next_deadline() == 0.005
    path.step(0.005)
    assert len(tap.written) == 2  # two writes, not twenty packets
    hdr, frame = tap.written[0]
    assert hdr is not None and hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 and hdr.gso_size == MSS
    assert hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and len(frame) == HEADERS + 10 * MSS
    assert path.gso_frames_sent == 2 and path.segmented_in_software == 0
    assert tap.written[1][1][38:42] == (1000 + 10 * MSS).to_bytes(4, "big")  # in order


def test_the_rate_counts_the_wire_packets_a_super_segment_becomes() -> None:
    rate = 100e6
    path, _, node = medium(Impairment(rate_bps=rate))
    node.outgoing = [super_segment(1, 10)]
    path.step(0.0)
    wire = 10 * (MSS + HEADERS)
    assert gso_wire_bytes(HEADERS + 10 * MSS, HEADERS, MSS) == wire
    assert abs(path.next_deadline() - wire * 8 / rate) < 1e-12  # type: ignore[operator]


def test_loss_cuts_super_segments_into_wire_packets() -> None:
    path, tap, node = medium(Impairment(delay=0.001, loss=0.0001))
    node.outgoing = [super_segment(1, 10)]
    path.step(0.0)
    path.step(0.001)
    assert len(tap.written) == 10 and all(hdr is None for hdr, _ in tap.written)
    assert all(len(frame) == HEADERS + MSS for _, frame in tap.written)


def test_a_jittered_profile_cuts_them_too_as_jitter_reorders() -> None:
    assert not Impairment(delay=0.01, jitter=0.002).keeps_segments_whole
    assert Impairment(delay=0.01, rate_bps=1e9, limit=100).keeps_segments_whole


def test_ingress_delivers_the_kernels_super_segment_whole_and_trusted_after_the_delay() -> None:
    path, tap, node = medium(CLEAN, Impairment(delay=0.002))
    frame = data_frame(5, bytes(8 * MSS))
    hdr = VirtioNetHdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type=VIRTIO_NET_HDR_GSO_TCPV4,
                       hdr_len=HEADERS, gso_size=MSS, csum_start=34, csum_offset=16)
    tap.pending = [(hdr, memoryview(frame))]
    path.step(0.0)
    assert node.received == []
    path.step(0.002)
    assert node.received == [(frame, 0.002, True)]


def test_switching_to_loss_mid_flight_loses_nothing_already_in_flight_and_keeps_order() -> None:
    path, tap, node = medium(Impairment(delay=0.005))
    node.outgoing = [super_segment(1, 4)]
    path.step(0.0)
    path.set_impairment("egress", Impairment(delay=0.005, loss=0.00001))
    node.outgoing = [super_segment(1 + 4 * MSS, 4)]
    path.step(0.001)
    path.step(0.006)
    assert [len(frame) for _, frame in tap.written] == [HEADERS + 4 * MSS] + [HEADERS + MSS] * 4
    seqs = [int.from_bytes(frame[38:42], "big") for _, frame in tap.written]
    assert seqs == sorted(seqs)
