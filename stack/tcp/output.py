"""Transmission: what to send now, within the send window, the congestion window, Nagle and SWS avoidance.

Functions of the connection, which is passed in explicitly.  After the timers ran, `flush(conn, now)` sends
in this order: a pending fast retransmit; go-back-N retransmissions after a timeout or SACK-recovery
retransmissions (RFC 6675 NextSeg); new data; the FIN.  If nothing carried an ACK that is owed, a bare ACK
goes last.  Each segment's payload is one slice of the send buffer (a memoryview of one chunk in the common
case), so the work per segment does not grow with its size.

Every other part of the connection sends through the segment builders here (`emit`, `send_syn`,
`send_reset`) and answers unacceptable segments through `out_of_window_ack` and `challenge_ack`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from stack.tcp.options import syn_ack_options, syn_options
from stack.tcp.rack import rack_active
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
#: Linux (net.ipv4.tcp_invalid_ratelimit): at most one ACK per 500 ms answers out-of-window segments
#: without data (RFC 5961 section 7 asks for such a limit on challenge ACKs).
OUT_OF_WINDOW_ACK_INTERVAL = 0.5


def flush(conn: Connection, now: float) -> list[TcpSegment]:
    """Send what is due at `now` (the timers have run) and hand over the segments to transmit."""
    if conn.state in SENDING_STATES:
        transmit(conn, now)
    else:
        conn.recovery.fast_retransmit_due = False  # e.g. the FIN's ACK ended the sending states first
    if conn.ack_now and conn.state in ACKING_STATES:
        emit(conn, conn.snd_nxt, ACK, b"", now)
    conn.ack_now = False
    out = conn.outbox
    if out:
        conn.outbox = []
    return out


# ------------------------------------------------------------------ segment construction


def advertise_window(conn: Connection) -> int:
    """The 16-bit window field to send, with receiver-side SWS avoidance (RFC 9293 3.8.6.2.2).

    The window offered is the free buffer, clamped to what the field can say (`offerable_window`); the
    right edge moves only by at least min(RCV.BUFF/2, MSS) and never moves left; the field is rounded up
    to the scale unit (as Linux does) so scaling never shrinks the window.  `rcv_adv` is left at exactly
    the edge sent, RCV.NXT + (field << shift): the window segments are checked against is the window
    advertised.  Since every edge recorded is one the field carried, the window left from the last one
    (rcv_adv - RCV.NXT) always fits the field again, so keeping the edge never needs a larger field.
    """
    shift = conn.negotiated.rcv_wscale
    right = seq_add(conn.rcv_nxt, offerable_window(conn))
    grow = seq_sub(right, conn.rcv_adv)
    if grow > 0 and (grow >= min(conn.rcvbuf // 2, conn.rcv_mss) or conn.rcv_adv == conn.rcv_nxt):
        conn.rcv_adv = right
    window = max(0, seq_sub(conn.rcv_adv, conn.rcv_nxt))
    field = min(0xFFFF, (window + (1 << shift) - 1) >> shift)
    edge = seq_add(conn.rcv_nxt, field << shift)
    if seq_gt(edge, conn.rcv_adv):
        conn.rcv_adv = edge
    return field


def offerable_window(conn: Connection) -> int:
    """The largest window we may offer now: the free receive buffer, but no more than the 16-bit field
    can carry at our scale (0xFFFF << shift), as Linux's window_clamp caps tcp_select_window."""
    return min(conn.free_receive_space(), 0xFFFF << conn.negotiated.rcv_wscale)


def segment_options(conn: Connection, now: float) -> TcpOptions:
    negotiated = conn.negotiated
    if not negotiated.timestamps and not negotiated.sack:
        return NO_OPTIONS
    timestamp = (conn.tsval(now), conn.ts_recent) if negotiated.timestamps else None
    blocks: tuple[tuple[int, int], ...] = ()
    if negotiated.sack and (conn.reassembly.dsack is not None or not conn.reassembly.is_empty):
        # 40 option bytes: room for 3 blocks beside a timestamp, 4 without (RFC 2018 3); a duplicate
        # segment is reported once, as the first block (D-SACK, RFC 2883).
        blocks = tuple(conn.reassembly.sack_blocks(3 if timestamp else 4, take_dsack=True))
    if timestamp is None and not blocks:
        return NO_OPTIONS
    return TcpOptions(timestamp=timestamp, sack_blocks=blocks)


