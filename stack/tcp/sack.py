"""The sender's SACK scoreboard and the RFC 6675 loss-recovery queries built on it.

The scoreboard remembers which bytes above SND.UNA the receiver has reported holding (SACK blocks, RFC
2018). From it RFC 6675 derives which holes are lost (IsLost), how much data is still in the network
(SetPipe) and what to retransmit next (NextSeg). Ranges are kept merged in two small sorted lists of offsets
from an anchor sequence number, so every query walks ranges, never bytes, and stays right across 2**32.

Conventions: `high_rxt` is the sequence number just past the highest byte retransmitted during this
recovery (pass SND.UNA when nothing was retransmitted yet); ranges are half-open (start, end).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from stack.tcp.seq import SEQ_MASK, seq_sub

DUP_THRESH = 3  # RFC 6675 section 2: DupThresh
_REANCHOR_DISTANCE = 1 << 30


class SackScoreboard:
    """SACKed ranges above SND.UNA, with RFC 6675's IsLost, SetPipe and NextSeg."""

    __slots__ = ("_anchor", "_ends", "_sacked", "_starts", "_una", "dsacks_seen", "invalid_blocks_seen")

    def __init__(self) -> None:
        self._anchor = 0
        self._una = 0  # SND.UNA as an offset from the anchor
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._sacked = 0
        self.dsacks_seen = 0  # RFC 2883 duplicate-SACK blocks seen (reported, not used for the scoreboard)
        self.invalid_blocks_seen = 0  # blocks outside SND.UNA..SND.NXT or empty: ignored

    # ------------------------------------------------------------------ state
    @property
    def sacked_bytes(self) -> int:
        """Bytes above SND.UNA the receiver reports holding."""
        return self._sacked

    @property
    def highest_sacked(self) -> int | None:
        """The sequence number just past the highest SACKed byte, None when nothing is SACKed."""
        if not self._ends:
            return None
        return (self._anchor + self._ends[-1]) & SEQ_MASK

    @property
    def is_empty(self) -> bool:
        return not self._starts

    def ranges(self) -> list[tuple[int, int]]:
        """The SACKed ranges in sequence order, as (start, end) sequence numbers."""
        anchor = self._anchor
        pairs = zip(self._starts, self._ends)
        return [((anchor + s) & SEQ_MASK, (anchor + e) & SEQ_MASK) for s, e in pairs]

    def clear(self) -> None:
        """Forget every SACKed range (after an RTO, RFC 6675 section 5.1: a receiver may renege)."""
        self._starts.clear()
        self._ends.clear()
        self._sacked = 0

    # ---------------------------------------------------------------- updates
    def advance(self, snd_una: int) -> None:
        """SND.UNA moved forward: drop the ranges (and parts of ranges) now below it."""
        starts, ends = self._starts, self._ends
        if not starts:
            self._anchor, self._una = snd_una, 0
            return
        una = self._una + seq_sub(snd_una, (self._anchor + self._una) & SEQ_MASK)
        if una <= self._una:
            return  # an old or repeated cumulative ACK
        self._una = una
        drop = 0
        while drop < len(starts) and ends[drop] <= una:
            self._sacked -= ends[drop] - starts[drop]
            drop += 1
        del starts[:drop], ends[:drop]
        if starts and starts[0] < una:
            self._sacked -= una - starts[0]
            starts[0] = una
        if not starts:
            self._anchor, self._una = snd_una, 0
        elif una > _REANCHOR_DISTANCE:
            self._anchor = snd_una
            starts[:] = [s - una for s in starts]
            ends[:] = [e - una for e in ends]
            self._una = 0

    def update(self, snd_una: int, blocks: Sequence[tuple[int, int]], snd_nxt: int) -> int:
        """Apply an ACK's cumulative point and SACK blocks; return how many bytes became newly SACKed.

        `snd_nxt` is the highest sequence number sent so far: blocks reaching past it, empty blocks and
        blocks wholly below SND.UNA are ignored. A first block below SND.UNA or inside the second block is a
        D-SACK (RFC 2883): counted in `dsacks_seen`, not added. For convenience the call
        `update(snd_una, snd_nxt, blocks)` is accepted too.
        """
        if isinstance(blocks, int):  # tolerate (snd_una, snd_nxt, blocks)
            blocks, snd_nxt = snd_nxt, blocks  # type: ignore[assignment]
        self.advance(snd_una)
        una = self._una
        una_seq = (self._anchor + una) & SEQ_MASK  # as advanced: a stale snd_una never moves it back
        nxt = una + seq_sub(snd_nxt, una_seq)
        edges = [(una + seq_sub(left, una_seq), seq_sub(right, left)) for left, right in blocks]
        before = self._sacked
        for index, (lo, length) in enumerate(edges):
            hi = lo + length
            if index == 0 and length > 0 and (lo < una or (len(edges) > 1 and _inside(lo, hi, edges[1]))):
                self.dsacks_seen += 1
                continue
            if length <= 0 or hi > nxt or hi <= una:
                self.invalid_blocks_seen += 1
                continue
            self._insert(max(lo, una), hi)
        return self._sacked - before

    def _insert(self, lo: int, hi: int) -> None:
        starts, ends = self._starts, self._ends
        first = bisect_left(ends, lo)  # first range ending at or after lo: it touches or overlaps
        last = bisect_right(starts, hi)  # ranges starting after hi stay apart
        removed = 0
        if first < last:
            lo = min(lo, starts[first])
            hi = max(hi, ends[last - 1])
            for k in range(first, last):
                removed += ends[k] - starts[k]
        starts[first:last] = [lo]
        ends[first:last] = [hi]
        self._sacked += (hi - lo) - removed

    # ---------------------------------------------------------------- queries
    def is_lost(self, seq: int, mss: int) -> bool:
        """RFC 6675 IsLost(seq): DupThresh discontiguous SACKed segments, or more than (DupThresh-1)*SMSS
        SACKed bytes, above seq.

        Segment boundaries of SACKed data are not visible in merged ranges, so a range counts as
        ceil(length / mss) segments.
        """
        offset = seq_sub(seq, self._anchor)
        sacked_above = 0
        segments_above = 0
        starts, ends = self._starts, self._ends
        for k in range(len(starts) - 1, -1, -1):
            if ends[k] <= offset + 1:
                break
            length = ends[k] - max(starts[k], offset + 1)
            sacked_above += length
            segments_above += -(-length // mss)
        return _lost(sacked_above, segments_above, mss)

    def holes(self, snd_una: int, snd_nxt: int) -> list[tuple[int, int]]:
        """The unSACKed ranges between SND.UNA and the highest SACKed byte (what the receiver is missing)."""
        self.advance(snd_una)
        una, nxt = self._offsets(snd_una, snd_nxt)
        anchor = self._anchor
        found = []
        pos = una
        for start, end in zip(self._starts, self._ends):
            hole_end = min(start, nxt)
            if pos < hole_end:
                found.append(((anchor + pos) & SEQ_MASK, (anchor + hole_end) & SEQ_MASK))
            pos = max(pos, end)
        return found

    def pipe(self, snd_una: int, snd_nxt: int, high_rxt: int, mss: int) -> int:
        """RFC 6675 SetPipe in bytes: unSACKed data not deemed lost, plus unSACKed data retransmitted
        (below high_rxt), between SND.UNA and SND.NXT.

        IsLost is the same for every byte of a hole (nothing SACKed lies inside it), so one pass over the
        ranges, bottom up, with the SACKed totals above the current hole, is enough.
        """
        self.advance(snd_una)
        una, nxt = self._offsets(snd_una, snd_nxt)
        rxt = min(nxt, max(una, una + seq_sub(high_rxt, snd_una)))
        starts, ends = self._starts, self._ends
        if not starts:
            return (nxt - una) + (rxt - una)
        sacked_above = self._sacked
        segments_above = self._segment_count(mss)
        lost_limit = (DUP_THRESH - 1) * mss
        total = 0
        pos = una
        for k in range(len(starts)):
            start = starts[k]
            hole_end = min(start, nxt)
            if pos < hole_end:
                if segments_above < DUP_THRESH and sacked_above <= lost_limit:
                    total += hole_end - pos  # not lost: still in flight
                if pos < rxt:
                    total += min(hole_end, rxt) - pos  # its retransmission is in flight
            length = ends[k] - start
            sacked_above -= length
            segments_above -= -(-length // mss)
            pos = max(pos, ends[k])
        if pos < nxt:  # above the highest SACKed byte: nothing SACKed above, never lost
            total += nxt - pos
            if pos < rxt:
                total += rxt - pos
        return total

    def next_seg(
        self, snd_una: int, snd_nxt: int, high_rxt: int, mss: int, *, rule3: bool = False
    ) -> tuple[int, int] | None:
        """RFC 6675 NextSeg rule 1: (seq, length) of the first unSACKed, lost byte range at or above
        high_rxt, at most one MSS; None when there is none.

        Rule 2 (send new data) is the caller's, tried after rule 1. With `rule3=True` the query is rule 3,
        for when neither rule 1 nor 2 gave anything: the first unSACKed range at or above high_rxt below the
        highest SACKed byte, lost or not.
        """
        self.advance(snd_una)
        una, nxt = self._offsets(snd_una, snd_nxt)
        rxt = max(una, una + seq_sub(high_rxt, snd_una))
        starts, ends = self._starts, self._ends
        if not starts:
            return None
        sacked_above = self._sacked
        segments_above = self._segment_count(mss) if not rule3 else 0
        pos = una
        for k in range(len(starts)):
            start = starts[k]
            hole_end = min(start, nxt)
            first = max(pos, rxt)
            if first < hole_end:
                if rule3 or _lost(sacked_above, segments_above, mss):
                    return ((self._anchor + first) & SEQ_MASK, min(mss, hole_end - first))
                return None  # higher holes have even less SACKed above them: not lost either
            length = ends[k] - start
            sacked_above -= length
            segments_above -= -(-length // mss)
            pos = max(pos, ends[k])
        return None

    # ---------------------------------------------------------------- helpers
    def _offsets(self, snd_una: int, snd_nxt: int) -> tuple[int, int]:
        una = self._una + seq_sub(snd_una, (self._anchor + self._una) & SEQ_MASK)
        return una, una + seq_sub(snd_nxt, snd_una)

    def _segment_count(self, mss: int) -> int:
        """SACKed segments held, counting each range as ceil(length / mss)."""
        return sum(-(-(e - s) // mss) for s, e in zip(self._starts, self._ends))


def _inside(lo: int, hi: int, block: tuple[int, int]) -> bool:
    """[lo, hi) lies within the block given as (start offset, length)."""
    return block[0] <= lo and hi <= block[0] + block[1]


def _lost(sacked_above: int, segments_above: int, mss: int) -> bool:
    return segments_above >= DUP_THRESH or sacked_above > (DUP_THRESH - 1) * mss
