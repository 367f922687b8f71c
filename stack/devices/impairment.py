"""A seeded, sans-IO model of an impaired link, in the spirit of Linux's netem.

The kernel this lab runs on has no sch_netem, so impairment happens in userspace: on the memory wire in
tests and on the TAP path of a pystack node. The model is generic over frames (opaque ``bytes``)
and never reads the clock: ``send(frame, now)`` offers a frame, ``poll(now)`` returns the frames due by
``now``, ``next_deadline()`` says when the next one is due. All randomness comes from one seeded
``random.Random``, so a seed replays the same losses, duplicates and delays.

Order of the effects for each offered frame (netem's order):
1. ``loss``: the frame is dropped.
2. ``duplicate``: a second copy is offered too (the copy goes through the remaining steps on its own).
3. ``corrupt``: one random bit of the frame is flipped.
4. queue limit: a frame arriving at a full queue is tail-dropped. The queue holds what is in flight, so
   it must hold the path's bandwidth-delay product, or a sender within its window loses packets on a
   link that is meant to lose none: it is bounded in bytes by `queue_limit_bytes` (the rate, or an
   assumed veth-class rate when none is set, times delay + jitter; never below netem's 1000 full-size
   frames, nor, without a rate, below the largest TCP window: 16 MB), and in frames only by an explicit
   ``limit`` (netem's ``limit``).
5. ``rate``: the frame is serialized after the frames before it (``len * 8 / rate_bps`` seconds each).
6. ``delay`` +/- ``jitter`` (uniform): propagation delay; with ``reorder``, that fraction of the frames
   skips the delay and so overtakes the frames in flight (netem's "reorder" needs a delay to show).
   Jitter alone reorders as well, exactly like netem without a rate.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from stack.compat import SLOTS


@dataclass(frozen=True, **SLOTS)
class Impairment:
    """One direction's impairment profile; probabilities are fractions in [0, 1], times in seconds."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    rate_bps: float | None = None  # serialization rate in bits per second; None = unlimited
    limit: int | None = None  # frames queued in the link at once (netem's limit); None: bytes bound it

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"impairment: {name}={value!r} is not a probability in [0, 1]")
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if value < 0.0:
                raise ValueError(f"impairment: {name}={value!r} is negative")
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError(f"impairment: rate_bps={self.rate_bps!r} must be positive")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"impairment: limit={self.limit!r} must be at least 1")

    @property
    def keeps_segments_whole(self) -> bool:
        """True when nothing acts on single packets: only delay, rate and queue limit. A TSO super-segment
        can then cross the link as one unit (its packets would leave together and arrive in order anyway);
        loss, duplicate, corrupt, reorder and jitter (which reorders) need the wire packets."""
        return not (self.loss or self.duplicate or self.corrupt or self.reorder or self.jitter)

    @property
    def is_transparent(self) -> bool:
        """True when the profile changes nothing (frames pass at once, in order, intact)."""
        return self == Impairment(limit=self.limit)


# The rate a link without `rate_bps` is assumed to carry, for sizing its queue: a veth between namespaces
# moves 10-17 Gbit/s on the reference machine.
ASSUMED_LINK_BPS = 16e9
# Never less than netem's default queue (1000 frames) of full-size Ethernet frames ...
MIN_QUEUE_BYTES = 1000 * 1514
# ... and, on a link without a rate, never less than the largest window a sender here has in flight (Linux's
# tcp_rmem[2] is 6 MB, the stack's buffers 4 MB): such a link holds a frame only for its delay, so what it
# holds is what the sender sent in that time, at most its window -- which a TSO sender refilling its
# window at once can put in flight within the delay, 4 MB inside 1 ms.
WINDOW_QUEUE_BYTES = 16 * 1024 * 1024
# ... and never more than this: far above any TCP window of the lab's senders (Linux tcp_rmem[2] is 6 MB),
# so only a sender that ignores windows fills it, and a long delay cannot make the queue eat the memory.
MAX_QUEUE_BYTES = 256 * 1024 * 1024
# A sender that keeps the pipe full has the product plus what waits for the serializer in flight, and
# arrivals come in bursts: the queue holds half as much again.
QUEUE_HEADROOM = 1.5