def emit(conn: Connection, seq: int, flags: TcpFlags, payload: bytes | memoryview, now: float,
         gso_size: int = 0) -> None:
    """Queue one segment carrying ACK (every segment after the SYN does, RFC 9293 3.10.7.4); `gso_size`:
    a TSO super-segment for the device to cut into segments of that many payload bytes."""
    segment = TcpSegment(
        src_port=conn.local_port,
        dst_port=conn.remote_port,
        seq=seq,
        ack=conn.rcv_nxt,
        flags=flags,
        window=advertise_window(conn),
        options=segment_options(conn, now),
        payload=payload,
        gso_size=gso_size,
    )
    conn.last_ack_sent = conn.rcv_nxt
    conn.ack_now = False
    conn.timers.delayed_ack = None
    conn.bytes_since_ack = 0
    conn.outbox.append(segment)
    conn.counters["OutSegs"] += 1
    if conn.trace_segments:
        conn.trace(TCP_SEGMENT_OUT, now, **segment_fields(segment))


def send_syn(conn: Connection, now: float) -> None:
    """Send (or resend) our SYN in SYN_SENT, or our SYN-ACK in SYN_RECV, and arm the timer."""
    retransmission = conn.snd_nxt != conn.iss
    window = min(conn.free_receive_space(), 0xFFFF)  # never scaled in a SYN (RFC 7323 2.2)
    if conn.state is S.SYN_SENT:
        flags = TcpFlags.SYN
        ack = 0
        options = syn_options(conn.config, conn.mtu, conn.tsval(now))
    else:
        flags = TcpFlags.SYN | ACK
        ack = conn.rcv_nxt
        options = syn_ack_options(conn.negotiated, conn.tsval(now), conn.ts_recent)
        conn.rcv_adv = seq_add(conn.rcv_nxt, window)
        conn.last_ack_sent = ack
    if conn.options.maxseg and options.mss and conn.options.maxseg < options.mss:
        # TCP_MAXSEG also lowers the MSS we announce, on a SYN and on a listener's SYN-ACK alike (Linux's
        # tcp_mss_clamp), so the peer never sends us segments larger than the application asked for.
        options = replace(options, mss=conn.options.maxseg)
    conn.syn_window = window
    segment = TcpSegment(conn.local_port, conn.remote_port, conn.iss, ack, flags, window, options)
    conn.snd_nxt = seq_add(conn.iss, 1)
    conn.outbox.append(segment)
    conn.counters["OutSegs"] += 1
    if retransmission:
        conn.counters["RetransSegs"] += 1
        conn.retransmissions += 1
        name = TCP_RETRANSMIT_SYNACK if flags & ACK else TCP_RETRANSMIT_SKB
        conn.trace(name, now, seq=conn.iss)
    if conn.trace_segments:
        conn.trace(TCP_SEGMENT_OUT, now, **segment_fields(segment))
    conn.timers.rto = now + conn.rtt.rto


def send_reset(conn: Connection, seq: int, ack: int, now: float, *, with_ack: bool) -> None:
    flags = TcpFlags.RST | ACK if with_ack else TcpFlags.RST
    segment = TcpSegment(conn.local_port, conn.remote_port, seq, ack if with_ack else 0, flags, 0)
    conn.outbox.append(segment)
    conn.counters["OutSegs"] += 1
    conn.counters["OutRsts"] += 1
    conn.trace(TCP_SEND_RESET, now, seq=seq, ack=ack)


# ------------------------------------------------------------------ answering

def out_of_window_ack(conn: Connection, seg: TcpSegment, now: float) -> None:
    """Answer an unacceptable segment with an ACK; Linux rate-limits this for segments without data."""
    if len(seg.payload) == 0 and now - conn.last_oow_ack < OUT_OF_WINDOW_ACK_INTERVAL:
        conn.counters["TCPACKSkippedSeq"] += 1
        return
    conn.last_oow_ack = now
    conn.ack_now = True


