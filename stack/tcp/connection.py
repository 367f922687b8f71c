"""One TCP connection: the transmission control block of RFC 9293 3.3.1 and the components it owns.

Bytes in, segments out, like h11's `_connection.py`: `on_segment(segment, now)`, `on_icmp(...)` and the user
calls only change state; `poll(now)` runs the timers that are due and returns the segments to transmit;
`next_deadline()` says when `poll` must run again.  Nothing here reads a clock or touches a socket.

The TCB holds the connection variables, named as in RFC 9293 (snd_una, snd_nxt, rcv_nxt, ...), and owns
its parts: the send and receive buffers, the out-of-order queue, the RTT estimator, congestion control
(`cc`), loss recovery (`recovery`), the timers (`timers`) and the socket options it shares with its
socket (`options`).  The work is done by functions and components that take the connection explicitly:
`arrival` (SEGMENT ARRIVES), `output` (what to send), `recovery.LossRecovery` (ACKs and losses),
`timers.Timers`, `urgent`.  None of them imports this module at run time; this module imports them.

Linux choices taken where the RFCs allow several behaviours are marked "Linux:" in the docstrings.
"""

from __future__ import annotations

from collections.abc import Callable

from stack.tcp import arrival, output
from stack.tcp.buffers import ReceiveBuffer, SendBuffer
from stack.tcp.config import TcpConfig
from stack.tcp.congestion import create_congestion_control
from stack.tcp.cwnd_use import CwndUse
from stack.tcp.options import Negotiated, mss_for_mtu, negotiate
from stack.tcp.reassembly import ReassemblyQueue
from stack.tcp.recovery import LossRecovery
from stack.tcp.rtt import RttEstimator, SendTimes
from stack.tcp.seq import SEQ_MASK, seq_add, seq_sub
from stack.tcp.snapshot import ConnectionSnapshot
from stack.tcp.sockopts import SocketOptions
from stack.tcp.state import RECEIVES_DATA, SYNCHRONIZED, TcpState, next_state
from stack.tcp.timers import Timers
from stack.tcp.trace import INET_SOCK_SET_STATE, TraceEvent, TraceSink
from stack.tcp.urgent import forget_passed_mark
from stack.wire.tcp import TcpFlags, TcpOptions, TcpSegment

S = TcpState
StateChange = Callable[["Connection", TcpState, TcpState], None]


