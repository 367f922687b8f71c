"""Transmission: what to send now, within the send window, the congestion window, Nagle and SWS avoidance.

`poll()` runs due timers, then `transmit()` sends, in this order: a pending fast retransmit; go-back-N
retransmissions after a timeout or SACK-recovery retransmissions (RFC 6675 NextSeg); new data; the FIN.
If nothing carried an ACK that is owed, a bare ACK goes last.  Each segment's payload is one slice of the
send buffer (a memoryview of one chunk in the common case), so the work per segment does not grow with
its size.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from stack.tcp.options import syn_ack_options, syn_options
from stack.tcp.seq import seq_add, seq_gt, seq_lt, seq_sub
from stack.tcp.state import TcpState
from stack.tcp.trace import (
    TCP_RETRANSMIT_SKB,
    TCP_RETRANSMIT_SYNACK,
    TCP_SEGMENT_OUT,
    TCP_SEND_RESET,
    segment_fields,
)
from stack.wire.tcp import NO_OPTIONS, TcpFlags, TcpOptions, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.connection import Connection

S = TcpState
# Flag combinations built once: `|` on an IntFlag builds a new member (~2 us), too slow per segment.
ACK = TcpFlags.ACK
PSH_ACK = TcpFlags.PSH | TcpFlags.ACK
FIN_ACK = TcpFlags.FIN | TcpFlags.ACK
WITH_FIN = {ACK: FIN_ACK, PSH_ACK: TcpFlags.FIN | PSH_ACK}
#: States that may (re)transmit data or a FIN.
SENDING_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT1, S.CLOSING, S.LAST_ACK})
#: States that answer with bare ACKs.
ACKING_STATES = SENDING_STATES | {S.FIN_WAIT2, S.TIME_WAIT, S.SYN_RECV}


class OutputMixin:
    def poll(self: Connection, now: float) -> list[TcpSegment]:
        """Run what is due at `now` and return the segments to transmit."""
        self.run_timers(now)
        if self.state in SENDING_STATES:
            self.transmit(now)
        if self.ack_now and self.state in ACKING_STATES:
            self.emit(self.snd_nxt, ACK, b"", now)
        self.ack_now = False
        out = self.outbox
        if out:
            self.outbox = []
        return out

    # ------------------------------------------------------------------ segment construction

    def advertise_window(self: Connection) -> int:
        """The 16-bit window field to send, with receiver-side SWS avoidance (RFC 9293 3.8.6.2.2).

        The right edge moves only by at least min(RCV.BUFF/2, MSS) and never moves left; the field is
        rounded up to the scale unit (as Linux does) so scaling never shrinks the window.
        """
        shift = self.negotiated.rcv_wscale
        right = seq_add(self.rcv_nxt, self.free_receive_space())
        grow = seq_sub(right, self.rcv_adv)
        if grow > 0 and (grow >= min(self.rcvbuf // 2, self.rcv_mss) or self.rcv_adv == self.rcv_nxt):
            self.rcv_adv = right
        window = max(0, seq_sub(self.rcv_adv, self.rcv_nxt))
        field = min(0xFFFF, (window + (1 << shift) - 1) >> shift)
        edge = seq_add(self.rcv_nxt, field << shift)
        if seq_gt(edge, self.rcv_adv):
            self.rcv_adv = edge
        return field

    def segment_options(self: Connection, now: float) -> TcpOptions:
        negotiated = self.negotiated
        if not negotiated.timestamps and not negotiated.sack:
            return NO_OPTIONS
        timestamp = (self.tsval(now), self.ts_recent) if negotiated.timestamps else None
        blocks: tuple[tuple[int, int], ...] = ()
        if negotiated.sack and not self.reassembly.is_empty:
            # 40 option bytes: room for 3 blocks beside a timestamp, 4 without (RFC 2018 3).
            blocks = tuple(self.reassembly.sack_blocks(3 if timestamp else 4))
        if timestamp is None and not blocks:
            return NO_OPTIONS
        return TcpOptions(timestamp=timestamp, sack_blocks=blocks)

    def emit(self: Connection, seq: int, flags: TcpFlags, payload: bytes | memoryview, now: float) -> None:
        """Queue one segment carrying ACK (every segment after the SYN does, RFC 9293 3.10.7.4)."""
        segment = TcpSegment(
            src_port=self.local_port,
            dst_port=self.remote_port,
            seq=seq,
            ack=self.rcv_nxt,
            flags=flags,
            window=self.advertise_window(),
            options=self.segment_options(now),
            payload=payload,
        )
        self.last_ack_sent = self.rcv_nxt
        self.ack_now = False
        self.delack_deadline = None
        self.bytes_since_ack = 0
        self.outbox.append(segment)
        self.counters["OutSegs"] += 1
        if self.trace_segments:
            self.trace(TCP_SEGMENT_OUT, now, **segment_fields(segment))

    def send_syn(self: Connection, now: float) -> None:
        """Send (or resend) our SYN in SYN_SENT, or our SYN-ACK in SYN_RECV, and arm the timer."""
        retransmission = self.snd_nxt != self.iss
        window = min(self.free_receive_space(), 0xFFFF)  # never scaled in a SYN (RFC 7323 2.2)
        if self.state is S.SYN_SENT:
            flags = TcpFlags.SYN
            ack = 0
            options = syn_options(self.config, self.mtu, self.tsval(now))
            if self.max_segment and options.mss and self.max_segment < options.mss:
                options = replace(options, mss=self.max_segment)  # TCP_MAXSEG also lowers what we announce
        else:
            flags = TcpFlags.SYN | ACK
            ack = self.rcv_nxt
            options = syn_ack_options(self.negotiated, self.tsval(now), self.ts_recent)
            self.rcv_adv = seq_add(self.rcv_nxt, window)
            self.last_ack_sent = ack
        self.syn_window = window
        segment = TcpSegment(self.local_port, self.remote_port, self.iss, ack, flags, window, options)
        self.snd_nxt = seq_add(self.iss, 1)
        self.outbox.append(segment)
        self.counters["OutSegs"] += 1
        if retransmission:
            self.counters["RetransSegs"] += 1
            self.retransmissions += 1
            name = TCP_RETRANSMIT_SYNACK if flags & ACK else TCP_RETRANSMIT_SKB
            self.trace(name, now, seq=self.iss)
        if self.trace_segments:
            self.trace(TCP_SEGMENT_OUT, now, **segment_fields(segment))
        self.rto_deadline = now + self.rtt.rto

    def send_reset(self: Connection, seq: int, ack: int, now: float, *, with_ack: bool) -> None:
        flags = TcpFlags.RST | ACK if with_ack else TcpFlags.RST
        segment = TcpSegment(self.local_port, self.remote_port, seq, ack if with_ack else 0, flags, 0)
        self.outbox.append(segment)
        self.counters["OutSegs"] += 1
        self.counters["OutRsts"] += 1
        self.trace(TCP_SEND_RESET, now, seq=seq, ack=ack)

    # ------------------------------------------------------------------ data

    def payload_limit(self: Connection) -> int:
        """Payload bytes that fit in a segment sent now: the send MSS less the room SACK blocks will take
        (NOP, NOP, kind, length and 8 bytes a block), as Linux's tcp_current_mss does; otherwise a
        segment carrying SACK blocks would outgrow the path MTU."""
        mss = self.send_mss
        if self.negotiated.sack and not self.reassembly.is_empty:
            blocks = len(self.reassembly.sack_blocks(3 if self.negotiated.timestamps else 4))
            mss -= 4 + 8 * blocks
        return max(1, mss)

    def transmit(self: Connection, now: float) -> None:
        mss = self.payload_limit()
        if self.fast_retransmit_due:
            self.fast_retransmit_due = False
            end = self.retransmit(self.snd_una, mss, now)
            self.high_rxt = end
        if self.rtx_next is not None:
            if not self.resend_after_timeout(mss, now):
                return
        elif self.in_recovery and self.negotiated.sack:
            self.resend_sack_holes(mss, now)
        self.send_new_data(mss, now)

    def retransmit(self: Connection, seq: int, mss: int, now: float) -> int:
        """Resend up to one MSS starting at `seq` (data, then the FIN); return the sequence after it.

        Only what was sent before is resent: the segment stops at SND.NXT even when more data waits, so a
        retransmission never carries new data past the point the sender's variables account for.
        """
        offset = seq_sub(seq, self.snd_una)
        sent = seq_sub(self.snd_nxt, seq)  # sequence space already sent from `seq` on (FIN included)
        sent_data = sent - 1 if self.fin_sent else sent
        length = min(mss, sent_data)
        payload = self.send_buffer.peek(offset, length) if length > 0 and offset >= 0 else b""
        buffered = len(self.send_buffer)
        flags = PSH_ACK if payload and offset + len(payload) == buffered else ACK
        end = seq_add(seq, len(payload))
        if self.fin_sent and seq_add(end, 1) == self.snd_nxt:
            flags = WITH_FIN[flags]  # the FIN follows the last data byte
            end = seq_add(end, 1)
        if end == seq:
            return seq
        self.emit(seq, flags, payload, now)
        self.retransmissions += 1
        self.counters["RetransSegs"] += 1
        self.trace(TCP_RETRANSMIT_SKB, now, seq=seq, len=seq_sub(end, seq))
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rtt.rto
        return end

    def resend_after_timeout(self: Connection, mss: int, now: float) -> bool:
        """Go-back-N from SND.UNA within the collapsed window; True once everything was resent."""
        assert self.rtx_next is not None
        cwnd = self.congestion_window()
        window = max(self.snd_wnd, 1)  # a zero window still lets the first segment probe (RFC 9293 3.8.6.1)
        while seq_lt(self.rtx_next, self.snd_nxt):
            flight = seq_sub(self.rtx_next, self.snd_una)
            if flight > 0 and (cwnd - flight <= 0 or flight >= window):
                return False
            end = self.retransmit(self.rtx_next, mss, now)
            if end == self.rtx_next:
                break
            self.rtx_next = end
        self.rtx_next = None
        return True

    def resend_sack_holes(self: Connection, mss: int, now: float) -> None:
        """RFC 6675 5 step (C): while cwnd - pipe >= 1 MSS, resend the next lost hole (NextSeg rule 1);
        when no hole is lost yet and no new data can go (rule 2 fails), resend the next unSACKed one
        (rule 3)."""
        cwnd = self.congestion_window()
        for _ in range(64):  # bounded: each pass resends a distinct hole
            if cwnd - self.flight_size() < mss:
                return
            hole = self.next_hole()
            if hole is None:
                unsent = len(self.send_buffer) - seq_sub(self.snd_nxt, self.snd_una)
                can_send_new = unsent > 0 and self.snd_wnd > seq_sub(self.snd_nxt, self.snd_una)
                hole = None if can_send_new else self.sack_rule3()
            if hole is None:
                return
            seq, _length = hole
            self.high_rxt = self.retransmit(seq, mss, now)

    def send_new_data(self: Connection, mss: int, now: float) -> None:
        """New data within min(send window, cwnd), with Nagle (Minshall's variant, as Linux) and sender SWS
        avoidance (RFC 9293 3.8.6.2.1); then the FIN once the data is out."""
        if self.fin_sent:
            return
        buffered = len(self.send_buffer)
        if (
            self.snd_nxt == self.snd_una
            and self.last_data_sent is not None
            and now - self.last_data_sent > self.rtt.rto
            and buffered > 0
        ):
            # RFC 5681 4.1 (Linux's tcp_slow_start_after_idle=1): after an idle period longer than the
            # RTO the ACK clock is gone, so restart from no more than the initial window.
            self.cc.on_idle_restart(now)
            self.last_data_sent = None
        cwnd = self.congestion_window()
        tso_max = self.config.tso_max_bytes
        while True:
            offset = seq_sub(self.snd_nxt, self.snd_una)
            unsent = buffered - offset
            wnd_room = self.snd_wnd - offset
            if unsent <= 0:
                if self.fin_requested and wnd_room > 0:
                    # Linux does not hold the FIN back for the congestion window (tcp_cwnd_test).
                    self.emit(self.snd_nxt, FIN_ACK, b"", now)
                    self.snd_nxt = seq_add(self.snd_nxt, 1)
                    self.fin_sent = True
                    self.arm_after_send(offset, now)
                break
            # The congestion window admits whole segments: any room left lets one full segment go (cwnd is
            # kept in bytes, Linux keeps it in segments; rounding up keeps the two alike).
            if cwnd - self.flight_size() <= 0 or wnd_room <= 0:
                break
            flight = seq_sub(self.snd_nxt, self.snd_una)
            limit = mss
            if tso_max > mss:
                # TSO: as many whole segments as cwnd, the peer's window and the device allow, in one
                # super-segment (at least one segment, as without TSO).
                room = min(cwnd - self.flight_size(), wnd_room, tso_max)
                limit = max(mss, room - room % mss)
            length = min(limit, unsent, wnd_room)
            if length < mss:
                if length < unsent:
                    # Window- or cwnd-limited fragment: sender SWS avoidance allows it only when nothing is
                    # outstanding and it is at least half the largest window the peer offered.
                    if flight > 0 or length < self.max_snd_wnd // 2:
                        break
                elif not self.nodelay and not self.fin_requested and seq_gt(self.snd_sml, self.snd_una):
                    break  # Nagle: a small segment is still unacknowledged
            payload = self.send_buffer.peek(offset, length)
            flags = PSH_ACK if length == unsent else ACK
            fin = self.fin_requested and length == unsent and wnd_room > length
            if fin:
                flags = WITH_FIN[flags]
            self.emit(self.snd_nxt, flags, payload, now)
            if length > mss:
                self.counters["OutSegs"] += (length - 1) // mss  # the packets the device makes of it
            end = seq_add(self.snd_nxt, length)
            if length < mss:
                self.snd_sml = end
            if self.rtt_seq is None and not self.in_recovery:
                self.rtt_seq, self.rtt_time = end, now
            self.snd_nxt = seq_add(end, 1) if fin else end
            self.arm_after_send(offset, now)
            if fin:
                self.fin_sent = True
                break
        if (
            not self.fin_sent
            and (len(self.send_buffer) > seq_sub(self.snd_nxt, self.snd_una) or self.fin_requested)
            and self.snd_nxt == self.snd_una
            and self.persist_deadline is None
        ):
            # Data waits but nothing is in flight to bring an ACK: the persist timer probes the window.
            self.persist_deadline = now + self.persist_interval()

    def arm_after_send(self: Connection, offset_before: int, now: float) -> None:
        self.last_data_sent = now
        if offset_before == 0:
            self.progress_time = now  # the flight starts now (TCP_USER_TIMEOUT counts from here)
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rtt.rto
        self.persist_deadline = None
        self.persist_backoff = 0

    def persist_interval(self: Connection) -> float:
        return min(self.config.max_rto, self.rtt.rto * (1 << min(self.persist_backoff, 16)))

    def send_window_probe(self: Connection, now: float) -> None:
        """Linux's zero-window and keepalive probe: SEQ=SND.UNA-1 with no data, which any live peer must
        answer with an ACK carrying its current window (RFC 9293 3.8.6.1 allows this form)."""
        self.emit(seq_add(self.snd_una, -1), ACK, b"", now)

    def maybe_window_update(self: Connection) -> None:
        """After the application reads: announce the reopened window if it at least doubled and clears the
        SWS threshold (Linux's tcp_cleanup_rbuf rule)."""
        current = self.rcv_wnd
        possible = self.free_receive_space()
        if possible - current >= min(self.rcvbuf // 2, self.rcv_mss) and possible >= 2 * current:
            self.ack_now = True