def challenge_ack(conn: Connection, now: float) -> None:
    """RFC 5961: make the peer prove it is in sync by sending our current ACK."""
    if now - conn.last_oow_ack < OUT_OF_WINDOW_ACK_INTERVAL:
        conn.counters["TCPACKSkippedChallenge"] += 1
        return
    conn.last_oow_ack = now
    conn.counters["TCPChallengeACK"] += 1
    conn.ack_now = True


# ------------------------------------------------------------------ data


def payload_limit(conn: Connection) -> int:
    """Payload bytes that fit in a segment sent now: the send MSS less the room SACK blocks will take
    (NOP, NOP, kind, length and 8 bytes a block), as Linux's tcp_current_mss does; otherwise a
    segment carrying SACK blocks would outgrow the path MTU."""
    mss = conn.send_mss
    if conn.negotiated.sack and (conn.reassembly.dsack is not None or not conn.reassembly.is_empty):
        blocks = len(conn.reassembly.sack_blocks(3 if conn.negotiated.timestamps else 4))
        mss -= 4 + 8 * blocks
    return max(1, mss)


def transmit(conn: Connection, now: float) -> None:
    recovery = conn.recovery
    if (
        not recovery.fast_retransmit_due
        and recovery.rtx_next is None
        and not recovery.in_recovery
        and recovery.rack.lost_bytes <= 0
        and not conn.fin_requested
        and len(conn.send_buffer) <= seq_sub(conn.snd_nxt, conn.snd_una)
    ):
        return  # nothing to resend and nothing new: the common poll after a segment arrived
    mss = payload_limit(conn)
    rack_on = rack_active(conn)
    if conn.recovery.fast_retransmit_due:
        conn.recovery.fast_retransmit_due = False
        if not rack_on:  # with RACK the flag only asks for this flush: the lost segments go below
            end = retransmit(conn, conn.snd_una, mss, now)
            conn.recovery.high_rxt = end
    if conn.recovery.rtx_next is not None:
        if not resend_after_timeout(conn, mss, now):
            return
    elif rack_on:
        if conn.recovery.rack.lost_bytes > 0 and not resend_lost(conn, mss, now):
            return
    elif conn.recovery.in_recovery and conn.negotiated.sack:
        resend_sack_holes(conn, mss, now)
    send_new_data(conn, mss, now)


def retransmit(conn: Connection, seq: int, mss: int, now: float, end: int | None = None) -> int:
    """Resend up to one MSS starting at `seq` (data, then the FIN), and not past `end` when given; return
    the sequence after it.

    Only what was sent before is resent: the segment stops at SND.NXT even when more data waits, so a
    retransmission never carries new data past the point the sender's variables account for.
    """
    offset = seq_sub(seq, conn.snd_una)
    sent = seq_sub(conn.snd_nxt, seq)  # sequence space already sent from `seq` on (FIN included)
    sent_data = sent - 1 if conn.fin_sent else sent
    length = min(mss, sent_data)
    if end is not None:
        length = min(length, seq_sub(end, seq))
    payload = conn.send_buffer.peek(offset, length) if length > 0 and offset >= 0 else b""
    buffered = len(conn.send_buffer)
    flags = PSH_ACK if payload and offset + len(payload) == buffered else ACK
    end = seq_add(seq, len(payload))
    if conn.fin_sent and seq_add(end, 1) == conn.snd_nxt:
        flags = WITH_FIN[flags]  # the FIN follows the last data byte
        end = seq_add(end, 1)
    if end == seq:
        return seq
    emit(conn, seq, flags, payload, now)
    conn.send_times.retransmitted(seq, end)
    conn.retransmissions += 1
    conn.counters["RetransSegs"] += 1
    conn.trace(TCP_RETRANSMIT_SKB, now, seq=seq, len=seq_sub(end, seq))
    if rack_active(conn):
        conn.recovery.rack.on_retransmitted(conn, seq, end, now)
    if conn.timers.rto is None:
        conn.timers.rto = now + conn.rtt.rto
    return end


