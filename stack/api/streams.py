"""asyncio streams on the stack: ``open_connection``, ``start_server`` and ``create_server`` shaped like
asyncio's.

The hosts are pumped by the running event loop (``stack.loops.asyncio_driver.AsyncioDriver``); after a
pump that visited its connection a transport moves bytes between its TCP socket and its protocol. The
streams are asyncio's ``StreamWriter`` and ``StreamReader`` (under PyPy one that keeps the received chunks
as they came, ``stack.api.stream_reader``) over a ``StackTransport`` (an ``asyncio.Transport`` on a
non-blocking ``TcpSocket``), so ``drain()``, ``readexactly()``, ``write_eof()`` and ``wait_closed()``
behave as users expect, with flow control both ways: a paused reader stops reading, the receive window
fills and the peer's TCP stops sending.

``create_server`` is the protocol-shaped twin of ``start_server`` (``loop.create_server``): each accepted
connection gets a protocol driven by its transport directly, with no task, no streams and no futures, which
is what an app that only reacts to bytes and EOF (discard, echo) needs for a cheap setup and teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Optional

from stack.api.socket import SHUT_WR, SO_ERROR, SO_LINGER, SO_REUSEADDR, SOL_SOCKET
from stack.api.stream_reader import READER_CLASS
from stack.loops.asyncio_driver import AsyncioDriver

if TYPE_CHECKING:
    from stack.host import Host
    from stack.tcp import TcpSocket

READ_CHUNK = 256 * 1024
READS_PER_PUMP = 64  # bounded work per transport per pump: other transports and timers get their turn
DEFAULT_LIMIT = 2**16  # asyncio.streams' default buffer limit
LINGER_ABORT = (1, 0)


def _driver_of(host: Host) -> AsyncioDriver:
    driver = host.driver
    if not isinstance(driver, AsyncioDriver):
        raise RuntimeError(f"{host!r} is not driven by an AsyncioDriver (driver: {driver!r}); start one: "
                           "`async with AsyncioDriver([hosts], [wires]):`")
    return driver


class StackTransport(asyncio.Transport):
    """An asyncio transport over one non-blocking ``TcpSocket`` of the stack."""

    def __init__(self, driver: AsyncioDriver, sock: TcpSocket, protocol: asyncio.Protocol,
                 peername: tuple[str, int] | None = None) -> None:
        super().__init__()
        self._driver = driver
        self._sock = sock
        self._protocol = protocol
        self._buffer: deque[memoryview] = deque()
        self._buffered = 0
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        self._writing_paused = False
        self._reading_paused = False
        self._eof_requested = False
        self._eof_sent = False
        self._eof_received = False
        self._closing = False
        self._lost = False
        self._extra: dict[str, Any] = {"sockname": sock.getsockname(), "socket": sock}
        if peername is None:  # accept() already knows it; a connect()ed socket is asked
            with contextlib.suppress(OSError):
                self._extra["peername"] = sock.getpeername()
        else:
            self._extra["peername"] = peername
        connection = sock.connection
        if connection is None:
            raise ValueError("a StackTransport needs a socket that connected or was accepted")
        self._connection = connection
        driver.watch_connection(connection, self._on_progress)

    # -- asyncio.BaseTransport -------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing or self._lost

    @property
    def socket_closed(self) -> bool:
        """The TCP socket is closed and ``connection_lost`` is already scheduled: a ``wait_closed()`` now
        ends within a turn of the loop, so it needs no timeout."""
        return self._lost

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._reading_paused = True
        self._flush()
        self._driver.wakeup()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- reading ---------------------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused and not self._closing:
            self._reading_paused = False
            self._driver.request_turn(self._on_progress)  # what arrived while paused is read now

    # -- writing ---------------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_requested:
            raise RuntimeError("cannot call write() after write_eof()")
        if self._lost or self._closing or not data:
            return
        self._buffer.append(memoryview(bytes(data)))
        self._buffered += len(data)
        self._flush()
        self._maybe_pause_writing()
        self._driver.wakeup()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        if self._eof_requested:
            return
        self._eof_requested = True
        self._flush()
        self._driver.wakeup()

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        """Drop everything and reset the connection (SO_LINGER 0: RST, like asyncio over a kernel socket)."""
        if self._lost:
            return
        self._buffer.clear()
        self._buffered = 0
        with contextlib.suppress(OSError):
            self._sock.setsockopt(SOL_SOCKET, SO_LINGER, LINGER_ABORT)
        self._connection_lost(None)

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        high = 64 * 1024 if high is None else high
        low = high // 4 if low is None else low
        if not 0 <= low <= high:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_writing()

    # -- moving bytes ----------------------------------------------------------------------------------

    def _flush(self) -> None:
        sock = self._sock
        buffer = self._buffer
        try:
            while buffer:
                chunk = buffer[0]
                sent = sock.send(chunk)
                self._buffered -= sent
                if sent == len(chunk):
                    buffer.popleft()
                else:
                    buffer[0] = chunk[sent:]
        except BlockingIOError:
            pass
        except OSError as exc:
            self._connection_lost(exc)
            return
        if buffer:
            return
        if self._eof_requested and not self._eof_sent:
            self._eof_sent = True
            with contextlib.suppress(OSError):
                sock.shutdown(SHUT_WR, self._driver.clock())
        if self._closing and not self._lost:
            self._connection_lost(None)

    def _maybe_pause_writing(self) -> None:
        if not self._writing_paused and self._buffered > self._high_water:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _on_progress(self) -> None:
        if self._lost:
            return
        if self._buffer or self._eof_requested or self._closing:
            self._flush()
        if self._writing_paused and self._buffered <= self._low_water and not self._lost:
            self._writing_paused = False
            self._protocol.resume_writing()
        if self._reading_paused or self._eof_received or self._lost:
            return
        sock = self._sock
        if not sock.readable:
            return  # nothing to read, no EOF, no error: recv() would only raise EAGAIN
        for _ in range(READS_PER_PUMP):
            try:
                data = sock.recv(READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                self._connection_lost(exc)
                return
            if not data:
                self._eof_received = True
                if not self._protocol.eof_received():
                    self.close()
                return
            self._protocol.data_received(data)
            if self._reading_paused or self._lost:
                return
        self._driver.request_turn(self._on_progress)  # more may be waiting: back after the others' turn

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._driver.unwatch_connection(self._connection)
        with contextlib.suppress(OSError):
            self._sock.close(self._driver.clock())
        self._driver.wakeup()
        self._driver.loop.call_soon(self._protocol.connection_lost, exc)


def _streams(driver: AsyncioDriver, sock: TcpSocket, limit: int
             ) -> tuple[asyncio.StreamReader, asyncio.StreamReaderProtocol, StackTransport]:
    loop = driver.loop
    reader = READER_CLASS(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = StackTransport(driver, sock, protocol)
    protocol.connection_made(transport)
    return reader, protocol, transport


async def open_connection(host: Host, ip: str, port: int, *, limit: int = DEFAULT_LIMIT,
                          local_address: tuple[str, int] | None = None, timeout: float | None = None
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect ``host`` to ``ip:port``, like ``asyncio.open_connection`` (OSError with errno on failure)."""
    driver = _driver_of(host)
    sock = host.tcp.socket()
    try:
        if local_address is not None:
            sock.bind(local_address)
        try:
            sock.connect((ip, port), driver.clock())
        except BlockingIOError as exc:
            if exc.errno != errno.EINPROGRESS:
                raise
        await driver.wait_for(lambda: sock.writable, timeout)
        error = int(sock.getsockopt(SOL_SOCKET, SO_ERROR) or 0)
        if error:
            raise OSError(error, f"Connect call failed {(ip, port)}: {os.strerror(error)}")
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close(driver.clock())
        driver.wakeup()
        raise
    reader, protocol, transport = _streams(driver, sock, limit)
    return reader, asyncio.StreamWriter(transport, protocol, reader, driver.loop)


ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Optional[Awaitable[None]]]
ProtocolFactory = Callable[[], asyncio.Protocol]


