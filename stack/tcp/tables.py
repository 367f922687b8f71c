"""The seeds' three socket tables, and the rules that go with them, in one place.

Linux indexes TCP sockets three ways, and so does this stack:

- **bound** (Linux's bhash): every socket holding a local (address, port), by port.  `bind()` puts a socket
  here (port 0: an ephemeral port), `connect()` on an unbound socket too (with an ephemeral port chosen
  for the 4-tuple, RFC 6056).  A connection the application closed keeps its socket here while it lives on
  (FIN_WAIT2, TIME_WAIT): it still holds the port.
- **listening** (Linux's listening hash): one `Listener` per listening (address, port), with its SYN queue
  and accept queue.
- **established** (Linux's ehash): every connection with a 4-tuple, from SYN_SENT / SYN_RECV to TIME_WAIT,
  together with who owns it: the socket that connected or accepted it, or, while it waits in a SYN queue,
  its listener.

The bind rule (Linux's inet_csk_bind_conflict): two sockets conflict on a port when their addresses
overlap (equal, or either the wildcard 0.0.0.0), unless both set SO_REUSEADDR and the other is not
listening.  listen() fails with EADDRINUSE when another listener overlaps.  This module is the only code
that changes the tables; everything else asks it.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

from stack.tcp.config import TcpConfig
from stack.tcp.errors import socket_error
from stack.tcp.listener import FourTuple, Listener
from stack.tcp.ports import EphemeralPortAllocator
from stack.tcp.snapshot import BoundEntry, ListenerSnapshot, TablesSnapshot
from stack.tcp.state import TcpState

if TYPE_CHECKING:
    from stack.tcp.connection import Connection
    from stack.tcp.tcp_socket import TcpSocket

WILDCARD = "0.0.0.0"


def overlaps(a: str, b: str) -> bool:
    """Two local addresses share a port's space when they are equal or either is the wildcard."""
    return a == b or WILDCARD in (a, b)