class Connection:
    """The transmission control block (RFC 9293 3.3.1), its components, and the events that change it."""

    def __init__(
        self,
        *,
        config: TcpConfig,
        options: SocketOptions,
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
        self.options = options
        self.local_ip, self.local_port = local_ip, local_port
        self.remote_ip, self.remote_port = remote_ip, remote_port
        self.key = (local_ip, local_port, remote_ip, remote_port)  # its entry in the established table
        self.mtu = mtu
        self.counters = counters
        self.trace_sink = trace
        # Per-segment events (tcp_segment_in/out, tcp_probe) cost a dict per segment: built only for a sink
        # that wants them, not for one that keeps state changes and retransmissions only.
        self.trace_segments = trace is not None and trace_segments
        self.state = S.CLOSE
        self.passive = False  # created by a listener (SYN_RECV entry of a SYN queue)
        self.orphaned = False  # the application closed its socket; nobody will read or write
        self.on_state_change: StateChange | None = None
        # Called once R1 retransmissions of one segment went unanswered (timers.py): the layer's route advice.
        self.on_negative_advice: Callable[[Connection, float], None] | None = None

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
        self.fin_requested = False  # the application shut down writing: a FIN follows the data
        self.fin_sent = False

        # Receive sequence space.
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # right edge of the window last advertised (never moves left: RFC 9293 3.8.6.2.2)
        self.rcvbuf = options.rcvbuf  # fixed when the connection starts, as Linux sizes its receive space
        self.recv_buffer = ReceiveBuffer()
        self.reassembly = ReassemblyQueue(limit=self.rcvbuf)
        self.peer_fin_seq: int | None = None  # sequence number of the peer's FIN once seen, even out of order
        self.eof = False  # the peer's FIN has been consumed: recv() returns b""
        self.rcv_up: int | None = None  # RCV.UP: first octet after urgent data, while unread (urgent.py)
        self.rcv_mss = min(536, mss_for_mtu(mtu))  # largest segment the peer sent (Linux tcp_measure_rcv_mss)
        self.bytes_since_ack = 0
        self.ack_now = False
        self.last_oow_ack = -1e18

        # Options negotiated on the handshake.
        self.negotiated = Negotiated(peer_mss=config.default_mss, our_mss=mss_for_mtu(mtu))
        self.ts_offset = ts_offset & SEQ_MASK
        self.ts_recent = 0
        self.ts_recent_set = False
        self.last_ack_sent = 0
        self.syn_window = 0  # the window our SYN or SYN-ACK offered (unscaled)

        # Retransmission, congestion and loss recovery.
        self.rtt = RttEstimator(
            initial_rto=config.initial_rto, min_rto=config.min_rto, max_rto=config.max_rto,
            min_rto_on_variance=config.min_rto_on_variance,
        )
        self.cc = create_congestion_control(options.congestion, self.negotiated.send_mss,
                                            config.initial_window)
        self.recovery = LossRecovery(self.iss)
        self.cwnd_use = CwndUse(self.iss)  # whether cwnd limits the sender, so whether it may grow
        self.send_times = SendTimes()  # when what is in flight first left (Karn: retransmissions marked)
        self.retransmissions = 0  # total segments retransmitted
        self.progress_time = 0.0  # last time SND.UNA advanced or the flight began (TCP_USER_TIMEOUT)
        self.soft_error = 0  # last ICMP soft error, reported if the connection then times out
        self.last_data_sent: float | None = None  # when new data last left (RFC 5681 4.1 idle restart)

        self.timers = Timers()
        self.persist_backoff = 0
        self.probes_out = 0
        self.syn_retries = 0
        self.syn_sent_time = 0.0
        self.last_received = 0.0

        self.error = 0  # errno the connection ended with (0: none)
        self.outbox: list[TcpSegment] = []

    # ------------------------------------------------------------------ the sans-IO surface

    def on_segment(self, seg: TcpSegment, now: float) -> None:
        """A segment for this connection arrived (SEGMENT ARRIVES)."""
        arrival.segment_arrives(self, seg, now)

    def on_icmp(self, kind: str, code: int, seq: int, mtu: int | None, now: float) -> None:
        """An ICMP error quoting one of our segments arrived."""
        arrival.icmp_error_arrives(self, kind, code, seq, mtu, now)

    def poll(self, now: float) -> list[TcpSegment]:
        """Run what is due at `now` and return the segments to transmit."""
        self.timers.run(self, now)
        return output.flush(self, now)

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline(self)

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
        # _value_, not .value: the documented attribute behind Enum's value property, read without a call.
        self.trace(INET_SOCK_SET_STATE, now, oldstate=old._value_, newstate=new._value_)
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
        maxseg = self.options.maxseg
        return min(mss, maxseg) if maxseg else mss

    @property
    def rcv_wnd(self) -> int:
        """The receive window as last advertised (RCV.WND), measured from RCV.NXT."""
        return max(0, seq_sub(self.rcv_adv, self.rcv_nxt))

    def free_receive_space(self) -> int:
        return max(0, self.rcvbuf - len(self.recv_buffer))

    @property
    def send_space(self) -> int:
        return self.options.sndbuf - len(self.send_buffer)

    # ------------------------------------------------------------------ opens

    def open_active(self, now: float) -> None:
        """connect(): send a SYN and enter SYN_SENT."""
        self.move("active_open", now)
        self.syn_sent_time = now
        self.progress_time = now
        output.send_syn(self, now)

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
        output.send_syn(self, now)

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
        """Settle the options from the peer's SYN (or SYN-ACK) against ours."""
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
        room = self.send_space
        if room <= 0:
            return 0
        taken = data if len(data) <= room else data[:room]
        if not (type(taken) is memoryview and type(taken.obj) is bytes and taken.format == "B"
                and taken.c_contiguous):
            taken = bytes(taken)
        self.send_buffer.append(taken)
        return len(taken)

    def recv(self, limit: int) -> bytes:
        data = self.recv_buffer.read(limit)
        if self.rcv_up is not None:
            forget_passed_mark(self)
        if data and self.state in RECEIVES_DATA:
            output.maybe_window_update(self)
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
            self.timers.close = now + self.config.fin_timeout

    def abort(self, now: float, error: int = 0) -> None:
        """ABORT (RFC 9293 3.10.5): send RST in the states that have a peer, then forget everything."""
        if (self.state in SYNCHRONIZED and self.state is not S.TIME_WAIT) or self.state is S.SYN_RECV:
            # Linux's active reset carries ACK with SEQ=SND.NXT.
            output.send_reset(self, self.snd_nxt, self.rcv_nxt, now, with_ack=True)
        self.terminate(now, error)

    def terminate(self, now: float, error: int) -> None:
        """Enter CLOSE: drop the buffers that nobody can use and stop every timer."""
        if error and not self.error:
            self.error = error
        self.reassembly = ReassemblyQueue(limit=self.rcvbuf)
        self.send_buffer = SendBuffer()
        self.timers.stop()
        self.ack_now = False
        if self.state is not S.CLOSE:
            self.set_state(S.CLOSE, now)

    def enter_time_wait(self, now: float) -> None:
        """TIME_WAIT holds the 4-tuple for 2*MSL so old duplicates die; every other timer stops."""
        timers = self.timers
        timers.rto = timers.persist = timers.keepalive = None
        timers.close = now + self.config.time_wait
        self.send_buffer = SendBuffer()

    def options_changed(self, name: str) -> None:
        """setsockopt changed the option `name` (a `SocketOptions` field) of the socket driving us."""
        if name in ("keepalive", "keepidle"):
            # Re-armed from the last segment received with the new idle time at the next event (Linux's
            # TCP_KEEPIDLE restarts the timer at keepalive_time - elapsed), or stopped with SO_KEEPALIVE off.
            self.timers.keepalive = None
        elif name == "congestion" and self.cc.name != self.options.congestion:
            cc = create_congestion_control(self.options.congestion, self.send_mss, self.config.initial_window)
            cc.cwnd, cc.ssthresh = self.cc.cwnd, self.cc.ssthresh  # the window carries over
            self.cc = cc

    # ------------------------------------------------------------------ inspection

    def snapshot(self) -> ConnectionSnapshot:
        holes: tuple[tuple[int, int], ...] = ()
        if self.negotiated.sack and self.snd_una != self.snd_nxt:
            holes = tuple(self.recovery.scoreboard.holes(self.snd_una, self.snd_nxt))
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
            in_recovery=self.recovery.in_recovery,
        )

