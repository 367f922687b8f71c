"""SEGMENT ARRIVES (RFC 9293 3.10.7) for a connection past LISTEN, and the ICMP errors about its segments.

Functions of the connection, which is passed in explicitly (FreeBSD's `tcp_input(tp, ...)`): the steps
run in the RFC's order (sequence number, RST, SYN, ACK, URG, text, FIN), each written where the RFC
writes it.  The ACK step is the loss-recovery component's (`conn.recovery.ack_acceptable`, then
`process_ack`); TS.Recent is taken between the two, once nothing can drop the segment any more.  What is
sent in answer goes through `stack.tcp.output`.  The listener's part (segments for no connection) is
`stack.tcp.listener`.

Linux choices taken where the RFCs allow several behaviours are marked "Linux:".
"""

from __future__ import annotations

import errno
from types import MappingProxyType
from typing import TYPE_CHECKING

from stack.tcp import output
from stack.tcp.options import mss_for_mtu
from stack.tcp.seq import SEQ_MASK, seq_add, seq_between, seq_ge, seq_gt, seq_le, seq_lt, seq_sub
from stack.tcp.state import RECEIVES_DATA, SYNCHRONIZED, TcpState
from stack.tcp.trace import TCP_RECEIVE_RESET, TCP_SEGMENT_IN, segment_fields
from stack.tcp.urgent import note_urgent_pointer
from stack.wire.tcp import TcpFlags, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.connection import Connection

S = TcpState
# Plain ints: testing flags of an IntFlag builds enum members, which costs more than the rest of a lookup.
ACK = int(TcpFlags.ACK)
SYN = int(TcpFlags.SYN)
FIN = int(TcpFlags.FIN)
RST = int(TcpFlags.RST)
URG = int(TcpFlags.URG)
ACK_FLAG = TcpFlags.ACK  # for segments we build: their `flags` stay TcpFlags (readable in reprs and traces)

#: Linux's errno for an accepted RST, by state (tcp_reset()): refused while connecting, EPIPE in CLOSE_WAIT.
RESET_ERRNO = MappingProxyType({S.SYN_SENT: errno.ECONNREFUSED, S.CLOSE_WAIT: errno.EPIPE})


def segment_arrives(conn: Connection, seg: TcpSegment, now: float) -> None:
    """SEGMENT ARRIVES (RFC 9293 3.10.7) for a connection past LISTEN."""
    if conn.trace_segments:
        conn.trace(TCP_SEGMENT_IN, now, **segment_fields(seg))
    state = conn.state
    if state is S.CLOSE:
        return
    if state is S.SYN_SENT:
        arrives_in_syn_sent(conn, seg, now)
        return
    arrives_synchronized(conn, seg, now)


def arrives_in_syn_sent(conn: Connection, seg: TcpSegment, now: float) -> None:
    """RFC 9293 3.10.7.3."""
    flags = int(seg.flags)
    # First: the ACK must acknowledge our SYN.
    if flags & ACK and (seq_le(seg.ack, conn.iss) or seq_gt(seg.ack, conn.snd_nxt)):
        if not flags & RST:
            output.send_reset(conn, seg.ack, 0, now, with_ack=False)
        return
    ack_ok = bool(flags & ACK)
    # Second: RST.  RFC 5961 3.2: only a RST acknowledging the SYN counts; without ACK it is ignored.
    if flags & RST:
        if ack_ok:
            conn.trace(TCP_RECEIVE_RESET, now)
            conn.counters["AttemptFails"] += 1
            conn.terminate(now, errno.ECONNREFUSED)
        return
    # Fourth: SYN.
    if not flags & SYN:
        return
    conn.irs = seg.seq
    conn.rcv_nxt = seq_add(seg.seq, 1)
    conn.rcv_adv = seq_add(conn.rcv_nxt, conn.syn_window)  # the peer may fill what our SYN offered
    conn.adopt_options(seg, now)
    conn.last_received = now
    if ack_ok:
        conn.snd_una = seg.ack
        # The SYN-ACK's window is never scaled (RFC 7323 2.2).
        conn.snd_wnd = seg.window
        conn.max_snd_wnd = conn.snd_wnd
        conn.snd_wl1, conn.snd_wl2 = seg.seq, seg.ack
        sample_handshake_rtt(conn, seg, now)
        conn.timers.rto = None
        conn.syn_retries = 0
        conn.move("rcv_syn_ack", now)
        conn.ack_now = True
        # Data or FIN riding on the SYN-ACK is processed like text in ESTABLISHED (sixth step on).
        if len(seg.payload) or flags & FIN:
            process_text_and_fin(conn, seg, seq_add(seg.seq, 1), now)
        return
    # Simultaneous open: SYN without ACK.  Answer with SYN-ACK from SYN_RECV.
    conn.snd_wnd = seg.window
    conn.max_snd_wnd = conn.snd_wnd
    conn.snd_wl1 = seg.seq
    conn.move("rcv_syn", now)
    conn.timers.rto = None
    output.send_syn(conn, now)

