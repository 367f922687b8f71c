"""RACK-TLP (RFC 8985): time-based loss detection, the reordering window and tail loss probes.

Dupthresh recovery (RFC 6675, `sack.py`) calls a hole lost once three segments above it were SACKed; it
cannot see a lost retransmission, a loss at the tail of a flight, or tell reordering from loss, so each of
those waits for a retransmission timeout.  RACK instead remembers when every segment was (last) sent: once a
segment sent *later* is delivered, an earlier one still missing after RACK.rtt plus a reordering window is
lost.  A segment inside the window arms the RACK reorder timer rather than a retransmission.  A tail loss
probe (TLP) sends one segment two smoothed RTTs after the last transmission, so the ACK it draws lets SACK
and RACK repair a tail loss without a timeout.

`Rack` is a component of `LossRecovery`: it keeps the sent-segment list (`SentSegment`, one per segment or
TSO super-segment, split where SACK edges or retransmissions cut it) in sequence order, and the RACK and TLP
variables of RFC 8985 under their names (RACK.xmit_ts, RACK.end_seq, RACK.rtt, RACK.min_RTT, RACK.reo_wnd,
TLP.end_seq).  It also keeps the undo state: a recovery whose retransmissions all come back as D-SACKs
(RFC 2883) was spurious, and the window reduction is reverted (Linux's tcp_try_undo_dsack).

It runs only when SACK was negotiated and `TcpConfig.rack` is on (Linux: net.ipv4.tcp_recovery=1, with
TLP from net.ipv4.tcp_early_retrans=3: `TcpConfig.tlp`).  Times are the `now` the caller passes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from stack.tcp.seq import SEQ_MASK, seq_ge, seq_gt, seq_le, seq_lt, seq_sub

if TYPE_CHECKING:
    from stack.tcp.connection import Connection

#: RFC 8985 7.2 WCDelAckT: the worst-case delayed ACK of the peer, added to the PTO of a lone segment.
WORST_CASE_DELAYED_ACK = 0.2
#: Linux (tcp_schedule_loss_probe): the PTO is never below 10 ms.
MIN_PTO = 0.01
#: RFC 8985 6.2 step 4: a D-SACK keeps the widened reordering window for 16 loss recoveries.
REO_WND_PERSIST = 16
DUP_THRESH = 3
#: Times closer than this are equal: RACK.rtt is itself `now - xmit_ts`, so float rounding must not keep a
#: segment sent with the delivered one from being lost at once when the reordering window is zero.
TIME_RESOLUTION = 1e-6


def rack_active(conn: Connection) -> bool:
    """RACK-TLP drives loss detection: SACK was negotiated and the host's config has it on."""
    return conn.config.rack and conn.negotiated.sack


class SentSegment:
    """One transmitted range [start, end) of sequence space and what the sender knows about it."""

    __slots__ = ("end", "lost", "retransmitted", "sacked", "start", "xmit_ts")

    def __init__(self, start: int, end: int, xmit_ts: float, retransmitted: bool = False) -> None:
        self.start = start
        self.end = end
        self.xmit_ts = xmit_ts  # when it was last (re)transmitted
        self.retransmitted = retransmitted
        self.sacked = False
        self.lost = False  # marked lost and not retransmitted since

    @property
    def length(self) -> int:
        return seq_sub(self.end, self.start)

    def __repr__(self) -> str:
        flags = "S" * self.sacked + "L" * self.lost + "R" * self.retransmitted
        return f"SentSegment({self.start}-{self.end} at {self.xmit_ts:.6f} {flags})"


