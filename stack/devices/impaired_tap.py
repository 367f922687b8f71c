"""A TAP path with userspace impairment (this kernel has no sch_netem): `ImpairedTapMedium`.

Egress (frames the stack sends) and ingress (frames the kernel hands over) each pass an
`stack.devices.impairment.ImpairedLink` when their profile is not transparent. Impairment acts on packets as
they
are on the wire: a TSO super-segment (ours or the kernel's) is first cut into MSS-sized packets with
complete checksums (`segment_gso_frame`), so "1 % loss" means one wire packet in a hundred, a corrupted
bit is caught by the receiver's checksum, and a rate limit counts wire bytes. Impaired frames are then
written (and delivered) without offload: checksums done, nothing left for the kernel to finish.

A clean direction keeps the fast path of `TapMedium` (offload untouched).
"""

from __future__ import annotations

import random

from stack.deadlines import earliest
from stack.devices.contract import FrameNode
from stack.devices.impairment import ImpairedLink, Impairment
from stack.devices.tap import TapDevice, TapMedium, wire_packets
from stack.devices.virtio_net import VirtioNetError, segment_gso_frame


class ImpairedTapMedium(TapMedium):
    """`TapMedium` with a seeded impairment per direction; `next_deadline` is when a delayed frame is due."""

    def __init__(self, node: FrameNode, tap: TapDevice, egress: Impairment, ingress: Impairment, *,
                 seed: int | None = None, batch: int = 64) -> None:
        super().__init__(node, tap, batch)
        rng = random.Random(seed)
        self.egress = None if egress.is_transparent else ImpairedLink(egress, random.Random(rng.random()))
        self.ingress = None if ingress.is_transparent else ImpairedLink(ingress, random.Random(rng.random()))

    def step(self, now: float) -> int:
        if self.egress is None and self.ingress is None:
            return super().step(now)
        moved = 0
        for frame in self.node.poll(now):
            moved += 1
            if self.egress is None:
                self._send(frame)
                continue
            for packet in wire_packets(frame):
                self.egress.send(packet, now)
        if self.egress is not None:
            for packet in self.egress.poll(now):
                self.tap.write(packet)
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
                self.node.receive_frame(packet, now)
                moved += 1
        return moved

    def next_deadline(self) -> float | None:
        return earliest(*(link.next_deadline() for link in (self.egress, self.ingress) if link is not None))

    def impairment_counters(self) -> dict[str, int]:
        """The links' statistics, named like nstat counters (ImpairEgressLost, ImpairIngressDelivered...)."""
        counters: dict[str, int] = {}
        for direction, link in (("Egress", self.egress), ("Ingress", self.ingress)):
            if link is None:
                continue
            for name in link.stats.__slots__:
                counters[f"Impair{direction}{name.title().replace('_', '')}"] = getattr(link.stats, name)
        return counters