def resend_after_timeout(conn: Connection, mss: int, now: float) -> bool:
    """Go-back-N from SND.UNA within the collapsed window; True once everything was resent."""
    assert conn.recovery.rtx_next is not None
    cwnd = conn.recovery.congestion_window(conn)
    window = max(conn.snd_wnd, 1)  # a zero window still lets the first segment probe (RFC 9293 3.8.6.1)
    while seq_lt(conn.recovery.rtx_next, conn.snd_nxt):
        flight = seq_sub(conn.recovery.rtx_next, conn.snd_una)
        if flight > 0 and (cwnd - flight <= 0 or flight >= window):
            return False
        end = retransmit(conn, conn.recovery.rtx_next, mss, now)
        if end == conn.recovery.rtx_next:
            break
        conn.recovery.rtx_next = end
    conn.recovery.rtx_next = None
    return True


def resend_lost(conn: Connection, mss: int, now: float) -> bool:
    """RACK (RFC 8985 6.3): while cwnd - pipe >= 1 MSS, resend the lowest segment marked lost; True
    once none is left (new data may follow)."""
    recovery = conn.recovery
    rack = recovery.rack
    cwnd = recovery.congestion_window(conn)
    for _ in range(256):  # bounded: each pass resends (or forgets) a distinct segment
        lost = rack.next_lost(conn)
        if lost is None:
            return True
        if rack.retransmit_first:
            rack.retransmit_first = False  # RFC 6675 4.3 / Linux PRR: entering recovery resends one at once
        elif cwnd - recovery.flight_size(conn) < mss:
            return False
        if retransmit(conn, lost.start, mss, now, end=lost.end) == lost.start:
            rack.forget_lost(lost)  # nothing left to send there (the data was acknowledged meanwhile)
        elif lost.start == conn.snd_una:
            conn.timers.rto = now + conn.rtt.rto  # Linux: resending the head restarts the timer
    return rack.lost_bytes <= 0


def resend_sack_holes(conn: Connection, mss: int, now: float) -> None:
    """RFC 6675 5 step (C): while cwnd - pipe >= 1 MSS, resend the next lost hole (NextSeg rule 1);
    when no hole is lost yet and no new data can go (rule 2 fails), resend the next unSACKed one
    (rule 3)."""
    cwnd = conn.recovery.congestion_window(conn)
    for _ in range(64):  # bounded: each pass resends a distinct hole
        if cwnd - conn.recovery.flight_size(conn) < mss:
            return
        hole = conn.recovery.next_hole(conn)
        if hole is None:
            unsent = len(conn.send_buffer) - seq_sub(conn.snd_nxt, conn.snd_una)
            can_send_new = unsent > 0 and conn.snd_wnd > seq_sub(conn.snd_nxt, conn.snd_una)
            hole = None if can_send_new else conn.recovery.sack_rule3(conn)
        if hole is None:
            return
        seq, _length = hole
        conn.recovery.high_rxt = retransmit(conn, seq, mss, now)