class Rack:
    """The RACK-TLP state of one sender (RFC 8985 5.2) and its sent-segment list."""

    __slots__ = (
        "dsack_round", "end_seq", "fack", "lost_bytes", "min_rtt", "probe_deadline", "reo_wnd_mult",
        "reo_wnd_persist", "reorder_deadline", "reordering_seen", "retrans_count", "retransmit_first",
        "rto_recover", "rtt", "sacked_bytes", "segments", "tlp_end_seq", "tlp_is_retrans", "undo_cwnd",
        "undo_marker", "undo_retrans", "undo_ssthresh", "xmit_ts",
    )

    def __init__(self) -> None:
        self.segments: list[SentSegment] = []  # outstanding, in sequence order
        self.xmit_ts: float | None = None  # RACK.xmit_ts: send time of the most recently sent delivered one
        self.end_seq = 0  # RACK.end_seq
        self.rtt = 0.0  # RACK.rtt
        self.min_rtt: float | None = None  # RACK.min_RTT
        self.fack: int | None = None  # SND.FACK: end of the highest delivered (SACKed or acked) segment
        self.reordering_seen = False  # RACK.reordering_seen
        self.reo_wnd_mult = 1  # RACK.reo_wnd_mult
        self.reo_wnd_persist = 0  # RACK.reo_wnd_persist
        self.dsack_round: int | None = None  # RACK.dsack_round
        self.reorder_deadline: float | None = None  # the RACK reorder timer
        self.probe_deadline: float | None = None  # the TLP timer (PTO)
        self.tlp_end_seq: int | None = None  # TLP.end_seq: SND.NXT when the probe went
        self.tlp_is_retrans = False  # TLP.is_retrans
        self.sacked_bytes = 0
        self.lost_bytes = 0  # marked lost, not yet retransmitted
        self.retrans_count = 0  # listed segments that were retransmitted
        self.retransmit_first = False  # fast recovery began: its first retransmission goes whatever pipe is
        self.rto_recover: int | None = None  # SND.NXT at a timeout: until SND.UNA passes it, no new reduction
        self.undo_marker: int | None = None  # SND.UNA when the window was reduced (None: nothing to undo)
        self.undo_retrans = 0  # retransmissions of the episode not yet shown spurious by a D-SACK
        self.undo_cwnd = 0
        self.undo_ssthresh = 0

    # ------------------------------------------------------------------ the list

    def _index(self, seq: int, base: int) -> int:
        """Index of the first listed segment starting after `seq` (offsets from `base`)."""
        offset = seq_sub(seq, base)
        segments = self.segments
        low, high = 0, len(segments)
        while low < high:  # bisect_right by each segment's offset (bisect's key= needs Python 3.10)
            middle = (low + high) // 2
            if seq_sub(segments[middle].start, base) <= offset:
                low = middle + 1
            else:
                high = middle
        return low

    def _split(self, seq: int, base: int) -> None:
        """Cut the listed segment that holds `seq` strictly inside it in two (both keep its marks)."""
        k = self._index(seq, base) - 1
        if k < 0:
            return
        seg = self.segments[k]
        if not (seq_lt(seg.start, seq) and seq_lt(seq, seg.end)):
            return
        tail = SentSegment(seq, seg.end, seg.xmit_ts, seg.retransmitted)
        tail.sacked, tail.lost = seg.sacked, seg.lost
        seg.end = seq
        self.segments.insert(k + 1, tail)
        if seg.retransmitted:
            self.retrans_count += 1

    def on_sent(self, start: int, end: int, now: float) -> None:
        """New data (or the FIN) [start, end) left at `now`."""
        if start != end:
            self.segments.append(SentSegment(start, end, now))

    def on_retransmitted(self, conn: Connection, start: int, end: int, now: float) -> None:
        """[start, end) was sent again at `now` (any retransmission: RACK, RTO, TLP, dupthresh)."""
        base = conn.snd_una
        self._split(start, base)
        self._split(end, base)
        segments = self.segments
        k = self._index(start, base) - 1
        k = max(k, 0)
        while k < len(segments) and seq_lt(segments[k].start, end):
            seg = segments[k]
            k += 1
            if seq_lt(seg.end, start) or seg.end == start:
                continue
            if seg.lost:
                seg.lost = False
                self.lost_bytes -= seg.length
            if not seg.retransmitted:
                seg.retransmitted = True
                self.retrans_count += 1
            seg.xmit_ts = now
        if self.undo_marker is not None:
            self.undo_retrans += max(1, -(-seq_sub(end, start) // conn.send_mss))

    def flight_size(self, conn: Connection) -> int:
        """Bytes in the network (RFC 6675 pipe with RACK's loss marks; Linux tcp_packets_in_flight)."""
        return max(0, seq_sub(conn.snd_nxt, conn.snd_una) - self.sacked_bytes - self.lost_bytes)

    # ------------------------------------------------------------------ ACK processing (RFC 8985 6.2)

    def on_ack(self, conn: Connection, ack: int, blocks: Sequence[tuple[int, int]], tsecr: int | None,
               now: float) -> bool:
        """Steps 1-4 for one ACK: take the newly SACKed and cumulatively acknowledged segments, update
        RACK.xmit_ts/end_seq/rtt, note reordering, adapt the reordering window.  Returns whether the
        ACK carried a D-SACK."""
        dsack = False
        base = conn.snd_una
        if not blocks and not seq_gt(ack, base):
            return False  # nothing newly delivered (the common ACK of a receiver, or a bare duplicate)
        if blocks:
            first = blocks[0]
            dsack = seq_le(first[1], ack) or (
                len(blocks) > 1 and seq_ge(first[0], blocks[1][0]) and seq_le(first[1], blocks[1][1]))
            if dsack:
                self.on_dsack(conn, first, now)
            delivered: list[SentSegment] = []
            for left, right in blocks[1:] if dsack else blocks:
                if not (seq_lt(left, right) and seq_le(right, conn.snd_nxt) and seq_gt(right, ack)):
                    continue
                if seq_lt(left, ack):
                    left = ack
                self._split(left, base)
                self._split(right, base)
                k = max(self._index(left, base) - 1, 0)
                segments = self.segments
                while k < len(segments) and seq_lt(segments[k].start, right):
                    seg = segments[k]
                    k += 1
                    if seg.sacked or seq_lt(seg.start, left):
                        continue
                    seg.sacked = True
                    self.sacked_bytes += seg.length
                    if seg.lost:
                        seg.lost = False
                        self.lost_bytes -= seg.length
                    delivered.append(seg)
            for seg in delivered:
                self._delivered(conn, seg, tsecr, now)
        # Cumulatively acknowledged segments leave the list.
        segments = self.segments
        drop = 0
        while drop < len(segments) and seq_le(segments[drop].end, ack):
            seg = segments[drop]
            drop += 1
            if seg.sacked:
                self.sacked_bytes -= seg.length
            else:
                if seg.lost:
                    self.lost_bytes -= seg.length
                self._delivered(conn, seg, tsecr, now)
            if seg.retransmitted:
                self.retrans_count -= 1
        if drop:
            del segments[:drop]
        if segments and seq_lt(segments[0].start, ack):
            head = segments[0]  # partly acknowledged: keep the rest
            cut = seq_sub(ack, head.start)
            if head.sacked:
                self.sacked_bytes -= cut
            elif head.lost:
                self.lost_bytes -= cut
            head.start = ack
        if self.rto_recover is not None and seq_ge(ack, self.rto_recover):
            self.rto_recover = None
        self._update_reo_wnd(conn, ack, dsack)
        return dsack

    def _delivered(self, conn: Connection, seg: SentSegment, tsecr: int | None, now: float) -> None:
        """RFC 8985 6.2 steps 2 (RACK_update) and 3 (reordering) for one newly delivered segment."""
        if self.fack is None or seq_gt(seg.end, self.fack):
            self.fack = seg.end
        elif not seg.retransmitted and seq_lt(seg.end, self.fack):
            if not self.reordering_seen:
                self.reordering_seen = True
            conn.counters["TCPSACKReorder"] += 1
        rtt = now - seg.xmit_ts
        if seg.retransmitted:
            # The ACK may answer the original transmission: then it says nothing about this one.
            if tsecr is not None and seq_lt(tsecr, conn.tsval(seg.xmit_ts)):
                return
            if self.min_rtt is not None and rtt < self.min_rtt:
                return
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if self.xmit_ts is None or seg.xmit_ts > self.xmit_ts or (
            seg.xmit_ts == self.xmit_ts and seq_gt(seg.end, self.end_seq)
        ):
            self.xmit_ts = seg.xmit_ts
            self.end_seq = seg.end
            self.rtt = rtt

    def _update_reo_wnd(self, conn: Connection, ack: int, dsack: bool) -> None:
        """RFC 8985 6.2 step 4: a D-SACK widens the window by min_RTT/4, at most once a round trip."""
        if self.dsack_round is not None and seq_ge(ack, self.dsack_round):
            self.dsack_round = None
        if self.dsack_round is None and dsack:
            self.dsack_round = conn.snd_nxt
            self.reo_wnd_mult += 1
            self.reo_wnd_persist = REO_WND_PERSIST

    def on_recovery_exit(self) -> None:
        self.reo_wnd_persist -= 1
        if self.reo_wnd_persist <= 0:
            self.reo_wnd_mult = 1

    def reo_wnd(self, conn: Connection) -> float:
        """RACK.reo_wnd: min_RTT/4 times the D-SACK multiplier, at most SRTT; zero while no reordering
        was seen and the sender is recovering or has DupThresh segments SACKed (RFC 8985 6.2 step 4)."""
        if not self.reordering_seen:
            recovering = conn.recovery.in_recovery or self.rto_recover is not None
            if recovering or self.sacked_bytes >= DUP_THRESH * conn.send_mss:
                return 0.0
        if self.min_rtt is None:
            return 0.0
        srtt = conn.rtt.srtt
        wnd = self.reo_wnd_mult * self.min_rtt / 4
        return min(wnd, srtt) if srtt is not None else wnd

    # ------------------------------------------------------------------ loss detection (RFC 8985 6.2)

    def detect_loss(self, conn: Connection, now: float) -> int:
        """Step 5: mark lost every outstanding segment sent before RACK.xmit_ts whose time
        (RACK.rtt + reo_wnd) ran out; arm the reorder timer for the earliest of the others.  Returns the
        number of segments newly marked lost."""
        self.reorder_deadline = None
        if self.xmit_ts is None:
            return 0
        rack_ts, rack_end = self.xmit_ts, self.end_seq
        allowance = self.rtt + self.reo_wnd(conn)
        # Without retransmissions the list's send times grow with sequence numbers: the first segment sent
        # after RACK.xmit_ts ends the walk.
        monotonic = self.retrans_count == 0
        newly = 0
        timeout = 0.0
        for seg in self.segments:
            if seg.sacked or seg.lost:
                continue
            ts = seg.xmit_ts
            if not (rack_ts > ts or (rack_ts == ts and seq_gt(rack_end, seg.end))):
                if monotonic:
                    break
                continue
            remaining = ts + allowance - now
            if remaining <= TIME_RESOLUTION:
                seg.lost = True
                self.lost_bytes += seg.length
                newly += 1
                if seg.retransmitted:
                    conn.counters["TCPLostRetransmit"] += 1
            elif remaining > timeout:
                timeout = remaining
        if timeout > 0:
            self.reorder_deadline = now + timeout
        return newly

    def next_lost(self, conn: Connection) -> SentSegment | None:
        """The lowest segment marked lost (what to retransmit next), cut to one MSS."""
        if self.lost_bytes <= 0:
            return None
        for seg in self.segments:
            if seg.lost:
                if seg.length > conn.send_mss:
                    self._split((seg.start + conn.send_mss) & SEQ_MASK, conn.snd_una)
                return seg
        return None

    def forget_lost(self, seg: SentSegment) -> None:
        if seg.lost:
            seg.lost = False
            self.lost_bytes -= seg.length

    def on_timeout(self, conn: Connection) -> None:
        """A retransmission timeout: every outstanding segment not SACKed is lost (Linux
        tcp_timeout_mark_lost).  SACKed ones stay SACKed unless the receiver seems to have reneged (the
        segment at SND.UNA is SACKed), as Linux keeps its scoreboard."""
        self._cover(conn)
        if self.segments and self.segments[0].sacked:
            for seg in self.segments:
                seg.sacked = False
            self.sacked_bytes = 0
        self.lost_bytes = 0
        for seg in self.segments:
            if not seg.sacked:
                seg.lost = True
                self.lost_bytes += seg.length
        self.rto_recover = conn.snd_nxt
        self.reorder_deadline = None
        self.probe_deadline = None
        self.tlp_end_seq = None

    def _cover(self, conn: Connection) -> None:
        """List every part of SND.UNA..SND.NXT: data sent by a path that kept no record (a window probe
        that carried data) gets an entry, so a timeout can resend it."""
        covered: list[SentSegment] = []
        pos = conn.snd_una
        for seg in self.segments:
            if seq_lt(pos, seg.start):
                covered.append(SentSegment(pos, seg.start, 0.0))
            covered.append(seg)
            pos = seg.end
        if seq_lt(pos, conn.snd_nxt):
            covered.append(SentSegment(pos, conn.snd_nxt, 0.0))
        self.segments = covered

    def clear(self) -> None:
        self.segments.clear()
        self.sacked_bytes = self.lost_bytes = self.retrans_count = 0

    # ------------------------------------------------------------------ D-SACK and undo

    def on_dsack(self, conn: Connection, block: tuple[int, int], now: float) -> None:
        """A D-SACK (RFC 2883): the receiver got [block) twice.  If it lies in this episode's
        retransmissions and accounts for the last of them, the reduction was spurious: undo it."""
        conn.counters["TCPDSACKRecv"] += 1
        if self.undo_marker is None or self.undo_retrans <= 0 or not seq_ge(block[0], self.undo_marker):
            return  # (a D-SACK before any retransmission is the network's duplicate: it proves nothing)
        self.undo_retrans -= max(1, -(-seq_sub(block[1], block[0]) // conn.send_mss))
        if self.undo_retrans <= 0:
            self.undo(conn, now)

    def start_undo(self, conn: Connection) -> None:
        """The window is about to be reduced for a loss: remember it, in case the loss was not real."""
        self.undo_marker = conn.snd_una
        self.undo_retrans = 0
        self.undo_cwnd = conn.cc.cwnd
        self.undo_ssthresh = conn.cc.ssthresh

    def undo(self, conn: Connection, now: float) -> None:
        cc = conn.cc
        cc.cwnd = max(cc.cwnd, self.undo_cwnd)
        cc.ssthresh = max(cc.ssthresh, self.undo_ssthresh)
        self.undo_marker = None
        conn.counters["TCPDSACKUndo"] += 1
        self.reordering_seen = True  # Linux: a spurious retransmission means the path reorders

    # ------------------------------------------------------------------ tail loss probe (RFC 8985 7)

    def schedule_probe(self, conn: Connection, now: float) -> None:
        """Arm (or re-arm) the PTO after new data went out or an ACK advanced SND.UNA (RFC 8985 7.2)."""
        recovery = conn.recovery
        if (
            not conn.config.tlp
            or conn.snd_una == conn.snd_nxt
            or recovery.in_recovery
            or self.rto_recover is not None
            or self.tlp_end_seq is not None
        ):
            self.probe_deadline = None
            return
        srtt = conn.rtt.srtt
        if srtt is None:
            pto = 1.0
        else:
            pto = 2 * srtt
            if seq_sub(conn.snd_nxt, conn.snd_una) <= conn.send_mss:
                pto += WORST_CASE_DELAYED_ACK
        pto = max(pto, MIN_PTO)
        deadline = now + pto
        rto = conn.timers.rto
        if rto is not None and rto < deadline:
            deadline = rto
        self.probe_deadline = deadline

    def on_probe_ack(self, conn: Connection, ack: int, dsack: bool, advanced: bool, sacked: bool,
                     now: float) -> None:
        """RFC 8985 7.4: did the probe repair a loss?  A D-SACK for it, or a pure duplicate ACK, says
        the original arrived (no loss); an ACK beyond it without one says the probe filled a hole, and
        congestion control reacts as to a loss (Linux tcp_process_tlp_ack)."""
        end = self.tlp_end_seq
        if end is None:
            return
        if not self.tlp_is_retrans:
            if seq_ge(ack, end):
                self.tlp_end_seq = None
            return
        if dsack:
            self.tlp_end_seq = None
        elif seq_gt(ack, end) or (ack == end and advanced):
            self.tlp_end_seq = None
            conn.counters["TCPLossProbeRecovery"] += 1
            flight = seq_sub(conn.snd_nxt, conn.snd_una)
            conn.cc.on_loss(now, flight)
            conn.cc.on_recovery_exit(now)
        elif not advanced and not sacked:
            self.tlp_end_seq = None

    def next_deadline(self) -> float | None:
        reorder, probe = self.reorder_deadline, self.probe_deadline
        if reorder is None:
            return probe
        if probe is None:
            return reorder
        return min(reorder, probe)