class SocketTables:
    """bound, listening, established (and each connection's owner) for one host's TCP."""

    def __init__(self, ports: EphemeralPortAllocator, rng: random.Random) -> None:
        self.ports = ports
        self.rng = rng
        self._bound: dict[int, list[TcpSocket]] = {}
        self._listening: dict[tuple[str, int], Listener] = {}
        self._established: dict[FourTuple, Connection] = {}
        self._owner: dict[Connection, TcpSocket] = {}  # the socket that connected or accepted it
        self._parent: dict[Connection, Listener] = {}  # SYN queue entries: the listener they wait in

    # -- bound ---------------------------------------------------------------------------------------

    def port_in_use(self, ip: str, port: int) -> bool:
        return any(overlaps(sock.local_address[0], ip) for sock in self._bound.get(port, ()))

    def bind_conflict(self, sock: TcpSocket, ip: str, port: int) -> bool:
        for other in self._bound.get(port, ()):
            if other is sock or not overlaps(other.local_address[0], ip):
                continue
            if sock.options.reuseaddr and other.options.reuseaddr and not other.listening:
                continue
            return True
        return False

    def bind(self, sock: TcpSocket, ip: str, port: int) -> int:
        """Enter `sock` for (ip, port); port 0 takes a free ephemeral port.  The port, or EADDRINUSE."""
        if port == 0:
            port = self.ports.allocate_for_bind(lambda p: self.port_in_use(ip, p), self.rng)
        elif self.bind_conflict(sock, ip, port):
            raise socket_error(errno.EADDRINUSE, f"address {ip}:{port} already in use")
        self._bound.setdefault(port, []).append(sock)
        return port

    def bind_for_connect(self, sock: TcpSocket, local_ip: str, remote_ip: str, remote_port: int) -> int:
        """connect() on an unbound socket: an ephemeral port free of bind()s and unique for the 4-tuple."""

        def in_use(port: int) -> bool:
            if (local_ip, port, remote_ip, remote_port) in self._established:
                return True
            return any(not s.auto_bound for s in self._bound.get(port, ()))

        port = self.ports.allocate(local_ip, remote_ip, remote_port, in_use, self.rng)
        self._bound.setdefault(port, []).append(sock)
        return port

    def unbind(self, sock: TcpSocket) -> None:
        port = sock.local_address[1]
        socks = self._bound.get(port)
        if socks and sock in socks:
            socks.remove(sock)
            if not socks:
                del self._bound[port]

    # -- listening -----------------------------------------------------------------------------------

    def listen(self, sock: TcpSocket, backlog: int, config: TcpConfig) -> Listener:
        """Make the bound `sock` a listener (EADDRINUSE when another listener overlaps its address)."""
        ip, port = sock.local_address
        for other in self._bound.get(port, ()):
            if other is not sock and other.listening and overlaps(other.local_address[0], ip):
                raise socket_error(errno.EADDRINUSE, f"{ip}:{port} already has a listener")
        listener = Listener(ip, port, backlog, config, sock.options)
        self._listening[(ip, port)] = listener
        return listener

    def stop_listening(self, listener: Listener) -> None:
        self._listening.pop((listener.ip, listener.port), None)

    def find_listener(self, ip: str, port: int) -> Listener | None:
        """The listener for a segment to (ip, port): a specific address first, then the wildcard."""
        listener = self._listening.get((ip, port))
        return listener if listener is not None else self._listening.get((WILDCARD, port))

    # -- established ---------------------------------------------------------------------------------

    def connection(self, key: FourTuple) -> Connection | None:
        return self._established.get(key)

    def connections(self) -> Iterator[Connection]:
        return iter(list(self._established.values()))

    def __contains__(self, key: FourTuple) -> bool:
        return key in self._established

    def add_connection(self, connection: Connection, *, owner: TcpSocket | None = None,
                       parent: Listener | None = None) -> None:
        """A new connection: connect()'s (owned by its socket) or a SYN queue entry (its listener's)."""
        self._established[connection.key] = connection
        if owner is not None:
            self._owner[connection] = owner
        if parent is not None:
            self._parent[connection] = parent

    def adopt(self, connection: Connection, sock: TcpSocket) -> None:
        """accept(): `sock` owns the connection and holds its local port in the bound table."""
        self._bound.setdefault(connection.local_port, []).append(sock)
        self._owner[connection] = sock

    def owner(self, connection: Connection) -> TcpSocket | None:
        return self._owner.get(connection)

    def parent(self, connection: Connection) -> Listener | None:
        return self._parent.get(connection)

    def disown(self, connection: Connection) -> None:
        """The owning socket is closed and its connection already gone: forget who owned it."""
        self._owner.pop(connection, None)

    def owned_sockets(self) -> list[TcpSocket]:
        """The sockets of the live connections the applications hold (a stopping node resets them)."""
        return list(self._owner.values())

    def connection_changed(self, connection: Connection, new: TcpState) -> None:
        """A state change: a SYN queue entry that completes or dies leaves its queue (the listener moves
        it to the accept queue or drops it); a closed connection leaves the tables, and a closed socket
        that still held the port for it leaves the bound table."""
        parent = self._parent.get(connection)
        if parent is not None:
            parent.entry_changed(connection, new)
            if new is not TcpState.SYN_RECV:
                del self._parent[connection]
        if new is TcpState.CLOSE:
            key = connection.key
            if self._established.get(key) is connection:
                del self._established[key]
            owner = self._owner.pop(connection, None)
            if owner is not None and owner.closed:
                self.unbind(owner)

    # -- inspection ----------------------------------------------------------------------------------

    def snapshot(self) -> TablesSnapshot:
        bound = tuple(
            BoundEntry(sock.local_address[0], port, sock.state)
            for port, socks in sorted(self._bound.items())
            for sock in socks
        )
        listening = tuple(
            ListenerSnapshot(lst.ip, lst.port, lst.backlog, len(lst.syn_queue), len(lst.accept_queue))
            for lst in self._listening.values()
        )
        established = tuple(connection.snapshot() for connection in self._established.values())
        return TablesSnapshot(bound=bound, listening=listening, established=established)

