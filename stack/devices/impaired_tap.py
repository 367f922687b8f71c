"""A TAP path with userspace impairment (this kernel has no sch_netem): `ImpairedTapMedium`.

Egress (frames the stack sends) and ingress (frames the kernel hands over) each pass an
`stack.devices.impairment.ImpairedLink` when their profile is not transparent. Impairment acts on packets as
they
are on the wire: a TSO super-segment (ours or the kernel's) is first cut into MSS-sized packets with
complete checksums (`segment_gso_frame`), so "1 % loss" means one wire packet in a hundred, a corrupted
bit is caught by the receiver's checksum, and a rate limit counts wire bytes. Impaired frames are then
written (and delivered) without offload: checksums done, nothing left for the kernel to finish.

A clean direction keeps the fast path of `TapMedium` (offload untouched). `set_impairment` changes a
direction while the node runs (`lab impair`): frames already in flight keep their times, and a direction
made clean returns to the fast path once it has delivered them.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from stack.deadlines import earliest
from stack.devices.contract import FrameNode
from stack.devices.impairment import ImpairedLink, Impairment, ImpairmentStats
from stack.devices.tap import TapDevice, TapMedium, wire_packets
from stack.devices.virtio_net import VirtioNetError, segment_gso_frame


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
        for hdr, frame in self.tap.read_batch(self.batch):
            moved += 1
            if self.ingress is None:
                self._receive(hdr, frame, now)
                continue
            try:
                packets = segment_gso_frame(frame, hdr)
            except VirtioNetError:
                self.tap.counters.rx_bad_header += 1
                continue
            for packet in packets:
                self.ingress.send(packet, now)
        if self.ingress is not None:
            for packet in self.ingress.poll(now):
                if self.recorder is not None:
                    self.recorder.record(packet, now, received=True)
                self.node.receive_frame(packet, now)
                moved += 1
        now = self.sending_time(now)
        for frame in self.node.poll(now):
            moved += 1
            if self.recorder is not None:
                self.recorder.record(frame.joined(), now, received=False)
            if self.egress is None:
                self._send(frame)
                continue
            for packet in wire_packets(frame):
                self.egress.send(packet, now)
        if self.egress is not None:
            for packet in self.egress.poll(now):
                self.tap.write(packet)
        self._settle()
        return moved

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