def send_new_data(conn: Connection, mss: int, now: float) -> None:
    """New data within min(send window, cwnd), with Nagle (Minshall's variant, as Linux) and sender SWS
    avoidance (RFC 9293 3.8.6.2.1); then the FIN once the data is out."""
    if conn.fin_sent:
        return
    buffered = len(conn.send_buffer)
    if (
        conn.snd_nxt == conn.snd_una
        and conn.last_data_sent is not None
        and now - conn.last_data_sent > conn.rtt.rto
        and buffered > 0
    ):
        # RFC 5681 4.1 (Linux's tcp_slow_start_after_idle=1): after an idle period longer than the
        # RTO the ACK clock is gone, so restart from no more than the initial window.
        conn.cc.on_idle_restart(now)
        conn.last_data_sent = None
    recovery = conn.recovery
    cwnd = recovery.congestion_window(conn)
    tso_max = conn.config.tso_max_bytes
    rack_on = rack_active(conn)
    sent_new = cwnd_blocked = False
    while True:
        offset = seq_sub(conn.snd_nxt, conn.snd_una)  # also the sequence space in flight since SND.UNA
        unsent = buffered - offset
        wnd_room = conn.snd_wnd - offset
        if unsent <= 0:
            if conn.fin_requested and wnd_room > 0:
                # Linux does not hold the FIN back for the congestion window (tcp_cwnd_test).
                emit(conn, conn.snd_nxt, FIN_ACK, b"", now)
                if rack_on:
                    recovery.rack.on_sent(conn.snd_nxt, seq_add(conn.snd_nxt, 1), now)
                conn.snd_nxt = seq_add(conn.snd_nxt, 1)
                conn.fin_sent = True
                sent_new = True
                arm_after_send(conn, offset, now)
            break
        # The congestion window admits whole segments: any room left lets one full segment go (cwnd is
        # kept in bytes, Linux keeps it in segments; rounding up keeps the two alike).
        cwnd_room = cwnd - recovery.flight_size(conn)
        if cwnd_room <= 0:
            cwnd_blocked = True
            break
        if wnd_room <= 0:
            break
        limit = mss
        if tso_max > mss:
            # TSO: as many whole segments as cwnd, the peer's window and the device allow, in one
            # super-segment (at least one segment, as without TSO).
            room = min(cwnd_room, wnd_room, tso_max)
            limit = max(mss, room - room % mss)
        length = min(limit, unsent, wnd_room)
        if length < mss:
            if length < unsent:
                # Window- or cwnd-limited fragment: sender SWS avoidance allows it only when nothing is
                # outstanding and it is at least half the largest window the peer offered.
                if offset > 0 or length < conn.max_snd_wnd // 2:
                    break
            elif not conn.options.nodelay and not conn.fin_requested and seq_gt(conn.snd_sml, conn.snd_una):
                break  # Nagle: a small segment is still unacknowledged
        payload = conn.send_buffer.peek(offset, length)
        flags = PSH_ACK if length == unsent else ACK
        fin = conn.fin_requested and length == unsent and wnd_room > length
        if fin:
            flags = WITH_FIN[flags]
        emit(conn, conn.snd_nxt, flags, payload, now, mss if length > mss else 0)
        if length > mss:
            conn.counters["OutSegs"] += (length - 1) // mss  # the packets the device makes of it
        end = seq_add(conn.snd_nxt, length)
        next_seq = seq_add(end, 1) if fin else end
        if rack_on:
            recovery.rack.on_sent(conn.snd_nxt, next_seq, now)
        if length < mss:
            conn.snd_sml = end
        conn.send_times.sent(conn.snd_nxt, next_seq, now)
        conn.snd_nxt = next_seq
        arm_after_send(conn, offset, now)
        sent_new = True
        if fin:
            conn.fin_sent = True
            break
    if sent_new and rack_on:
        recovery.rack.schedule_probe(conn, now)  # RFC 8985 7.2: (re)arm the PTO after new data
    if sent_new or cwnd_blocked:
        conn.cwnd_use.after_sending(recovery.flight_size(conn), cwnd, conn.snd_una, conn.snd_nxt)
    if (
        not conn.fin_sent
        and (len(conn.send_buffer) > seq_sub(conn.snd_nxt, conn.snd_una) or conn.fin_requested)
        and conn.snd_nxt == conn.snd_una
        and conn.timers.persist is None
    ):
        # Data waits but nothing is in flight to bring an ACK: the persist timer probes the window.
        conn.timers.persist = now + persist_interval(conn)


def arm_after_send(conn: Connection, offset_before: int, now: float) -> None:
    conn.last_data_sent = now
    if offset_before == 0:
        conn.progress_time = now  # the flight starts now (TCP_USER_TIMEOUT counts from here)
    if conn.timers.rto is None:
        conn.timers.rto = now + conn.rtt.rto
    conn.timers.persist = None
    conn.persist_backoff = 0


def persist_interval(conn: Connection) -> float:
    return min(conn.config.max_rto, conn.rtt.rto * (1 << min(conn.persist_backoff, 16)))


def send_window_probe(conn: Connection, now: float) -> None:
    """Linux's zero-window and keepalive probe: SEQ=SND.UNA-1 with no data, which any live peer must
    answer with an ACK carrying its current window (RFC 9293 3.8.6.1 allows this form)."""
    emit(conn, seq_add(conn.snd_una, -1), ACK, b"", now)


def maybe_window_update(conn: Connection) -> None:
    """After the application reads: announce the reopened window if it at least doubled and clears the
    SWS threshold (Linux's tcp_cleanup_rbuf rule)."""
    current = conn.rcv_wnd
    possible = offerable_window(conn)
    if possible - current >= min(conn.rcvbuf // 2, conn.rcv_mss) and possible >= 2 * current:
        conn.ack_now = True
