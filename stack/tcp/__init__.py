"""Sans-IO TCP: connections, listeners and the socket surface a host builds on.

Nothing in this package reads a clock, opens a socket or starts a thread: time (`now`, seconds) and
randomness (`random.Random`, secret bytes) are passed in.

Map: `layer.TcpLayer` (the entry point IP and applications use) owns `tables.SocketTables` (the seeds'
three tables: bound, listening, established; the only code that changes them) and makes
`tcp_socket.TcpSocket`s (the non-blocking socket; its options are a `sockopts.SocketOptions`).  A
`listener.Listener` holds a SYN queue and an accept queue and does the passive open (with SYN cookies,
`syncookies.py`).  A `connection.Connection` is one TCB owning its components: `arrival.py` (SEGMENT ARRIVES),
`output.py` (what to send), `recovery.LossRecovery` (ACKs, loss recovery), `timers.Timers`, `urgent.py`,
`congestion/` (one file per algorithm), `rtt.py`, `buffers.py`, `reassembly.py`, `sack.py`, `options.py`
(negotiation).  `state.py` is the state table, in Linux's names.

Where the RFCs allow several behaviours this package does what Linux does; each place says so in its
docstring ("Linux:").  The main ones: RST in TIME_WAIT ends it (tcp_rfc1337=0); a RST in CLOSE_WAIT reports
EPIPE; close() with unread data or SO_LINGER 0 sends RST; zero-window and keepalive probes carry
SEQ=SND.UNA-1 and no data; Nagle is Minshall's variant; out-of-window ACKs are rate-limited to one per
500 ms; accept queue full means len > backlog and drops SYNs and handshake ACKs silently; the SYN queue is
bounded by the backlog with SYN cookies on overflow; ICMP errors abort only a connect() in SYN_SENT;
timestamps use a per-address-pair offset; a newer SYN may end TIME_WAIT early; an orphaned FIN_WAIT2
lasts tcp_fin_timeout.  Urgent data is received in line (as with SO_OOBINLINE) and its mark remembered
(`TcpSocket.urgent_pending`); sending urgent data is not offered.
"""

from stack.tcp.config import TcpConfig
from stack.tcp.layer import IcmpError, TcpLayer
from stack.tcp.snapshot import BoundEntry, ConnectionSnapshot, ListenerSnapshot, TablesSnapshot
from stack.tcp.state import TcpState
from stack.tcp.tcp_socket import TcpSocket
from stack.tcp.trace import TraceEvent

__all__ = [
    "BoundEntry",
    "ConnectionSnapshot",
    "IcmpError",
    "ListenerSnapshot",
    "TablesSnapshot",
    "TcpConfig",
    "TcpLayer",
    "TcpSocket",
    "TcpState",
    "TraceEvent",
]
