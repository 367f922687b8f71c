"""`LinkForwarder`: the lab's userspace impairment of a link between two kernel nodes.

Where the kernel has no sch_netem, `lab up` cuts such a link in two and puts a namespace of its own in
the middle: each node's veth ends there, and a forwarder process carries every frame from one end to
the other, through one `stack.devices.impairment.ImpairedLink` per direction (the model the stack uses
on its TAP path). This module is that forwarder's core, over two ports that read and write frames
with their virtio_net header (`stack.devices.packet.PacketPort`, or any object with the same three
methods); it never reads the clock (`step(now)`).

What each direction does with a frame depends on its profile:
- clean: the frame passes at once, header and all (a 64 KB super-segment stays one frame);
- delay only: the whole frame waits `delay` (every wire packet in it would wait the same);
- anything else (jitter, loss, duplicate, reorder, corrupt, rate): the frame is first cut into wire
  packets with complete checksums (`segment_gso_frame`), so "1 % loss" means one wire packet in a
  hundred and a flipped bit is caught by the receiver's checksum, exactly as on the stack's TAP path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from stack.compat import SLOTS
from stack.deadlines import earliest
from stack.devices.impairment import ImpairedLink, Impairment, ImpairmentStats
from stack.devices.tap import Buffer
from stack.devices.virtio_net import (
    VIRTIO_NET_HDR_LEN,
    VirtioNetError,
    parse_virtio_net_hdr,
    segment_gso_frame,
)

PLAIN_HEADER = bytes(VIRTIO_NET_HDR_LEN)  # a frame with nothing left for the kernel to do


class FramePort(Protocol):
    """Frames (virtio_net header + Ethernet frame) in and out of one interface."""

    def read_batch(self, max_frames: int) -> list[bytes]: ...

    def write(self, frame: Buffer) -> bool: ...

    def fileno(self) -> int: ...


def only_delays(profile: Impairment) -> bool:
    """True when every wire packet of a frame would be treated alike (a fixed delay, nothing random)."""
    return profile == Impairment(delay=profile.delay, limit=profile.limit)


@dataclass(**SLOTS)
class Direction:
    """Frames read on `source` leave on `sink`, impaired as `profile` says."""

    name: str  # "h1->h2"
    source: FramePort
    sink: FramePort
    profile: Impairment
    rng: random.Random
    stats: ImpairmentStats = field(default_factory=ImpairmentStats)  # over every profile it had
    link: ImpairedLink | None = None  # None while the direction is clean and holds nothing
    whole_frames: bool = True  # the profile treats every wire packet of a frame alike (`only_delays`)
    passed: int = 0  # frames that went straight through
    segmented: int = 0  # super-segments cut into wire packets
    bad_headers: int = 0  # frames whose virtio_net header made no sense (dropped)

    def __post_init__(self) -> None:
        self.set_profile(self.profile)

    def set_profile(self, profile: Impairment) -> None:
        """Impair frames read from now on as `profile` says; frames already in flight keep their times."""
        self.profile = profile
        self.whole_frames = only_delays(profile)
        if self.link is not None:
            self.link.reconfigure(profile)
        elif not profile.is_transparent:
            self.link = ImpairedLink(profile, random.Random(self.rng.random()), self.stats,
                                     header_bytes=VIRTIO_NET_HDR_LEN)

    def step(self, now: float, batch: int) -> int:
        """Read what waits on the source, send what is due on the sink; how many frames were read."""
        frames = self.source.read_batch(batch)
        link = self.link
        if link is None:
            write = self.sink.write
            for frame in frames:
                write(frame)
            self.passed += len(frames)
            return len(frames)
        if self.whole_frames:
            for frame in frames:
                link.send(frame, now)
        else:
            for frame in frames:
                for packet in self._wire_packets(frame):
                    link.send(packet, now)
        write = self.sink.write
        for frame in link.poll(now):
            write(frame)
        if self.profile.is_transparent and not len(link):
            self.link = None  # clean again and empty: back to the straight path
        return len(frames)

    def _wire_packets(self, frame: bytes) -> list[bytes]:
        """The wire packets of a frame, checksums complete (corruption must be seen by the receiver)."""
        if not frame[0] and not frame[1]:  # no checksum left to do, no segmentation: one wire packet
            return [frame]
        try:
            packets = segment_gso_frame(memoryview(frame)[VIRTIO_NET_HDR_LEN:], parse_virtio_net_hdr(frame))
        except VirtioNetError:
            self.bad_headers += 1
            return []
        self.segmented += 1
        return [PLAIN_HEADER + packet for packet in packets]

    def next_deadline(self) -> float | None:
        return self.link.next_deadline() if self.link is not None else None

    def counters(self) -> dict[str, int]:
        return {"passed": self.passed, "segmented": self.segmented, "bad_headers": self.bad_headers,
                "in_flight": len(self.link) if self.link is not None else 0,
                **{name: getattr(self.stats, name) for name in self.stats.__slots__}}


class LinkForwarder:
    """Both directions of one link between ports `a` and `b` (names like "h1->h2" and "h2->h1")."""

    def __init__(self, a: FramePort, b: FramePort, *, names: tuple[str, str] = ("a->b", "b->a"),
                 profiles: tuple[Impairment, Impairment] = (Impairment(), Impairment()),
                 seed: int | None = None, batch: int = 64) -> None:
        rng = random.Random(seed)
        self.batch = batch
        self.directions = (
            Direction(names[0], a, b, profiles[0], random.Random(rng.random())),
            Direction(names[1], b, a, profiles[1], random.Random(rng.random())),
        )

    def direction(self, name: str) -> Direction:
        for direction in self.directions:
            if direction.name == name:
                return direction
        raise KeyError(name)

    def step(self, now: float) -> int:
        """One round: each direction reads up to a batch and sends what is due; frames read in all."""
        return sum(direction.step(now, self.batch) for direction in self.directions)

    def next_deadline(self) -> float | None:
        return earliest(*(direction.next_deadline() for direction in self.directions))