def acceptable(conn: Connection, seg: TcpSegment) -> bool:
    """The four-case acceptability test of RFC 9293 3.10.7.4 against the window we advertised.

    Linux: a segment starting exactly at RCV.NXT passes even when the window is zero, so its ACK and RST
    are processed (the RFC's "MUST process ACK/RST in a zero window") and its text is dropped later.

    A segment that ends exactly at RCV.NXT (a retransmission of the last data or FIN received) passes
    too: trimming its old part (RFC 9293: "only the new parts are processed") leaves an empty segment
    at RCV.NXT, whose ACK is processed and whose duplicate is acknowledged in the text and FIN steps.
    This is what lets a retransmitted FIN that acknowledges our FIN end CLOSING.  Linux's tcp_sequence
    accepts it (SEG.SEQ + SEG.LEN not before rcv_wup), as FreeBSD's trim does.
    """
    rcv_nxt = conn.rcv_nxt
    seq = seg.seq
    if seq == rcv_nxt:
        return True
    seg_len = segment_length(seg)
    if seg_len > 0 and seq_add(seq, seg_len) == rcv_nxt:
        return True
    wnd = conn.rcv_wnd
    if wnd == 0:
        return False
    end = seq_add(rcv_nxt, wnd)
    if seq_between(rcv_nxt, seq, end):
        return True
    return seg_len > 0 and seq_between(rcv_nxt, seq_add(seq, seg_len - 1), end)

def arrives_synchronized(conn: Connection, seg: TcpSegment, now: float) -> None:
    """RFC 9293 3.10.7.4 for SYN_RECV and the synchronized states, steps in the RFC's order."""
    flags = int(seg.flags)
    state = conn.state
    if state is S.SYN_RECV and flags & SYN and not flags & (ACK | RST) and seg.seq == conn.irs:
        # Linux: the peer retransmitted its SYN (our SYN-ACK was lost): answer with the SYN-ACK again.
        output.send_syn(conn, now)
        return
    if (
        state is S.TIME_WAIT
        and flags & FIN
        and not flags & RST
        and seq_add(seg.seq, segment_length(seg)) == conn.rcv_nxt
    ):
        # The peer retransmitted its FIN: our last ACK was lost.  ACK again and restart 2*MSL
        # (RFC 9293 3.10.7.4; Linux tcp_timewait_state_process).
        conn.ack_now = True
        conn.timers.close = now + conn.config.time_wait
        return
    ts = seg.options.timestamp
    # PAWS (RFC 7323 5.3): a timestamp older than TS.Recent marks an old duplicate.
    if (
        conn.negotiated.timestamps
        and ts is not None
        and not flags & RST
        and conn.ts_recent_set
        and seq_lt(ts[0], conn.ts_recent)
    ):
        conn.counters["PAWSEstabRejected"] += 1
        output.out_of_window_ack(conn, seg, now)
        return
    # First: sequence number.
    if not acceptable(conn, seg):
        if not flags & RST:
            if len(seg.payload) and seq_le(seq_add(seg.seq, len(seg.payload)), conn.rcv_nxt):
                note_duplicate(conn, seg.seq, seq_add(seg.seq, len(seg.payload)))
            output.out_of_window_ack(conn, seg, now)
        return
    conn.last_received = now
    conn.probes_out = 0
    # Second: RST (RFC 5961 3.2: only an exact RCV.NXT match resets; in-window ones get a challenge ACK).
    if flags & RST:
        if state is S.TIME_WAIT and conn.config.rfc1337:
            # RFC 1337 (net.ipv4.tcp_rfc1337=1): no RST ends TIME_WAIT early, nor draws an answer, so an
            # old duplicate RST cannot cut short the 2*MSL that protects the next incarnation.
            return
        if seg.seq != conn.rcv_nxt:
            output.challenge_ack(conn, now)
            return
        accept_reset(conn, now)
        return
    # Fourth: SYN in a synchronized state (RFC 5961 4.2): challenge ACK, whatever its sequence number.
    if flags & SYN:
        if state is S.SYN_RECV and conn.passive:
            # Linux (tcp_check_req): a new SYN for an embryonic connection resets it.
            output.send_reset(conn, conn.snd_nxt, conn.rcv_nxt, now, with_ack=True)
            conn.terminate(now, 0)
            return
        output.challenge_ack(conn, now)
        return
    # Fifth: ACK.
    if not flags & ACK:
        return
    if state is S.SYN_RECV:
        if not (seq_lt(conn.snd_una, seg.ack) and seq_le(seg.ack, conn.snd_nxt)):
            output.send_reset(conn, seg.ack, 0, now, with_ack=False)
            return
        if ts is not None:
            update_ts_recent(conn, seg, ts[0])
        conn.snd_una = seg.ack
        conn.snd_wnd = seg.window << conn.negotiated.snd_wscale
        conn.max_snd_wnd = max(conn.max_snd_wnd, conn.snd_wnd)
        conn.snd_wl1, conn.snd_wl2 = seg.seq, seg.ack
        sample_handshake_rtt(conn, seg, now)
        conn.syn_retries = 0
        conn.timers.rto = None
        conn.move("rcv_ack", now)
        if conn.fin_requested:
            conn.move("close", now)  # close() in SYN_RECV: the FIN goes out now (RFC 9293 3.10.4)
        state = conn.state
    else:
        if not conn.recovery.ack_acceptable(conn, seg, now):
            return
        if ts is not None:
            update_ts_recent(conn, seg, ts[0])
        if not conn.recovery.process_ack(conn, seg, now):
            return
    if conn.state is S.CLOSE:
        return
    if flags & URG:
        note_urgent_pointer(conn, seg, now)  # sixth step
    process_text_and_fin(conn, seg, seg.seq, now)