def queue_limit_bytes(profile: Impairment) -> int:
    """How many bytes one direction holds in flight before it tail-drops: its bandwidth-delay product.

    The product of the rate (``rate_bps``, or `ASSUMED_LINK_BPS` when the link has no rate of its own)
    and the longest time a frame stays (``delay + jitter``), with `QUEUE_HEADROOM`, clamped to
    [`MIN_QUEUE_BYTES`, `MAX_QUEUE_BYTES`] -- [`WINDOW_QUEUE_BYTES`, ...] without a rate, where nothing
    but the delay holds a frame, so a sender within its window never loses one. With a rate, frames also
    wait for the serializer; that backlog is a router queue: a sender that outruns the rate by more than
    the product sees drops.
    """
    rate = profile.rate_bps if profile.rate_bps is not None else ASSUMED_LINK_BPS
    product = rate * (profile.delay + profile.jitter) / 8
    floor = MIN_QUEUE_BYTES if profile.rate_bps is not None else WINDOW_QUEUE_BYTES
    return int(min(MAX_QUEUE_BYTES, max(floor, product * QUEUE_HEADROOM)))


@dataclass(**SLOTS)
class ImpairmentStats:
    offered: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    queue_drops: int = 0


@dataclass(**SLOTS)
class ImpairedLink:
    """One direction of a link: frames in, impaired frames out when they are due.

    ``header_bytes`` is a device header each frame carries in front (a forwarder keeps a frame's
    virtio_net header with it): corruption never touches it and rate and queue count only the frame.
    """

    profile: Impairment
    rng: random.Random
    stats: ImpairmentStats = field(default_factory=ImpairmentStats)
    header_bytes: int = 0
    _in_flight: list[tuple[float, int, Any, int]] = field(default_factory=list, init=False)
    _queued_bytes: int = field(default=0, init=False)
    _limit_bytes: int = field(default=0, init=False)
    # Tie-breaker: frames due at the same time leave in the order they were queued.
    _order: int = field(default=0, init=False)
    # When the serializer finishes the frame before (rate limiting).
    _link_free_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._limit_bytes = queue_limit_bytes(self.profile)

    def reconfigure(self, profile: Impairment) -> None:
        """Apply ``profile`` to frames offered from now on; frames in flight keep their times (as netem)."""
        self.profile = profile
        self._limit_bytes = queue_limit_bytes(profile)

    def send(self, frame: Any, now: float, wire_bytes: int | None = None) -> None:
        """Offer one frame to the link at time ``now``.

        ``wire_bytes``: the frame stands for that many bytes on the wire (a super-segment, given whole to a
        profile that `keeps_segments_whole`: the rate and the queue count the packets it becomes). Such a
        frame is opaque to the link; only a bytes frame can be corrupted."""
        self.stats.offered += 1
        profile = self.profile
        rng = self.rng
        if profile.loss and rng.random() < profile.loss:
            self.stats.lost += 1
            return
        copies = 1
        if profile.duplicate and rng.random() < profile.duplicate:
            self.stats.duplicated += 1
            copies = 2
        for _ in range(copies):
            self._enqueue(frame, now, wire_bytes)

    def _enqueue(self, frame: Any, now: float, wire_bytes: int | None) -> None:
        profile = self.profile
        rng = self.rng
        size = len(frame) - self.header_bytes if wire_bytes is None else wire_bytes
        if profile.corrupt and wire_bytes is None and size > 0 and rng.random() < profile.corrupt:
            self.stats.corrupted += 1
            bit = self.header_bytes * 8 + rng.randrange(size * 8)
            mutable = bytearray(frame)
            mutable[bit >> 3] ^= 1 << (bit & 7)
            frame = bytes(mutable)
        if (profile.limit is not None and len(self._in_flight) >= profile.limit) or (
                self._in_flight and self._queued_bytes + size > self._limit_bytes):
            self.stats.queue_drops += 1
            return
        self._queued_bytes += size
        departure = now
        if profile.rate_bps is not None:
            departure = max(now, self._link_free_at) + size * 8 / profile.rate_bps
            self._link_free_at = departure
        delay = profile.delay
        if profile.jitter:
            delay = max(0.0, delay + rng.uniform(-profile.jitter, profile.jitter))
        if profile.reorder and rng.random() < profile.reorder:
            self.stats.reordered += 1
            delay = 0.0
        self._order += 1
        heapq.heappush(self._in_flight, (departure + delay, self._order, frame, size))

    def poll(self, now: float) -> list[Any]:
        """The frames due by ``now``, in delivery order."""
        in_flight = self._in_flight
        due: list[Any] = []
        while in_flight and in_flight[0][0] <= now:
            _, _, frame, size = heapq.heappop(in_flight)
            self._queued_bytes -= size
            due.append(frame)
        self.stats.delivered += len(due)
        return due

    def next_deadline(self) -> float | None:
        """When the next frame is due, or None when the link is empty."""
        return self._in_flight[0][0] if self._in_flight else None

    def __len__(self) -> int:
        return len(self._in_flight)
