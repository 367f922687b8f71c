"""The blocking BSD-style socket API, shaped like Python's ``socket.socket`` and the seeds.

``host.socket()`` gives an unbound socket. ``bind()`` assigns an address and port; ``listen(backlog)``
makes it passive and sizes its SYN queue and accept queue; ``accept()`` takes the head of the accept
queue and returns a NEW socket with the peer's address; ``connect()`` picks an ephemeral port, sends the
SYN and waits in SYN_SENT. Errors are ``OSError`` subclasses carrying the standard errno
(ConnectionRefusedError/ECONNREFUSED, ConnectionResetError/ECONNRESET, TimeoutError/ETIMEDOUT,
BrokenPipeError/EPIPE, OSError/EADDRINUSE, BlockingIOError/EAGAIN or EINPROGRESS).

The TCP layer's ``TcpSocket`` never blocks (it behaves like a Linux socket with O_NONBLOCK). Blocking is
this module's job: a call that cannot complete asks the host's *driver* to run the network until the
socket is readable or writable (``Driver.wait_until``). With the deterministic ``Runner`` that makes the
peer host answer in virtual time; with a real-time driver another thread moves the frames. Timeouts work
as in Python: ``settimeout(None)`` blocks, ``settimeout(0)``/``setblocking(False)`` never waits,
``settimeout(t)`` raises ``TimeoutError`` ("timed out") after ``t`` seconds of the driver's clock.
The calls that start or end something on the wire (connect, shutdown, close) happen at the driver's clock
too: the core is told that time, it never remembers one of its own.
"""

from __future__ import annotations

import contextlib
import errno
import socket as _socket
import struct
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from stack.loops.network import Driver, NoDriverError
from stack.tcp.errors import socket_error

if TYPE_CHECKING:
    from stack.host import Host
    from stack.tcp import TcpSocket

# The constants users need, re-exported so scripts can write ``stack.SHUT_WR`` or ``stack.SO_LINGER``.
AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM
SOL_SOCKET = _socket.SOL_SOCKET
IPPROTO_TCP = _socket.IPPROTO_TCP
SHUT_RD = _socket.SHUT_RD
SHUT_WR = _socket.SHUT_WR
SHUT_RDWR = _socket.SHUT_RDWR
SO_REUSEADDR = _socket.SO_REUSEADDR
SO_KEEPALIVE = _socket.SO_KEEPALIVE
SO_RCVBUF = _socket.SO_RCVBUF
SO_SNDBUF = _socket.SO_SNDBUF
SO_LINGER = _socket.SO_LINGER
SO_ERROR = _socket.SO_ERROR
TCP_NODELAY = _socket.TCP_NODELAY
TCP_MAXSEG = _socket.TCP_MAXSEG
TCP_KEEPIDLE = _socket.TCP_KEEPIDLE
TCP_KEEPINTVL = _socket.TCP_KEEPINTVL
TCP_KEEPCNT = _socket.TCP_KEEPCNT

_LINGER = struct.Struct("ii")
_CLOSED_STATES = frozenset({"CLOSE", "TIME_WAIT"})


