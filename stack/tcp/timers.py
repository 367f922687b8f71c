"""The connection's timers: retransmission, delayed ACK, persist, keepalive, TIME_WAIT and FIN_WAIT2.

`Timers` is a component of the connection: five absolute deadlines (None when stopped).  `run(conn, now)`
fires the due ones and `next_deadline(conn)` is the earliest, so a host sleeps exactly until something has
to happen.  What a timer does when it fires (retransmit, probe, give up) is here too; the connection is
passed in explicitly.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from stack.deadlines import AT_ONCE, earliest
from stack.tcp import output
from stack.tcp.seq import seq_add, seq_sub
from stack.tcp.state import TcpState
from stack.tcp.trace import TCP_RTO_FIRE
from stack.wire.tcp import TcpFlags

if TYPE_CHECKING:
    from stack.tcp.connection import Connection

S = TcpState
#: States in which keepalive probes make sense (data could flow in at least one direction).
KEEPALIVE_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT1, S.FIN_WAIT2})
#: States in which unacknowledged data or a FIN can be retransmitted or probed for.
RETRANSMITTING_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT1, S.CLOSING, S.LAST_ACK})
PSH_ACK = TcpFlags.PSH | TcpFlags.ACK


class Timers:
    """Deadlines of one connection; each is an absolute time or None (stopped)."""

    __slots__ = ("close", "delayed_ack", "keepalive", "persist", "rto")

    def __init__(self) -> None:
        self.rto: float | None = None  # retransmission timeout (RFC 6298)
        self.delayed_ack: float | None = None  # an ACK held back for a second segment (RFC 9293 3.8.6.3)
        self.persist: float | None = None  # zero-window probe (RFC 9293 3.8.6.1)
        self.keepalive: float | None = None  # keepalive probe (RFC 9293 3.8.4), with SO_KEEPALIVE
        self.close: float | None = None  # end of TIME_WAIT, or of an orphaned FIN_WAIT2

    def next_deadline(self, conn: Connection) -> float | None:
        """The earliest deadline; `AT_ONCE` while an ACK or a fast retransmit waits to be sent."""
        if conn.ack_now or conn.recovery.fast_retransmit_due:
            return AT_ONCE
        rack = conn.recovery.rack.next_deadline() if conn.state in RETRANSMITTING_STATES else None
        return earliest(self.rto, self.delayed_ack, self.persist, self.keepalive, self.close, rack)

    def stop(self) -> None:
        self.rto = self.delayed_ack = self.persist = self.keepalive = self.close = None

    def run(self, conn: Connection, now: float) -> None:
        """Fire every timer due at `now`."""
        rack = conn.recovery.rack  # RACK's reorder timer and the tail loss probe (RFC 8985)
        if rack.reorder_deadline is not None and now >= rack.reorder_deadline:
            rack.reorder_deadline = None
            conn.recovery.on_reorder_timer(conn, now)
        if rack.probe_deadline is not None and now >= rack.probe_deadline:
            rack.probe_deadline = None
            conn.recovery.on_probe_timer(conn, now)
        if self.rto is not None and now >= self.rto:
            self.rto = None
            self.on_rto_timer(conn, now)
        if self.delayed_ack is not None and now >= self.delayed_ack:
            self.delayed_ack = None
            conn.ack_now = True
        if self.persist is not None and now >= self.persist:
            self.persist = None
            self.on_persist_timer(conn, now)
        if conn.options.keepalive:
            if self.keepalive is None and conn.state in KEEPALIVE_STATES:
                self.keepalive = conn.last_received + conn.options.keepidle
            if self.keepalive is not None and now >= self.keepalive:
                self.keepalive = None
                self.on_keepalive_timer(conn, now)
        if self.close is not None and now >= self.close:
            self.close = None
            if conn.state in (S.TIME_WAIT, S.FIN_WAIT2):
                conn.terminate(now, 0)

    def timed_out(self, conn: Connection, now: float) -> None:
        """Give up: Linux reports the last ICMP soft error if there was one, else ETIMEDOUT (tcp_write_err).
        No RST is sent: the peer is presumed unreachable."""
        if conn.state is S.SYN_SENT:
            conn.counters["AttemptFails"] += 1
        conn.terminate(now, conn.soft_error or errno.ETIMEDOUT)

    def on_rto_timer(self, conn: Connection, now: float) -> None:
        conn.trace(TCP_RTO_FIRE, now, rto=conn.rtt.rto, retries=conn.recovery.rto_retries)
        if conn.state in (S.SYN_SENT, S.SYN_RECV):
            limit = conn.config.syn_retries if conn.state is S.SYN_SENT else conn.config.synack_retries
            if conn.options.user_timeout is not None and not conn.passive:
                # Linux (tcp_write_timeout): TCP_USER_TIMEOUT bounds a connect() too, so the application
                # can set R2 for SYNs as for data (RFC 9293 MUST-21, MUST-22).
                expired = now - conn.syn_sent_time >= conn.options.user_timeout
            else:
                expired = conn.syn_retries >= limit
            if expired:
                if conn.passive:
                    conn.terminate(now, 0)  # Linux drops the SYN queue entry silently
                else:
                    self.timed_out(conn, now)
                return
            conn.syn_retries += 1
            if conn.syn_retries == conn.config.retries1:
                self.give_negative_advice(conn, now)  # the same mechanism for SYNs (MUST-22)
            conn.rtt.backoff()
            output.send_syn(conn, now)
            return
        if conn.snd_una == conn.snd_nxt or conn.state not in RETRANSMITTING_STATES:
            return
        if conn.options.user_timeout is not None:
            expired = now - conn.progress_time >= conn.options.user_timeout
        else:
            expired = conn.recovery.rto_retries >= conn.config.retries2
        if expired:
            self.timed_out(conn, now)
            return
        conn.recovery.on_retransmission_timeout(conn, now)
        if conn.recovery.rto_retries == conn.config.retries1:
            self.give_negative_advice(conn, now)

    def give_negative_advice(self, conn: Connection, now: float) -> None:
        """RFC 9293 3.8.3 (MUST-20): R1 retransmissions went unanswered; tell IP (through the layer)."""
        conn.counters["TCPNegativeAdvice"] += 1
        if conn.on_negative_advice is not None:
            conn.on_negative_advice(conn, now)

    def on_persist_timer(self, conn: Connection, now: float) -> None:
        unsent = len(conn.send_buffer) - seq_sub(conn.snd_nxt, conn.snd_una)
        nothing_to_probe = conn.fin_sent or (unsent <= 0 and not conn.fin_requested)
        if nothing_to_probe or conn.state not in RETRANSMITTING_STATES:
            return
        # Linux (tcp_probe_timer): unanswered probes count against retries2 / the user timeout.
        if conn.options.user_timeout is not None:
            expired = conn.probes_out > 0 and now - conn.progress_time >= conn.options.user_timeout
        else:
            expired = conn.probes_out >= conn.config.retries2
        if expired:
            self.timed_out(conn, now)
            return
        offset = seq_sub(conn.snd_nxt, conn.snd_una)
        room = conn.snd_wnd - offset
        if room > 0 and unsent > 0:
            # The window opened a little (below the SWS threshold): send what fits (Linux tcp_write_wakeup).
            length = min(room, unsent, output.payload_limit(conn))
            payload = conn.send_buffer.peek(offset, length)
            output.emit(conn, conn.snd_nxt, PSH_ACK, payload, now)
            conn.snd_nxt = seq_add(conn.snd_nxt, length)
            output.arm_after_send(conn, offset, now)
            return
        output.send_window_probe(conn, now)
        conn.counters["TCPWinProbe"] += 1
        conn.probes_out += 1
        conn.persist_backoff += 1
        self.persist = now + output.persist_interval(conn)

    def on_keepalive_timer(self, conn: Connection, now: float) -> None:
        if conn.state not in KEEPALIVE_STATES:
            return
        idle = now - conn.last_received
        busy = conn.snd_una != conn.snd_nxt or len(conn.send_buffer) > 0
        if busy or (conn.probes_out == 0 and idle < conn.options.keepidle):
            # Activity since the timer was set, or data in flight (the RTO watches the peer then).
            base = conn.last_received if not busy else now
            self.keepalive = base + conn.options.keepidle
            conn.probes_out = 0
            return
        if conn.probes_out >= conn.options.keepcnt:
            # Linux sends a RST when it gives up on a silent peer (tcp_keepalive_timer).
            output.send_reset(conn, conn.snd_nxt, conn.rcv_nxt, now, with_ack=True)
            conn.counters["TCPKeepAliveTimeouts"] += 1
            self.timed_out(conn, now)
            return
        output.send_window_probe(conn, now)
        conn.probes_out += 1
        self.keepalive = now + conn.options.keepintvl
