"""Read-only pictures of TCP state: one connection (for `ss`-like views) and the seeds' three tables."""

from __future__ import annotations

from dataclasses import dataclass

from stack.compat import SLOTS


@dataclass(frozen=True, **SLOTS)
class ConnectionSnapshot:
    state: str  # TcpState value (Linux's names): "ESTABLISHED", "SYN_RECV", "FIN_WAIT2", ...
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    snd_una: int
    snd_nxt: int
    snd_wnd: int
    rcv_nxt: int
    rcv_wnd: int
    cwnd: int
    ssthresh: int
    srtt: float | None
    rttvar: float | None
    rto: float
    retransmissions: int  # segments retransmitted over the connection's life
    sack_holes: tuple[tuple[int, int], ...]
    send_queue: int  # bytes the application wrote that are not yet acknowledged
    recv_queue: int  # bytes received in order that the application has not read
    mss: int  # effective send MSS (payload bytes per segment)
    snd_wscale: int  # shift applied to the peer's window field (0 when scaling is off)
    rcv_wscale: int  # shift applied to the window field we send
    sack: bool
    timestamps: bool
    congestion: str
    in_recovery: bool


@dataclass(frozen=True, **SLOTS)
class BoundEntry:
    ip: str
    port: int
    state: str  # the socket's state: "CLOSE" (bound only), "LISTEN", "ESTABLISHED", "TIME_WAIT", ...


@dataclass(frozen=True, **SLOTS)
class ListenerSnapshot:
    ip: str
    port: int
    backlog: int  # min(listen()'s backlog, somaxconn), as Linux stores it
    syn_queue: int  # SYN_RECV entries (incomplete connections)
    accept_queue: int  # completed connections waiting for accept()


@dataclass(frozen=True, **SLOTS)
class TablesSnapshot:
    """The seeds' three tables: bound sockets, listeners and established (4-tuple) connections."""

    bound: tuple[BoundEntry, ...]
    listening: tuple[ListenerSnapshot, ...]
    established: tuple[ConnectionSnapshot, ...]
