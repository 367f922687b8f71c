"""A memory wire: a point-to-point Ethernet link between two nodes in one process.

Each direction is either transparent (frames arrive at the same instant, in order) or an
``ImpairedLink`` (delay, jitter, loss, duplicate, reorder, corrupt, rate), seeded so a run can be
replayed. An optional pcap capture records every frame as it is delivered, with the driver's clock
as timestamps, so tcpdump/Wireshark can read a simulated run.

``checksum_offload=True`` makes the wire behave like a veth pair with offload: frames reach a Host
marked as checksum-verified (the device vouches, as virtio's DATA_VALID does), so the receiver does not
sum payloads. A direction that corrupts frames never vouches: corruption must stay detectable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import BinaryIO

from stack.compat import SLOTS
from stack.deadlines import earliest
from stack.devices.contract import FrameNode
from stack.devices.impairment import ImpairedLink, Impairment
from stack.devices.pcap import PcapWriter


@dataclass(**SLOTS)
class DirectionStats:
    frames: int = 0
    bytes: int = 0


class _Direction:
    """One direction of the wire: frames taken from ``source`` and handed to ``sink``."""

    __slots__ = ("link", "sink", "source", "stats", "vouch")

    def __init__(self, source: FrameNode, sink: FrameNode, link: ImpairedLink | None) -> None:
        self.source = source
        self.sink = sink
        self.link = link
        self.stats = DirectionStats()
        self.vouch = False  # deliver frames as checksum-verified (offload)


class MemoryWire:
    """Joins node ``a`` and node ``b``; ``step(now)`` moves every frame that is due."""

    def __init__(self, a: FrameNode, b: FrameNode, impairment_a_to_b: Impairment | None = None,
                 impairment_b_to_a: Impairment | None = None, *, seed: int = 0,
                 pcap: BinaryIO | None = None, checksum_offload: bool = False) -> None:
        if a is b:
            raise ValueError("memory wire: both ends are the same node")
        self.nodes: tuple[FrameNode, ...] = (a, b)
        # One random stream per direction, derived from the seed, so one direction's draws do not shift
        # the other's when traffic patterns change.
        self._a_to_b = _Direction(a, b, self._link(impairment_a_to_b, seed, 1))
        self._b_to_a = _Direction(b, a, self._link(impairment_b_to_a, seed, 2))
        for direction, profile in ((self._a_to_b, impairment_a_to_b), (self._b_to_a, impairment_b_to_a)):
            direction.vouch = checksum_offload and (profile is None or profile.corrupt == 0)
        self._pcap = PcapWriter(pcap) if pcap is not None else None

    @staticmethod
    def _link(profile: Impairment | None, seed: int, direction: int) -> ImpairedLink | None:
        if profile is None or profile.is_transparent:
            return None
        return ImpairedLink(profile, random.Random(f"{seed}/{direction}"))

    @property
    def a_to_b(self) -> ImpairedLink | None:
        return self._a_to_b.link

    @property
    def b_to_a(self) -> ImpairedLink | None:
        return self._b_to_a.link

    def stats(self) -> dict[str, DirectionStats]:
        """Frames and bytes delivered in each direction."""
        return {"a_to_b": self._a_to_b.stats, "b_to_a": self._b_to_a.stats}

    def step(self, now: float) -> int:
        """Take each end's outgoing frames and deliver every frame due by ``now``; returns frames moved."""
        return self._move(self._a_to_b, now) + self._move(self._b_to_a, now)

    def _move(self, direction: _Direction, now: float) -> int:
        frames = [frame.joined() for frame in direction.source.poll(now)]  # no scatter-gather on a wire
        link = direction.link
        if link is not None:
            for frame in frames:
                link.send(frame, now)
            delivered = link.poll(now)
            moved = len(frames) + len(delivered)
        else:
            delivered = frames
            moved = len(frames)
        if delivered:
            stats = direction.stats
            sink = direction.sink
            pcap = self._pcap
            vouch = direction.vouch
            for frame in delivered:
                stats.frames += 1
                stats.bytes += len(frame)
                if pcap is not None:
                    pcap.write(frame, now)
                sink.receive_frame(frame, now, vouch)
        return moved

    def next_deadline(self) -> float | None:
        links = (self._a_to_b.link, self._b_to_a.link)
        return earliest(*(link.next_deadline() for link in links if link is not None))

    def fileno(self) -> None:
        """A memory wire has no descriptor: only deadlines and wakeups move it."""
        return None
