"""The program's side: `socket.socket` for AF_INET stream sockets, on the node's stack.

`install(path)` (run by `sitecustomize` before the program's first line) replaces `socket.socket` with
`StackSocket`, a subclass of the real class. A StackSocket made for AF_INET/SOCK_STREAM is a real socket
object whose descriptor starts as an unconnected Unix socket (select sees what it sees of a fresh TCP
socket: writable, hung up). Its calls go to the node's socket service:

- bind, setsockopt, getsockopt, getsockname, getpeername: one request each on the process's service
  connection (`wire`), answered at once by the node's event loop.
- listen: the service answers with a listener channel (a SOCK_SEQPACKET descriptor) that the shim puts in
  place of the placeholder (dup2: the descriptor number the program may already watch stays the same).
  Each accepted connection arrives on it as one message with its data descriptor, so the listener is
  readable exactly when a connection waits, and accept() blocks, times out or raises EAGAIN as the real
  one does, because it is the real recvmsg.
- connect: the service answers with the data descriptor at once, made unwritable (its send buffer is
  full of filler the service discards) until the handshake ends; a non-blocking connect raises
  EINPROGRESS, a blocking one polls for writability within the socket's timeout, then asks SO_ERROR.
- data: send, recv, sendall, makefile() and sendfile() are the real calls on the Unix descriptor; the
  service pumps its other end into the stack's TCP socket. An EOF or EPIPE asks the service whether the
  connection was reset, so the program sees ECONNRESET as on Linux.

Closing: the service closes the stack's socket when every copy of the data descriptor is closed (EOF on
its end), so a socket shared by fork() closes when its last holder does, as in the kernel.

Every other family and type (AF_UNIX, UDP, socketpair(), the event loop's self-pipe) is the real socket.
Standard library only: this module runs in the program's interpreter.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
from typing import Any

from . import wire

_RealSocket = socket.socket
_FLAG_MASK = getattr(socket, "SOCK_NONBLOCK", 0) | getattr(socket, "SOCK_CLOEXEC", 0)


class ServiceConnection:
    """The process's one connection to the node's socket service, opened lazily and again after fork."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = 0
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._sock = None  # the parent's connection stays the parent's; close our copy of it lazily

    def _connection(self) -> socket.socket:
        if self._sock is None or self._pid != os.getpid():
            if self._sock is not None and self._pid != os.getpid():
                _RealSocket.detach(self._sock)  # the parent's: do not close it under the parent
            sock = _RealSocket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                reason = exc.strerror or exc
                raise OSError(errno.ENETDOWN, f"the node's socket service at {self.path} does not answer "
                                              f"({reason}): is the node's stack running?") from None
            self._sock, self._pid = sock, os.getpid()
        return self._sock

    def request(self, message: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        with self._lock:
            sock = self._connection()
            wire.send(sock, message)
            answer, fd = wire.receive(sock, socket.MSG_CMSG_CLOEXEC)
        if answer is None:
            raise OSError(errno.ENETDOWN, "the node's socket service went away (its stack stopped)")
        code = int(answer.get("errno") or 0)
        if code and code != errno.EINPROGRESS:
            if fd is not None:
                os.close(fd)
            raise OSError(code, answer.get("message") or os.strerror(code))
        return answer, fd

    def notify(self, message: dict[str, Any]) -> None:
        """A message without an answer (close); a service that is gone needs no telling."""
        try:
            with self._lock:
                wire.send(self._connection(), message)
        except OSError:
            pass


_service: ServiceConnection | None = None


def install(path: str) -> None:
    """Make `socket.socket` the node's stack for AF_INET stream sockets of this process."""
    global _service
    _service = ServiceConnection(path)
    socket.socket = StackSocket  # type: ignore[misc]
    socket.SocketType = StackSocket  # type: ignore[misc]


def _service_or_fail() -> ServiceConnection:
    if _service is None:
        raise OSError(errno.ENETDOWN, "the stack's socket shim is not installed")
    return _service


def _inet(address: Any) -> list[Any]:
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    host, port = address
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise OverflowError("port must be 0-65535.")
    if host in ("", "0.0.0.0"):
        return ["0.0.0.0", port]
    if not isinstance(host, str):
        raise TypeError(f"str expected, not {type(host).__name__}")
    try:
        socket.inet_aton(host)
        return [host, port]
    except OSError:
        return [socket.gethostbyname(host), port]  # names: the real resolver (the namespace has no DNS)


def _option_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int):
        raise TypeError("a bytes-like object or an integer is required")
    return value


