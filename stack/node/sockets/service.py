"""The node's socket service: programs' socket calls, served by the node's stack in the node's event loop.

It listens on a SOCK_SEQPACKET Unix socket in the lab's state directory (`<node>.programs.sock`). Each
program process holds one connection to it (`shim.ServiceConnection`); each of the program's stack sockets
is a *session* here, with a global id (a socket inherited through fork() keeps working from the child's
own connection). Every request is answered at once, in the loop (`wire` describes the messages); nothing
here blocks, so the node's apps and its control socket keep serving while programs run.

A session is a TcpSocket of the node's Host and, once it listens or connects, a channel: for a listener a
SOCK_SEQPACKET pair that carries each accepted connection's data descriptor, for a connection a Unix stream
pair pumped into TCP (`pump.Pump`). The listener hands the program one connection at a time: the next
is taken off the stack's accept queue when the program's accept() has taken the last from the channel,
so the accept queue fills against the backlog as it does in the kernel when a program accepts slowly.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import select
import socket
import struct
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack.api.socket import SO_ERROR, SOL_SOCKET
from stack.node.sockets import wire
from stack.node.sockets.pump import FILLER, Pump

if TYPE_CHECKING:
    from stack.host import Host
    from stack.loops.asyncio_driver import AsyncioDriver
    from stack.tcp import TcpSocket

REMEMBERED_ERRORS = 4096  # stopped connections whose errno a program may still ask for
MAX_SESSIONS = 65536
_LINGER = struct.Struct("ii")


class RequestError(Exception):
    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or os.strerror(code))
        self.code = code


class Session:
    """One program socket: its TcpSocket, what it is (fresh, listener, connecting, connected) and channel."""

    def __init__(self, service: SocketService, sid: int, tcp: TcpSocket, owner: Client | None) -> None:
        self.service = service
        self.id = sid
        self.tcp = tcp
        self.owner = owner
        self.kind = "fresh"
        self.channel: socket.socket | None = None
        self.program_end: socket.socket | None = None  # our copy of the program's end while connecting
        self.filler = 0
        self.pump: Pump | None = None
        self.pending: list[tuple[dict[str, Any], socket.socket]] = []  # accepted, not yet on the channel
        self.names: tuple[Any, Any] = (None, None)

    @property
    def driver(self) -> AsyncioDriver:
        return self.service.driver

    # -- listener ----------------------------------------------------------------------------------------

    def listen(self, backlog: int) -> socket.socket:
        self.tcp.listen(backlog)
        self.channel, program_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.channel.setblocking(False)
        # The smallest send buffer: one queued connection makes the channel unwritable, so the others
        # wait in the stack's accept queue (bounded by the backlog, shown by `tables`) as in the kernel.
        self.channel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        self.kind = "listener"
        self.driver.loop.add_reader(self.channel.fileno(), self._listener_readable)
        self.driver.add_watcher(self._accept_ready)
        self.driver.wakeup()
        return program_end

    def _accept_ready(self) -> None:
        while self.kind == "listener" and self._flush_accepted():
            if not self._room():
                self._wait_for_room()
                return
            try:
                child, peer = self.tcp.accept()
            except BlockingIOError:
                return
            except OSError:
                return
            try:
                session = self.service.new_session(child, None)
            except RequestError:
                continue  # too many program sockets: this connection is closed (new_session closed it)
            data, program_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            session.start_pump(data)
            message = {"id": session.id, "peer": list(peer), "local": list(child.getsockname())}
            self.pending.append((message, program_end))

    def _flush_accepted(self) -> bool:
        """Hand the accepted connections to the program; False while its channel is full."""
        channel = self.channel
        assert channel is not None
        while self.pending:
            message, program_end = self.pending[0]
            try:
                wire.send(channel, message, program_end.fileno(), socket.MSG_DONTWAIT)
            except BlockingIOError:
                self._wait_for_room()
                return False
            except OSError:
                return False
            self.pending.pop(0)
            program_end.close()
        return True

    def _room(self) -> bool:
        """Whether the program took the connection handed to it last (the channel is writable again)."""
        assert self.channel is not None
        poller = select.poll()
        poller.register(self.channel.fileno(), select.POLLOUT)
        return bool(poller.poll(0))

    def _wait_for_room(self) -> None:
        assert self.channel is not None
        self.driver.loop.add_writer(self.channel.fileno(), self._channel_writable)

    def _channel_writable(self) -> None:
        if self.channel is not None:
            self.driver.loop.remove_writer(self.channel.fileno())
        self._accept_ready()

    def _listener_readable(self) -> None:
        """The program's end of the channel sends nothing: readable means every copy of it closed."""
        assert self.channel is not None
        try:
            data = self.channel.recv(1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()

    # -- connection ---------------------------------------------------------------------------------------

    def connect(self, address: tuple[str, int]) -> socket.socket:
        try:
            self.tcp.connect(address, self.driver.clock())
        except BlockingIOError:
            pass
        self.driver.wakeup()
        channel, program_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel.setblocking(False)
        while True:  # unwritable until the handshake ends: fill its send buffer, discarded then
            try:
                self.filler += program_end.send(FILLER, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
        self.channel, self.program_end = channel, program_end
        self.kind = "connecting"
        self.driver.add_watcher(self._connect_progress)
        return program_end

    def _connect_progress(self) -> None:
        tcp = self.tcp
        if self.kind != "connecting" or not (tcp.writable or tcp.error):
            return
        self.driver.remove_watcher(self._connect_progress)
        code = int(tcp.getsockopt(SOL_SOCKET, SO_ERROR) or 0)
        channel = self.channel
        assert channel is not None
        if self.program_end is not None:
            self.program_end.close()
            self.program_end = None
        if code:
            channel.close()
            self.channel = None
            self.finish(code)
            return
        remaining = self.filler
        while remaining:
            try:
                remaining -= len(channel.recv(min(remaining, 1 << 20)))
            except BlockingIOError:
                break  # cannot happen: the filler is queued whole before the answer is sent
        self.start_pump(channel)

    def start_pump(self, channel: socket.socket) -> None:
        channel.setblocking(False)
        self.channel = channel
        self.kind = "connected"
        self.names = self._names()
        self.pump = Pump(self.driver, self.tcp, channel, self.finish)
        self.pump.start()

    # -- both -------------------------------------------------------------------------------------------

    def _names(self) -> tuple[Any, Any]:
        local: Any = None
        peer: Any = None
        with contextlib.suppress(OSError):
            local = list(self.tcp.getsockname())
        with contextlib.suppress(OSError):
            peer = list(self.tcp.getpeername())
        return local, peer

    def names_now(self) -> tuple[Any, Any]:
        if self.kind == "closed":
            return self.names
        local, peer = self._names()
        return local if local is not None else self.names[0], peer

    def finish(self, code: int) -> None:
        """The session is over (its pump stopped, its connect failed, its listener closed)."""
        if self.kind == "closed":
            return
        if self.kind == "connected":
            self.names = self._names() if self.names == (None, None) else self.names
        self.kind = "closed"
        with contextlib.suppress(OSError):
            self.tcp.close(self.driver.clock())
        self.driver.wakeup()
        self.service.ended(self, code)

    def close(self) -> None:
        """The program closed a socket that has no data channel yet, or a listener's channel closed."""
        if self.kind == "listener":
            self.driver.remove_watcher(self._accept_ready)
            if self.channel is not None:
                with contextlib.suppress(Exception):
                    self.driver.loop.remove_reader(self.channel.fileno())
                    self.driver.loop.remove_writer(self.channel.fileno())
                self.channel.close()
            for _, program_end in self.pending:
                program_end.close()
            self.pending.clear()
        elif self.kind == "connecting":
            self.driver.remove_watcher(self._connect_progress)
            for end in (self.channel, self.program_end):
                if end is not None:
                    end.close()
        elif self.kind == "connected":
            return  # the channel's EOF ends it: another process may hold a copy
        self.finish(0)


class SocketService:
    """Serves programs' socket calls on `host` (driven by `driver`) at the Unix socket `path`."""

    def __init__(self, host: Host, driver: AsyncioDriver, path: Path) -> None:
        self.host = host
        self.driver = driver
        self.path = path
        self.sessions: dict[int, Session] = {}
        self.errors: OrderedDict[int, int] = OrderedDict()
        self.clients: set[Client] = set()
        self._ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self.requests = 0

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self.driver.loop.add_reader(listener.fileno(), self._accept)

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self.driver.loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        for client in list(self.clients):
            client.close()
        for session in list(self.sessions.values()):
            if session.pump is not None:
                session.pump.stop(0)
            else:
                session.close()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        client = Client(self, conn)
        self.clients.add(client)
        self.driver.loop.add_reader(conn.fileno(), client.readable)

    def new_session(self, tcp: TcpSocket, owner: Client | None) -> Session:
        if len(self.sessions) >= MAX_SESSIONS:
            tcp.close(self.driver.clock())
            raise RequestError(errno.EMFILE, f"the node serves {MAX_SESSIONS} program sockets at most")
        session = Session(self, next(self._ids), tcp, owner)
        self.sessions[session.id] = session
        return session

    def ended(self, session: Session, code: int) -> None:
        self.sessions.pop(session.id, None)
        if code:
            self.errors[session.id] = code
            while len(self.errors) > REMEMBERED_ERRORS:
                self.errors.popitem(last=False)

    # -- requests -----------------------------------------------------------------------------------------

    def handle(self, client: Client, message: dict[str, Any]
               ) -> tuple[dict[str, Any] | None, socket.socket | None]:
        """The answer to one request (None for `close`) and the descriptor to pass with it."""
        self.requests += 1
        op = message.get("op")
        if op not in wire.OPS:
            raise RequestError(errno.EINVAL, f"unknown op {op!r}")
        if op == "open":
            session = self.new_session(self.host.tcp.socket(), client)
            return {"errno": 0, "id": session.id}, None
        sid = message.get("id")
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise RequestError(errno.EINVAL, "id must be an integer")
        session_or_none = self.sessions.get(sid)
        if op == "close":
            if session_or_none is not None:
                session_or_none.close()
            return None, None
        if op == "status":
            code = self.errors.pop(sid, 0)
            state = session_or_none.tcp.state if session_or_none is not None else "CLOSE"
            return {"errno": 0, "error": code, "state": state}, None
        if session_or_none is None:
            if op == "getsockopt" and (message.get("level"), message.get("option")) == (SOL_SOCKET, SO_ERROR):
                return {"errno": 0, "value": self.errors.pop(sid, 0)}, None
            raise RequestError(errno.EBADF, f"no socket {sid} on this node")
        return self._on_session(session_or_none, op, message)

    def _on_session(self, session: Session, op: str, message: dict[str, Any]
                    ) -> tuple[dict[str, Any], socket.socket | None]:
        tcp = session.tcp
        if op == "bind":
            tcp.bind(_address(message.get("addr")))
            return {"errno": 0, "local": list(tcp.getsockname())}, None
        if op == "listen":
            backlog = message.get("backlog")
            if not isinstance(backlog, int) or not 0 <= backlog <= 65535:
                raise RequestError(errno.EINVAL, f"backlog {backlog!r} is outside 0..65535")
            if session.kind != "fresh":
                raise RequestError(errno.EINVAL)
            return {"errno": 0}, session.listen(backlog)
        if op == "connect":
            if session.kind != "fresh":
                raise RequestError(errno.EISCONN if session.kind == "connected" else errno.EALREADY)
            end = session.connect(_address(message.get("addr")))
            return {"errno": errno.EINPROGRESS, "local": list(tcp.getsockname())}, end
        if op == "setsockopt":
            tcp.setsockopt(_int(message, "level"), _int(message, "option"), _value(message.get("value")))
            return {"errno": 0}, None
        if op == "getsockopt":
            level, option = _int(message, "level"), _int(message, "option")
            if level == SOL_SOCKET and option == SO_ERROR and session.kind == "connecting":
                return {"errno": 0, "value": 0}, None
            return {"errno": 0, "value": _encoded(tcp.getsockopt(level, option))}, None
        if op == "name":
            local, peer = session.names_now()
            return {"errno": 0, "local": local or ["0.0.0.0", 0], "peer": peer}, None
        if op == "shutdown":
            how = _int(message, "how")
            if how not in (socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR):
                raise RequestError(errno.EINVAL)
            if session.pump is None:
                raise RequestError(errno.ENOTCONN)
            session.pump.shutdown(how)
            return {"errno": 0}, None
        raise RequestError(errno.EINVAL, f"unknown op {op!r}")


class Client:
    """One program process's connection: requests in, answers (and descriptors) out, in order."""

    def __init__(self, service: SocketService, conn: socket.socket) -> None:
        self.service = service
        self.conn = conn
        self.closed = False

    def readable(self) -> None:
        for _ in range(64):
            try:
                message, fd = wire.receive(self.conn)
            except BlockingIOError:
                return
            except wire.WireError as exc:
                self._answer({"errno": errno.EINVAL, "message": str(exc)}, None)
                continue
            except OSError:
                message, fd = None, None
            if fd is not None:
                os.close(fd)  # requests carry no descriptors
            if message is None:
                self.close()
                return
            try:
                answer, end = self.service.handle(self, message)
            except RequestError as exc:
                answer, end = {"errno": exc.code, "message": str(exc)}, None
            except OSError as exc:
                answer, end = {"errno": exc.errno or errno.EIO, "message": exc.strerror or str(exc)}, None
            except (TypeError, ValueError) as exc:
                answer, end = {"errno": errno.EINVAL, "message": str(exc)}, None
            except Exception as exc:  # a bug here must not leave the program waiting for its answer
                answer, end = {"errno": errno.EIO, "message": f"socket service: {exc!r}"}, None
            if answer is not None:
                self._answer(answer, end)

    def _answer(self, answer: dict[str, Any], end: socket.socket | None) -> None:
        try:
            wire.send(self.conn, answer, None if end is None else end.fileno(), socket.MSG_DONTWAIT)
        except OSError:
            self.close()
        finally:
            if end is not None and end is not self._kept(end):
                end.close()

    def _kept(self, end: socket.socket) -> socket.socket | None:
        """The program's end of a connecting session stays open here until the handshake ends."""
        for session in self.service.sessions.values():
            if session.program_end is end:
                return end
        return None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.service.clients.discard(self)
        with contextlib.suppress(Exception):
            self.service.driver.loop.remove_reader(self.conn.fileno())
        self.conn.close()
        for session in list(self.service.sessions.values()):
            if session.owner is self and session.kind == "fresh":
                session.close()


def _address(value: Any) -> tuple[str, int]:
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], str) \
            or not isinstance(value[1], int) or not 0 <= value[1] <= 65535:
        raise RequestError(errno.EINVAL, f"address {value!r} is not [IPv4, port 0..65535]")
    return value[0], value[1]


def _int(message: dict[str, Any], name: str) -> int:
    value = message.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(errno.EINVAL, f"{name} must be an integer")
    return value


def _value(value: Any) -> int | bytes:
    if isinstance(value, dict) and isinstance(value.get("bytes"), str):
        return bytes.fromhex(value["bytes"])
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise RequestError(errno.EINVAL, "an option value is an integer or {\"bytes\": hex}")


def _encoded(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, tuple) and len(value) == 2:
        return {"bytes": _LINGER.pack(int(value[0]), int(value[1])).hex()}
    raise RequestError(errno.ENOPROTOOPT, f"option value {value!r} cannot be told")
