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
4. queue ``limit``: a frame arriving at a full queue is tail-dropped.
5. ``rate``: the frame is serialized after the frames before it (``len * 8 / rate_bps`` seconds each).
6. ``delay`` +/- ``jitter`` (uniform): propagation delay; with ``reorder``, that fraction of the frames
   skips the delay and so overtakes the frames in flight (netem's "reorder" needs a delay to show).
   Jitter alone reorders as well, exactly like netem without a rate.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Impairment:
    """One direction's impairment profile; probabilities are fractions in [0, 1], times in seconds."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    rate_bps: float | None = None  # serialization rate in bits per second; None = unlimited
    limit: int = 1000  # frames queued in the link at once (netem's default limit)

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
        if self.limit < 1:
            raise ValueError(f"impairment: limit={self.limit!r} must be at least 1")

    @property
    def is_transparent(self) -> bool:
        """True when the profile changes nothing (frames pass at once, in order, intact)."""
        return self == Impairment(limit=self.limit)


@dataclass(slots=True)
class ImpairmentStats:
    offered: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    queue_drops: int = 0


@dataclass(slots=True)
class ImpairedLink:
    """One direction of a link: frames in, impaired frames out when they are due."""

    profile: Impairment
    rng: random.Random
    stats: ImpairmentStats = field(default_factory=ImpairmentStats)
    _in_flight: list[tuple[float, int, bytes]] = field(default_factory=list, init=False)
    # Tie-breaker: frames due at the same time leave in the order they were queued.
    _order: int = field(default=0, init=False)
    # When the serializer finishes the frame before (rate limiting).
    _link_free_at: float = field(default=0.0, init=False)

    def send(self, frame: bytes, now: float) -> None:
        """Offer one frame to the link at time ``now``."""
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
            self._enqueue(frame, now)

    def _enqueue(self, frame: bytes, now: float) -> None:
        profile = self.profile
        rng = self.rng
        if profile.corrupt and frame and rng.random() < profile.corrupt:
            self.stats.corrupted += 1
            bit = rng.randrange(len(frame) * 8)
            mutable = bytearray(frame)
            mutable[bit >> 3] ^= 1 << (bit & 7)
            frame = bytes(mutable)
        if len(self._in_flight) >= profile.limit:
            self.stats.queue_drops += 1
            return
        departure = now
        if profile.rate_bps is not None:
            departure = max(now, self._link_free_at) + len(frame) * 8 / profile.rate_bps
            self._link_free_at = departure
        delay = profile.delay
        if profile.jitter:
            delay = max(0.0, delay + rng.uniform(-profile.jitter, profile.jitter))
        if profile.reorder and rng.random() < profile.reorder:
            self.stats.reordered += 1
            delay = 0.0
        self._order += 1
        heapq.heappush(self._in_flight, (departure + delay, self._order, frame))

    def poll(self, now: float) -> list[bytes]:
        """The frames due by ``now``, in delivery order."""
        in_flight = self._in_flight
        due: list[bytes] = []
        while in_flight and in_flight[0][0] <= now:
            due.append(heapq.heappop(in_flight)[2])
        self.stats.delivered += len(due)
        return due

    def next_deadline(self) -> float | None:
        """When the next frame is due, or None when the link is empty."""
        return self._in_flight[0][0] if self._in_flight else None

    def __len__(self) -> int:
        return len(self._in_flight)
