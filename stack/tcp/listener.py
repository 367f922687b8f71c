"""A listening socket's two queues, as the seeds describe Linux's: the SYN queue and the accept queue.

`listen(backlog)` stores min(backlog, somaxconn) (a negative backlog means somaxconn, as Linux reads it
unsigned).  The **SYN queue** holds SYN_RECV entries: connections that sent a SYN and got our SYN-ACK; each
retransmits its SYN-ACK on its own timer and disappears silently after synack_retries.  The **accept
queue** holds connections whose handshake completed and that accept() has not taken yet.

Overflow, as Linux 6.x does it (tcp_conn_request, tcp_check_req):
- accept queue full (`len > backlog`, so backlog 0 still admits one): a new SYN is dropped
  (ListenOverflows, ListenDrops); the client's SYN retransmission tries again later.  A handshake-completing
  ACK is dropped too and the entry stays in the SYN queue (tcp_abort_on_overflow=0): its SYN-ACK
  retransmission prompts the client to ACK again once there is room.
- SYN queue full (`len >= backlog`): with syncookies=1 the SYN is answered with a SYN cookie and no state
  is kept; with syncookies=0 it is dropped.  syncookies=2 always answers with cookies.  Without cookies, a
  SYN is also dropped once the SYN queue holds more than 3/4 of max_syn_backlog (Linux's early drop).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from stack.tcp.state import TcpState

if TYPE_CHECKING:
    from stack.tcp.config import TcpConfig
    from stack.tcp.connection import Connection
    from stack.tcp.tcp_socket import TcpSocket

FourTuple = tuple[str, int, str, int]


def effective_backlog(backlog: int, somaxconn: int) -> int:
    """Linux's listen(): the backlog is read as unsigned and capped at net.core.somaxconn."""
    return somaxconn if backlog < 0 or backlog > somaxconn else backlog


class Listener:
    def __init__(
        self, ip: str, port: int, backlog: int, config: TcpConfig, socket: TcpSocket | None = None
    ) -> None:
        self.ip = ip
        self.socket = socket  # the listening socket: its options are inherited by new connections
        self.port = port
        self.config = config
        self.backlog = effective_backlog(backlog, config.somaxconn)
        self.syn_queue: dict[FourTuple, Connection] = {}
        self.accept_queue: deque[Connection] = deque()

    def set_backlog(self, backlog: int) -> None:
        """listen() again on a listening socket only changes the backlog (as Linux)."""
        self.backlog = effective_backlog(backlog, self.config.somaxconn)

    def accept_queue_full(self) -> bool:
        return len(self.accept_queue) > self.backlog

    def syn_queue_full(self) -> bool:
        return len(self.syn_queue) >= self.backlog

    def syn_early_drop(self) -> bool:
        """Without cookies, Linux drops new SYNs once fewer than a quarter of max_syn_backlog is left."""
        limit = self.config.max_syn_backlog
        return limit - len(self.syn_queue) < (limit >> 2)

    def want_cookie(self) -> bool:
        cookies = self.config.syncookies
        return cookies == 2 or (cookies == 1 and self.syn_queue_full())

    def add_embryonic(self, key: FourTuple, connection: Connection) -> None:
        self.syn_queue[key] = connection

    def add_established(self, connection: Connection) -> None:
        """A connection that skipped the SYN queue (a valid SYN cookie ACK)."""
        self.accept_queue.append(connection)

    def on_state_change(self, key: FourTuple, connection: Connection, new: TcpState) -> None:
        """Move a completed handshake from the SYN queue to the accept queue; forget dead entries.

        Linux keeps a connection that the peer reset in the accept queue: accept() returns it and the
        first recv() reports ECONNRESET.
        """
        if key in self.syn_queue and new is not TcpState.SYN_RECV:
            del self.syn_queue[key]
            if new is not TcpState.CLOSE:
                self.accept_queue.append(connection)

    def pop_accepted(self) -> Connection | None:
        return self.accept_queue.popleft() if self.accept_queue else None
