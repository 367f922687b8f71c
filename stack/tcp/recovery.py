"""Acknowledgment processing: SND.UNA, the send window, RTT samples and loss recovery.

The fifth step of SEGMENT ARRIVES for the synchronized states.  Loss recovery follows RFC 5681 (three
duplicate ACKs trigger a fast retransmit), RFC 6582 NewReno (partial ACKs retransmit the next hole, the
window is inflated by duplicate ACKs) when SACK is off, and RFC 6675 (the SACK scoreboard decides what is
lost and how much is in flight) when SACK was negotiated.  A retransmission timeout falls back to go-back-N
from SND.UNA (as Linux marks everything outstanding lost), paced by the congestion window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.tcp.seq import SEQ_MASK, seq_add, seq_ge, seq_gt, seq_le, seq_lt, seq_sub
from stack.tcp.state import TcpState
from stack.tcp.trace import TCP_CWND_CHANGE, TCP_PROBE
from stack.wire.tcp import TcpFlags, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.connection import Connection

S = TcpState
DUP_THRESH = 3  # RFC 5681 / RFC 6675 DupThresh
NO_DUPACK_FLAGS = int(TcpFlags.SYN | TcpFlags.FIN)


class RecoveryMixin:
    def process_ack(self: Connection, seg: TcpSegment, now: float) -> bool:
        """Apply an acceptable segment's ACK; False means: drop the segment (RFC 9293 fifth step)."""
        ack = seg.ack
        snd_una = self.snd_una
        # RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT].
        if seq_gt(ack, self.snd_nxt):
            self.counters["TCPACKSkippedFuture"] += 1
            self.out_of_window_ack(seg, now)
            return False
        if seq_lt(ack, seq_sub(snd_una, self.max_snd_wnd) & SEQ_MASK):
            self.challenge_ack(now)
            return False
        newly_sacked = 0
        if self.negotiated.sack and seg.options.sack_blocks:
            newly_sacked = self.scoreboard.update(snd_una, seg.options.sack_blocks, self.snd_nxt)
        window = seg.window << self.negotiated.snd_wscale
        if seq_gt(ack, snd_una):
            self.on_new_ack(seg, now)
        elif (
            ack == snd_una
            and self.snd_nxt != snd_una
            and not len(seg.payload)
            and not int(seg.flags) & NO_DUPACK_FLAGS
            and (window == self.snd_wnd or newly_sacked > 0)
        ):
            self.on_duplicate_ack(now, newly_sacked)
        # Window update (RFC 9293 fifth step): only from a segment newer than the last one that set it.
        if seq_lt(self.snd_wl1, seg.seq) or (self.snd_wl1 == seg.seq and seq_le(self.snd_wl2, ack)):
            self.snd_wnd = window
            self.max_snd_wnd = max(self.max_snd_wnd, window)
            self.snd_wl1, self.snd_wl2 = seg.seq, ack
        if self.fin_sent and self.snd_una == self.snd_nxt:
            return self.on_fin_acked(now)
        return True

    def on_fin_acked(self: Connection, now: float) -> bool:
        state = self.state
        if state is S.FIN_WAIT1:
            self.move("rcv_ack_of_fin", now)
            if self.orphaned:
                # Linux: an orphaned socket waits tcp_fin_timeout for the peer's FIN, not forever.
                self.close_deadline = now + self.config.fin_timeout
        elif state is S.CLOSING:
            self.move("rcv_ack_of_fin", now)
            self.enter_time_wait(now)
        elif state is S.LAST_ACK:
            self.move("rcv_ack_of_fin", now)
            self.terminate(now, 0)
            return False
        return True

    def on_new_ack(self: Connection, seg: TcpSegment, now: float) -> None:
        ack = seg.ack
        acked = seq_sub(ack, self.snd_una)
        data_acked = min(acked, len(self.send_buffer))
        self.send_buffer.drop(data_acked)
        self.snd_una = ack
        after_timeout = self.rto_retries > 0
        self.rto_retries = 0
        self.progress_time = now
        self.scoreboard.advance(ack)
        rtt = None if after_timeout else self.take_rtt_sample(seg, now)
        if self.rtx_next is not None and seq_gt(ack, self.rtx_next):
            self.rtx_next = ack if ack != self.snd_nxt else None
        old_cwnd = self.cc.cwnd
        if self.in_recovery:
            if seq_ge(ack, self.recover):
                # Full ACK: recovery is over (RFC 6582 3.2 step 3, RFC 6675 5 step (A)).
                self.in_recovery = False
                self.recovery_inflation = 0
                self.dupacks = 0
                self.cc.on_recovery_exit(now)
            else:
                # Partial ACK: the next hole is lost too; retransmit it at once (RFC 6582 3.2 step 4).
                if not self.negotiated.sack:
                    self.recovery_inflation -= data_acked
                    if data_acked >= self.send_mss:
                        self.recovery_inflation += self.send_mss
                    self.fast_retransmit_due = True
                    # RFC 6582: the timer restarts only for the first partial ACK (the "impatient" variant
                    # is not used); Linux restarts it on every cumulative ACK, as done below.
        else:
            self.dupacks = 0
            self.cc.on_ack(data_acked, now, rtt)
        if self.cc.cwnd != old_cwnd:
            self.trace(TCP_CWND_CHANGE, now, cwnd=self.cc.cwnd, ssthresh=self.cc.ssthresh)
        # RFC 6298 5.2/5.3: stop the timer when all is acknowledged, restart it otherwise.
        self.rto_deadline = None if self.snd_una == self.snd_nxt else now + self.rtt.rto
        if self.trace_segments:
            self.trace(
                TCP_PROBE,
                now,
                snd_una=self.snd_una,
                snd_nxt=self.snd_nxt,
                snd_wnd=self.snd_wnd,
                snd_cwnd=self.cc.cwnd,
                ssthresh=self.cc.ssthresh,
                srtt=self.rtt.srtt,
                rcv_wnd=self.rcv_wnd,
            )

    def take_rtt_sample(self: Connection, seg: TcpSegment, now: float) -> float | None:
        """An RTT sample from the timestamp echo (RFC 7323 4) or the one timed segment (Karn's rule).

        The first ACK after a retransmission timeout gives no sample, timestamps or not: it usually answers
        a retransmission of data whose first ACK was lost, and the receiver then echoes the original
        TSval (RFC 7323 4.3), which would fold the whole timeout into SRTT and inflate the next RTO in a
        feedback loop on lossy paths.  The backoff stays until a clean sample (RFC 6298 5.7).
        """
        ts = seg.options.timestamp
        if self.negotiated.timestamps and ts is not None and ts[1]:
            elapsed = (self.tsval(now) - ts[1]) & SEQ_MASK
            if elapsed < 1 << 31:
                rtt = max(elapsed / 1000.0, 0.0)
                self.rtt.sample(rtt)
                self.rtt_seq = None
                return rtt
        if self.rtt_seq is not None and seq_ge(seg.ack, self.rtt_seq):
            rtt = now - self.rtt_time
            self.rtt_seq = None
            self.rtt.sample(rtt)
            return rtt
        return None

    def on_duplicate_ack(self: Connection, now: float, newly_sacked: int) -> None:
        self.dupacks += 1
        mss = self.send_mss
        if self.in_recovery:
            if not self.negotiated.sack:
                self.recovery_inflation += mss  # RFC 6582 3.2 step 3: each dupACK is a segment that left
            return
        if self.rtx_next is not None:
            return  # still resending after a timeout: duplicate ACKs are expected
        lost = self.dupacks >= DUP_THRESH or (
            self.negotiated.sack and self.scoreboard.is_lost(self.snd_una, mss)
        )
        # RFC 6582 4.1: no new recovery until the ACK passes the point of the previous one.
        if not lost or not seq_gt(self.snd_una, self.recover):
            return
        self.enter_recovery(now)

    def enter_recovery(self: Connection, now: float) -> None:
        mss = self.send_mss
        flight = seq_sub(self.snd_nxt, self.snd_una)
        self.in_recovery = True
        self.recover = self.snd_nxt
        self.high_rxt = self.snd_una
        self.cc.on_loss(now, flight)
        self.recovery_inflation = 0 if self.negotiated.sack else DUP_THRESH * mss
        self.fast_retransmit_due = True
        self.rtt_seq = None
        self.counters["TCPFastRetrans"] += 1
        self.trace(
            TCP_CWND_CHANGE, now, cwnd=self.cc.cwnd, ssthresh=self.cc.ssthresh, reason="fast_retransmit"
        )

    def flight_size(self: Connection) -> int:
        """Bytes the sender believes are in the network (RFC 6675 "pipe", or the RFC 5681 FlightSize)."""
        if self.rtx_next is not None:
            return seq_sub(self.rtx_next, self.snd_una)
        if self.in_recovery and self.negotiated.sack:
            return self.scoreboard.pipe(self.snd_una, self.snd_nxt, self.high_rxt, self.send_mss)
        return seq_sub(self.snd_nxt, self.snd_una)

    def congestion_window(self: Connection) -> int:
        return max(self.send_mss, self.cc.cwnd + self.recovery_inflation)

    def on_retransmission_timeout(self: Connection, now: float) -> None:
        """RFC 5681 3.1 / RFC 6298 5.4-5.6: collapse the window, back off, resend from SND.UNA."""
        flight = seq_sub(self.snd_nxt, self.snd_una)
        self.cc.on_rto(now, flight)
        self.rtt.backoff()
        self.rto_retries += 1
        self.in_recovery = False
        self.recovery_inflation = 0
        self.dupacks = 0
        self.recover = self.snd_nxt  # RFC 6582 4.1: no fast retransmit for what the timeout resends
        self.high_rxt = self.snd_una
        self.scoreboard.clear()
        self.rtx_next = self.snd_una
        self.rtt_seq = None
        self.counters["TCPTimeouts"] += 1
        self.trace(TCP_CWND_CHANGE, now, cwnd=self.cc.cwnd, ssthresh=self.cc.ssthresh, reason="rto")

    def next_hole(self: Connection) -> tuple[int, int] | None:
        """RFC 6675 NextSeg rules 1 and 3 for SACK recovery (rule 2, new data, is the output's)."""
        mss = self.send_mss
        found = self.scoreboard.next_seg(self.snd_una, self.snd_nxt, self.high_rxt, mss)
        return found

    def sack_rule3(self: Connection) -> tuple[int, int] | None:
        return self.scoreboard.next_seg(self.snd_una, self.snd_nxt, self.high_rxt, self.send_mss, rule3=True)

    def fin_seq(self: Connection) -> int:
        """Sequence number our FIN occupies (valid once fin_sent)."""
        return seq_add(self.snd_nxt, -1)
