"""The TCP states of RFC 9293 section 3.3.2 and the transitions between them, written as data.

Member names are RFC 9293's (what sockets, snapshots and tables report: "SYN_RECEIVED", "FIN_WAIT_2");
the values are Linux's (what the `inet_sock_set_state` tracepoint prints: "SYN_RECV", "FIN_WAIT2"), used in
trace events so traces from this stack and from the kernel read alike.

`TRANSITIONS` is the RFC's state diagram as a table, in the manner of h11's `_state.py`: the connection code
asks it for every move, so a reader can check the whole diagram in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType


class TcpState(Enum):
    CLOSED = "CLOSE"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECV"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT1"
    FIN_WAIT_2 = "FIN_WAIT2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"


S = TcpState

#: States in which both sides' initial sequence numbers are known (RFC 9293 "synchronized states").
SYNCHRONIZED = frozenset(
    {S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK, S.TIME_WAIT}
)
#: States in which arriving data is delivered to the application (RFC 9293 3.10.7.4, seventh step).
RECEIVES_DATA = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})
#: States in which the application may still queue data to send.
ACCEPTS_SEND = frozenset({S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT})
#: States after our FIN was queued.
FIN_QUEUED = frozenset({S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.LAST_ACK, S.TIME_WAIT})

def _diagram() -> dict[tuple[TcpState, str], TcpState]:
    """RFC 9293 figure 5 plus the RST and timeout edges it leaves implicit."""
    # Any synchronized state falls to CLOSED on an accepted RST, an abort, or a retransmission timeout.
    table = {
        (state, event): S.CLOSED
        for state in SYNCHRONIZED | {S.SYN_RECEIVED, S.SYN_SENT}
        for event in ("rcv_rst", "abort", "timeout")
    }
    table.update({
        (S.CLOSED, "passive_open"): S.LISTEN,
        (S.CLOSED, "active_open"): S.SYN_SENT,
        (S.LISTEN, "rcv_syn"): S.SYN_RECEIVED,
        (S.SYN_SENT, "rcv_syn_ack"): S.ESTABLISHED,
        (S.SYN_SENT, "rcv_syn"): S.SYN_RECEIVED,  # simultaneous open
        (S.SYN_SENT, "rcv_rst"): S.CLOSED,
        (S.SYN_SENT, "close"): S.CLOSED,
        (S.SYN_SENT, "timeout"): S.CLOSED,
        (S.SYN_RECEIVED, "rcv_ack"): S.ESTABLISHED,
        (S.SYN_RECEIVED, "rcv_fin"): S.CLOSE_WAIT,
        (S.SYN_RECEIVED, "close"): S.FIN_WAIT_1,
        (S.SYN_RECEIVED, "rcv_rst"): S.CLOSED,
        (S.SYN_RECEIVED, "timeout"): S.CLOSED,
        (S.ESTABLISHED, "close"): S.FIN_WAIT_1,
        (S.ESTABLISHED, "rcv_fin"): S.CLOSE_WAIT,
        (S.FIN_WAIT_1, "rcv_ack_of_fin"): S.FIN_WAIT_2,
        (S.FIN_WAIT_1, "rcv_fin"): S.CLOSING,  # simultaneous close
        (S.FIN_WAIT_1, "rcv_fin_ack_of_fin"): S.TIME_WAIT,
        (S.FIN_WAIT_2, "rcv_fin"): S.TIME_WAIT,
        (S.FIN_WAIT_2, "timeout"): S.CLOSED,  # Linux's tcp_fin_timeout for orphaned sockets
        (S.CLOSE_WAIT, "close"): S.LAST_ACK,
        (S.CLOSING, "rcv_ack_of_fin"): S.TIME_WAIT,
        (S.LAST_ACK, "rcv_ack_of_fin"): S.CLOSED,
        (S.TIME_WAIT, "timeout"): S.CLOSED,
        (S.TIME_WAIT, "rcv_rst"): S.CLOSED,  # Linux's default (tcp_rfc1337=0); RFC 1337 would ignore it
    })
    return table


#: (state, event) -> next state, read-only.
TRANSITIONS: Mapping[tuple[TcpState, str], TcpState] = MappingProxyType(_diagram())


class InvalidTransition(RuntimeError):
    """A move the state table does not allow: a bug in the connection code, never caused by a peer."""


def next_state(state: TcpState, event: str) -> TcpState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"no TCP transition from {state.name} on {event!r}") from None
