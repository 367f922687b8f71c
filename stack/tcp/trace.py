"""Trace events, named like Linux's TCP tracepoints so both sides of an experiment read alike.

Names: `inet_sock_set_state`, `tcp_probe`, `tcp_retransmit_skb`, `tcp_retransmit_synack`, `tcp_send_reset`,
`tcp_receive_reset` (as in the kernel), plus `tcp_segment_in`, `tcp_segment_out`, `tcp_rto_fire`,
`tcp_cwnd_change` and `tcp_urgent` (an urgent mark arrived), which the kernel has no tracepoint for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from stack.wire.tcp import TcpFlags, TcpSegment

INET_SOCK_SET_STATE = "inet_sock_set_state"
TCP_PROBE = "tcp_probe"
TCP_RETRANSMIT_SKB = "tcp_retransmit_skb"
TCP_RETRANSMIT_SYNACK = "tcp_retransmit_synack"
TCP_SEND_RESET = "tcp_send_reset"
TCP_RECEIVE_RESET = "tcp_receive_reset"
TCP_SEGMENT_IN = "tcp_segment_in"
TCP_SEGMENT_OUT = "tcp_segment_out"
TCP_RTO_FIRE = "tcp_rto_fire"
TCP_CWND_CHANGE = "tcp_cwnd_change"
TCP_URGENT = "tcp_urgent"


class TraceEvent(NamedTuple):
    """One event, Linux tracepoint style.  A tuple, not a frozen dataclass: a connection makes several,
    and a tuple costs a third as much to make."""

    name: str
    time: float
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    fields: dict[str, Any]


TraceSink = Callable[[TraceEvent], None]

_FLAG_LETTERS = (
    (TcpFlags.SYN, "S"),
    (TcpFlags.FIN, "F"),
    (TcpFlags.RST, "R"),
    (TcpFlags.PSH, "P"),
    (TcpFlags.ACK, "."),
    (TcpFlags.URG, "U"),
    (TcpFlags.ECE, "E"),
    (TcpFlags.CWR, "W"),
)


def _letters(flags: int) -> str:
    return "".join(letter for flag, letter in _FLAG_LETTERS if flags & flag) or "none"


# Every 8-bit flags value spelled once, so a segment event costs an index, not enum arithmetic.
_LETTERS_BY_VALUE = tuple(_letters(value) for value in range(256))


def flag_letters(flags: int) -> str:
    """tcpdump's flag notation ("S.", "P.", "R"), so traces line up with captures."""
    return _LETTERS_BY_VALUE[flags]


def segment_fields(segment: TcpSegment) -> dict[str, Any]:
    options = segment.options
    return {
        "flags": flag_letters(segment.flags),
        "seq": segment.seq,
        "ack": segment.ack,
        "win": segment.window,
        "len": len(segment.payload),
        "mss": options.mss,
        "wscale": options.wscale,
        "sack_permitted": options.sack_permitted,
        "sack": options.sack_blocks,
        "ts": options.timestamp,
    }
