"""`TcpSocket`: a non-blocking socket that behaves like a Linux TCP socket with O_NONBLOCK.

Errors are `OSError`s with Linux's errno values.  A socket is, in the seeds' order: fresh (from `socket()`),
bound (`bind()`), then either listening (`listen()`, with a SYN queue and an accept queue) or connected
(`connect()` or `accept()`).  User calls happen at the layer's current time: the last `now` the host passed to
`poll`, `segment_arrives` or `icmp_error`.

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
import struct
from typing import TYPE_CHECKING

from stack.tcp.addresses import can_be_a_peer
from stack.tcp.config import CONGESTION_CHOICES
from stack.tcp.congestion import create_congestion_control
from stack.tcp.listener import Listener
from stack.tcp.state import TcpState
from stack.tcp.urgent import urgent_pending

if TYPE_CHECKING:
    from stack.tcp.connection import Connection
    from stack.tcp.layer import TcpLayer

S = TcpState
WILDCARD = "0.0.0.0"
CONNECTED_STATES = frozenset(
    {S.ESTABLISHED, S.FIN_WAIT1, S.FIN_WAIT2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK, S.TIME_WAIT}
)
SENDABLE_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT})
MIN_BUFFER = 2304  # Linux's SOCK_MIN_RCVBUF / 2 ... the smallest buffer setsockopt accepts (doubled: 4608)


def _error(code: int, detail: str = "") -> OSError:
    message = detail or errno.errorcode.get(code, str(code))
    if code in (errno.EAGAIN, errno.EINPROGRESS, errno.EALREADY):
        return BlockingIOError(code, message)
    if code == errno.EPIPE:
        return BrokenPipeError(code, message)
    if code == errno.ECONNRESET:
        return ConnectionResetError(code, message)
    if code == errno.ECONNREFUSED:
        return ConnectionRefusedError(code, message)
    if code == errno.ETIMEDOUT:
        return TimeoutError(code, message)
    return OSError(code, message)


def _parse_address(address: object) -> tuple[str, int]:
    if not (isinstance(address, tuple) and len(address) == 2):
        raise _error(errno.EINVAL, f"address must be (ip, port), got {address!r}")
    ip, port = address
    if ip == "":
        ip = WILDCARD
    try:
        ip = str(ipaddress.IPv4Address(ip))
    except (ipaddress.AddressValueError, ValueError):
        raise _error(errno.EINVAL, f"not an IPv4 address: {ip!r}") from None
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise OverflowError(f"port must be 0-65535, got {port!r}")
    return ip, port


class TcpSocket:
    """One socket of a `TcpLayer`; see the module docstring for its Linux behaviours."""

    def __init__(self, layer: TcpLayer) -> None:
        self._layer = layer
        self._local: tuple[str, int] | None = None
        self._listener: Listener | None = None
        self._conn: Connection | None = None
        self._error_reported = False
        self._connect_reported = False
        self._shut_rd = False
        self._shut_wr = False
        self.closed = False
        self.auto_bound = False  # bound by connect() rather than bind(): the port may be shared
        self.reuseaddr = False
        config = layer.config
        self._keepalive = False
        self._nodelay = not config.nagle
        self._rcvbuf = config.rcvbuf
        self._sndbuf = config.sndbuf
        self._linger: tuple[int, int] = (0, 0)
        self._keepidle = config.keepalive_time
        self._keepintvl = config.keepalive_intvl
        self._keepcnt = config.keepalive_probes
        self._user_timeout = config.user_timeout
        self._maxseg: int | None = None
        self._congestion = config.congestion

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
    def urgent_pending(self) -> int:
        """Urgent octets not yet read (the bytes before the urgent mark; 0 if none): SIOCATMARK's question.

        Urgent data arrives in line (SO_OOBINLINE); this says how much of what recv() returns next is
        urgent (stack/tcp/urgent.py)."""
        conn = self._conn
        return 0 if conn is None else urgent_pending(conn)

    def fileno(self) -> int:
        return -1

    # ------------------------------------------------------------------ setup

    def _check_open(self) -> None:
        if self.closed:
            raise _error(errno.EBADF, "socket is closed")

    def bind(self, address: tuple[str, int]) -> None:
        self._check_open()
        ip, port = _parse_address(address)
        if self._local is not None:
            raise _error(errno.EINVAL, "socket is already bound")
        is_local = self._layer.is_local_address
        if ip != WILDCARD and is_local is not None and not is_local(ip):
            raise _error(errno.EADDRNOTAVAIL, f"{ip} is not an address of this host")
        self._local = (ip, port)
        try:
            self._local = (ip, self._layer.bind(self, ip, port))
        except OSError:
            self._local = None
            raise

    def listen(self, backlog: int = 128) -> None:
        self._check_open()
        if self._conn is not None:
            raise _error(errno.EINVAL, "socket is connected")
        if self._listener is not None:
            self._listener.set_backlog(backlog)
            return
        if self._local is None:
            self.bind((WILDCARD, 0))
        ip, port = self.local_address
        layer = self._layer
        for other in layer.bindings.get(port, ()):
            overlaps = other.local_address[0] in (ip, WILDCARD) or ip == WILDCARD
            if other is not self and other.listening and overlaps:
                raise _error(errno.EADDRINUSE, f"{ip}:{port} already has a listener")
        listener = Listener(ip, port, backlog, layer.config, socket=self)
        layer.listeners[(ip, port)] = listener
        self._listener = listener

    def accept(self) -> tuple[TcpSocket, tuple[str, int]]:
        self._check_open()
        if self._listener is None:
            raise _error(errno.EINVAL, "socket is not listening")
        conn = self._listener.pop_accepted()
        if conn is None:
            raise _error(errno.EAGAIN)
        child = TcpSocket(self._layer)
        child._inherit(self)
        child._conn = conn
        child._local = (conn.local_ip, conn.local_port)
        child._connect_reported = True
        layer = self._layer
        layer.bindings.setdefault(conn.local_port, []).append(child)
        layer.owner_of[conn] = child
        return child, (conn.remote_ip, conn.remote_port)

    def connect(self, address: tuple[str, int]) -> None:
        self._check_open()
        if self._listener is not None:
            raise _error(errno.EISCONN, "socket is listening")
        conn = self._conn
        if conn is not None:
            if conn.state in (S.SYN_SENT, S.SYN_RECV):
                raise _error(errno.EALREADY)
            if self.error:
                code = self.error
                self._error_reported = True
                raise _error(code)
            if conn.state in CONNECTED_STATES:
                if not self._connect_reported:
                    self._connect_reported = True
                    return
                raise _error(errno.EISCONN)
            raise _error(errno.ECONNABORTED)
        ip, port = _parse_address(address)
        if ip == WILDCARD or port == 0:
            raise _error(errno.ECONNREFUSED if port == 0 else errno.ENETUNREACH)
        layer = self._layer
        if not can_be_a_peer(ip, layer.is_broadcast_address):
            # RFC 9293 3.9.1.1 (MUST-46); Linux's tcp_v4_connect answers a broadcast route with ENETUNREACH.
            raise _error(errno.ENETUNREACH, f"{ip} is a broadcast or multicast address")
        found = layer.route(ip)
        if found is None:
            raise _error(errno.ENETUNREACH, f"no route to {ip}")
        route_ip, mtu = found
        if self._local is None:
            local_ip = route_ip
            local_port = layer.connect_port(local_ip, ip, port)
            self._local = (local_ip, local_port)
            self.auto_bound = True
            layer.bindings.setdefault(local_port, []).append(self)
        else:
            local_ip = self._local[0] if self._local[0] != WILDCARD else route_ip
            local_port = self._local[1]
            self._local = (local_ip, local_port)
            if (local_ip, local_port, ip, port) in layer.connections:
                raise _error(errno.EADDRNOTAVAIL, "4-tuple already in use")
        conn = layer.new_connection(local_ip, local_port, ip, port, mtu, layer.now)
        self.apply_options(conn)
        self._conn = conn
        layer.owner_of[conn] = self
        conn.open_active(layer.now)
        layer.touch(conn)
        raise _error(errno.EINPROGRESS)

    def connect_ex(self, address: tuple[str, int]) -> int:
        try:
            self.connect(address)
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
            raise _error(errno.EPIPE)
        code = self._take_error()
        if code:
            raise _error(code)
        if conn.state in (S.SYN_SENT, S.SYN_RECV) and not self._shut_wr:
            raise _error(errno.EAGAIN)
        if self._shut_wr or conn.fin_requested or conn.state not in SENDABLE_STATES:
            raise _error(errno.EPIPE)
        if not len(data):
            return 0
        taken = conn.send(memoryview(data).cast("B") if not isinstance(data, bytes) else data)
        if taken == 0:
            raise _error(errno.EAGAIN)
        self._layer.touch(conn)
        return taken

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """Non-blocking sendall: all or EAGAIN before queuing anything (so nothing is sent twice)."""
        conn = self._conn
        if conn is not None and conn.state in SENDABLE_STATES and conn.send_space < len(data):
            raise _error(errno.EAGAIN)
        self.send(data)

    def recv(self, bufsize: int) -> bytes:
        self._check_open()
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        conn = self._conn
        if conn is None:
            raise _error(errno.ENOTCONN)
        data = b""
        if bufsize:
            data = conn.recv(bufsize)
        if data:
            self._layer.touch(conn)
            return data
        code = self._take_error()
        if code:
            raise _error(code)
        if conn.eof or self._shut_rd or conn.state is S.CLOSE or bufsize == 0:
            return b""
        raise _error(errno.EAGAIN)

    def shutdown(self, how: int) -> None:
        self._check_open()
        if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
            raise _error(errno.EINVAL, f"shutdown: bad 'how' {how!r}")
        layer = self._layer
        if self._listener is not None:
            if how != _socket.SHUT_WR:
                # Linux: SHUT_RD on a listener stops listening (pending connections are reset).
                layer.close_listener(self._listener, layer.now)
                self._listener = None
            return
        conn = self._conn
        if conn is None or conn.state is S.CLOSE:
            raise _error(errno.ENOTCONN)
        if how in (_socket.SHUT_RD, _socket.SHUT_RDWR):
            self._shut_rd = True
        if how in (_socket.SHUT_WR, _socket.SHUT_RDWR):
            self._shut_wr = True
            conn.shutdown_write(layer.now)
        layer.touch(conn)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        layer = self._layer
        if self._listener is not None:
            layer.close_listener(self._listener, layer.now)
            self._listener = None
        conn = self._conn
        if conn is not None and conn.state is not S.CLOSE:
            linger_abort = self._linger[0] != 0 and self._linger[1] == 0
            conn.close(layer.now, linger_abort=linger_abort)
            layer.touch(conn)
            if conn.state is not S.CLOSE:
                return  # the binding lives on with the connection (FIN_WAIT, TIME_WAIT)
        layer.owner_of.pop(conn, None) if conn is not None else None
        layer.unbind(self)

    def getsockname(self) -> tuple[str, int]:
        self._check_open()
        return self.local_address

    def getpeername(self) -> tuple[str, int]:
        self._check_open()
        conn = self._conn
        if conn is None or conn.state not in CONNECTED_STATES:
            raise _error(errno.ENOTCONN)
        return (conn.remote_ip, conn.remote_port)

    # ------------------------------------------------------------------ options

    def _inherit(self, parent: TcpSocket) -> None:
        """accept()ed sockets carry the listener's options, as Linux's sk_clone does."""
        for name in ("reuseaddr", "_keepalive", "_nodelay", "_rcvbuf", "_sndbuf", "_linger", "_keepidle",
                     "_keepintvl", "_keepcnt", "_user_timeout", "_maxseg", "_congestion"):
            setattr(self, name, getattr(parent, name))

    def apply_options(self, conn: Connection) -> None:
        """Copy the options that change protocol behaviour into the connection."""
        conn.nodelay = self._nodelay
        conn.keepalive = self._keepalive
        conn.keepalive_time = self._keepidle
        conn.keepalive_intvl = self._keepintvl
        conn.keepalive_probes = self._keepcnt
        conn.user_timeout = self._user_timeout
        conn.max_segment = self._maxseg
        conn.sndbuf = self._sndbuf
        if conn.state in (S.CLOSE, S.LISTEN):
            conn.rcvbuf = self._rcvbuf
            conn.reassembly.limit = self._rcvbuf
            if conn.cc.name != self._congestion:
                initial_window = self._layer.config.initial_window
                conn.cc = create_congestion_control(self._congestion, conn.send_mss, initial_window)
        if not self._keepalive:
            conn.keepalive_deadline = None

    def setsockopt(self, level: int, option: int, value: object) -> None:
        self._check_open()
        if level == _socket.SOL_SOCKET:
            if option == _socket.SO_REUSEADDR:
                self.reuseaddr = bool(_as_int(value))
            elif option == _socket.SO_KEEPALIVE:
                self._keepalive = bool(_as_int(value))
            elif option == _socket.SO_RCVBUF:
                self._rcvbuf = max(MIN_BUFFER, _as_int(value))
            elif option == _socket.SO_SNDBUF:
                self._sndbuf = max(MIN_BUFFER, _as_int(value))
            elif option == _socket.SO_LINGER:
                self._linger = _as_linger(value)
            else:
                raise _error(errno.ENOPROTOOPT, f"SOL_SOCKET option {option} is not supported")
        elif level == _socket.IPPROTO_TCP:
            if option == _socket.TCP_NODELAY:
                self._nodelay = bool(_as_int(value))
            elif option == _socket.TCP_KEEPIDLE:
                self._keepidle = float(_positive(value, option))
            elif option == _socket.TCP_KEEPINTVL:
                self._keepintvl = float(_positive(value, option))
            elif option == _socket.TCP_KEEPCNT:
                self._keepcnt = _positive(value, option)
            elif option == _socket.TCP_MAXSEG:
                mss = _as_int(value)
                if not 88 <= mss <= 65535:
                    raise _error(errno.EINVAL, f"TCP_MAXSEG {mss} outside 88-65535")
                self._maxseg = mss
            elif option == _socket.TCP_USER_TIMEOUT:
                ms = _as_int(value)
                if ms < 0:
                    raise _error(errno.EINVAL, f"TCP_USER_TIMEOUT {ms} is negative")
                self._user_timeout = ms / 1000.0 if ms else None
            elif option == _socket.TCP_CONGESTION:
                name = value.decode() if isinstance(value, bytes) else str(value)
                name = name.rstrip("\0")
                if name not in CONGESTION_CHOICES:
                    choices = ", ".join(CONGESTION_CHOICES)
                    raise _error(errno.ENOENT, f"congestion control {name!r}: choose one of {choices}")
                self._congestion = name
                if self._conn is not None and self._conn.cc.name != name:
                    conn = self._conn
                    cc = create_congestion_control(name, conn.send_mss, self._layer.config.initial_window)
                    cc.cwnd, cc.ssthresh = conn.cc.cwnd, conn.cc.ssthresh
                    conn.cc = cc
            else:
                raise _error(errno.ENOPROTOOPT, f"IPPROTO_TCP option {option} is not supported")
        else:
            raise _error(errno.ENOPROTOOPT, f"option level {level} is not supported")
        if self._conn is not None:
            self.apply_options(self._conn)
            self._layer.touch(self._conn)

    def getsockopt(self, level: int, option: int) -> object:
        self._check_open()
        if level == _socket.SOL_SOCKET:
            if option == _socket.SO_ERROR:
                return self._take_error()
            if option == _socket.SO_REUSEADDR:
                return int(self.reuseaddr)
            if option == _socket.SO_KEEPALIVE:
                return int(self._keepalive)
            if option == _socket.SO_RCVBUF:
                return 2 * self._rcvbuf
            if option == _socket.SO_SNDBUF:
                return 2 * self._sndbuf
            if option == _socket.SO_LINGER:
                return self._linger
            if option == _socket.SO_TYPE:
                return _socket.SOCK_STREAM
            if option == _socket.SO_ACCEPTCONN:
                return int(self._listener is not None)
        elif level == _socket.IPPROTO_TCP:
            if option == _socket.TCP_NODELAY:
                return int(self._nodelay)
            if option == _socket.TCP_KEEPIDLE:
                return int(self._keepidle)
            if option == _socket.TCP_KEEPINTVL:
                return int(self._keepintvl)
            if option == _socket.TCP_KEEPCNT:
                return self._keepcnt
            if option == _socket.TCP_MAXSEG:
                if self._conn is not None and self._conn.state is not S.SYN_SENT:
                    return self._conn.send_mss
                return self._maxseg or self._layer.config.default_mss
            if option == _socket.TCP_USER_TIMEOUT:
                return int((self._user_timeout or 0) * 1000)
            if option == _socket.TCP_CONGESTION:
                return self._congestion
        raise _error(errno.ENOPROTOOPT, f"option ({level}, {option}) is not supported")

    def __repr__(self) -> str:
        peer = f" peer={self._conn.remote_ip}:{self._conn.remote_port}" if self._conn else ""
        return f"<TcpSocket {self.state} local={self.local_address[0]}:{self.local_address[1]}{peer}>"


def _as_int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, bytes) and len(value) == 4:
        return struct.unpack("i", value)[0]
    raise _error(errno.EINVAL, f"option value must be an int, got {value!r}")


def _positive(value: object, option: int) -> int:
    number = _as_int(value)
    if number < 1:
        raise _error(errno.EINVAL, f"option {option} needs a positive value, got {number}")
    return number


def _as_linger(value: object) -> tuple[int, int]:
    """SO_LINGER as (onoff, seconds) or the packed struct linger Python's socket module uses."""
    if isinstance(value, bytes) and len(value) == 8:
        onoff, seconds = struct.unpack("ii", value)
    elif isinstance(value, tuple) and len(value) == 2:
        onoff, seconds = int(value[0]), int(value[1])
    else:
        raise _error(errno.EINVAL, f"SO_LINGER needs (onoff, seconds), got {value!r}")
    return (1 if onoff else 0, max(0, seconds))
