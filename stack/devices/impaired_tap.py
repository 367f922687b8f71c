"""A TAP path with userspace impairment (this kernel has no sch_netem): `ImpairedTapMedium`.

Egress (frames the stack sends) and ingress (frames the kernel hands over) each pass an
`stack.devices.impairment.ImpairedLink` when their profile is not transparent. Impairment acts on packets as
they
are on the wire: a TSO super-segment (ours or the kernel's) is first cut into MSS-sized packets with
complete checksums (`segment_gso_frame`), so "1 % loss" means one wire packet in a hundred, a corrupted
bit is caught by the receiver's checksum, and a rate limit counts wire bytes. Impaired frames are then
written (and delivered) without offload: checksums done, nothing left for the kernel to finish.

A direction whose profile only delays and limits the rate (`Impairment.keeps_segments_whole`: no loss,
duplicate, corrupt, reorder or jitter) carries super-segments whole instead: each is delayed as one unit
with its virtio_net header and written (or delivered) with offload as on a clean path, while the rate
and the queue count the wire bytes it stands for (`gso_wire_bytes`: its packets, each with its headers),
so `rate_mbit` means the same in both ways. Cutting a 64 KB segment into 44 packets in Python would cost
the delayed path most of its speed for nothing: the packets would leave together and arrive in order.

A clean direction keeps the fast path of `TapMedium` (offload untouched). `set_impairment` changes a
direction while the node runs (`lab impair`): frames already in flight keep their times, and a direction
made clean returns to the fast path once it has delivered them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from stack.deadlines import earliest
from stack.devices.contract import FrameNode, OutgoingFrame
from stack.devices.impairment import ImpairedLink, Impairment, ImpairmentStats
from stack.devices.tap import TapDevice, TapMedium, wire_packets
from stack.devices.virtio_net import VirtioNetError, VirtioNetHdr, locate_tcp, segment_gso_frame


class WholeFrame:
    """A frame read from the TAP crossing an ingress link whole, with the header the kernel gave it."""

    __slots__ = ("frame", "hdr")

    def __init__(self, hdr: VirtioNetHdr | None, frame: memoryview) -> None:
        self.hdr = hdr
        self.frame = frame


def gso_wire_bytes(length: int, header_length: int, gso_size: int) -> int:
    """The bytes a frame of `length` with `header_length` bytes of headers becomes on the wire when cut
    into packets of `gso_size` payload bytes (0: it is one packet)."""
    payload = length - header_length
    if gso_size <= 0 or payload <= gso_size:
        return length
    packets = -(-payload // gso_size)
    return payload + packets * header_length


def outgoing_wire_bytes(frame: OutgoingFrame) -> int:
    return gso_wire_bytes(len(frame), len(frame.head), frame.gso_size)


def incoming_wire_bytes(hdr: VirtioNetHdr | None, frame: memoryview) -> int:
    if hdr is None or not hdr.is_gso:
        return len(frame)
    layout = locate_tcp(frame)
    if layout is None:
        return len(frame)
    return gso_wire_bytes(len(frame), layout.payload_offset, hdr.gso_size)


class ImpairedTapMedium(TapMedium):
    """`TapMedium` with a seeded impairment per direction; `next_deadline` is when a delayed frame is due."""

    def __init__(self, node: FrameNode, tap: TapDevice, egress: Impairment, ingress: Impairment, *,
                 seed: int | None = None, batch: int = 64, clock: Callable[[], float] | None = None) -> None:
        super().__init__(node, tap, batch, clock)
        self._rng = random.Random(seed)
        self.profiles = {"egress": Impairment(), "ingress": Impairment()}
        self.stats = {"egress": ImpairmentStats(), "ingress": ImpairmentStats()}
        self.egress: ImpairedLink | None = None
        self.ingress: ImpairedLink | None = None
        self.set_impairment("egress", egress)
        self.set_impairment("ingress", ingress)

    def set_impairment(self, direction: str, profile: Impairment) -> None:
        """Impair `direction` ("egress" or "ingress") as `profile` says from now on."""
        if direction not in self.profiles:
            raise ValueError(f"direction {direction!r}: choose egress or ingress")
        self.profiles[direction] = profile
        link: ImpairedLink | None = getattr(self, direction)
        if link is not None:
            link.reconfigure(profile)
        elif not profile.is_transparent:
            link = ImpairedLink(profile, random.Random(self._rng.random()), self.stats[direction])
            setattr(self, direction, link)

    def _settle(self) -> None:
        """A direction made clean goes back to the fast path once nothing of it is in flight."""
        for direction in ("egress", "ingress"):
            link = getattr(self, direction)
            if link is not None and link.profile.is_transparent and not len(link):
                setattr(self, direction, None)

    def step(self, now: float) -> int:
        if self.egress is None and self.ingress is None:
            return super().step(now)
        moved = 0  # read first, then write, as `TapMedium.step` says why
        ingress = self.ingress
        for hdr, frame in self.tap.read_batch(self.batch):
            moved += 1
            if ingress is None:
                self._receive(hdr, frame, now)
            elif ingress.profile.keeps_segments_whole:
                ingress.send(WholeFrame(hdr, frame), now, incoming_wire_bytes(hdr, frame))
            else:
                try:
                    packets = segment_gso_frame(frame, hdr)
                except VirtioNetError:
                    self.tap.counters.rx_bad_header += 1
                    continue
                for packet in packets:
                    ingress.send(packet, now)
        if ingress is not None:
            for item in ingress.poll(now):
                self._deliver(item, now)
                moved += 1
        now = self.sending_time(now)
        egress = self.egress
        for frame in self.node.poll(now):
            moved += 1
            if self.recorder is not None:
                self.recorder.record(frame.joined(), now, received=False)
            if egress is None:
                self._send(frame)
            elif egress.profile.keeps_segments_whole:
                # The payload may be a view of the send buffer, which moves on before the frame is due.
                held = OutgoingFrame(frame.head, bytes(frame.payload), gso_size=frame.gso_size,
                                     partial_checksum=frame.partial_checksum)
                egress.send(held, now, outgoing_wire_bytes(held))
            else:
                for packet in wire_packets(frame):
                    egress.send(packet, now)
        if egress is not None:
            for item in egress.poll(now):
                if isinstance(item, OutgoingFrame):
                    self._send(item)
                else:
                    self.tap.write(item)
        self._settle()
        return moved

    def _deliver(self, item: Any, now: float) -> None:
        """Hand the node one frame the ingress link let through: a wire packet, or a `WholeFrame`."""
        if isinstance(item, WholeFrame):
            self._receive(item.hdr, item.frame, now)  # records it, as the clean path does
            return
        if self.recorder is not None:
            self.recorder.record(item, now, received=True)
        self.node.receive_frame(item, now)

    def next_deadline(self) -> float | None:
        return earliest(*(link.next_deadline() for link in (self.egress, self.ingress) if link is not None))

    def impairment_counters(self) -> dict[str, int]:
        """The links' statistics, named like nstat counters (ImpairEgressLost, ImpairIngressDelivered...)."""
        counters: dict[str, int] = {}
        for direction, stats in self.stats.items():
            if self.profiles[direction].is_transparent and not stats.offered:
                continue
            for name in stats.__slots__:
                counters[f"Impair{direction.title()}{name.title().replace('_', '')}"] = getattr(stats, name)
        return counters
