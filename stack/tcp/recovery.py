"""Loss recovery: the `LossRecovery` component of a connection, which processes ACKs and decides what is lost.

The fifth step of SEGMENT ARRIVES for the synchronized states: SND.UNA, the send window, RTT samples.  Loss
recovery follows RFC 5681 (three duplicate ACKs trigger a fast retransmit), RFC 6582 NewReno (partial ACKs
retransmit the next hole, the window is inflated by duplicate ACKs) when SACK is off, and RFC 6675 (the SACK
scoreboard decides what is lost and how much is in flight) when SACK was negotiated.  A retransmission
timeout falls back to go-back-N from SND.UNA (as Linux marks everything outstanding lost), paced by the
congestion window.  With SACK and `TcpConfig.rack` on (the default, as Linux), RACK-TLP (RFC 8985,
`stack.tcp.rack`) decides by time what is lost, and tail loss probes replace most timeouts at the end of a
flight; after a timeout it resends only what was not SACKed.

The component owns the recovery state (the scoreboard, duplicate ACKs, the recovery point, the go-back-N
pointer); its methods take the connection explicitly for the sequence variables they read and change, in
the manner of FreeBSD's `tcp_input(tp, ...)`.  Congestion control itself (how cwnd moves) is the
connection's `cc` (`stack.tcp.congestion`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.tcp import output
from stack.tcp.rack import Rack, rack_active
from stack.tcp.sack import SackScoreboard
from stack.tcp.seq import SEQ_MASK, seq_ge, seq_gt, seq_le, seq_lt, seq_sub
from stack.tcp.state import TcpState
from stack.tcp.trace import TCP_CWND_CHANGE, TCP_PROBE
from stack.wire.tcp import TcpFlags, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.connection import Connection

S = TcpState
DUP_THRESH = 3  # RFC 5681 / RFC 6675 DupThresh
NO_DUPACK_FLAGS = int(TcpFlags.SYN | TcpFlags.FIN)


class LossRecovery:
    """What the sender knows about losses: the SACK scoreboard, duplicate ACKs and the recovery episode."""

    __slots__ = ("dupacks", "fast_retransmit_due", "high_rxt", "in_recovery", "inflation", "rack", "recover",
                 "rto_retries", "rtx_next", "scoreboard")

    def __init__(self, iss: int) -> None:
        self.scoreboard = SackScoreboard()
        self.rack = Rack()  # RACK-TLP state and the sent-segment list (used when SACK is on)
        self.dupacks = 0
        self.in_recovery = False
        self.recover = iss  # RFC 6582 "recover": SND.NXT when recovery began
        self.high_rxt = iss  # RFC 6675 HighRxt
        self.inflation = 0  # RFC 6582 window inflation by duplicate ACKs (bytes)
        self.fast_retransmit_due = False
        self.rtx_next: int | None = None  # go-back-N pointer after a timeout: next sequence to resend
        self.rto_retries = 0  # consecutive timeouts of the same segment

    def ack_acceptable(self, conn: Connection, seg: TcpSegment, now: float) -> bool:
        """RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT].  One for data never
        sent is answered with an ACK, one older than the range with a challenge ACK; either way the
        segment is dropped (False)."""
        ack = seg.ack
        if seq_gt(ack, conn.snd_nxt):
            conn.counters["TCPACKSkippedFuture"] += 1
            output.out_of_window_ack(conn, seg, now)
            return False
        if seq_lt(ack, seq_sub(conn.snd_una, conn.max_snd_wnd) & SEQ_MASK):
            output.challenge_ack(conn, now)
            return False
        return True

    def process_ack(self, conn: Connection, seg: TcpSegment, now: float) -> bool:
        """Apply the ACK of a segment that passed `ack_acceptable` (RFC 9293 fifth step); False means
        nothing more of the segment is processed: the ACK of our FIN ended LAST_ACK (the connection is
        gone) or CLOSING (TIME_WAIT has begun)."""
        ack = seg.ack
        snd_una = conn.snd_una
        newly_sacked = 0
        if conn.negotiated.sack and seg.options.sack_blocks:
            newly_sacked = self.scoreboard.update(snd_una, seg.options.sack_blocks, conn.snd_nxt)
        window = seg.window << conn.negotiated.snd_wscale
        rack_on = rack_active(conn)
        dsack = False
        if rack_on:
            ts = seg.options.timestamp
            tsecr = ts[1] if ts is not None and conn.negotiated.timestamps and ts[1] else None
            dsack = self.rack.on_ack(conn, ack, seg.options.sack_blocks, tsecr, now)
        advanced = seq_gt(ack, snd_una)
        if advanced:
            self.on_new_ack(conn, seg, now)
        elif (
            ack == snd_una
            and conn.snd_nxt != snd_una
            and not len(seg.payload)
            and not int(seg.flags) & NO_DUPACK_FLAGS
            and (window == conn.snd_wnd or newly_sacked > 0)
        ):
            self.on_duplicate_ack(conn, now, newly_sacked)
        if rack_on:
            self.rack_after_ack(conn, ack, dsack, advanced, newly_sacked > 0, now)
        # Window update (RFC 9293 fifth step): only from a segment newer than the last one that set it.
        if seq_lt(conn.snd_wl1, seg.seq) or (conn.snd_wl1 == seg.seq and seq_le(conn.snd_wl2, ack)):
            conn.snd_wnd = window
            conn.max_snd_wnd = max(conn.max_snd_wnd, window)
            conn.snd_wl1, conn.snd_wl2 = seg.seq, ack
        if conn.fin_sent and conn.snd_una == conn.snd_nxt:
            return self.on_fin_acked(conn, now)
        return True

    def rack_after_ack(self, conn: Connection, ack: int, dsack: bool, advanced: bool, sacked: bool,
                       now: float) -> None:
        """RFC 8985 after an ACK: the probe's outcome, time-based loss marking, then the PTO."""
        rack = self.rack
        rack.on_probe_ack(conn, ack, dsack, advanced, sacked, now)
        if conn.snd_una == conn.snd_nxt:
            rack.probe_deadline = rack.reorder_deadline = None
            rack.tlp_end_seq = None
            self.fast_retransmit_due = False  # nothing is left to resend
            return
        if rack.detect_loss(conn, now):
            self.rack_losses(conn, now)
        if advanced:
            rack.schedule_probe(conn, now)
        elif self.in_recovery:
            rack.probe_deadline = None

    def rack_losses(self, conn: Connection, now: float) -> None:
        """RACK marked segments lost: start fast recovery unless one (or a timeout's) is under way, and
        retransmit at the next flush."""
        if not self.in_recovery and self.rack.rto_recover is None and self.rtx_next is None:
            self.enter_recovery(conn, now)
        self.fast_retransmit_due = True
        self.rack.probe_deadline = None

    def on_reorder_timer(self, conn: Connection, now: float) -> None:
        """The RACK reorder timer: segments that were inside the reordering window may be lost now."""
        if conn.snd_una == conn.snd_nxt or conn.state not in output.SENDING_STATES:
            return
        if self.rack.detect_loss(conn, now):
            self.rack_losses(conn, now)

    def on_probe_timer(self, conn: Connection, now: float) -> None:
        """RFC 8985 7.3: the PTO fired; send one new segment if the window allows, else resend the last
        one, so the peer's ACK (with SACK) shows what of the tail is missing."""
        rack = self.rack
        if conn.snd_una == conn.snd_nxt or conn.state not in output.SENDING_STATES or self.in_recovery:
            return
        mss = output.payload_limit(conn)
        offset = seq_sub(conn.snd_nxt, conn.snd_una)
        unsent = len(conn.send_buffer) - offset
        wnd_room = conn.snd_wnd - offset
        if unsent > 0 and wnd_room > 0 and not conn.fin_sent:
            length = min(mss, unsent, wnd_room)
            flags = output.PSH_ACK if length == unsent else output.ACK
            start = conn.snd_nxt
            output.emit(conn, start, flags, conn.send_buffer.peek(offset, length), now)
            conn.snd_nxt = (start + length) & SEQ_MASK
            rack.on_sent(start, conn.snd_nxt, now)
            rack.tlp_is_retrans = False
        else:
            last = next((s for s in reversed(rack.segments) if not s.sacked), None)
            if last is None:
                return
            start = last.start if last.length <= mss else (last.end - mss) & SEQ_MASK
            if output.retransmit(conn, start, mss, now, end=last.end) == start:
                return
            rack.tlp_is_retrans = True
        rack.tlp_end_seq = conn.snd_nxt
        conn.counters["TCPLossProbes"] += 1
        conn.timers.rto = now + conn.rtt.rto

    def on_fin_acked(self, conn: Connection, now: float) -> bool:
        state = conn.state
        if state is S.FIN_WAIT1:
            conn.move("rcv_ack_of_fin", now)
            if conn.orphaned:
                # Linux: an orphaned socket waits tcp_fin_timeout for the peer's FIN, not forever.
                conn.timers.close = now + conn.config.fin_timeout
        elif state is S.CLOSING:
            conn.move("rcv_ack_of_fin", now)
            conn.enter_time_wait(now)
            # Linux (tcp_rcv_state_process): the segment is done once TIME_WAIT begins.  Only a
            # retransmitted FIN can come with this ACK, and it goes unanswered: the peer's next
            # retransmission is acknowledged from TIME_WAIT.
            return False
        elif state is S.LAST_ACK:
            conn.move("rcv_ack_of_fin", now)
            conn.terminate(now, 0)
            return False
        return True

    def on_new_ack(self, conn: Connection, seg: TcpSegment, now: float) -> None:
        ack = seg.ack
        acked = seq_sub(ack, conn.snd_una)
        data_acked = min(acked, len(conn.send_buffer))
        conn.send_buffer.drop(data_acked)
        conn.snd_una = ack
        after_timeout = self.rto_retries > 0
        self.rto_retries = 0
        conn.progress_time = now
        self.scoreboard.advance(ack)
        first_sent = conn.send_times.acked(ack)
        rtt = None if after_timeout else self.take_rtt_sample(conn, seg, first_sent, now)
        if self.rtx_next is not None and seq_gt(ack, self.rtx_next):
            self.rtx_next = ack if ack != conn.snd_nxt else None
        old_cwnd = conn.cc.cwnd
        if self.in_recovery:
            if seq_ge(ack, self.recover):
                # Full ACK: recovery is over (RFC 6582 3.2 step 3, RFC 6675 5 step (A)).
                self.in_recovery = False
                self.inflation = 0
                self.dupacks = 0
                conn.cc.on_recovery_exit(now)
                self.rack.on_recovery_exit()
            else:
                # Partial ACK: the next hole is lost too; retransmit it at once (RFC 6582 3.2 step 4).
                if not conn.negotiated.sack:
                    self.inflation -= data_acked
                    if data_acked >= conn.send_mss:
                        self.inflation += conn.send_mss
                    self.fast_retransmit_due = True
                    # RFC 6582: the timer restarts only for the first partial ACK (the "impatient" variant
                    # is not used); Linux restarts it on every cumulative ACK, as done below.
        else:
            self.dupacks = 0
            cc = conn.cc
            cc.on_ack(data_acked, now, rtt, conn.cwnd_use.allows_growth(cc.cwnd, cc.cwnd < cc.ssthresh))
        if conn.cc.cwnd != old_cwnd:
            conn.trace(TCP_CWND_CHANGE, now, cwnd=conn.cc.cwnd, ssthresh=conn.cc.ssthresh)
        # RFC 6298 5.2/5.3: stop the timer when all is acknowledged, restart it otherwise.
        conn.timers.rto = None if conn.snd_una == conn.snd_nxt else now + conn.rtt.rto
        if conn.trace_segments:
            conn.trace(
                TCP_PROBE,
                now,
                snd_una=conn.snd_una,
                snd_nxt=conn.snd_nxt,
                snd_wnd=conn.snd_wnd,
                snd_cwnd=conn.cc.cwnd,
                ssthresh=conn.cc.ssthresh,
                srtt=conn.rtt.srtt,
                rcv_wnd=conn.rcv_wnd,
            )

    def take_rtt_sample(self, conn: Connection, seg: TcpSegment, first_sent: float | None,
                        now: float) -> float | None:
        """An RTT sample: the time since the oldest newly acknowledged data first left (`first_sent`, on
        the driver's clock, None under Karn's rule), else the timestamp echo (RFC 7323 4), which names the
        transmission it answers but ticks only every millisecond.

        The first ACK after a retransmission timeout gives no sample, timestamps or not: it usually answers
        a retransmission of data whose first ACK was lost, and the receiver then echoes the original
        TSval (RFC 7323 4.3), which would fold the whole timeout into SRTT and inflate the next RTO in a
        feedback loop on lossy paths.  The backoff stays until a clean sample (RFC 6298 5.7).
        """
        if first_sent is not None:
            rtt = max(now - first_sent, 0.0)
            if not conn.send_times.repeats(first_sent, now):
                conn.rtt.sample(rtt)
            return rtt
        ts = seg.options.timestamp
        if conn.negotiated.timestamps and ts is not None and ts[1]:
            elapsed = (conn.tsval(now) - ts[1]) & SEQ_MASK
            if elapsed < 1 << 31:
                rtt = max(elapsed / 1000.0, 0.0)
                conn.rtt.sample(rtt)
                return rtt
        return None

    def on_duplicate_ack(self, conn: Connection, now: float, newly_sacked: int) -> None:
        self.dupacks += 1
        mss = conn.send_mss
        if self.in_recovery:
            if not conn.negotiated.sack:
                self.inflation += mss  # RFC 6582 3.2 step 3: each dupACK is a segment that left
            return
        if self.rtx_next is not None:
            return  # still resending after a timeout: duplicate ACKs are expected
        if rack_active(conn):
            return  # RACK decides by time what is lost (rack_after_ack), not by counting
        lost = self.dupacks >= DUP_THRESH or (
            conn.negotiated.sack and self.scoreboard.is_lost(conn.snd_una, mss)
        )
        # RFC 6582 4.1: no new recovery until the ACK passes the point of the previous one.
        if not lost or not seq_gt(conn.snd_una, self.recover):
            return
        self.enter_recovery(conn, now)

    def enter_recovery(self, conn: Connection, now: float) -> None:
        mss = conn.send_mss
        flight = seq_sub(conn.snd_nxt, conn.snd_una)
        self.in_recovery = True
        self.recover = conn.snd_nxt
        self.high_rxt = conn.snd_una
        if rack_active(conn):
            self.rack.start_undo(conn)
            self.rack.retransmit_first = True
            self.rack.probe_deadline = None
            self.rack.tlp_end_seq = None
        conn.cc.on_loss(now, flight)
        self.inflation = 0 if conn.negotiated.sack else DUP_THRESH * mss
        self.fast_retransmit_due = True
        conn.counters["TCPFastRetrans"] += 1
        conn.trace(
            TCP_CWND_CHANGE, now, cwnd=conn.cc.cwnd, ssthresh=conn.cc.ssthresh, reason="fast_retransmit"
        )

    def flight_size(self, conn: Connection) -> int:
        """Bytes the sender believes are in the network (RFC 6675 "pipe", or the RFC 5681 FlightSize)."""
        if self.rtx_next is not None:
            return seq_sub(self.rtx_next, conn.snd_una)
        if rack_active(conn):
            return self.rack.flight_size(conn)
        if self.in_recovery and conn.negotiated.sack:
            return self.scoreboard.pipe(conn.snd_una, conn.snd_nxt, self.high_rxt, conn.send_mss)
        return seq_sub(conn.snd_nxt, conn.snd_una)

    def congestion_window(self, conn: Connection) -> int:
        return max(conn.send_mss, conn.cc.cwnd + self.inflation)

    def on_retransmission_timeout(self, conn: Connection, now: float) -> None:
        """RFC 5681 3.1 / RFC 6298 5.4-5.6: collapse the window, back off, resend from SND.UNA."""
        flight = seq_sub(conn.snd_nxt, conn.snd_una)
        rack_on = rack_active(conn)
        if rack_on and self.rto_retries == 0 and not self.in_recovery:
            self.rack.start_undo(conn)
        conn.cc.on_rto(now, flight)
        conn.rtt.backoff()
        self.rto_retries += 1
        self.in_recovery = False
        self.inflation = 0
        self.dupacks = 0
        self.recover = conn.snd_nxt  # RFC 6582 4.1: no fast retransmit for what the timeout resends
        self.high_rxt = conn.snd_una
        self.scoreboard.clear()
        self.rtx_next = conn.snd_una
        if rack_on:
            # Linux: everything not SACKed is lost and resent in order from the list, SACKed data is not.
            self.rtx_next = None
            self.rack.on_timeout(conn)
        conn.counters["TCPTimeouts"] += 1
        conn.trace(TCP_CWND_CHANGE, now, cwnd=conn.cc.cwnd, ssthresh=conn.cc.ssthresh, reason="rto")

    def next_hole(self, conn: Connection) -> tuple[int, int] | None:
        """RFC 6675 NextSeg rule 1 for SACK recovery: the first lost hole not yet retransmitted (rule 2,
        new data, is the output's; rule 3 is `sack_rule3`)."""
        mss = conn.send_mss
        return self.scoreboard.next_seg(conn.snd_una, conn.snd_nxt, self.high_rxt, mss)

    def sack_rule3(self, conn: Connection) -> tuple[int, int] | None:
        """RFC 6675 NextSeg rule 3: with no lost hole and no new data to send, the next unSACKed one."""
        return self.scoreboard.next_seg(conn.snd_una, conn.snd_nxt, self.high_rxt, conn.send_mss, rule3=True)
