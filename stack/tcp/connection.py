"""One TCP connection: the RFC 9293 state machine, driven by segments, user calls and the clock.

Bytes in, segments out, like h11's `_connection.py`: `on_segment(segment, now)` and the user calls only change
state; `poll(now)` runs the timers that are due and returns the segments to transmit; `next_deadline()` says
when `poll` must run again.  Nothing here reads a clock or touches a socket.

The module is split by concern: SEGMENT ARRIVES (this file), acknowledgment processing and loss recovery
(`recovery.py`), transmission (`output.py`) and timers (`timers.py`).  Each part is a mixin over the same
connection variables, named as in RFC 9293 section 3.3.1 (snd_una, snd_nxt, rcv_nxt, ...).

Linux choices taken where the RFCs allow several behaviours are marked "Linux:" in the docstrings.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from types import MappingProxyType

from stack.tcp.buffers import ReceiveBuffer, SendBuffer
from stack.tcp.config import TcpConfig
from stack.tcp.congestion import create_congestion_control
from stack.tcp.options import Negotiated, mss_for_mtu, negotiate
from stack.tcp.output import OutputMixin
from stack.tcp.reassembly import ReassemblyQueue
from stack.tcp.recovery import RecoveryMixin
from stack.tcp.rtt import RttEstimator
from stack.tcp.sack import SackScoreboard
from stack.tcp.seq import SEQ_MASK, seq_add, seq_between, seq_ge, seq_gt, seq_le, seq_lt, seq_sub
from stack.tcp.snapshot import ConnectionSnapshot
from stack.tcp.state import RECEIVES_DATA, SYNCHRONIZED, TcpState, next_state
from stack.tcp.timers import TimersMixin
from stack.tcp.trace import (
    INET_SOCK_SET_STATE,
    TCP_RECEIVE_RESET,
    TCP_SEGMENT_IN,
    TraceEvent,
    TraceSink,
    segment_fields,
)
from stack.tcp.urgent import forget_passed_mark, note_urgent_pointer
from stack.wire.tcp import TcpFlags, TcpOptions, TcpSegment

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
#: Linux (net.ipv4.tcp_invalid_ratelimit): at most one ACK per 500 ms answers out-of-window segments
#: without data (RFC 5961 section 7 asks for such a limit on challenge ACKs).
OUT_OF_WINDOW_ACK_INTERVAL = 0.5


class Connection(RecoveryMixin, OutputMixin, TimersMixin):
    """The transmission control block (RFC 9293 3.3.1) and the events that change it."""

    def __init__(
        self,
        *,
        config: TcpConfig,
        local_ip: str,
        local_port: int,
        remote_ip: str,
        remote_port: int,
        mtu: int,
        iss: int,
        ts_offset: int,
        counters: dict[str, int],
        trace: TraceSink | None = None,
        trace_segments: bool = True,
    ) -> None:
        self.config = config
        self.local_ip, self.local_port = local_ip, local_port
        self.remote_ip, self.remote_port = remote_ip, remote_port
        self.mtu = mtu
        self.counters = counters
        self.trace_sink = trace
        # Per-segment events (tcp_segment_in/out, tcp_probe) cost a dict per segment: built only for a sink
        # that wants them, not for one that keeps state changes and retransmissions only.
        self.trace_segments = trace is not None and trace_segments
        self.state = S.CLOSE
        self.passive = False  # created by a listener (SYN_RECV entry of a SYN queue)
        self.orphaned = False  # the application closed its socket; nobody will read or write
        self.on_state_change: Callable[[Connection, TcpState, TcpState], None] | None = None
        # Called once R1 retransmissions of one segment went unanswered (timers.py): the layer's route advice.
        self.on_negative_advice: Callable[[Connection], None] | None = None

        # Send sequence space.
        self.iss = iss & SEQ_MASK
        self.snd_una = self.iss
        self.snd_nxt = self.iss  # next new sequence number: everything below it has been sent once
        self.snd_wnd = 0
        self.max_snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.snd_sml = self.iss  # end of the last small segment sent (Minshall's Nagle variant, as Linux)
        self.send_buffer = SendBuffer()
        self.sndbuf = config.sndbuf
        self.fin_requested = False  # the application shut down writing: a FIN follows the data
        self.fin_sent = False

        # Receive sequence space.
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # right edge of the window last advertised (never moves left: RFC 9293 3.8.6.2.2)
        self.recv_buffer = ReceiveBuffer()
        self.rcvbuf = config.rcvbuf
        self.reassembly = ReassemblyQueue(limit=config.rcvbuf)
        self.peer_fin_seq: int | None = None  # sequence number of the peer's FIN once seen, even out of order
        self.eof = False  # the peer's FIN has been consumed: recv() returns b""
        self.rcv_up: int | None = None  # RCV.UP: first octet after urgent data, while unread (urgent.py)
        self.rcv_mss = min(536, mss_for_mtu(mtu))  # largest segment the peer sent (Linux tcp_measure_rcv_mss)
        self.bytes_since_ack = 0
        self.ack_now = False
        self.last_oow_ack = -1e18

        # Options.
        self.negotiated = Negotiated(peer_mss=config.default_mss, our_mss=mss_for_mtu(mtu))
        self.ts_offset = ts_offset & SEQ_MASK
        self.ts_recent = 0
        self.ts_recent_set = False
        self.last_ack_sent = 0
        self.syn_window = 0  # the window our SYN or SYN-ACK offered (unscaled)

        # Retransmission, congestion and loss recovery.
        self.rtt = RttEstimator(
            initial_rto=config.initial_rto, min_rto=config.min_rto, max_rto=config.max_rto
        )
        self.cc = create_congestion_control(
            config.congestion, self.negotiated.send_mss, config.initial_window
        )
        self.scoreboard = SackScoreboard()
        self.rtt_seq: int | None = None  # end of the segment being timed (Karn: cleared on retransmission)
        self.rtt_time = 0.0
        self.rto_retries = 0  # consecutive timeouts of the same segment
        self.retransmissions = 0  # total segments retransmitted
        self.rtx_next: int | None = None  # go-back-N pointer after a timeout: next sequence to resend
        self.dupacks = 0
        self.in_recovery = False
        self.recover = self.iss  # RFC 6582 "recover": snd_nxt when recovery began
        self.high_rxt = self.iss  # RFC 6675 HighRxt
        self.recovery_inflation = 0  # RFC 6582 window inflation by duplicate ACKs (bytes)
        self.fast_retransmit_due = False
        self.progress_time = 0.0  # last time SND.UNA advanced or the flight began (TCP_USER_TIMEOUT)
        self.soft_error = 0  # last ICMP soft error, reported if the connection then times out
        self.last_data_sent: float | None = None  # when new data last left (RFC 5681 4.1 idle restart)

        # Timers: absolute deadlines or None.
        self.rto_deadline: float | None = None
        self.delack_deadline: float | None = None
        self.persist_deadline: float | None = None
        self.keepalive_deadline: float | None = None
        self.close_deadline: float | None = None  # TIME_WAIT or orphaned FIN_WAIT2
        self.persist_backoff = 0
        self.probes_out = 0
        self.syn_retries = 0
        self.syn_sent_time = 0.0
        self.last_received = 0.0

        # Socket options mirrored here because they change protocol behaviour.
        self.nodelay = not config.nagle
        self.keepalive = False
        self.keepalive_time = config.keepalive_time
        self.keepalive_intvl = config.keepalive_intvl
        self.keepalive_probes = config.keepalive_probes
        self.user_timeout = config.user_timeout
        self.max_segment: int | None = None  # TCP_MAXSEG clamp on the MSS we send

        self.error = 0  # errno the connection ended with (0: none)
        self.outbox: list[TcpSegment] = []

    # ------------------------------------------------------------------ helpers

    def trace(self, name: str, now: float, **fields: object) -> None:
        if self.trace_sink is not None:
            self.trace_sink(
                TraceEvent(
                    name, now, self.local_ip, self.local_port, self.remote_ip, self.remote_port, fields
                )
            )

    def set_state(self, new: TcpState, now: float) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        self.trace(INET_SOCK_SET_STATE, now, oldstate=old.value, newstate=new.value)
        if self.on_state_change is not None:
            self.on_state_change(self, old, new)

    def move(self, event: str, now: float) -> None:
        """Take the state table's transition for `event` (state.py's TRANSITIONS)."""
        self.set_state(next_state(self.state, event), now)

    def tsval(self, now: float) -> int:
        """Our timestamp clock: milliseconds plus a per-connection random offset (Linux, RFC 7323 5.4)."""
        return (int(now * 1000) + self.ts_offset) & SEQ_MASK

    @property
    def send_mss(self) -> int:
        mss = self.negotiated.send_mss
        return min(mss, self.max_segment) if self.max_segment else mss

    @property
    def rcv_wnd(self) -> int:
        """The receive window as last advertised (RCV.WND), measured from RCV.NXT."""
        return max(0, seq_sub(self.rcv_adv, self.rcv_nxt))

    def free_receive_space(self) -> int:
        return max(0, self.rcvbuf - len(self.recv_buffer))

    # ------------------------------------------------------------------ opens

    def open_active(self, now: float) -> None:
        """connect(): send a SYN and enter SYN_SENT."""
        self.move("active_open", now)
        self.syn_sent_time = now
        self.progress_time = now
        self.send_syn(now)

    def open_passive(self, syn: TcpSegment, now: float) -> None:
        """A listener accepted `syn` into its SYN queue: enter SYN_RECV and answer with a SYN-ACK."""
        self.passive = True
        self.state = S.LISTEN
        self.irs = syn.seq
        self.rcv_nxt = seq_add(syn.seq, 1)
        self.rcv_adv = self.rcv_nxt
        self.adopt_options(syn, now)
        self.snd_wnd = syn.window  # never scaled in a SYN (RFC 7323 2.2)
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1, self.snd_wl2 = syn.seq, self.iss
        self.last_received = now
        self.move("rcv_syn", now)
        self.syn_sent_time = now
        self.progress_time = now
        self.send_syn(now)

    def open_from_cookie(self, ack: TcpSegment, peer_options: TcpOptions, now: float) -> None:
        """A valid SYN cookie came back: the handshake completed without a SYN queue entry.

        The ISN was the cookie (ack - 1), the peer's ISN is seq - 1, and the options are what the cookie
        (and the timestamp echo) could carry.
        """
        self.passive = True
        self.state = S.LISTEN
        self.irs = seq_add(ack.seq, -1)
        self.rcv_nxt = ack.seq
        self.syn_window = min(self.free_receive_space(), 0xFFFF)
        self.rcv_adv = seq_add(self.rcv_nxt, self.syn_window)
        remembered_syn = TcpSegment(ack.src_port, ack.dst_port, self.irs, 0, TcpFlags.SYN, 0, peer_options)
        self.adopt_options(remembered_syn, now)
        self.snd_una = self.snd_nxt = self.snd_sml = ack.ack
        self.snd_wnd = ack.window << self.negotiated.snd_wscale
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1, self.snd_wl2 = ack.seq, ack.ack
        self.last_received = now
        self.last_ack_sent = self.rcv_nxt
        self.move("rcv_syn", now)
        self.move("rcv_ack", now)

    def adopt_options(self, syn: TcpSegment, now: float) -> None:
        self.negotiated = negotiate(self.config, self.mtu, syn.options)
        if self.negotiated.timestamps and syn.options.timestamp is not None:
            self.ts_recent = syn.options.timestamp[0]
            self.ts_recent_set = True
        self.cc.set_mss(self.send_mss)
        self.rcv_mss = min(self.negotiated.our_mss, 536)

    # ------------------------------------------------------------------ user calls

    def send(self, data: bytes | memoryview) -> int:
        """Queue as much of `data` as the send buffer takes; the caller checks the state first.

        The buffer keeps its own copy, since the caller may reuse a bytearray, except of a byte view over
        an immutable bytes object, which nobody can change: that is kept as it is (no copy per write)."""
        room = self.sndbuf - len(self.send_buffer)
        if room <= 0:
            return 0
        taken = data if len(data) <= room else data[:room]
        if not (type(taken) is memoryview and type(taken.obj) is bytes and taken.format == "B"
                and taken.c_contiguous):
            taken = bytes(taken)
        self.send_buffer.append(taken)
        return len(taken)

    @property
    def send_space(self) -> int:
        return self.sndbuf - len(self.send_buffer)

    def recv(self, limit: int) -> bytes:
        data = self.recv_buffer.read(limit)
        if self.rcv_up is not None:
            forget_passed_mark(self)
        if data and self.state in RECEIVES_DATA:
            self.maybe_window_update()
        return data

    def shutdown_write(self, now: float) -> None:
        """shutdown(SHUT_WR) / the sending half of close(): a FIN follows the queued data."""
        if self.fin_requested:
            return
        if self.state is S.SYN_SENT:
            self.move("close", now)
            return
        self.fin_requested = True
        if self.state in (S.ESTABLISHED, S.CLOSE_WAIT):
            self.move("close", now)
        # In SYN_RECV the FIN waits for ESTABLISHED (RFC 9293 3.10.4).

    def close(self, now: float, *, linger_abort: bool = False) -> None:
        """close(): the socket is gone.

        Linux (and RFC 2525 2.17): unread received data, or SO_LINGER with a zero timeout, turns the close
        into an abort with RST; otherwise the FIN is sent after the queued data.
        """
        self.orphaned = True
        unread = len(self.recv_buffer) > 0 or not self.reassembly.is_empty
        if self.state in (S.CLOSE, S.LISTEN):
            return
        if unread or linger_abort:
            self.abort(now)
            return
        self.shutdown_write(now)
        if self.state is S.FIN_WAIT2:
            self.close_deadline = now + self.config.fin_timeout

    def abort(self, now: float, error: int = 0) -> None:
        """ABORT (RFC 9293 3.10.5): send RST in the states that have a peer, then forget everything."""
        if (self.state in SYNCHRONIZED and self.state is not S.TIME_WAIT) or self.state is S.SYN_RECV:
            # Linux's active reset carries ACK with SEQ=SND.NXT.
            self.send_reset(self.snd_nxt, self.rcv_nxt, now, with_ack=True)
        self.terminate(now, error)

    def terminate(self, now: float, error: int) -> None:
        """Enter CLOSED: drop the buffers that nobody can use and stop every timer."""
        if error and not self.error:
            self.error = error
        self.reassembly = ReassemblyQueue(limit=self.rcvbuf)
        self.send_buffer = SendBuffer()
        self.stop_timers()
        if self.state is not S.CLOSE:
            self.set_state(S.CLOSE, now)

    # ------------------------------------------------------------------ SEGMENT ARRIVES (RFC 9293 3.10.7)

    def on_segment(self, seg: TcpSegment, now: float) -> None:
        if self.trace_segments:
            self.trace(TCP_SEGMENT_IN, now, **segment_fields(seg))
        state = self.state
        if state is S.CLOSE:
            return
        if state is S.SYN_SENT:
            self.arrives_in_syn_sent(seg, now)
            return
        self.arrives_synchronized(seg, now)

    def arrives_in_syn_sent(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 3.10.7.3."""
        flags = int(seg.flags)
        # First: the ACK must acknowledge our SYN.
        if flags & ACK and (seq_le(seg.ack, self.iss) or seq_gt(seg.ack, self.snd_nxt)):
            if not flags & RST:
                self.send_reset(seg.ack, 0, now, with_ack=False)
            return
        ack_ok = bool(flags & ACK)
        # Second: RST.  RFC 5961 3.2: only a RST acknowledging the SYN counts; without ACK it is ignored.
        if flags & RST:
            if ack_ok:
                self.trace(TCP_RECEIVE_RESET, now)
                self.counters["AttemptFails"] += 1
                self.terminate(now, errno.ECONNREFUSED)
            return
        # Fourth: SYN.
        if not flags & SYN:
            return
        self.irs = seg.seq
        self.rcv_nxt = seq_add(seg.seq, 1)
        self.rcv_adv = seq_add(self.rcv_nxt, self.syn_window)  # the peer may fill what our SYN offered
        self.adopt_options(seg, now)
        self.last_received = now
        if ack_ok:
            self.snd_una = seg.ack
            # The SYN-ACK's window is never scaled (RFC 7323 2.2).
            self.snd_wnd = seg.window
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
            self.sample_handshake_rtt(seg, now)
            self.rto_deadline = None
            self.syn_retries = 0
            self.move("rcv_syn_ack", now)
            self.ack_now = True
            # Data or FIN riding on the SYN-ACK is processed like text in ESTABLISHED (sixth step on).
            if len(seg.payload) or flags & FIN:
                self.process_text_and_fin(seg, seq_add(seg.seq, 1), now)
            return
        # Simultaneous open: SYN without ACK.  Answer with SYN-ACK from SYN_RECV.
        self.snd_wnd = seg.window
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = seg.seq
        self.move("rcv_syn", now)
        self.rto_deadline = None
        self.send_syn(now)

    def acceptable(self, seg: TcpSegment) -> bool:
        """The four-case acceptability test of RFC 9293 3.10.7.4 against the window we advertised.

        Linux: a segment starting exactly at RCV.NXT passes even when the window is zero, so its ACK and RST
        are processed (the RFC's "MUST process ACK/RST in a zero window") and its text is dropped later.
        """
        rcv_nxt = self.rcv_nxt
        wnd = self.rcv_wnd
        if seg.seq == rcv_nxt:
            return True
        if wnd == 0:
            return False
        end = seq_add(rcv_nxt, wnd)
        if seq_between(rcv_nxt, seg.seq, end):
            return True
        seg_len = segment_length(seg)
        return seg_len > 0 and seq_between(rcv_nxt, seq_add(seg.seq, seg_len - 1), end)

    def arrives_synchronized(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 3.10.7.4 for SYN_RECV and the synchronized states, steps in the RFC's order."""
        flags = int(seg.flags)
        state = self.state
        if state is S.SYN_RECV and flags & SYN and not flags & (ACK | RST) and seg.seq == self.irs:
            # Linux: the peer retransmitted its SYN (our SYN-ACK was lost): answer with the SYN-ACK again.
            self.send_syn(now)
            return
        if (
            state is S.TIME_WAIT
            and flags & FIN
            and not flags & RST
            and seq_add(seg.seq, segment_length(seg)) == self.rcv_nxt
        ):
            # The peer retransmitted its FIN: our last ACK was lost.  ACK again and restart 2*MSL
            # (RFC 9293 3.10.7.4; Linux tcp_timewait_state_process).
            self.ack_now = True
            self.close_deadline = now + self.config.time_wait
            return
        ts = seg.options.timestamp
        # PAWS (RFC 7323 5.3): a timestamp older than TS.Recent marks an old duplicate.
        if (
            self.negotiated.timestamps
            and ts is not None
            and not flags & RST
            and self.ts_recent_set
            and seq_lt(ts[0], self.ts_recent)
        ):
            self.counters["PAWSEstabRejected"] += 1
            self.out_of_window_ack(seg, now)
            return
        # First: sequence number.
        if not self.acceptable(seg):
            if not flags & RST:
                self.out_of_window_ack(seg, now)
            return
        self.last_received = now
        self.probes_out = 0
        # Second: RST (RFC 5961 3.2: only an exact RCV.NXT match resets; in-window ones get a challenge ACK).
        if flags & RST:
            if seg.seq != self.rcv_nxt:
                self.challenge_ack(now)
                return
            self.accept_reset(now)
            return
        # Fourth: SYN in a synchronized state (RFC 5961 4.2): challenge ACK, whatever its sequence number.
        if flags & SYN:
            if state is S.SYN_RECV and self.passive:
                # Linux (tcp_check_req): a new SYN for an embryonic connection resets it.
                self.send_reset(self.snd_nxt, self.rcv_nxt, now, with_ack=True)
                self.terminate(now, 0)
                return
            self.challenge_ack(now)
            return
        # Fifth: ACK.
        if not flags & ACK:
            return
        if ts is not None and self.negotiated.timestamps:
            self.update_ts_recent(seg, ts[0])
        if state is S.SYN_RECV:
            if not (seq_lt(self.snd_una, seg.ack) and seq_le(seg.ack, self.snd_nxt)):
                self.send_reset(seg.ack, 0, now, with_ack=False)
                return
            self.snd_una = seg.ack
            self.snd_wnd = seg.window << self.negotiated.snd_wscale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
            self.sample_handshake_rtt(seg, now)
            self.syn_retries = 0
            self.rto_deadline = None
            self.move("rcv_ack", now)
            if self.fin_requested:
                self.move("close", now)  # close() in SYN_RECV: the FIN goes out now (RFC 9293 3.10.4)
            state = self.state
        elif not self.process_ack(seg, now):
            return
        if self.state is S.CLOSE:
            return
        if flags & URG:
            note_urgent_pointer(self, seg, now)  # sixth step
        self.process_text_and_fin(seg, seg.seq, now)

    def sample_handshake_rtt(self, seg: TcpSegment, now: float) -> None:
        """The handshake's RTT: timed from our SYN (or SYN-ACK) if it was not retransmitted (Karn), or from
        the timestamp echo, which names the transmission it answers."""
        ts = seg.options.timestamp
        if self.syn_retries == 0:
            self.rtt.sample(now - self.syn_sent_time)
        elif self.negotiated.timestamps and ts is not None and ts[1]:
            elapsed = (self.tsval(now) - ts[1]) & SEQ_MASK
            if elapsed < 1 << 31:
                self.rtt.sample(elapsed / 1000.0)
        else:
            self.rtt.reset_backoff()

    def accept_reset(self, now: float) -> None:
        state = self.state
        self.trace(TCP_RECEIVE_RESET, now)
        if state in (S.ESTABLISHED, S.CLOSE_WAIT):
            self.counters["EstabResets"] += 1
        if state is S.SYN_RECV:
            # A passive entry just leaves the SYN queue (RFC 9293: "return to LISTEN"); an active one
            # (simultaneous open) was refused.
            self.counters["AttemptFails"] += 1
            self.terminate(now, 0 if self.passive else errno.ECONNREFUSED)
            return
        quiet = state in (S.CLOSING, S.LAST_ACK, S.TIME_WAIT)  # nothing left for the application to lose
        error = 0 if quiet else RESET_ERRNO.get(state, errno.ECONNRESET)
        self.terminate(now, error)

    def update_ts_recent(self, seg: TcpSegment, tsval: int) -> None:
        """RFC 7323 4.3: remember TSval of the segment that covers Last.ACK.sent."""
        if seq_ge(tsval, self.ts_recent) and seq_le(seg.seq, self.last_ack_sent):
            self.ts_recent = tsval

    def process_text_and_fin(self, seg: TcpSegment, seq: int, now: float) -> None:
        """Seventh and eighth steps: deliver text in order, queue it out of order, then the FIN."""
        payload = seg.payload
        fin = bool(int(seg.flags) & FIN)
        state = self.state
        if len(payload):
            if state not in RECEIVES_DATA:
                payload = b""  # after the peer's FIN no text can be new (RFC 9293: "ignore the text")
            elif self.orphaned and seq_gt(seq_add(seq, len(payload)), self.rcv_nxt):
                # Linux: new data for a socket the application closed is answered with RST.
                self.counters["AbortOnData"] += 1
                self.send_reset(self.snd_nxt, self.rcv_nxt, now, with_ack=True)
                self.terminate(now, 0)
                return
        if len(payload):
            self.receive_text(seq, payload, now)
            if fin and seq_gt(seq_add(seq, len(payload)), seq_add(self.rcv_nxt, self.rcv_wnd)):
                fin = False  # the FIN lies beyond the window: trimmed with the text's tail
        if fin and self.peer_fin_seq is None and state not in (S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK):
            fin_seq = seq_add(seq, len(seg.payload))
            if seq_ge(fin_seq, self.rcv_nxt):
                self.peer_fin_seq = fin_seq
                if fin_seq != self.rcv_nxt:
                    self.ack_now = True  # an out-of-order FIN: duplicate ACK at once, like out-of-order data
        if state is S.TIME_WAIT and fin:
            # A retransmitted FIN: our last ACK was lost.  ACK again and restart 2*MSL (RFC 9293 eighth step).
            self.ack_now = True
            self.close_deadline = now + self.config.time_wait
            return
        if fin and state in (S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK):
            self.ack_now = True  # a retransmitted FIN: acknowledge again
        self.consume_fin_if_ready(now)

    def receive_text(self, seq: int, payload: bytes | memoryview, now: float) -> None:
        rcv_nxt = self.rcv_nxt
        # Trim what we already have (the front) and what lies beyond the window (the tail).
        front = seq_sub(rcv_nxt, seq)
        if front > 0:
            if front >= len(payload):
                self.ack_now = True  # a pure duplicate: the peer missed our ACK (RFC 9293 / D-SACK case)
                return
            payload = memoryview(payload)[front:]
            seq = rcv_nxt
        room = seq_sub(seq_add(rcv_nxt, self.rcv_wnd), seq)
        if room <= 0:
            self.counters["TCPZeroWindowDrop"] += 1
            self.ack_now = True
            return
        if len(payload) > room:
            payload = memoryview(payload)[:room]
        self.rcv_mss = max(self.rcv_mss, min(len(payload), self.negotiated.our_mss))
        if seq == rcv_nxt:
            self.recv_buffer.append(payload)
            self.rcv_nxt = seq_add(rcv_nxt, len(payload))
            if not self.reassembly.is_empty:
                # This segment filled (part of) a gap: ACK at once (RFC 5681 4.2).
                for chunk in self.reassembly.pop_ready(self.rcv_nxt):
                    self.recv_buffer.append(chunk)
                    self.rcv_nxt = seq_add(self.rcv_nxt, len(chunk))
                self.ack_now = True
            else:
                self.bytes_since_ack += len(payload)
                # RFC 5681 4.2 / RFC 9293 3.8.6.3: ACK at least every second full-sized segment -- as it
                # arrives, not at the next poll, so a burst delivered at once still gets one ACK per two
                # segments (the sender's ACK clock, and robustness against a lost ACK, depend on it).
                if self.bytes_since_ack >= 2 * self.rcv_mss:
                    self.emit(self.snd_nxt, ACK_FLAG, b"", now)
                elif self.delack_deadline is None:
                    self.delack_deadline = now + self.config.delayed_ack
        else:
            # Out of order: keep it for later and send a duplicate ACK (with SACK blocks) at once.
            if not self.reassembly.add(seq, payload, rcv_nxt):
                self.counters["TCPOFODrop"] += 1
            else:
                self.counters["TCPOFOQueue"] += 1
            # One duplicate ACK per out-of-order segment, even when several arrive before the next poll:
            # the sender counts them to detect the loss (RFC 5681 4.2, 3.2).
            self.emit(self.snd_nxt, ACK_FLAG, b"", now)

    def consume_fin_if_ready(self, now: float) -> None:
        if self.peer_fin_seq is None or self.eof or self.peer_fin_seq != self.rcv_nxt:
            return
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self.eof = True
        self.ack_now = True
        state = self.state
        if state in (S.SYN_RECV, S.ESTABLISHED):
            self.move("rcv_fin", now)
        elif state is S.FIN_WAIT1:
            if self.fin_sent and self.snd_una == self.snd_nxt:
                self.move("rcv_fin_ack_of_fin", now)
                self.enter_time_wait(now)
            else:
                self.move("rcv_fin", now)
        elif state is S.FIN_WAIT2:
            self.move("rcv_fin", now)
            self.enter_time_wait(now)

    def enter_time_wait(self, now: float) -> None:
        """TIME_WAIT holds the 4-tuple for 2*MSL so old duplicates die; every other timer stops."""
        self.rto_deadline = self.persist_deadline = self.keepalive_deadline = None
        self.close_deadline = now + self.config.time_wait
        self.send_buffer = SendBuffer()

    def out_of_window_ack(self, seg: TcpSegment, now: float) -> None:
        """Answer an unacceptable segment with an ACK; Linux rate-limits this for segments without data."""
        if len(seg.payload) == 0 and now - self.last_oow_ack < OUT_OF_WINDOW_ACK_INTERVAL:
            self.counters["TCPACKSkippedSeq"] += 1
            return
        self.last_oow_ack = now
        self.ack_now = True

    def challenge_ack(self, now: float) -> None:
        """RFC 5961: make the peer prove it is in sync by sending our current ACK."""
        if now - self.last_oow_ack < OUT_OF_WINDOW_ACK_INTERVAL:
            self.counters["TCPACKSkippedChallenge"] += 1
            return
        self.last_oow_ack = now
        self.counters["TCPChallengeACK"] += 1
        self.ack_now = True

    # ------------------------------------------------------------ ICMP (RFC 9293 3.9.1.1, RFC 1122 4.2.3.9)

    def on_icmp(self, kind: str, code: int, seq: int, mtu: int | None, now: float) -> None:
        """An ICMP error quoting one of our segments.

        Linux: the quoted sequence number must lie in SND.UNA..SND.NXT (RFC 5927 blind-attack check);
        "fragmentation needed" lowers the MSS and resends at once; in SYN_SENT any destination-unreachable
        or time-exceeded aborts the attempt (tcp_v4_err), in other states errors are soft: remembered and
        reported only if the connection later times out (RFC 1122 4.2.3.9 allows this).
        """
        if self.state in (S.CLOSE, S.LISTEN, S.TIME_WAIT):
            return
        if not (seq_ge(seq, self.snd_una) and seq_le(seq, self.snd_nxt)):
            self.counters["OutOfWindowIcmps"] += 1
            return
        if kind == "frag_needed":
            if mtu is not None and mtu >= 68 and mtu < self.mtu:
                self.mtu = mtu
                self.negotiated.peer_mss = min(self.negotiated.peer_mss, mss_for_mtu(mtu))
                self.cc.set_mss(self.send_mss)
                if self.state in SYNCHRONIZED and self.snd_una != self.snd_nxt:
                    self.rtx_next = self.snd_una  # resend what the smaller path MTU could not carry
            return
        err = icmp_errno(kind, code)
        if err is None:
            return
        if self.state is S.SYN_RECV and self.passive:
            # Linux (tcp_req_err): a fatal error drops the SYN queue entry; others are ignored.
            if kind == "unreachable" and code in FATAL_UNREACHABLE:
                self.terminate(now, 0)
            return
        if self.state is S.SYN_SENT:
            self.counters["AttemptFails"] += 1
            self.terminate(now, err)
            return
        self.soft_error = err

    # ------------------------------------------------------------------ inspection

    def snapshot(self) -> ConnectionSnapshot:
        holes: tuple[tuple[int, int], ...] = ()
        if self.negotiated.sack and self.snd_una != self.snd_nxt:
            holes = tuple(self.scoreboard.holes(self.snd_una, self.snd_nxt))
        return ConnectionSnapshot(
            state=self.state.value,
            local_ip=self.local_ip,
            local_port=self.local_port,
            remote_ip=self.remote_ip,
            remote_port=self.remote_port,
            snd_una=self.snd_una,
            snd_nxt=self.snd_nxt,
            snd_wnd=self.snd_wnd,
            rcv_nxt=self.rcv_nxt,
            rcv_wnd=self.rcv_wnd,
            cwnd=self.cc.cwnd,
            ssthresh=self.cc.ssthresh,
            srtt=self.rtt.srtt,
            rttvar=self.rtt.rttvar,
            rto=self.rtt.rto,
            retransmissions=self.retransmissions,
            sack_holes=holes,
            send_queue=len(self.send_buffer),
            recv_queue=len(self.recv_buffer),
            mss=self.send_mss,
            snd_wscale=self.negotiated.snd_wscale,
            rcv_wscale=self.negotiated.rcv_wscale,
            sack=self.negotiated.sack,
            timestamps=self.negotiated.timestamps,
            congestion=self.cc.name,
            in_recovery=self.in_recovery,
        )


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
