"""Receiving urgent data in line (RFC 9293 3.8.5 and the sixth step of SEGMENT ARRIVES; RFC 6093).

The urgent pointer of a segment marks the first octet after the urgent data (RFC 9293 3.1): the mark is
SEG.SEQ + SEG.UP.  Urgent octets stay in the byte stream, in order (Linux with SO_OOBINLINE, the mode
RFC 6093 recommends); the connection remembers the mark (RCV.UP) so the application can learn that urgent
data is coming and how much of it is left to read (`TcpSocket.urgent_pending`, like SIOCATMARK), and a
`tcp_urgent` trace event reports each new mark as it arrives.  Sending urgent data (MSG_OOB) is not offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.tcp.seq import seq_add, seq_gt, seq_sub
from stack.tcp.state import RECEIVES_DATA
from stack.tcp.trace import TCP_URGENT
from stack.wire.tcp import TcpSegment

if TYPE_CHECKING:
    from stack.tcp.connection import Connection


def note_urgent_pointer(conn: Connection, seg: TcpSegment, now: float) -> None:
    """Sixth step: in ESTABLISHED, FIN-WAIT-1 and FIN-WAIT-2, RCV.UP <- max(RCV.UP, SEG.SEQ + SEG.UP), and
    tell the application when the mark moves ahead of what it has read."""
    if conn.state not in RECEIVES_DATA or seg.urgent == 0:
        return
    mark = seq_add(seg.seq, seg.urgent)
    if conn.rcv_up is not None and not seq_gt(mark, conn.rcv_up):
        return
    conn.rcv_up = mark
    if urgent_pending(conn) > 0:
        conn.counters["TCPUrgentData"] += 1
        conn.trace(TCP_URGENT, now, mark=mark, pending=urgent_pending(conn))


def urgent_pending(conn: Connection) -> int:
    """Octets from the application's read position up to the urgent mark (0: no urgent data ahead)."""
    if conn.rcv_up is None:
        return 0
    unread = len(conn.recv_buffer) + (1 if conn.eof else 0)  # the FIN took a sequence number too
    read_position = seq_add(conn.rcv_nxt, -unread)
    return max(0, seq_sub(conn.rcv_up, read_position))


def forget_passed_mark(conn: Connection) -> None:
    """After a read: once the application has read past the mark, forget it (so sequence numbers that wrap
    much later can never make an old mark look new)."""
    if conn.rcv_up is not None and urgent_pending(conn) == 0:
        conn.rcv_up = None
