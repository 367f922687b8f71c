"""Which worker owns a flow, when one node runs as several worker processes on one multi-queue TAP.

Every worker has its own Host (same address, same MAC) and its own connection tables, and the kernel's
tun driver picks which worker's queue receives each frame. A passive connection belongs to the worker
that received its SYN: the kernel keeps that flow on the queue the worker answers on. An actively opened
connection belongs to the worker that chose its local port, and each worker chooses only ports of its own
share of the ephemeral range (`port % count == index`), so its owner is computable from the port alone.
A worker that receives a segment of a flow it does not know, on a port of another worker's share, hands
the frame to that worker instead of answering it with a RST.

Pure: no I/O, no state; the node's worker machinery (`stack.node.workers`) moves the frames.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.compat import SLOTS


@dataclass(frozen=True, **SLOTS)
class FlowShare:
    """Worker `index` of `count`, sharing the ephemeral ports [low, high] by `port % count`."""

    index: int
    count: int
    low: int
    high: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker index {self.index} is outside 0..{self.count - 1}")
        if self.high - self.low + 1 < self.count:
            raise ValueError(f"ephemeral range {self.low}-{self.high} is smaller than {self.count} workers")

    def owner_of(self, local_port: int) -> int | None:
        """The worker that allocates `local_port`, or None for a port outside the ephemeral range (a
        listener's: every worker listens on it, the one that got the SYN owns the connection)."""
        if self.low <= local_port <= self.high:
            return local_port % self.count
        return None

    def allocates(self, local_port: int) -> bool:
        """True when this worker may choose `local_port` for a connection it opens."""
        return local_port % self.count == self.index

    def hand_over_to(self, local_port: int, syn_only: bool) -> int | None:
        """The other worker a segment for no known connection goes to, or None when this worker answers it
        itself (a bare SYN opens a new passive connection wherever it lands)."""
        if syn_only:
            return None
        owner = self.owner_of(local_port)
        return owner if owner is not None and owner != self.index else None