class StackServer:
    """What ``start_server`` and ``create_server`` return: a listening socket whose accepted connections
    each get a protocol from ``protocol_factory`` over a ``StackTransport``."""

    def __init__(self, driver: AsyncioDriver, sock: TcpSocket, protocol_factory: ProtocolFactory, *,
                 read_at_accept: bool = False) -> None:
        self._driver = driver
        self._sock = sock
        self._protocol_factory = protocol_factory
        # A protocol's connection_made has run when accept returns: it has said whether to read (it may
        # pause), so what came with the handshake (data, often the peer's FIN) is read in the same pump,
        # not one later, and a connect-and-close is over a turn sooner. A stream handler is a task that
        # has not started yet (it may pause reading first): its transport reads from the next pump on.
        self._read_at_accept = read_at_accept
        self._serving = True
        self._closed: asyncio.Future[None] = driver.loop.create_future()
        self.accepted = 0
        driver.add_watcher(self._accept_ready)

    @property
    def sockets(self) -> tuple[TcpSocket, ...]:
        return (self._sock,) if self._serving else ()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._driver.loop

    def is_serving(self) -> bool:
        return self._serving

    def _accept_ready(self) -> None:
        listener = self._sock
        driver = self._driver
        factory = self._protocol_factory
        while self._serving and listener.readable:  # an empty accept queue: accept() would raise EAGAIN
            try:
                sock, address = listener.accept()
            except BlockingIOError:
                return
            self.accepted += 1
            protocol = factory()
            transport = StackTransport(driver, sock, protocol, address)
            protocol.connection_made(transport)
            if self._read_at_accept:
                transport._on_progress()

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        self._driver.remove_watcher(self._accept_ready)
        with contextlib.suppress(OSError):
            self._sock.close(self._driver.clock())
        self._driver.wakeup()
        if not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def start_serving(self) -> None:
        """Already serving since creation (as with ``start_serving=True``)."""

    async def serve_forever(self) -> None:
        try:
            await asyncio.shield(self._closed)
        finally:
            self.close()

    async def __aenter__(self) -> StackServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def start_server(client_connected_cb: ClientConnected, host: Host, ip: str = "0.0.0.0", port: int = 0,
                       *, backlog: int = 100, limit: int = DEFAULT_LIMIT, reuse_address: bool = True
                       ) -> StackServer:
    """Listen on ``ip:port`` of ``host``; each connection calls ``client_connected_cb(reader, writer)``."""
    driver = _driver_of(host)
    sock = _listening_socket(driver, host, ip, port, backlog, reuse_address)
    loop = driver.loop

    def stream_protocol() -> asyncio.Protocol:
        reader = READER_CLASS(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return StackServer(driver, sock, stream_protocol)


async def create_server(protocol_factory: ProtocolFactory, host: Host, ip: str = "0.0.0.0", port: int = 0,
                        *, backlog: int = 100, reuse_address: bool = True) -> StackServer:
    """Listen on ``ip:port`` of ``host``; each connection gets a ``protocol_factory()`` (as asyncio's
    ``loop.create_server`` does).

    The transport calls the protocol's ``connection_made``, ``data_received``, ``eof_received`` (False or
    None closes the connection once the written bytes are out), ``pause_writing``/``resume_writing`` and
    ``connection_lost`` (soon, from the loop) as asyncio's transports do."""
    driver = _driver_of(host)
    return StackServer(driver, _listening_socket(driver, host, ip, port, backlog, reuse_address),
                       protocol_factory, read_at_accept=True)


def _listening_socket(driver: AsyncioDriver, host: Host, ip: str, port: int, backlog: int,
                      reuse_address: bool) -> TcpSocket:
    sock = host.tcp.socket()
    try:
        if reuse_address:
            sock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(backlog)
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close(driver.clock())
        raise
    return sock