class StackSocket(_RealSocket):
    """socket.socket, whose AF_INET stream sockets live on the node's stack (see the module's text)."""

    __slots__ = ("_nslab_channel", "_nslab_id", "_nslab_on")

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        self._nslab_id: int | None = None
        self._nslab_channel: str | None = None
        kind = socket.SOCK_STREAM if type == -1 else type & ~_FLAG_MASK
        self._nslab_on = (fileno is None and family in (-1, socket.AF_INET) and kind == socket.SOCK_STREAM
                          and proto in (-1, 0, socket.IPPROTO_TCP) and _service is not None)
        if not self._nslab_on:
            super().__init__(family, type, proto, fileno)
            return
        placeholder = _RealSocket(socket.AF_UNIX, socket.SOCK_STREAM)
        super().__init__(socket.AF_INET, socket.SOCK_STREAM, 0 if proto == -1 else proto,
                         placeholder.detach())
        if type != -1 and type & getattr(socket, "SOCK_NONBLOCK", 0):
            self.setblocking(False)

    @classmethod
    def _over(cls, fd: int, session: int, proto: int = 0) -> StackSocket:
        sock = cls(socket.AF_INET, socket.SOCK_STREAM, proto, fileno=fd)
        sock._nslab_on, sock._nslab_id, sock._nslab_channel = True, session, "data"
        sock.settimeout(socket.getdefaulttimeout())
        return sock

    # -- plumbing ------------------------------------------------------------------------------------------

    def _request(self, op: str, **fields: Any) -> tuple[dict[str, Any], int | None]:
        service = _service_or_fail()
        if self._nslab_id is None:
            answer, _ = service.request({"op": "open"})
            self._nslab_id = int(answer["id"])
        return service.request({"op": op, "id": self._nslab_id, **fields})

    def _adopt(self, fd: int, channel: str) -> None:
        """Put the service's descriptor where the placeholder was: the program's fd number stays."""
        timeout = self.gettimeout()
        try:
            os.dup2(fd, self.fileno(), inheritable=False)
        finally:
            os.close(fd)
        self._nslab_channel = channel
        self.settimeout(timeout)  # O_NONBLOCK belongs to the new open file: set it again

    def _reset_error(self) -> int:
        """The stack connection's error when its pump stopped (ECONNRESET, ETIMEDOUT...), else 0."""
        if self._nslab_id is None or self._fileno_or_none() is None:
            return 0
        try:
            answer, _ = self._request("status")
        except OSError:
            return 0
        return int(answer.get("error") or 0)

    def _fileno_or_none(self) -> int | None:
        fd = self.fileno()
        return None if fd < 0 else fd

    # -- the calls that go to the service ------------------------------------------------------------

    def bind(self, address: Any) -> None:
        if not self._nslab_on:
            return super().bind(address)
        self._request("bind", addr=_inet(address))
        return None

    def listen(self, backlog: int = min(socket.SOMAXCONN, 128)) -> None:
        if not self._nslab_on:
            return super().listen(backlog)
        if self._nslab_channel == "listener":
            return None
        if self._nslab_channel is not None:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        _, fd = self._request("listen", backlog=max(0, int(backlog)))
        if fd is None:
            raise OSError(errno.EIO, "the socket service sent no listener channel")
        self._adopt(fd, "listener")
        return None

    def accept(self) -> tuple[Any, Any]:
        if not self._nslab_on:
            return super().accept()
        if self._nslab_channel != "listener":
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        message, fd = wire.receive(self, socket.MSG_CMSG_CLOEXEC)  # the real recvmsg: timeouts, EAGAIN
        if message is None or fd is None:
            raise OSError(errno.EINVAL, "the listening socket was closed by the node")
        sock = StackSocket._over(fd, int(message["id"]), self.proto)
        if socket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock, tuple(message["peer"])

    def connect(self, address: Any) -> None:
        if not self._nslab_on:
            return super().connect(address)
        code = self._connect(address)
        if code:
            raise OSError(code, os.strerror(code))
        return None

    def connect_ex(self, address: Any) -> int:
        if not self._nslab_on:
            return super().connect_ex(address)
        try:
            return self._connect(address)
        except TimeoutError:
            return errno.EAGAIN
        except OSError as exc:
            if exc.errno is None:
                raise
            return exc.errno

    def _connect(self, address: Any) -> int:
        if self._nslab_channel == "listener":
            return errno.EINVAL
        if self._nslab_channel == "data":
            answer, _ = self._request("status")
            if answer.get("state") == "SYN_SENT":
                return errno.EALREADY
            return int(answer.get("error") or 0) or errno.EISCONN
        _, fd = self._request("connect", addr=_inet(address))
        if fd is None:
            raise OSError(errno.EIO, "the socket service sent no data channel")
        self._adopt(fd, "data")
        timeout = self.gettimeout()
        if timeout == 0.0:
            return errno.EINPROGRESS
        poller = select.poll()
        poller.register(self.fileno(), select.POLLOUT)
        if not poller.poll(None if timeout is None else max(1, int(timeout * 1000 + 0.999))):
            raise TimeoutError("timed out")
        answer, _ = self._request("getsockopt", level=socket.SOL_SOCKET, option=socket.SO_ERROR)
        return int(answer.get("value") or 0)

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> Any:
        if not self._nslab_on:
            return super().getsockopt(level, option) if buflen is None else \
                super().getsockopt(level, option, buflen)
        if level == socket.SOL_SOCKET and option == socket.SO_TYPE:
            return socket.SOCK_STREAM
        if level == socket.SOL_SOCKET and option == socket.SO_DOMAIN:
            return socket.AF_INET
        answer, _ = self._request("getsockopt", level=level, option=option)
        value = answer.get("value")
        if isinstance(value, dict):
            data = bytes.fromhex(value.get("bytes", ""))
            return data if buflen is None else data[:buflen]
        if buflen is not None:
            return int(value or 0).to_bytes(4, "little", signed=True)[:buflen]
        return value

    def setsockopt(self, level: int, option: int, value: Any, optlen: int | None = None) -> None:
        if not self._nslab_on:
            if optlen is None:
                return super().setsockopt(level, option, value)
            return super().setsockopt(level, option, value, optlen)
        self._request("setsockopt", level=level, option=option, value=_option_value(value))
        return None

    def getsockname(self) -> Any:
        if not self._nslab_on:
            return super().getsockname()
        if self._nslab_id is None:
            return ("0.0.0.0", 0)
        answer, _ = self._request("name")
        return tuple(answer["local"])

    def getpeername(self) -> Any:
        if not self._nslab_on:
            return super().getpeername()
        if self._nslab_id is None:
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        answer, _ = self._request("name")
        if answer.get("peer") is None:
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        return tuple(answer["peer"])

    def shutdown(self, how: int) -> None:
        if not self._nslab_on:
            return super().shutdown(how)
        if how not in (socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if self._nslab_channel != "data":
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        self._request("shutdown", how=how)  # answered before the EOF below reaches the service
        super().shutdown(how)
        return None

    def _real_close(self, _ss: Any = _RealSocket) -> None:
        if self._nslab_on and self._nslab_id is not None and self.fileno() >= 0 and _service is not None:
            _service.notify({"op": "close", "id": self._nslab_id})
        super()._real_close()  # type: ignore[misc]

    def dup(self) -> Any:
        if not self._nslab_on:
            return super().dup()
        copy = StackSocket(socket.AF_INET, socket.SOCK_STREAM, self.proto, fileno=os.dup(self.fileno()))
        copy._nslab_on, copy._nslab_id, copy._nslab_channel = True, self._nslab_id, self._nslab_channel
        copy.settimeout(self.gettimeout())
        return copy

    # -- data: the real calls, with a reset told as ECONNRESET -------------------------------------------

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if not data and bufsize and self._nslab_on:
            self._raise_reset()
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        count = super().recv_into(buffer, nbytes, flags)
        if not count and self._nslab_on and (nbytes or len(memoryview(buffer))):
            self._raise_reset()
        return count

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except BrokenPipeError:
            if self._nslab_on:
                self._raise_reset()
            raise

    def sendall(self, data: Any, flags: int = 0) -> None:
        try:
            super().sendall(data, flags)
        except BrokenPipeError:
            if self._nslab_on:
                self._raise_reset()
            raise

    def _raise_reset(self) -> None:
        if self._nslab_channel != "data":
            if self._nslab_channel is None:
                raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
            return
        code = self._reset_error()
        if code:
            raise OSError(code, os.strerror(code))