class Socket:
    """A TCP socket of one ``Host``; blocking by default, like ``socket.socket``."""

    def __init__(self, host: Host, tcp: TcpSocket) -> None:
        self._host = host
        self._tcp = tcp
        self._timeout: float | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._tcp.state
        return f"<stack.api.socket.Socket {self._host.ip} {state} timeout={self._timeout}>"

    # -- context manager -----------------------------------------------------------------------------

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties like socket.socket ---------------------------------------------------------------

    @property
    def family(self) -> int:
        return AF_INET

    @property
    def type(self) -> int:
        return SOCK_STREAM

    @property
    def host(self) -> Host:
        return self._host

    @property
    def tcp(self) -> TcpSocket:
        """The non-blocking socket of the TCP layer underneath (for drivers and inspection)."""
        return self._tcp

    @property
    def state(self) -> str:
        return self._tcp.state

    @property
    def readable(self) -> bool:
        return self._tcp.readable

    @property
    def writable(self) -> bool:
        return self._tcp.writable

    @property
    def proto(self) -> int:
        return IPPROTO_TCP

    def fileno(self) -> int:
        """A real descriptor, readable and writable when this socket is (`stack.api.readiness`), so select,
        selectors and asyncio's loop can wait on it; the socket's data never passes through it. -1 once
        closed, as for socket.socket."""
        if self._closed:
            return -1
        tcp = self._tcp
        driver = self._host.driver
        with driver.locked() if driver is not None else contextlib.nullcontext():
            return self._host.readiness.register(self, lambda: (tcp.readable, tcp.writable)).fileno()

    # -- timeouts --------------------------------------------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        if timeout is not None:
            timeout = float(timeout)
            if timeout < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    # -- plumbing ----------------------------------------------------------------------------------------

    def _driver(self) -> Driver:
        driver = self._host.driver
        if driver is None:
            raise NoDriverError(f"{self._host!r} has no driver: a blocking socket call needs a Runner or a "
                                "real-time driver running the host (or setblocking(False) and drive it)")
        return driver

    def _now(self) -> float:
        """The time of a call that starts or ends something on the wire: the driver's clock.

        The stack keeps no clock of its own, so a connect or shutdown on a host nobody drives has no time
        to happen at."""
        return self._driver().clock()

    def _call(self, operation: Callable[[], Any]) -> Any:
        """Run one non-blocking operation under the driver's lock and tell the driver something changed."""
        self._check_open()
        driver = self._host.driver
        if driver is None:
            try:
                return operation()
            finally:
                self._host.readiness.refresh_one(self)
        with driver.locked():
            try:
                return operation()
            finally:
                self._host.readiness.refresh_one(self)
                driver.wakeup()

    def _blocking(self, operation: Callable[[], Any], ready: Callable[[], bool],
                  timeout: float | None) -> Any:
        """Retry ``operation`` until it stops raising EAGAIN, waiting up to ``timeout`` for ``ready``."""
        if timeout == 0.0:
            return self._call(operation)
        driver = self._driver()
        clock = _DriverClock(driver)
        remaining = timeout
        while True:
            try:
                return self._call(operation)
            except BlockingIOError:
                pass
            if remaining is not None:
                remaining = timeout - clock.elapsed()  # type: ignore[operator]
                if remaining <= 0:
                    raise TimeoutError("timed out") from None
            if not driver.wait_until(ready, remaining):
                raise TimeoutError("timed out") from None

    def _check_open(self) -> None:
        if self._closed:
            raise socket_error(errno.EBADF)

    # -- the seeds' calls ------------------------------------------------------------------------------

    def bind(self, address: tuple[str, int]) -> None:
        self._call(lambda: self._tcp.bind(_address(address)))

    def listen(self, backlog: int = 128) -> None:
        self._call(lambda: self._tcp.listen(backlog))

    def accept(self) -> tuple[Socket, tuple[str, int]]:
        """The head of the accept queue as a NEW socket, and the peer address (blocks while empty)."""
        tcp = self._tcp
        connection, address = self._blocking(tcp.accept, lambda: tcp.readable, self._timeout)
        return Socket(self._host, connection), address

    def connect(self, address: tuple[str, int]) -> None:
        error = self._connect(_address(address))
        if error:
            raise socket_error(error)

    def connect_ex(self, address: tuple[str, int]) -> int:
        """Like connect() but returns the errno (0 on success, EINPROGRESS when non-blocking, EAGAIN when
        the timeout expires, as CPython's connect_ex does)."""
        try:
            return self._connect(_address(address))
        except TimeoutError:
            return errno.EAGAIN
        except OSError as exc:
            if exc.errno is None:
                raise
            return exc.errno

    def _connect(self, address: tuple[str, int]) -> int:
        tcp = self._tcp
        try:
            self._call(lambda: tcp.connect(address, self._now()))
            return 0
        except BlockingIOError as exc:
            if exc.errno == errno.EALREADY and self._timeout == 0.0:
                raise
            if self._timeout == 0.0:
                return errno.EINPROGRESS
        except OSError as exc:
            if exc.errno != errno.EALREADY:
                raise
            if self._timeout == 0.0:
                raise
        driver = self._driver()
        if not driver.wait_until(lambda: tcp.writable, self._timeout):
            raise TimeoutError("timed out")
        with driver.locked():
            return int(tcp.getsockopt(SOL_SOCKET, SO_ERROR) or 0)

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        _no_flags(flags)
        tcp = self._tcp
        return self._blocking(lambda: tcp.send(data), lambda: tcp.writable, self._timeout)

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        """Send every byte; the timeout bounds the whole call, as in CPython since 3.5."""
        _no_flags(flags)
        view = memoryview(data).cast("B")
        tcp = self._tcp
        if self._timeout == 0.0:
            while view:  # non-blocking: as much as fits, then EAGAIN like socket.sendall
                view = view[self._call(partial(tcp.send, view)):]
            return
        driver = self._driver()
        clock = _DriverClock(driver)
        while view:
            remaining = None if self._timeout is None else self._timeout - clock.elapsed()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("timed out")
            sent = self._blocking(partial(tcp.send, view), lambda: tcp.writable, remaining)
            view = view[sent:]

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        _no_flags(flags)
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        tcp = self._tcp
        return self._blocking(lambda: tcp.recv(bufsize), lambda: tcp.readable, self._timeout)

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if nbytes == 0 or nbytes > len(view):
            nbytes = len(view)
        data = self.recv(nbytes, flags)
        view[:len(data)] = data
        return len(data)

    def recv_exactly(self, size: int) -> bytes:
        """Receive exactly ``size`` bytes (EOF first raises ``EOFError``): a convenience for tests."""
        chunks: list[bytes] = []
        remaining = size
        while remaining:
            chunk = self.recv(min(remaining, 1 << 20))
            if not chunk:
                raise EOFError(f"connection closed after {size - remaining} of {size} bytes")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def shutdown(self, how: int) -> None:
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise socket_error(errno.EINVAL)
        self._call(lambda: self._tcp.shutdown(how, self._now()))

    def close(self) -> None:
        """Close the socket. With SO_LINGER on and a timeout > 0, a blocking close waits (like Linux) until
        the data is delivered or the linger time passes; otherwise it returns at once and TCP finishes the
        close (FIN_WAIT, TIME_WAIT) in the background."""
        if self._closed:
            return
        linger_on, linger_seconds = self._linger()
        tcp = self._tcp
        # A socket with nothing left to send closes at no time, even on a host nobody drives.
        self._call(lambda: tcp.close(self._now() if tcp.has_peer else None))
        self._closed = True
        self._host.readiness.unregister(self)
        driver = self._host.driver
        if linger_on and linger_seconds > 0 and self._timeout != 0.0 and driver is not None:
            tcp = self._tcp
            driver.wait_until(lambda: tcp.state in _CLOSED_STATES or tcp.state == "FIN_WAIT2",
                              float(linger_seconds))

    def _linger(self) -> tuple[int, int]:
        try:
            value = self._tcp.getsockopt(SOL_SOCKET, SO_LINGER)
        except OSError:
            return 0, 0
        if isinstance(value, (bytes, bytearray)):
            return _LINGER.unpack(bytes(value)[:_LINGER.size])
        if isinstance(value, tuple):
            return int(value[0]), int(value[1])
        return 0, 0

    def detach(self) -> None:
        raise OSError(errno.EOPNOTSUPP, "a stack socket has no file descriptor to detach")

    # -- options and names -----------------------------------------------------------------------------

    def setsockopt(self, level: int, option: int, value: Any, optlen: int | None = None) -> None:
        self._call(lambda: self._tcp.setsockopt(level, option, value))

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> Any:
        return self._call(lambda: self._tcp.getsockopt(level, option))

    def getsockname(self) -> tuple[str, int]:
        return self._call(self._tcp.getsockname)

    def getpeername(self) -> tuple[str, int]:
        return self._call(self._tcp.getpeername)


class _DriverClock:
    """Measures elapsed time on the driver's clock (virtual for the Runner), for timeouts spanning waits."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._start = driver.clock()

    def elapsed(self) -> float:
        return self._driver.clock() - self._start


def _address(address: tuple[str, int]) -> tuple[str, int]:
    """Validate an (ip, port) pair like socket.socket does, with its error messages."""
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    ip, port = address
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise OverflowError("bind(): port must be 0-65535.")
    if ip in ("", "0.0.0.0"):
        return "0.0.0.0", port
    try:
        _socket.inet_aton(ip)
    except (OSError, TypeError):
        raise _socket.gaierror(_socket.EAI_NONAME, f"{ip!r} is not an IPv4 address "
                                                   "(the stack resolves no names)") from None
    return ip, port


def _no_flags(flags: int) -> None:
    if flags:
        raise OSError(errno.EOPNOTSUPP, "socket flags (MSG_*) are not supported by the stack")
