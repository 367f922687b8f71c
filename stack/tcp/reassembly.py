"""Out-of-order data above RCV.NXT, kept until the hole before it is filled (RFC 9293 3.10.7.4).

Data is held as *blocks*: maximal contiguous runs of sequence space, exactly what SACK blocks report. Each
block keeps its payload as a list of chunks in order. Blocks sit in parallel sorted lists (start offset, end
offset, chunks, recency), so a segment costs a binary search plus a few list edits, never a loop over bytes,
and the usual cases (a run growing at its right edge, one hole with a long run behind it) touch one block.
A whole segment is stored as the object the caller gave (zero copy); only the part of a segment that
overlaps data already held is copied out, so a peer cannot make tiny slices pin large buffers.

Offsets are measured from an anchor sequence number, not from 0, so everything is right across the 2**32
wrap; the anchor moves when the queue empties (or after 2**30 bytes) to keep offsets small.

Memory is bounded by `limit` payload bytes and `max_segments` chunks; a segment that does not fit is dropped
whole (the peer retransmits it), and data already held is never discarded, so a SACK we sent stays true.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Union

from stack.tcp.seq import SEQ_MASK, seq_sub

_REANCHOR_DISTANCE = 1 << 30
_DEFAULT_BYTES_PER_SEGMENT = 256  # sizes the default chunk cap: limit // 256 chunks

Chunk = Union[bytes, memoryview]


class ReassemblyQueue:
    """Out-of-order segments between RCV.NXT and the right edge of the receive window."""

    __slots__ = (
        "_anchor",
        "_arrivals",
        "_buffered",
        "_chunk_count",
        "_chunks",
        "_ends",
        "_stamps",
        "_starts",
        "dsack",
        "limit",
        "max_segments",
    )

    def __init__(self, limit: int, max_segments: int | None = None) -> None:
        if limit < 0:
            raise ValueError(f"reassembly limit must not be negative, got {limit}")
        self.limit = limit
        if max_segments is None:
            max_segments = max(64, limit // _DEFAULT_BYTES_PER_SEGMENT)
        self.max_segments = max_segments
        self._anchor = 0
        self._starts: list[int] = []  # block start offsets from the anchor, sorted
        self._ends: list[int] = []  # block end offsets (exclusive); blocks never touch or overlap
        self._chunks: list[list[Chunk]] = []  # each block's payload, in order
        self._stamps: list[int] = []  # arrival counter of the last segment that touched each block
        self._arrivals = 0
        self.dsack: tuple[int, int] | None = None  # a duplicate to report once as the first SACK block
        self._buffered = 0
        self._chunk_count = 0

    @property
    def buffered_bytes(self) -> int:
        """Payload bytes held."""
        return self._buffered

    @property
    def is_empty(self) -> bool:
        return not self._starts

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()
        self._chunks.clear()
        self._stamps.clear()
        self._buffered = 0
        self._chunk_count = 0

    def add(self, seq: int, data: bytes | memoryview, rcv_nxt: int) -> bool:
        """Store the part of `data` (starting at `seq`) that lies beyond `rcv_nxt` and is not held yet.

        Returns False only when the new bytes did not fit in the memory limit; the segment is then dropped
        whole. Data wholly at or below rcv_nxt (a duplicate) is ignored and returns True. A segment stored
        whole is kept by reference: pass bytes, or a view on a buffer nobody will overwrite.
        """
        length = len(data)
        if length == 0:
            return True
        front = self._advance_front(rcv_nxt)
        seg_start = front + seq_sub(seq, rcv_nxt)
        seg_end = seg_start + length
        if seg_end <= front:
            return True
        starts, ends, stamps = self._starts, self._ends, self._stamps
        self._arrivals += 1
        stamp = self._arrivals

        # the gaps of [max(seg_start, front), seg_end) between the blocks already held
        pos = max(seg_start, front)
        i = bisect_right(starts, pos)
        if i > 0 and ends[i - 1] > pos:
            stamps[i - 1] = stamp
            pos = ends[i - 1]
        gaps: list[tuple[int, int]] = []
        while pos < seg_end:
            if i < len(starts) and starts[i] < seg_end:
                if starts[i] > pos:
                    gaps.append((pos, starts[i]))
                stamps[i] = stamp
                pos = ends[i]
                i += 1
            else:
                gaps.append((pos, seg_end))
                break
        if not gaps:
            self.dsack = (seq, (seq + length) & SEQ_MASK)  # all of it was held already (RFC 2883 4.1.3)
            return True
        new_bytes = sum(e - s for s, e in gaps)
        if self._buffered + new_bytes > self.limit or self._chunk_count + len(gaps) > self.max_segments:
            return False
        whole = len(gaps) == 1 and gaps[0] == (seg_start, seg_end)
        view = None if whole else memoryview(data)
        for s, e in gaps:
            chunk = data if view is None else bytes(view[s - seg_start : e - seg_start])
            self._insert_gap(s, e, chunk, stamp)
        self._buffered += new_bytes
        self._chunk_count += len(gaps)
        return True

    def _insert_gap(self, start: int, end: int, chunk: Chunk, stamp: int) -> None:
        """Place a chunk covering a gap: it extends, joins or sits between blocks."""
        starts, ends, chunks, stamps = self._starts, self._ends, self._chunks, self._stamps
        k = bisect_right(starts, start)  # blocks before k start at or before `start`
        joins_left = k > 0 and ends[k - 1] == start
        joins_right = k < len(starts) and starts[k] == end
        if joins_left and joins_right:
            chunks[k - 1].append(chunk)
            chunks[k - 1].extend(chunks[k])
            ends[k - 1] = ends[k]
            stamps[k - 1] = stamp
            del starts[k], ends[k], chunks[k], stamps[k]
        elif joins_left:
            chunks[k - 1].append(chunk)
            ends[k - 1] = end
            stamps[k - 1] = stamp
        elif joins_right:
            chunks[k].insert(0, chunk)
            starts[k] = start
            stamps[k] = stamp
        else:
            starts.insert(k, start)
            ends.insert(k, end)
            chunks.insert(k, [chunk])
            stamps.insert(k, stamp)

    def pop_ready(self, rcv_nxt: int) -> list[bytes | memoryview]:
        """Remove and return the chunks that continue the stream at `rcv_nxt`, in order.

        The caller advances RCV.NXT by their total length.
        """
        front = self._advance_front(rcv_nxt)
        if not self._starts or self._starts[0] != front:
            return []
        ready = self._chunks[0]
        self._buffered -= self._ends[0] - front
        self._chunk_count -= len(ready)
        del self._starts[0], self._ends[0], self._chunks[0], self._stamps[0]
        return ready

    def note_duplicate(self, start: int, end: int) -> None:
        """A segment (or its front) [start, end) below RCV.NXT arrived again: report it as a D-SACK."""
        if start != end:
            self.dsack = (start, end)

    def sack_blocks(self, max_blocks: int = 4, *, take_dsack: bool = False) -> list[tuple[int, int]]:
        """SACK blocks (left edge, right edge) to report, per RFC 2018 section 4 and RFC 2883.

        A duplicate segment received since the last report comes first (the D-SACK block, reported once:
        `take_dsack` consumes it); then the block holding the most recently received segment; the rest
        follow from the most recently touched to the least, so repeated ACKs keep reporting recent blocks
        when not all fit.
        """
        starts, ends, anchor = self._starts, self._ends, self._anchor
        dsack = self.dsack
        if take_dsack:
            self.dsack = None
        room = max_blocks - (dsack is not None)
        order = sorted(range(len(starts)), key=self._stamps.__getitem__, reverse=True)[:room]
        blocks = [((anchor + starts[k]) & SEQ_MASK, (anchor + ends[k]) & SEQ_MASK) for k in order]
        return [dsack, *blocks] if dsack is not None else blocks

    def ranges(self) -> list[tuple[int, int]]:
        """The contiguous blocks held, in sequence order, as (left edge, right edge) sequence numbers."""
        anchor = self._anchor
        pairs = zip(self._starts, self._ends)
        return [((anchor + s) & SEQ_MASK, (anchor + e) & SEQ_MASK) for s, e in pairs]

    def _advance_front(self, rcv_nxt: int) -> int:
        """Return rcv_nxt as an offset from the anchor, discarding any held data that now lies below it."""
        starts = self._starts
        if not starts:
            self._anchor = rcv_nxt
            return 0
        front = seq_sub(rcv_nxt, self._anchor)
        if front > _REANCHOR_DISTANCE:
            self._reanchor(front)
            front = 0
        if starts[0] >= front:
            return front
        ends = self._ends
        drop = 0
        while drop < len(starts) and ends[drop] <= front:
            self._buffered -= ends[drop] - starts[drop]
            self._chunk_count -= len(self._chunks[drop])
            drop += 1
        del starts[:drop], ends[:drop], self._chunks[:drop], self._stamps[:drop]
        if starts and starts[0] < front:
            self._trim_first_block(front)
        return front

    def _trim_first_block(self, front: int) -> None:
        """Cut the first block so it starts at `front` (the caller consumed its beginning elsewhere)."""
        chunks = self._chunks[0]
        cut = front - self._starts[0]
        self._buffered -= cut
        dropped = 0
        while cut >= len(chunks[dropped]):
            cut -= len(chunks[dropped])
            dropped += 1
        del chunks[:dropped]
        self._chunk_count -= dropped
        if cut:
            chunks[0] = memoryview(chunks[0])[cut:]
        self._starts[0] = front

    def _reanchor(self, shift: int) -> None:
        self._anchor = (self._anchor + shift) & SEQ_MASK
        self._starts[:] = [s - shift for s in self._starts]
        self._ends[:] = [e - shift for e in self._ends]
