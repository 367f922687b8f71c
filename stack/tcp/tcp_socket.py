"""`TcpSocket`: a non-blocking socket that behaves like a Linux TCP socket with O_NONBLOCK.

Errors are `OSError`s with Linux's errno values (`stack.tcp.errors`).  A socket is, in the seeds' order:
fresh (from `socket()`), bound (`bind()`), then either listening (`listen()`, with a SYN queue and an
accept queue) or connected (`connect()` or `accept()`).  The calls that start or end something on the
wire take the caller's time, `now` (connect, shutdown, close): the core keeps no clock of its own.  Every
table change goes through the layer's `SocketTables`.

Linux behaviours kept on purpose:
- a second `connect()` after a non-blocking connect completed returns once without error, then EISCONN;
- after a RST, the pending error (ECONNRESET, or EPIPE in CLOSE_WAIT) is reported once by whichever call
  comes first (recv, send, SO_ERROR); afterwards recv returns b"" and send raises EPIPE;
- SO_RCVBUF / SO_SNDBUF read back doubled (Linux counts bookkeeping overhead); the data capacity is the
  value set;
- send on a socket that never connected raises EPIPE; recv raises ENOTCONN;
- shutdown(SHUT_RD) only makes recv return b"" instead of EAGAIN when nothing is queued: data already
  received, and data that still arrives, stays readable (Linux's TCP does not discard it).
"""

from __future__ import annotations

import errno
import ipaddress
import socket as _socket
from typing import TYPE_CHECKING

from stack.tcp.addresses import can_be_a_peer
from stack.tcp.errors import socket_error
from stack.tcp.listener import Listener
from stack.tcp.sockopts import SocketOptions, parse_setsockopt, read_getsockopt
from stack.tcp.state import TcpState
from stack.tcp.tables import WILDCARD
from stack.tcp.urgent import urgent_pending

if TYPE_CHECKING:
    from stack.tcp.connection import Connection
    from stack.tcp.layer import TcpLayer

S = TcpState
CONNECTED_STATES = frozenset(
    {S.ESTABLISHED, S.FIN_WAIT1, S.FIN_WAIT2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK, S.TIME_WAIT}
)
SENDABLE_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT})


def _parse_address(address: object) -> tuple[str, int]:
    if not (isinstance(address, tuple) and len(address) == 2):
        raise socket_error(errno.EINVAL, f"address must be (ip, port), got {address!r}")
    ip, port = address
    if ip == "":
        ip = WILDCARD
    try:
        ip = str(ipaddress.IPv4Address(ip))
    except (ipaddress.AddressValueError, ValueError):
        raise socket_error(errno.EINVAL, f"not an IPv4 address: {ip!r}") from None
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise OverflowError(f"port must be 0-65535, got {port!r}")
    return ip, port