def sample_handshake_rtt(conn: Connection, seg: TcpSegment, now: float) -> None:
    """The handshake's RTT: timed from our SYN (or SYN-ACK) if it was not retransmitted (Karn), or from
    the timestamp echo, which names the transmission it answers."""
    ts = seg.options.timestamp
    if conn.syn_retries == 0:
        conn.rtt.sample(now - conn.syn_sent_time)
    elif conn.negotiated.timestamps and ts is not None and ts[1]:
        elapsed = (conn.tsval(now) - ts[1]) & SEQ_MASK
        if elapsed < 1 << 31:
            conn.rtt.sample(elapsed / 1000.0)
    else:
        conn.rtt.reset_backoff()

def accept_reset(conn: Connection, now: float) -> None:
    state = conn.state
    conn.trace(TCP_RECEIVE_RESET, now)
    if state in (S.ESTABLISHED, S.CLOSE_WAIT):
        conn.counters["EstabResets"] += 1
    if state is S.SYN_RECV:
        # A passive entry just leaves the SYN queue (RFC 9293: "return to LISTEN"); an active one
        # (simultaneous open) was refused.
        conn.counters["AttemptFails"] += 1
        conn.terminate(now, 0 if conn.passive else errno.ECONNREFUSED)
        return
    quiet = state in (S.CLOSING, S.LAST_ACK, S.TIME_WAIT)  # nothing left for the application to lose
    error = 0 if quiet else RESET_ERRNO.get(state, errno.ECONNRESET)
    conn.terminate(now, error)

def update_ts_recent(conn: Connection, seg: TcpSegment, tsval: int) -> None:
    """RFC 7323 4.3: remember TSval of the segment that covers Last.ACK.sent.

    Called only once the segment passed every check that could drop it (PAWS, the sequence number, RST,
    SYN, the ACK's range): a TSval from a segment that is then dropped would be echoed to the peer and
    make its next real segments look like old duplicates to PAWS.  Linux likewise updates ts_recent in
    tcp_ack after the ACK checks.
    """
    if not conn.negotiated.timestamps:
        return
    if seq_ge(tsval, conn.ts_recent) and seq_le(seg.seq, conn.last_ack_sent):
        conn.ts_recent = tsval

