"""The contract between a node (a Host, a router port) and the medium that carries its frames (a TAP, a wire).

A node is sans-IO: a medium hands it received frames with `receive_frame(frame, now, checksum_verified)` and
takes its outgoing frames from `poll(now)`.  Each outgoing frame is an `OutgoingFrame`: its bytes in two
pieces (so a 64 KB TCP payload, a view of the send buffer, reaches a TAP's writev uncopied) and what the
device must still do with it: finish a TCP checksum left partial, and cut a TSO super-segment into packets of
`gso_size` payload bytes.  A medium needs nothing else from a node, so it never probes one for attributes.
"""

from __future__ import annotations

from typing import Protocol

from stack.wire.buffer import BytesLike


class OutgoingFrame:
    """One Ethernet frame a node sends: `head` (every byte before the TCP payload, or the whole frame when it
    carries none) then `payload`.

    `partial_checksum`: the TCP checksum field holds only the pseudo-header sum, for a device with checksum
    offload (virtio_net_hdr NEEDS_CSUM) to complete.  `gso_size` (0: a single packet): a TCP super-segment
    the device cuts into packets of that many payload bytes (TSO).
    """

    __slots__ = ("gso_size", "head", "partial_checksum", "payload")

    def __init__(self, head: bytes, payload: BytesLike = b"", *, gso_size: int = 0,
                 partial_checksum: bool = False) -> None:
        self.head = head
        self.payload = payload
        self.gso_size = gso_size
        self.partial_checksum = partial_checksum

    def __len__(self) -> int:
        return len(self.head) + len(self.payload)

    @property
    def needs_device(self) -> bool:
        """True when the frame is not wire-ready as it is: a checksum or a segmentation is left to do."""
        return self.partial_checksum or self.gso_size > 0

    def parts(self) -> tuple[bytes] | tuple[bytes, BytesLike]:
        """The pieces to write with one writev."""
        return (self.head, self.payload) if len(self.payload) else (self.head,)

    def joined(self) -> bytes:
        """The frame as one bytes object (copies the payload: for media without scatter-gather)."""
        return self.head + self.payload if len(self.payload) else self.head

    def __repr__(self) -> str:
        partial = " partial" if self.partial_checksum else ""
        gso = f" gso={self.gso_size}" if self.gso_size else ""
        extra = partial + gso
        return f"OutgoingFrame({len(self)} bytes{extra})"


class FrameNode(Protocol):
    """Anything with one Ethernet interface that a medium can carry frames for: a Host, a router port."""

    def receive_frame(self, frame: BytesLike, now: float, checksum_verified: bool = False) -> None:
        """One received frame; `checksum_verified`: the device vouches for its TCP checksum."""
        ...

    def poll(self, now: float) -> list[OutgoingFrame]:
        """Run what is due at `now` and return the frames to send, in order."""
        ...

    def next_deadline(self) -> float | None:
        """When `poll` must run again (None: only when a frame arrives or a user call changes something)."""
        ...


class Medium(Protocol):
    """Carries frames between nodes: `step(now)` takes frames from its nodes and delivers those due."""

    nodes: tuple[FrameNode, ...]

    def step(self, now: float) -> int:
        """Frames moved (0 when nothing happened)."""
        ...

    def next_deadline(self) -> float | None:
        """When frames in flight are due (a delayed frame on an impaired link), or None."""
        ...

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when frames arrive from outside (a TAP), or None."""
        ...