class TcpSocket:
    """One socket of a `TcpLayer`; see the module docstring for its Linux behaviours."""

    def __init__(self, layer: TcpLayer, options: SocketOptions | None = None) -> None:
        self._layer = layer
        self.options = options if options is not None else SocketOptions.defaults(layer.config)
        self._local: tuple[str, int] | None = None
        self._listener: Listener | None = None
        self._conn: Connection | None = None
        self._error_reported = False
        self._connect_reported = False
        self._shut_rd = False
        self._shut_wr = False
        self.closed = False
        self.auto_bound = False  # bound by connect() rather than bind(): the port may be shared

    # ------------------------------------------------------------------ state

    @property
    def listening(self) -> bool:
        return self._listener is not None

    @property
    def local_address(self) -> tuple[str, int]:
        return self._local if self._local is not None else (WILDCARD, 0)

    @property
    def state(self) -> str:
        if self._listener is not None:
            return S.LISTEN.value
        if self._conn is not None:
            return self._conn.state.value
        return S.CLOSE.value

    @property
    def error(self) -> int:
        conn = self._conn
        if conn is None or self._error_reported:
            return 0
        return conn.error

    @property
    def connection(self) -> Connection | None:
        """The connection this socket opened or accepted (None before connect, and for a listener): what a
        driver watches to know when the socket may have changed."""
        return self._conn

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.state in CONNECTED_STATES

    @property
    def readable(self) -> bool:
        if self._listener is not None:
            return bool(self._listener.accept_queue)
        conn = self._conn
        if conn is None:
            return False
        return (
            len(conn.recv_buffer) > 0
            or conn.eof
            or self._shut_rd
            or self.error != 0
            or conn.state is S.CLOSE
        )

    @property
    def writable(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        if conn.state in (S.SYN_SENT, S.SYN_RECV):
            return False
        if conn.state not in SENDABLE_STATES or self._shut_wr or self.error:
            return True  # send() would fail at once rather than block
        # Linux (sk_stream_is_writeable): free space at least half of what is queued.
        space = conn.send_space
        return space > 0 and space >= len(conn.send_buffer) // 2

    @property
    def unacknowledged(self) -> int:
        """Bytes written and not yet acknowledged by the peer (Linux's SIOCOUTQ, ss's Send-Q): 0 once the
        last ACK for everything sent has arrived."""
        conn = self._conn
        return len(conn.send_buffer) if conn is not None else 0

    @property
    def urgent_pending(self) -> int:
        """Urgent octets not yet read (the bytes before the urgent mark; 0 if none): SIOCATMARK's question.

        Urgent data arrives in line (SO_OOBINLINE); this says how much of what recv() returns next is
        urgent (stack/tcp/urgent.py)."""
        conn = self._conn
        return 0 if conn is None else urgent_pending(conn)

    @property
    def has_peer(self) -> bool:
        """A connection that still talks to its peer, or a listener with queued connections: closing it
        sends segments, so it needs the time."""
        if self._listener is not None:
            return bool(self._listener.syn_queue or self._listener.accept_queue)
        return self._conn is not None and self._conn.state is not S.CLOSE

    # ------------------------------------------------------------------ setup

    def _check_open(self) -> None:
        if self.closed:
            raise socket_error(errno.EBADF, "socket is closed")

    def bind(self, address: tuple[str, int]) -> None:
        self._check_open()
        ip, port = _parse_address(address)
        if self._local is not None:
            raise socket_error(errno.EINVAL, "socket is already bound")
        is_local = self._layer.is_local_address
        if ip != WILDCARD and is_local is not None and not is_local(ip):
            raise socket_error(errno.EADDRNOTAVAIL, f"{ip} is not an address of this host")
        self._local = (ip, port)
        try:
            self._local = (ip, self._layer.tables.bind(self, ip, port))
        except OSError:
            self._local = None
            raise

    def listen(self, backlog: int = 128) -> None:
        self._check_open()
        if self._conn is not None:
            raise socket_error(errno.EINVAL, "socket is connected")
        if self._listener is not None:
            self._listener.set_backlog(backlog)
            return
        if self._local is None:
            self.bind((WILDCARD, 0))
        self._listener = self._layer.tables.listen(self, backlog, self._layer.config)

    def accept(self) -> tuple[TcpSocket, tuple[str, int]]:
        self._check_open()
        if self._listener is None:
            raise socket_error(errno.EINVAL, "socket is not listening")
        conn = self._listener.pop_accepted()
        if conn is None:
            raise socket_error(errno.EAGAIN)
        child = TcpSocket(self._layer, conn.options)  # the options the connection was cloned with
        child._conn = conn
        child._local = (conn.local_ip, conn.local_port)
        child._connect_reported = True
        self._layer.tables.adopt(conn, child)
        return child, (conn.remote_ip, conn.remote_port)

    def connect(self, address: tuple[str, int], now: float) -> None:
        """Start the handshake at `now` (EINPROGRESS), or report how an earlier connect() ended."""
        self._check_open()
        if self._listener is not None:
            raise socket_error(errno.EISCONN, "socket is listening")
        conn = self._conn
        if conn is not None:
            if conn.state in (S.SYN_SENT, S.SYN_RECV):
                raise socket_error(errno.EALREADY)
            if self.error:
                code = self.error
                self._error_reported = True
                raise socket_error(code)
            if conn.state in CONNECTED_STATES:
                if not self._connect_reported:
                    self._connect_reported = True
                    return
                raise socket_error(errno.EISCONN)
            raise socket_error(errno.ECONNABORTED)
        ip, port = _parse_address(address)
        if ip == WILDCARD or port == 0:
            raise socket_error(errno.ECONNREFUSED if port == 0 else errno.ENETUNREACH)
        layer = self._layer
        if not can_be_a_peer(ip, layer.is_broadcast_address):
            # RFC 9293 3.9.1.1 (MUST-46); Linux's tcp_v4_connect answers a broadcast route with ENETUNREACH.
            raise socket_error(errno.ENETUNREACH, f"{ip} is a broadcast or multicast address")
        found = layer.route(ip, now)
        if found is None:
            raise socket_error(errno.ENETUNREACH, f"no route to {ip}")
        route_ip, mtu = found
        tables = layer.tables
        if self._local is None:
            local_ip = route_ip
            self.auto_bound = True
            self._local = (local_ip, 0)
            self._local = (local_ip, tables.bind_for_connect(self, local_ip, ip, port))
        else:
            local_ip = self._local[0] if self._local[0] != WILDCARD else route_ip
            self._local = (local_ip, self._local[1])
            if (local_ip, self._local[1], ip, port) in tables:
                raise socket_error(errno.EADDRNOTAVAIL, "4-tuple already in use")
        conn = layer.new_connection(local_ip, self._local[1], ip, port, mtu, now, self.options, owner=self)
        self._conn = conn
        conn.open_active(now)
        layer.touch(conn)
        raise socket_error(errno.EINPROGRESS)

    def connect_ex(self, address: tuple[str, int], now: float) -> int:
        try:
            self.connect(address, now)
        except OSError as exc:
            return exc.errno or errno.EINVAL
        return 0

    # ------------------------------------------------------------------ data

    def _take_error(self) -> int:
        code = self.error
        if code:
            self._error_reported = True
        return code

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        conn = self._conn
        if conn is None:
            raise socket_error(errno.EPIPE)
        code = self._take_error()
        if code:
            raise socket_error(code)
        if conn.state in (S.SYN_SENT, S.SYN_RECV) and not self._shut_wr:
            raise socket_error(errno.EAGAIN)
        if self._shut_wr or conn.fin_requested or conn.state not in SENDABLE_STATES:
            raise socket_error(errno.EPIPE)
        if not len(data):
            return 0
        taken = conn.send(data if isinstance(data, bytes) else byte_view(data))
        if taken == 0:
            raise socket_error(errno.EAGAIN)
        self._layer.touch(conn)
        return taken

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """Non-blocking sendall: all or EAGAIN before queuing anything (so nothing is sent twice)."""
        conn = self._conn
        if conn is not None and conn.state in SENDABLE_STATES and conn.send_space < len(data):
            raise socket_error(errno.EAGAIN)
        self.send(data)

    def recv(self, bufsize: int) -> bytes:
        self._check_open()
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        conn = self._conn
        if conn is None:
            raise socket_error(errno.ENOTCONN)
        data = b""
        if bufsize:
            data = conn.recv(bufsize)
        if data:
            self._layer.touch(conn)
            return data
        code = self._take_error()
        if code:
            raise socket_error(code)
        if conn.eof or self._shut_rd or conn.state is S.CLOSE or bufsize == 0:
            return b""
        raise socket_error(errno.EAGAIN)

    def shutdown(self, how: int, now: float) -> None:
        self._check_open()
        if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
            raise socket_error(errno.EINVAL, f"shutdown: bad 'how' {how!r}")
        layer = self._layer
        if self._listener is not None:
            if how != _socket.SHUT_WR:
                # Linux: SHUT_RD on a listener stops listening (pending connections are reset).
                layer.close_listener(self._listener, now)
                self._listener = None
            return
        conn = self._conn
        if conn is None or conn.state is S.CLOSE:
            raise socket_error(errno.ENOTCONN)
        if how in (_socket.SHUT_RD, _socket.SHUT_RDWR):
            self._shut_rd = True
        if how in (_socket.SHUT_WR, _socket.SHUT_RDWR):
            self._shut_wr = True
            conn.shutdown_write(now)
        layer.touch(conn)

    def close(self, now: float | None = None) -> None:
        """close(); `now` is needed when something is left to send (`has_peer`): a FIN, RSTs to queued
        connections.  A socket that never connected, or whose connection is over, closes at no time."""
        if self.closed:
            return
        if now is None and self.has_peer:
            raise ValueError("close(): this socket still has a peer, so the close needs `now`")
        self.closed = True
        layer = self._layer
        tables = layer.tables
        if self._listener is not None:
            layer.close_listener(self._listener, now)
            self._listener = None
        conn = self._conn
        if conn is not None and conn.state is not S.CLOSE:
            assert now is not None
            conn.close(now, linger_abort=self.options.linger_abort)
            layer.touch(conn)
            if conn.state is not S.CLOSE:
                return  # the binding lives on with the connection (FIN_WAIT, TIME_WAIT)
        if conn is not None:
            tables.disown(conn)
        tables.unbind(self)

    def getsockname(self) -> tuple[str, int]:
        self._check_open()
        return self.local_address

    def getpeername(self) -> tuple[str, int]:
        self._check_open()
        conn = self._conn
        if conn is None or conn.state not in CONNECTED_STATES:
            raise socket_error(errno.ENOTCONN)
        return (conn.remote_ip, conn.remote_port)

    # ------------------------------------------------------------------ options

    def setsockopt(self, level: int, option: int, value: object) -> None:
        self._check_open()
        name, parsed = parse_setsockopt(level, option, value)
        setattr(self.options, name, parsed)
        conn = self._conn
        if conn is not None:
            conn.options_changed(name)
            self._layer.touch(conn)

    def getsockopt(self, level: int, option: int) -> object:
        self._check_open()
        if level == _socket.SOL_SOCKET:
            if option == _socket.SO_ERROR:
                return self._take_error()
            if option == _socket.SO_ACCEPTCONN:
                return int(self._listener is not None)
        elif level == _socket.IPPROTO_TCP and option == _socket.TCP_MAXSEG:
            if self._conn is not None and self._conn.state is not S.SYN_SENT:
                return self._conn.send_mss
            return self.options.maxseg or self._layer.config.default_mss
        try:
            return read_getsockopt(self.options, level, option)
        except KeyError:
            raise socket_error(errno.ENOPROTOOPT, f"option ({level}, {option}) is not supported") from None

    def fileno(self) -> int:
        return -1

    def __repr__(self) -> str:
        peer = f" peer={self._conn.remote_ip}:{self._conn.remote_port}" if self._conn else ""
        return f"<TcpSocket {self.state} local={self.local_address[0]}:{self.local_address[1]}{peer}>"


def byte_view(data: bytearray | memoryview) -> memoryview:
    """`data` as a flat view of bytes. A view that already is one is kept: PyPy copies slices of a
    `cast` view byte by byte (milliseconds for 64 KB), so a view is cast only when its format needs it."""
    view = memoryview(data)
    if view.format == "B" and view.ndim == 1 and view.c_contiguous:
        return view
    return view.cast("B")
