"""The connection's timers: retransmission, delayed ACK, persist, keepalive, TIME_WAIT and FIN_WAIT2.

Timers are absolute deadlines on the connection (None when stopped); `run_timers(now)` fires the due ones
and `next_deadline()` is the earliest, so a host sleeps exactly until something has to happen.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from stack.tcp.seq import seq_add, seq_sub
from stack.tcp.state import TcpState
from stack.tcp.trace import TCP_RTO_FIRE
from stack.wire.tcp import TcpFlags

if TYPE_CHECKING:
    from stack.tcp.connection import Connection

S = TcpState
#: States in which keepalive probes make sense (data could flow in at least one direction).
KEEPALIVE_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT1, S.FIN_WAIT2})


class TimersMixin:
    def next_deadline(self: Connection) -> float | None:
        earliest: float | None = None
        for deadline in (
            self.rto_deadline,
            self.delack_deadline,
            self.persist_deadline,
            self.keepalive_deadline,
            self.close_deadline,
        ):
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        if self.ack_now or self.fast_retransmit_due:
            return 0.0 if earliest is None else min(earliest, 0.0)
        return earliest

    def stop_timers(self: Connection) -> None:
        self.rto_deadline = self.delack_deadline = self.persist_deadline = None
        self.keepalive_deadline = self.close_deadline = None
        self.ack_now = False

    def run_timers(self: Connection, now: float) -> None:
        if self.rto_deadline is not None and now >= self.rto_deadline:
            self.rto_deadline = None
            self.on_rto_timer(now)
        if self.delack_deadline is not None and now >= self.delack_deadline:
            self.delack_deadline = None
            self.ack_now = True
        if self.persist_deadline is not None and now >= self.persist_deadline:
            self.persist_deadline = None
            self.on_persist_timer(now)
        if self.keepalive:
            if self.keepalive_deadline is None and self.state in KEEPALIVE_STATES:
                self.keepalive_deadline = self.last_received + self.keepalive_time
            if self.keepalive_deadline is not None and now >= self.keepalive_deadline:
                self.keepalive_deadline = None
                self.on_keepalive_timer(now)
        if self.close_deadline is not None and now >= self.close_deadline:
            self.close_deadline = None
            if self.state in (S.TIME_WAIT, S.FIN_WAIT2):
                self.terminate(now, 0)

    def timed_out(self: Connection, now: float) -> None:
        """Give up: Linux reports the last ICMP soft error if there was one, else ETIMEDOUT (tcp_write_err).
        No RST is sent: the peer is presumed unreachable."""
        if self.state is S.SYN_SENT:
            self.counters["AttemptFails"] += 1
        self.terminate(now, self.soft_error or errno.ETIMEDOUT)

    def on_rto_timer(self: Connection, now: float) -> None:
        self.trace(TCP_RTO_FIRE, now, rto=self.rtt.rto, retries=self.rto_retries)
        if self.state in (S.SYN_SENT, S.SYN_RECV):
            limit = self.config.syn_retries if self.state is S.SYN_SENT else self.config.synack_retries
            if self.user_timeout is not None and not self.passive:
                # Linux (tcp_write_timeout): TCP_USER_TIMEOUT bounds a connect() too, so the application
                # can set R2 for SYNs as for data (RFC 9293 MUST-21, MUST-22).
                expired = now - self.syn_sent_time >= self.user_timeout
            else:
                expired = self.syn_retries >= limit
            if expired:
                if self.passive:
                    self.terminate(now, 0)  # Linux drops the SYN queue entry silently
                else:
                    self.timed_out(now)
                return
            self.syn_retries += 1
            if self.syn_retries == self.config.retries1:
                self.give_negative_advice()  # the same mechanism for SYNs (MUST-22)
            self.rtt.backoff()
            self.send_syn(now)
            return
        if self.snd_una == self.snd_nxt or self.state not in (
            S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT1, S.CLOSING, S.LAST_ACK
        ):
            return
        if self.user_timeout is not None:
            expired = now - self.progress_time >= self.user_timeout
        else:
            expired = self.rto_retries >= self.config.retries2
        if expired:
            self.timed_out(now)
            return
        self.on_retransmission_timeout(now)
        if self.rto_retries == self.config.retries1:
            self.give_negative_advice()

    def give_negative_advice(self: Connection) -> None:
        """RFC 9293 3.8.3 (MUST-20): R1 retransmissions went unanswered; tell IP (through the layer)."""
        self.counters["TCPNegativeAdvice"] += 1
        if self.on_negative_advice is not None:
            self.on_negative_advice(self)

    def on_persist_timer(self: Connection, now: float) -> None:
        unsent = len(self.send_buffer) - seq_sub(self.snd_nxt, self.snd_una)
        if self.fin_sent or (unsent <= 0 and not self.fin_requested) or self.state not in (
            S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT1, S.LAST_ACK, S.CLOSING
        ):
            return
        # Linux (tcp_probe_timer): unanswered probes count against retries2 / the user timeout.
        if self.user_timeout is not None:
            expired = self.probes_out > 0 and now - self.progress_time >= self.user_timeout
        else:
            expired = self.probes_out >= self.config.retries2
        if expired:
            self.timed_out(now)
            return
        offset = seq_sub(self.snd_nxt, self.snd_una)
        room = self.snd_wnd - offset
        if room > 0 and unsent > 0:
            # The window opened a little (below the SWS threshold): send what fits (Linux tcp_write_wakeup).
            length = min(room, unsent, self.payload_limit())
            payload = self.send_buffer.peek(offset, length)
            self.emit(self.snd_nxt, TcpFlags.PSH | TcpFlags.ACK, payload, now)
            self.snd_nxt = seq_add(self.snd_nxt, length)
            self.arm_after_send(offset, now)
            return
        self.send_window_probe(now)
        self.counters["TCPWinProbe"] += 1
        self.probes_out += 1
        self.persist_backoff += 1
        self.persist_deadline = now + self.persist_interval()

    def on_keepalive_timer(self: Connection, now: float) -> None:
        if self.state not in KEEPALIVE_STATES:
            return
        idle = now - self.last_received
        busy = self.snd_una != self.snd_nxt or len(self.send_buffer) > 0
        if busy or (self.probes_out == 0 and idle < self.keepalive_time):
            # Activity since the timer was set, or data in flight (the RTO watches the peer then).
            base = self.last_received if not busy else now
            self.keepalive_deadline = base + self.keepalive_time
            self.probes_out = 0
            return
        if self.probes_out >= self.keepalive_probes:
            # Linux sends a RST when it gives up on a silent peer (tcp_keepalive_timer).
            self.send_reset(self.snd_nxt, self.rcv_nxt, now, with_ack=True)
            self.counters["TCPKeepAliveTimeouts"] += 1
            self.timed_out(now)
            return
        self.send_window_probe(now)
        self.probes_out += 1
        self.keepalive_deadline = now + self.keepalive_intvl