def process_text_and_fin(conn: Connection, seg: TcpSegment, seq: int, now: float) -> None:
    """Seventh and eighth steps: deliver text in order, queue it out of order, then the FIN."""
    payload = seg.payload
    fin = bool(int(seg.flags) & FIN)
    state = conn.state
    fin_held = conn.peer_fin_seq is not None  # a FIN that came beyond a hole, waiting for the text
    if len(payload):
        if state not in RECEIVES_DATA:
            payload = b""  # after the peer's FIN no text can be new (RFC 9293: "ignore the text")
        elif conn.orphaned and seq_gt(seq_add(seq, len(payload)), conn.rcv_nxt):
            # New data for a socket the application closed can never be read: answer with a RST (RFC 1122
            # 4.2.2.13) in the form a segment for no connection gets, <SEQ=SEG.ACK><CTL=RST> (RFC 9293
            # 3.10.7.1), as Linux's tcp_rcv_state_process and FIN_WAIT_2 timewait socket do.
            conn.counters["AbortOnData"] += 1
            output.send_reset(conn, seg.ack, 0, now, with_ack=False)
            conn.terminate(now, 0)
            return
    if len(payload):
        receive_text(conn, seq, payload, now)
        if fin and seq_gt(seq_add(seq, len(payload)), seq_add(conn.rcv_nxt, conn.rcv_wnd)):
            fin = False  # the FIN lies beyond the window: trimmed with the text's tail
    if fin and conn.peer_fin_seq is None and state not in (S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK):
        fin_seq = seq_add(seq, len(seg.payload))
        if seq_ge(fin_seq, conn.rcv_nxt):
            conn.peer_fin_seq = fin_seq
            if fin_seq != conn.rcv_nxt:
                conn.ack_now = True  # an out-of-order FIN: duplicate ACK at once, like out-of-order data
    if state is S.TIME_WAIT and fin:
        # A retransmitted FIN: our last ACK was lost.  ACK again and restart 2*MSL (RFC 9293 eighth step).
        conn.ack_now = True
        conn.timers.close = now + conn.config.time_wait
        return
    if fin and state in (S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK):
        conn.ack_now = True  # a retransmitted FIN: acknowledge again
    consume_fin_if_ready(conn, now, fills_a_gap=fin_held)

def receive_text(conn: Connection, seq: int, payload: bytes | memoryview, now: float) -> None:
    rcv_nxt = conn.rcv_nxt
    # Trim what we already have (the front) and what lies beyond the window (the tail).
    front = seq_sub(rcv_nxt, seq)
    if front > 0:
        note_duplicate(conn, seq, seq_add(seq, min(front, len(payload))))
        if front >= len(payload):
            conn.ack_now = True  # a pure duplicate: the peer missed our ACK (RFC 9293 / D-SACK case)
            return
        payload = memoryview(payload)[front:]
        seq = rcv_nxt
    room = seq_sub(seq_add(rcv_nxt, conn.rcv_wnd), seq)
    if room <= 0:
        conn.counters["TCPZeroWindowDrop"] += 1
        conn.ack_now = True
        return
    if len(payload) > room:
        payload = memoryview(payload)[:room]
    conn.rcv_mss = max(conn.rcv_mss, min(len(payload), conn.negotiated.our_mss))
    if seq == rcv_nxt:
        conn.recv_buffer.append(payload)
        conn.rcv_nxt = seq_add(rcv_nxt, len(payload))
        if not conn.reassembly.is_empty:
            # This segment filled (part of) a gap: ACK at once (RFC 5681 4.2).
            for chunk in conn.reassembly.pop_ready(conn.rcv_nxt):
                conn.recv_buffer.append(chunk)
                conn.rcv_nxt = seq_add(conn.rcv_nxt, len(chunk))
            conn.ack_now = True
        else:
            conn.bytes_since_ack += len(payload)
            # RFC 5681 4.2 / RFC 9293 3.8.6.3: ACK at least every second full-sized segment -- as it
            # arrives, not at the next poll, so a burst delivered at once still gets one ACK per two
            # segments (the sender's ACK clock, and robustness against a lost ACK, depend on it).
            if conn.bytes_since_ack >= 2 * conn.rcv_mss:
                output.emit(conn, conn.snd_nxt, ACK_FLAG, b"", now)
            elif conn.timers.delayed_ack is None:
                conn.timers.delayed_ack = now + conn.config.delayed_ack
    else:
        # Out of order: keep it for later and send a duplicate ACK (with SACK blocks) at once.
        held = conn.reassembly.dsack
        if not conn.reassembly.add(seq, payload, rcv_nxt):
            conn.counters["TCPOFODrop"] += 1
        elif conn.reassembly.dsack is not held and conn.negotiated.sack:
            conn.counters["TCPDSACKOfoSent"] += 1
        else:
            conn.counters["TCPOFOQueue"] += 1
        # One duplicate ACK per out-of-order segment, even when several arrive before the next poll:
        # the sender counts them to detect the loss (RFC 5681 4.2, 3.2).
        output.emit(conn, conn.snd_nxt, ACK_FLAG, b"", now)

def note_duplicate(conn: Connection, start: int, end: int) -> None:
    """Data below RCV.NXT came again: the next ACK reports it as a D-SACK block (RFC 2883)."""
    if conn.negotiated.sack:
        conn.reassembly.note_duplicate(start, end)
        conn.counters["TCPDSACKOldSent"] += 1


