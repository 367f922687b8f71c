"""Software GRO: consecutive in-order TCP data frames of one connection in one read batch become one frame.

A plain TAP (no virtio_net_hdr) hands the stack one 1514-byte frame per segment, and every frame costs
the host and the TCP core their whole per-segment work (parsing, lookup, state update, an ACK every
second segment). Linux's receive path merges such frames before TCP sees them (GRO, `tcp_gro_receive`);
this module does the same for one read batch, on raw bytes, so the frames that merge are never parsed
into objects one by one.

Frames merge under Linux's rules: IPv4 without options or fragmentation, TCP with only ACK (and PSH on
the last frame of a run), the same Ethernet header, TOS, TTL, addresses, ports, ACK number, data
offset, window, urgent pointer and option bytes (so a changed timestamp starts a new run), each
segment starting where the previous one ended, every segment but the last of the same size, and at
most one IPv4 datagram's worth of payload. Each frame's IPv4 header checksum and TCP checksum are
verified here before it merges; a frame that fails, or does not fit, passes through untouched for the
host to judge (and count) as usual. Only adjacent frames merge, so the order of frames is kept.

The merged frame carries the first frame's headers with a new IPv4 total length and header checksum;
its TCP checksum field is stale, so it is handed on as ``checksum_verified`` (every part was checked).
"""

from __future__ import annotations

from collections.abc import Sequence

from stack.wire.checksum import fold, internet_checksum, pseudo_header_sum, sum_words

_ETH_IPV4 = b"\x08\x00"
_IP_START = 14
_TCP_START = 34  # Ethernet (14) + IPv4 without options (20)
_ACK = 0x10
_PSH = 0x08
MAX_IP_LENGTH = 0xFFFF


class _Run:
    """The frames of one merge in progress: the first frame's key, where data continues, and the pieces."""

    __slots__ = ("ended", "frames", "header_end", "key", "next_seq", "payload", "segment_size")

    def __init__(self, frame: bytes, key: bytes, seq: int, header_end: int, size: int, push: bool) -> None:
        self.frames = [frame]
        self.key = key
        self.next_seq = (seq + size) & 0xFFFFFFFF
        self.payload = size
        self.segment_size = size
        self.header_end = header_end
        self.ended = push

    def extends(self, key: bytes, seq: int, size: int) -> bool:
        return (not self.ended and key == self.key and seq == self.next_seq and size <= self.segment_size
                and self.header_end - _IP_START + self.payload + size <= MAX_IP_LENGTH)

    def add(self, frame: bytes, size: int, push: bool) -> None:
        self.frames.append(frame)
        self.next_seq = (self.next_seq + size) & 0xFFFFFFFF
        self.payload += size
        # A short segment or a PSH ends the run, as in Linux: what follows may be a new write.
        self.ended = push or size < self.segment_size

    def frame(self) -> tuple[bytes, bool]:
        """The run as one frame and whether its TCP checksum was verified (True for a merge)."""
        frames = self.frames
        if len(frames) == 1:
            return frames[0], True
        header_end = self.header_end
        head = bytearray(frames[0][:header_end])
        total = header_end - _IP_START + self.payload
        head[16:18] = total.to_bytes(2, "big")
        head[24:26] = b"\x00\x00"
        head[24:26] = internet_checksum(head[_IP_START:_TCP_START]).to_bytes(2, "big")
        head[_TCP_START + 13] |= frames[-1][_TCP_START + 13] & _PSH
        pieces: list[bytes | bytearray | memoryview] = [head]
        pieces.extend(memoryview(frame)[header_end:] for frame in frames)
        return b"".join(pieces), True


class GroCounters:
    """What the coalescer did: frames that joined a run, and the merged frames they became."""

    __slots__ = ("merged_frames", "merged_into")

    def __init__(self) -> None:
        self.merged_frames = 0  # received frames that went into a merged frame
        self.merged_into = 0  # merged frames handed to the node


def _mergeable(frame: bytes) -> tuple[bytes, int, int, int, bool] | None:
    """(key, seq, header end, payload size, PSH) of a frame that may merge, checksums verified; else None."""
    length = len(frame)
    if length < _TCP_START + 20 or frame[12:14] != _ETH_IPV4 or frame[14] != 0x45 or frame[23] != 6:
        return None
    if frame[20] & 0x3F or frame[21]:  # MF or a fragment offset
        return None
    if (frame[16] << 8 | frame[17]) != length - _IP_START:  # Ethernet padding, or a truncated frame
        return None
    flags = frame[_TCP_START + 13]
    if flags & ~_PSH != _ACK:
        return None
    header_end = _TCP_START + (frame[_TCP_START + 12] >> 4) * 4
    size = length - header_end
    if header_end < _TCP_START + 20 or size <= 0:
        return None
    view = memoryview(frame)
    if sum_words(view[_IP_START:_TCP_START]) != 0xFFFF:
        return None
    tcp_length = length - _TCP_START
    pseudo = pseudo_header_sum(frame[26:30], frame[30:34], 6, tcp_length)
    if fold(sum_words(view[_TCP_START:]) + pseudo) != 0xFFFF:
        return None
    key = frame[:14] + frame[15:16] + frame[22:23] + frame[26:38] + frame[42:47] + frame[48:50] + (
        frame[_TCP_START + 18:header_end])
    seq = int.from_bytes(frame[38:42], "big")
    return key, seq, header_end, size, bool(flags & _PSH)


def coalesce(frames: Sequence[bytes], counters: GroCounters | None = None) -> list[tuple[bytes, bool]]:
    """The frames of one read batch with adjacent in-order data frames of a connection merged, in order.

    Each result is ``(frame, checksum_verified)``: True when its TCP checksum was checked here (a merged
    frame, or a frame that could have merged), False for a frame passed through for the host to check.
    """
    out: list[tuple[bytes, bool]] = []
    run: _Run | None = None
    for frame in frames:
        facts = _mergeable(frame)
        if facts is None:
            if run is not None:
                out.append(_finish(run, counters))
                run = None
            out.append((frame, False))
            continue
        key, seq, header_end, size, push = facts
        if run is not None and run.extends(key, seq, size):
            run.add(frame, size, push)
            continue
        if run is not None:
            out.append(_finish(run, counters))
        run = _Run(frame, key, seq, header_end, size, push)
    if run is not None:
        out.append(_finish(run, counters))
    return out


def _finish(run: _Run, counters: GroCounters | None) -> tuple[bytes, bool]:
    if counters is not None and len(run.frames) > 1:
        counters.merged_frames += len(run.frames)
        counters.merged_into += 1
    return run.frame()
