"""One program socket's bytes between its Unix data channel and the stack's TCP socket.

The service holds one end of a Unix stream socket pair; the program holds the other as its socket's file
descriptor. The pump reads what the program wrote and hands it to `TcpSocket.send` while the TCP send
buffer has room (so a full send buffer fills the Unix socket and the program's send blocks or raises EAGAIN
as on Linux), and writes what TCP received into the channel while the program reads it (so a slow reader
closes the advertised window). An EOF on the channel is the program's close (or, announced by `shutdown`,
its SHUT_WR); TCP's EOF becomes SHUT_WR on the channel; a reset or timeout stops the pump with the errno the
program is told when its recv sees EOF or its send EPIPE.

Runs in the node's event loop: `progress` after a pump of the driver that visited the connection, and the
loop's reader and writer callbacks on the channel. No call here blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from stack.api.socket import SHUT_RD, SHUT_WR, SO_ERROR, SOL_SOCKET

if TYPE_CHECKING:
    from stack.loops.asyncio_driver import AsyncioDriver
    from stack.tcp import TcpSocket

CHUNK = 256 * 1024
ROUNDS = 16  # chunks per direction per turn: a fast connection leaves the loop to the others
FILLER = bytes(64 * 1024)


class Pump:
    """Moves one connection's bytes; `done(errno)` is called once when it stops."""

    def __init__(self, driver: AsyncioDriver, tcp: TcpSocket, channel: socket.socket,
                 done: Callable[[int], None]) -> None:
        self.driver = driver
        self.tcp = tcp
        self.channel = channel
        self.done = done
        self.shut_announced: set[int] = set()
        self._loop: asyncio.AbstractEventLoop = driver.loop
        self._out: memoryview | None = None  # from the program, waiting for TCP send-buffer room
        self._in: memoryview | None = None  # from TCP, waiting for room in the channel
        self._program_eof = False
        self._tcp_eof = False
        self._channel_shut = False
        self._reading = False
        self._writing = False
        self._stopped = False

    def start(self) -> None:
        connection = self.tcp.connection
        if connection is None:
            raise ValueError("a pump needs a socket that connected or was accepted")
        self.driver.watch_connection(connection, self.progress)
        self._read_channel(True)
        self.progress()

    # -- readiness of the channel ----------------------------------------------------------------------

    def _read_channel(self, on: bool) -> None:
        if on == self._reading or self._stopped:
            return
        self._reading = on
        if on:
            self._loop.add_reader(self.channel.fileno(), self._to_stack)
        else:
            self._loop.remove_reader(self.channel.fileno())

    def _write_channel(self, on: bool) -> None:
        if on == self._writing or self._stopped:
            return
        self._writing = on
        if on:
            self._loop.add_writer(self.channel.fileno(), self._from_stack)
        else:
            self._loop.remove_writer(self.channel.fileno())

    # -- the two directions ----------------------------------------------------------------------------

    def progress(self) -> None:
        """After a pump that visited the connection: TCP may have received data, freed room, or failed."""
        if self._stopped:
            return
        if self.tcp.error and not self.tcp.readable:
            code = int(self.tcp.getsockopt(SOL_SOCKET, SO_ERROR) or 0) or errno.ECONNRESET
            self.stop(code)
            return
        self._from_stack()
        if not self._stopped and not self._program_eof and (self._out is not None or not self._reading) \
                and self.tcp.writable:
            self._to_stack()

    def _to_stack(self) -> None:
        moved = False
        try:
            for _ in range(ROUNDS):
                if self._out is None:
                    if not self.tcp.writable:
                        self._read_channel(False)  # progress() resumes when TCP has room
                        return
                    try:
                        data = self.channel.recv(CHUNK)
                    except BlockingIOError:
                        self._read_channel(True)
                        return
                    except OSError:
                        data = b""
                    if not data:
                        self._program_eof = True
                        self._read_channel(False)
                        self._program_done()
                        return
                    self._out = memoryview(data)
                try:
                    sent = self.tcp.send(self._out)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self.stop(exc.errno or errno.EPIPE)
                    return
                moved = moved or sent > 0
                self._out = self._out[sent:] if sent < len(self._out) else None
                if self._out is not None:
                    self._read_channel(False)
                    return
        finally:
            if moved:
                self.driver.wakeup()

    def _from_stack(self) -> None:
        moved = False
        try:
            for _ in range(ROUNDS):
                if self._in is None:
                    if self._tcp_eof:
                        self._write_channel(False)
                        self._shut_channel()
                        return
                    try:
                        data = self.tcp.recv(CHUNK)
                    except BlockingIOError:
                        self._write_channel(False)
                        return
                    except OSError as exc:
                        self.stop(exc.errno or errno.ECONNRESET)
                        return
                    moved = True
                    if not data:
                        self._tcp_eof = True
                        continue
                    self._in = memoryview(data)
                try:
                    sent = self.channel.send(self._in)
                except BlockingIOError:
                    sent = 0
                except OSError:  # the program closed its socket: what TCP receives now has no reader
                    self._in = None
                    self._write_channel(False)
                    return
                self._in = self._in[sent:] if sent < len(self._in) else None
                if self._in is not None:
                    self._write_channel(True)
                    return
        finally:
            if moved:  # the window opened (the stack may announce it), and more may wait after ROUNDS
                self.driver.request_turn(self.progress)

    def _shut_channel(self) -> None:
        if not self._channel_shut:
            self._channel_shut = True
            with contextlib.suppress(OSError):
                self.channel.shutdown(socket.SHUT_WR)
        if self._program_eof:
            self._finish_close()

    def _program_done(self) -> None:
        """EOF from the program: its SHUT_WR when announced, else the last copy of its socket closed."""
        now = self.driver.clock()
        if SHUT_WR in self.shut_announced:
            with contextlib.suppress(OSError):
                self.tcp.shutdown(SHUT_WR, now)
            self.driver.wakeup()
            if self._tcp_eof and self._in is None:
                self._finish_close()
            return
        self._finish_close()

    def _finish_close(self) -> None:
        with contextlib.suppress(OSError):
            self.tcp.close(self.driver.clock())
        self.driver.wakeup()
        self.stop(0)

    def shutdown(self, how: int) -> None:
        """The program announced shutdown(how); SHUT_WR takes effect at the channel's EOF (after its data)."""
        self.shut_announced.add(SHUT_WR if how != SHUT_RD else SHUT_RD)
        if how in (SHUT_RD, socket.SHUT_RDWR):
            self.shut_announced.add(SHUT_RD)
            with contextlib.suppress(OSError):
                self.tcp.shutdown(SHUT_RD, self.driver.clock())
        if how == socket.SHUT_RDWR:
            self.shut_announced.add(SHUT_WR)

    def stop(self, code: int) -> None:
        if self._stopped:
            return
        self._read_channel(False)
        self._write_channel(False)
        self._stopped = True
        self.driver.unwatch_connection(self.tcp.connection)
        if code:
            with contextlib.suppress(OSError):
                self.tcp.close(self.driver.clock())
        self.channel.close()
        self.driver.wakeup()
        self.done(code)