def consume_fin_if_ready(conn: Connection, now: float, *, fills_a_gap: bool) -> None:
    """The FIN is next in sequence: end of file, and the state moves on.  A FIN that waited beyond a hole
    is acknowledged at once, as any segment that fills a gap is (RFC 5681 4.2)."""
    if conn.peer_fin_seq is None or conn.eof or conn.peer_fin_seq != conn.rcv_nxt:
        return
    conn.rcv_nxt = seq_add(conn.rcv_nxt, 1)
    conn.eof = True
    state = conn.state
    if state in (S.SYN_RECV, S.ESTABLISHED) and not fills_a_gap:
        # The peer is done and the app's answer (or its close) usually follows at once: the ACK of the
        # FIN is delayed so that the answer carries it, as Linux's tcp_fin does by entering pingpong
        # mode -- a connect+close then costs six frames, not seven.
        if conn.timers.delayed_ack is None:
            conn.timers.delayed_ack = now + conn.config.delayed_ack
        conn.move("rcv_fin", now)
        return
    conn.ack_now = True
    if state in (S.SYN_RECV, S.ESTABLISHED):
        conn.move("rcv_fin", now)
    elif state is S.FIN_WAIT1:
        if conn.fin_sent and conn.snd_una == conn.snd_nxt:
            conn.move("rcv_fin_ack_of_fin", now)
            conn.enter_time_wait(now)
        else:
            conn.move("rcv_fin", now)
    elif state is S.FIN_WAIT2:
        conn.move("rcv_fin", now)
        conn.enter_time_wait(now)

def icmp_error_arrives(conn: Connection, kind: str, code: int, seq: int, mtu: int | None, now: float) -> None:
    """An ICMP error quoting one of our segments.

    Linux: the quoted sequence number must lie in SND.UNA..SND.NXT (RFC 5927 blind-attack check);
    "fragmentation needed" lowers the MSS and resends at once; in SYN_SENT any destination-unreachable
    or time-exceeded aborts the attempt (tcp_v4_err), in other states errors are soft: remembered and
    reported only if the connection later times out (RFC 1122 4.2.3.9 allows this).
    """
    if conn.state in (S.CLOSE, S.LISTEN, S.TIME_WAIT):
        return
    if not (seq_ge(seq, conn.snd_una) and seq_le(seq, conn.snd_nxt)):
        conn.counters["OutOfWindowIcmps"] += 1
        return
    if kind == "frag_needed":
        if mtu is not None and mtu >= 68 and mtu < conn.mtu:
            conn.mtu = mtu
            conn.negotiated.peer_mss = min(conn.negotiated.peer_mss, mss_for_mtu(mtu))
            conn.cc.set_mss(conn.send_mss)
            if conn.state in SYNCHRONIZED and conn.snd_una != conn.snd_nxt:
                conn.recovery.rtx_next = conn.snd_una  # resend what the smaller path MTU could not carry
        return
    err = icmp_errno(kind, code)
    if err is None:
        return
    if conn.state is S.SYN_RECV and conn.passive:
        # Linux (tcp_req_err): a fatal error drops the SYN queue entry; others are ignored.
        if kind == "unreachable" and code in FATAL_UNREACHABLE:
            conn.terminate(now, 0)
        return
    if conn.state is S.SYN_SENT:
        conn.counters["AttemptFails"] += 1
        conn.terminate(now, err)
        return
    conn.soft_error = err


def segment_length(seg: TcpSegment) -> int:
    """SEG.LEN (payload plus SYN and FIN), without IntFlag arithmetic."""
    flags = int(seg.flags)
    return len(seg.payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)


#: Linux's icmp_err_convert for destination-unreachable codes 0..15.
UNREACHABLE_ERRNO = (
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ENOPROTOOPT,
    errno.ECONNREFUSED,
    errno.EMSGSIZE,
    errno.EOPNOTSUPP,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
    errno.ENONET,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.EHOSTUNREACH,
    errno.EHOSTUNREACH,
    errno.EHOSTUNREACH,
)


#: The destination-unreachable codes Linux's table marks fatal (protocol/port unreachable, unknown or
#: prohibited destinations, filtered).
FATAL_UNREACHABLE = frozenset({2, 3, 6, 7, 8, 9, 10, 13, 14, 15})


def icmp_errno(kind: str, code: int) -> int | None:
    if kind == "unreachable":
        return UNREACHABLE_ERRNO[code] if 0 <= code < len(UNREACHABLE_ERRNO) else None
    if kind == "time_exceeded":
        return errno.EHOSTUNREACH
    if kind == "parameter_problem":
        return errno.EPROTO
    return None
