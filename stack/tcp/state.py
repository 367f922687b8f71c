"""The TCP states of RFC 9293 section 3.3.2 and the transitions between them, written as data.

One vocabulary everywhere: the names of Linux's `include/net/tcp_states.h` without the `TCP_` prefix, which
the `inet_sock_set_state` tracepoint, `ss`, sock_diag and the seeds use.  Sockets, snapshots, the three
tables, trace events and the lab's views all say "SYN_RECV", "FIN_WAIT2", "CLOSE", so a stack trace and a
kernel trace compare as they are.  RFC 9293 spells four of them differently: CLOSE is its CLOSED, SYN_RECV
its SYN-RECEIVED, FIN_WAIT1 and FIN_WAIT2 its FIN-WAIT-1 and FIN-WAIT-2.

`TRANSITIONS` is the RFC's state diagram as a table, in the manner of h11's `_state.py`: the connection code
asks it for every move, so a reader can check the whole diagram in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType


class TcpState(Enum):
    CLOSE = "CLOSE"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECV = "SYN_RECV"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT1 = "FIN_WAIT1"
    FIN_WAIT2 = "FIN_WAIT2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"

    # Members are compared by identity, so they hash by identity: in C, where Enum's own __hash__ runs
    # Python code on every lookup of the state sets and the transition table below.
    __hash__ = object.__hash__


S = TcpState

#: States in which both sides' initial sequence numbers are known (RFC 9293 "synchronized states").
SYNCHRONIZED = frozenset(
    {S.ESTABLISHED, S.FIN_WAIT1, S.FIN_WAIT2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK, S.TIME_WAIT}
)
#: States in which arriving data is delivered to the application (RFC 9293 3.10.7.4, seventh step).
RECEIVES_DATA = frozenset({S.ESTABLISHED, S.FIN_WAIT1, S.FIN_WAIT2})
#: States in which the application may still queue data to send.
ACCEPTS_SEND = frozenset({S.SYN_SENT, S.SYN_RECV, S.ESTABLISHED, S.CLOSE_WAIT})
#: States after our FIN was queued.
FIN_QUEUED = frozenset({S.FIN_WAIT1, S.FIN_WAIT2, S.CLOSING, S.LAST_ACK, S.TIME_WAIT})

def _diagram() -> dict[tuple[TcpState, str], TcpState]:
    """RFC 9293 figure 5 plus the RST and timeout edges it leaves implicit."""
    # Any synchronized state falls to CLOSE on an accepted RST, an abort, or a retransmission timeout.
    table = {
        (state, event): S.CLOSE
        for state in SYNCHRONIZED | {S.SYN_RECV, S.SYN_SENT}
        for event in ("rcv_rst", "abort", "timeout")
    }
    table.update({
        (S.CLOSE, "passive_open"): S.LISTEN,
        (S.CLOSE, "active_open"): S.SYN_SENT,
        (S.LISTEN, "rcv_syn"): S.SYN_RECV,
        (S.SYN_SENT, "rcv_syn_ack"): S.ESTABLISHED,
        (S.SYN_SENT, "rcv_syn"): S.SYN_RECV,  # simultaneous open
        (S.SYN_SENT, "rcv_rst"): S.CLOSE,
        (S.SYN_SENT, "close"): S.CLOSE,
        (S.SYN_SENT, "timeout"): S.CLOSE,
        (S.SYN_RECV, "rcv_ack"): S.ESTABLISHED,
        (S.SYN_RECV, "rcv_fin"): S.CLOSE_WAIT,
        (S.SYN_RECV, "close"): S.FIN_WAIT1,
        (S.SYN_RECV, "rcv_rst"): S.CLOSE,
        (S.SYN_RECV, "timeout"): S.CLOSE,
        (S.ESTABLISHED, "close"): S.FIN_WAIT1,
        (S.ESTABLISHED, "rcv_fin"): S.CLOSE_WAIT,
        (S.FIN_WAIT1, "rcv_ack_of_fin"): S.FIN_WAIT2,
        (S.FIN_WAIT1, "rcv_fin"): S.CLOSING,  # simultaneous close
        (S.FIN_WAIT1, "rcv_fin_ack_of_fin"): S.TIME_WAIT,
        (S.FIN_WAIT2, "rcv_fin"): S.TIME_WAIT,
        (S.FIN_WAIT2, "timeout"): S.CLOSE,  # Linux's tcp_fin_timeout for orphaned sockets
        (S.CLOSE_WAIT, "close"): S.LAST_ACK,
        (S.CLOSING, "rcv_ack_of_fin"): S.TIME_WAIT,
        (S.LAST_ACK, "rcv_ack_of_fin"): S.CLOSE,
        (S.TIME_WAIT, "timeout"): S.CLOSE,
        (S.TIME_WAIT, "rcv_rst"): S.CLOSE,  # Linux's default (tcp_rfc1337=0); RFC 1337 would ignore it
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
