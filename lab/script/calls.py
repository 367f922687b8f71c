"""A script's system calls, made the same way on either side.

`Calls` keeps the script's file descriptor table (socket() and accept() return the lowest free number
from 3 up, as in a fresh process) and turns each `Syscall` into an operation on a side's `SocketOps`:
Linux's are kernel sockets, the stack's are `stack.tcp` sockets. ``...`` arguments take packetdrill's
defaults: bind() to 192.168.0.1:8080, connect() to 192.0.2.1:8080, the buffer of write() or read() the
size the call names.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
from collections.abc import Callable
from typing import Protocol

from lab.script.model import LOCAL_IP, LOCAL_PORT, REMOTE_IP, Arg, Script, Syscall
from lab.script.syntax import ScriptError

REMOTE_SERVICE_PORT = 8080
MAX_SCRIPT_SECONDS = 600.0
_MODULES = (socket, os, fcntl, select)
ARITY = {"socket": (3,), "bind": (3,), "listen": (2,), "accept": (3,), "connect": (3,), "write": (3,),
         "send": (4,), "read": (3,), "recv": (4,), "shutdown": (2,), "close": (1,), "fcntl": (2, 3),
         "setsockopt": (5,), "getsockopt": (5,), "poll": (3,)}


class Blocked(Exception):
    """A blocking call that cannot complete yet: `retry` tries again (raising Blocked while it still
    cannot). `give_up_at` (script time) ends a wait that has a timeout, with `fallback` as its result."""

    def __init__(self, retry: Callable[[], int], give_up_at: float | None = None, fallback: int = 0) -> None:
        super().__init__("blocked")
        self.retry = retry
        self.give_up_at = give_up_at
        self.fallback = fallback


class Skipped(Exception):
    """A call or option this side does not have: the report notes it, nothing is checked."""


class Mismatch(Exception):
    """A call returned what the script expected but handed back a different value (getsockopt, poll)."""


class SocketOps(Protocol):
    def socket(self) -> object: ...
    def bind(self, handle: object, address: tuple[str, int]) -> None: ...
    def listen(self, handle: object, backlog: int) -> None: ...
    def accept(self, handle: object) -> object: ...
    def connect(self, handle: object, address: tuple[str, int]) -> None: ...
    def send(self, handle: object, size: int) -> int: ...
    def recv(self, handle: object, size: int) -> int: ...
    def shutdown(self, handle: object, how: int) -> None: ...
    def close(self, handle: object) -> None: ...
    def setsockopt(self, handle: object, level: int, option: int,
                   value: int | tuple[int, int] | bytes) -> None: ...
    def getsockopt(self, handle: object, level: int, option: int) -> int: ...
    def set_nonblocking(self, handle: object, on: bool) -> None: ...
    def nonblocking(self, handle: object) -> bool: ...
    def poll(self, handle: object, events: int, timeout: float) -> int: ...


def constant(name: str) -> int | None:
    for module in _MODULES:
        value = getattr(module, name, None)
        if isinstance(value, int) and name.isupper():
            return value
    return None


def _int(arg: Arg, call: Syscall, what: str) -> int:
    if arg.kind == "int":
        return int(arg.value)  # type: ignore[call-overload]
    if arg.kind == "names":
        total = 0
        for name in arg.value:  # type: ignore[union-attr]
            value = constant(name)
            if value is None:
                raise ScriptError(call.where, f"{call.name}: unknown constant {name!r} for {what}")
            total |= value
        return total
    if arg.kind == "list" and len(arg.value) == 1:  # type: ignore[arg-type]
        return _int(arg.value[0], call, what)  # type: ignore[index]
    raise ScriptError(call.where, f"{call.name}: {what} must be a number or a constant, got {arg}")


def _option_value(arg: Arg, call: Syscall) -> int | tuple[int, int] | bytes:
    if arg.kind == "string":
        return str(arg.value).encode()
    if arg.kind == "struct":
        fields = arg.value
        if set(fields) == {"onoff", "linger"}:  # type: ignore[arg-type]
            return (_int(fields["onoff"], call, "onoff"), _int(fields["linger"], call, "linger"))  # type: ignore[index]
        raise ScriptError(call.where, f"{call.name}: only {{onoff=N, linger=N}} structs are supported")
    return _int(arg, call, "the option value")


def check_script(script: Script) -> None:
    """Every call's arguments resolve (names known, arity right, errno names real) and the script's
    times add up to at most MAX_SCRIPT_SECONDS, before anything is built."""
    elapsed = 0.0
    for event in script.events:
        timing = event.timing
        if not timing.anytime:
            elapsed = (elapsed if timing.relative else 0.0) + timing.start
        if elapsed > MAX_SCRIPT_SECONDS:
            raise ScriptError(event.where, f"the script runs past {MAX_SCRIPT_SECONDS:g} s "
                                           f"(here {elapsed:g} s)")
        if isinstance(event, Syscall):
            Calls().prepare(event)
            if event.errno_name is not None and not isinstance(getattr(errno, event.errno_name, None), int):
                raise ScriptError(event.where, f"{event.name}: unknown errno {event.errno_name}")


class Calls:
    """The file descriptor table and the translation of calls into `SocketOps` operations."""

    def __init__(self) -> None:
        self.fds: dict[int, object] = {}

    def _fd(self, arg: Arg, call: Syscall) -> int:
        if arg.kind != "int":
            raise ScriptError(call.where, f"{call.name}: the file descriptor must be a number, got {arg}")
        return int(arg.value)  # type: ignore[call-overload]

    def _new_fd(self, handle: object) -> int:
        fd = 3
        while fd in self.fds:
            fd += 1
        self.fds[fd] = handle
        return fd

    def handle(self, fd: int) -> object:
        try:
            return self.fds[fd]
        except KeyError:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None

    def prepare(self, call: Syscall) -> Callable[[SocketOps], int]:
        """The operation for `call` (ScriptError when its arguments cannot be understood)."""
        args = call.args
        if len(args) not in ARITY[call.name]:
            raise ScriptError(call.where, f"{call.name} takes {' or '.join(map(str, ARITY[call.name]))} "
                                          f"arguments, got {len(args)}")
        name = call.name
        if name == "socket":
            kind = _int(args[1], call, "the type")
            if kind & ~(socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC) != socket.SOCK_STREAM:
                raise ScriptError(call.where, "socket: only SOCK_STREAM (TCP) sockets are supported")

            def make(ops: SocketOps) -> int:
                handle = ops.socket()
                if kind & socket.SOCK_NONBLOCK:
                    ops.set_nonblocking(handle, True)
                return self._new_fd(handle)
            return make
        if name == "poll":
            return self._poll(call)
        fd = self._fd(args[0], call)
        if name == "bind":
            return lambda ops: _zero(ops.bind(self.handle(fd), (LOCAL_IP, LOCAL_PORT)))
        if name == "listen":
            backlog = _int(args[1], call, "the backlog")
            return lambda ops: _zero(ops.listen(self.handle(fd), backlog))
        if name == "accept":
            return lambda ops: self._new_fd(ops.accept(self.handle(fd)))
        if name == "connect":
            return lambda ops: _zero(ops.connect(self.handle(fd), (REMOTE_IP, REMOTE_SERVICE_PORT)))
        if name in ("send", "recv") and _int(args[3], call, "the flags") != 0:
            raise ScriptError(call.where, f"{name}: only flags 0 are supported (use write/read)")
        if name in ("write", "send"):
            size = _int(args[2], call, "the size")
            return lambda ops: ops.send(self.handle(fd), size)
        if name in ("read", "recv"):
            size = _int(args[2], call, "the size")
            return lambda ops: ops.recv(self.handle(fd), size)
        if name == "shutdown":
            how = _int(args[1], call, "how")
            return lambda ops: _zero(ops.shutdown(self.handle(fd), how))
        if name == "close":
            def close(ops: SocketOps) -> int:
                ops.close(self.handle(fd))
                del self.fds[fd]
                return 0
            return close
        if name == "fcntl":
            return self._fcntl(call, fd)
        level = _int(args[1], call, "the level")
        option = _int(args[2], call, "the option")
        if name == "setsockopt":
            value = _option_value(args[3], call)
            return lambda ops: _zero(ops.setsockopt(self.handle(fd), level, option, value))
        expected = _int(args[3], call, "the expected value") if args[3].kind != "ellipsis" else None

        def getsockopt(ops: SocketOps) -> int:
            value = ops.getsockopt(self.handle(fd), level, option)
            if expected is not None and value != expected:
                raise Mismatch(f"getsockopt gave [{value}], the script expects [{expected}]")
            return 0
        return getsockopt

    def _fcntl(self, call: Syscall, fd: int) -> Callable[[SocketOps], int]:
        command = _int(call.args[1], call, "the command")
        if command == fcntl.F_GETFL:
            return lambda ops: os.O_RDWR | (os.O_NONBLOCK if ops.nonblocking(self.handle(fd)) else 0)
        if command == fcntl.F_SETFL and len(call.args) == 3:
            flags = _int(call.args[2], call, "the flags")
            return lambda ops: _zero(ops.set_nonblocking(self.handle(fd), bool(flags & os.O_NONBLOCK)))
        raise ScriptError(call.where, "fcntl: only F_GETFL and F_SETFL with flags are supported")

    def _poll(self, call: Syscall) -> Callable[[SocketOps], int]:
        entries = call.args[0]
        if entries.kind != "list" or len(entries.value) != 1 or entries.value[0].kind != "struct":  # type: ignore[arg-type,index]
            raise ScriptError(call.where, "poll: one {fd=N, events=..., revents=...} entry is supported")
        fields = entries.value[0].value  # type: ignore[index]
        if "fd" not in fields or "events" not in fields:
            raise ScriptError(call.where, "poll: the entry needs fd= and events=")
        fd = _int(fields["fd"], call, "fd")
        events = _int(fields["events"], call, "events")
        revents = _int(fields["revents"], call, "revents") if "revents" in fields else None
        timeout = _int(call.args[2], call, "the timeout")

        def run(ops: SocketOps) -> int:
            seen = ops.poll(self.handle(fd), events, timeout / 1000 if timeout >= 0 else -1.0)
            if revents is not None and seen != revents:
                raise Mismatch(f"poll gave revents={poll_names(seen)}, "
                               f"the script expects {poll_names(revents)}")
            return 1 if seen else 0
        return run


def poll_names(mask: int) -> str:
    names = [name for name in ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLRDHUP")
             if mask & getattr(select, name)]
    return "|".join(names) or "0"


def _zero(_: object) -> int:
    return 0
