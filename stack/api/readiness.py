"""Real file descriptors that say when a stack socket is readable or writable, for select and asyncio.

A stack socket has no kernel socket behind it, so `select`, `selectors` and asyncio's `add_reader` cannot
watch it. `Readiness` gives it one: the user's end of a Unix socket pair, made readable and writable
exactly when the stack's socket is:

- readable: the other end has written one byte into it (and takes it back when the socket stops being
  readable); the user never reads the descriptor, only waits on it;
- writable: unwritable by filling its own send buffer (sent to the other end, which does not read) and
  writable again when the other end drains it; the buffer is set small so this costs a few kilobytes.

`ReadinessSet` holds a host's registered sockets; the drivers' network step refreshes it after every round,
and every socket call refreshes its own socket, so the descriptor follows the socket within one step. Only
sockets whose `fileno()` was asked for are registered.
"""

from __future__ import annotations

import contextlib
import socket
import weakref
from collections.abc import Callable

_SMALL_BUFFER = 4096
_FILL = bytes(_SMALL_BUFFER)
State = Callable[[], tuple[bool, bool]]  # (readable, writable) of the socket now


class Readiness:
    """One descriptor (`fileno()`) readable and writable as `update(readable, writable)` says."""

    def __init__(self) -> None:
        self._user, self._other = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._user.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SMALL_BUFFER)
        self._user.setblocking(False)
        self._other.setblocking(False)
        self._readable = False
        self._writable = True

    def fileno(self) -> int:
        return self._user.fileno()

    @property
    def state(self) -> tuple[bool, bool]:
        return self._readable, self._writable

    def update(self, readable: bool, writable: bool) -> None:
        if readable != self._readable:
            if readable:
                self._other.send(b"r")
            else:
                with contextlib.suppress(BlockingIOError):
                    self._user.recv(64)
            self._readable = readable
        if writable != self._writable:
            if writable:
                with contextlib.suppress(BlockingIOError):
                    while self._other.recv(1 << 16):
                        pass
            else:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        self._user.send(_FILL)
            self._writable = writable

    def close(self) -> None:
        self._user.close()
        self._other.close()


class ReadinessSet:
    """A host's sockets with a readiness descriptor; `refresh()` brings every descriptor up to date."""

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[object, tuple[Readiness, State]] = \
            weakref.WeakKeyDictionary()
        self._ever_registered = False  # until then a refresh (every network step) costs one test

    def register(self, owner: object, state: State) -> Readiness:
        entry = self._entries.get(owner)
        if entry is None:
            self._ever_registered = True
            entry = (Readiness(), state)
            self._entries[owner] = entry
            entry[0].update(*state())
        return entry[0]

    def refresh_one(self, owner: object) -> None:
        entry = self._entries.get(owner)
        if entry is not None:
            entry[0].update(*entry[1]())

    def unregister(self, owner: object) -> None:
        entry = self._entries.pop(owner, None)
        if entry is not None:
            entry[0].close()

    def refresh(self) -> None:
        if self._ever_registered and self._entries:
            for readiness, state in list(self._entries.values()):
                readiness.update(*state())

    def __len__(self) -> int:
        return len(self._entries)
