"""The asyncio driver: hosts and media pumped by the running event loop, in real time (``loop.time()``).

After every event it steps the network at ``loop.time()``, runs the watchers and arms one
``loop.call_at`` for the next deadline. Two kinds of watcher: one that runs after every pump (a server
waiting for its accept queue), and one per connection (the stream transports of ``stack.api.streams`` move
bytes between a TCP socket and its protocol), which runs only after a pump in which the TCP layer visited
its connection (`take_progressed`) or when it asked for a turn: like epoll, a pump costs what moved, not
how many connections are open.  A medium with a file descriptor (a TAP) is watched with
``loop.add_reader``, so frames from the kernel wake the pump at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterable
from contextlib import AbstractContextManager as ContextManager
from typing import Protocol, runtime_checkable

from stack.devices.contract import FrameNode, Medium
from stack.loops.network import FrameNetwork, attach, detach


@runtime_checkable
class ReportsProgress(Protocol):
    """A node that says which of its connections a round visited (a Host: `TcpLayer.take_progressed`)."""

    def take_progressed(self) -> Iterable[Hashable]:
        ...


Watcher = Callable[[], None]


class AsyncioDriver:
    """Drives hosts and media from the running asyncio loop, in real time (``loop.time()``)."""

    def __init__(self, hosts: Iterable[FrameNode], media: Iterable[Medium] = ()) -> None:
        self.network = FrameNetwork(hosts, media)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pump_scheduled = False
        # Insertion-ordered like a list, but a connection's transport leaves in O(1) however many are open.
        self._watchers: dict[Watcher, None] = {}
        self._connection_watchers: dict[Hashable, Watcher] = {}
        self._turns: dict[Watcher, None] = {}  # watchers that asked to run after the next pump (request_turn)
        self._progress_sources = [host for host in self.network.hosts if isinstance(host, ReportsProgress)]
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._readers: list[int] = []
        self.pumps = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the asyncio driver is not started (use `async with AsyncioDriver(...)`)")
        return self._loop

    def start(self) -> AsyncioDriver:
        self._loop = loop = asyncio.get_running_loop()
        attach(self.network.hosts, self)
        self._readers = self.network.descriptors()
        for fd in self._readers:
            loop.add_reader(fd, self.wakeup)  # frames from the kernel: pump at once
        self.wakeup()
        return self

    def close(self) -> None:
        if self._loop is not None:
            for fd in self._readers:
                with contextlib.suppress(Exception):  # the loop or the descriptor may already be closed
                    self._loop.remove_reader(fd)
        self._readers = []
        if self._timer is not None:
            self._timer.cancel()
        for _, future in self._waiters:
            if not future.done():
                future.cancel()
        self._waiters.clear()
        detach(self.network.hosts, self)

    async def __aenter__(self) -> AsyncioDriver:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- the Driver protocol (blocking calls are refused: they would stop the loop that must run) -------

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        if predicate():
            return True
        if timeout == 0.0:
            return False
        raise RuntimeError("a blocking socket call inside the asyncio driver would stall its loop: use "
                           "stack.aio streams or non-blocking sockets")

    def locked(self) -> ContextManager[object]:
        return contextlib.nullcontext()

    def clock(self) -> float:
        return self.loop.time()

    def wakeup(self) -> None:
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    # -- coroutine helpers -----------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait (without blocking the loop) until ``predicate()`` holds; TimeoutError after ``timeout``."""
        if predicate():
            return
        future: asyncio.Future[None] = self.loop.create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        self.wakeup()
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def add_watcher(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs after every pump (transports and servers use it to move bytes); adding it
        again keeps one entry."""
        self._watchers[callback] = None

    def remove_watcher(self, callback: Callable[[], None]) -> None:
        self._watchers.pop(callback, None)

    def watch_connection(self, connection: Hashable, callback: Watcher) -> None:
        """``callback()`` runs after each pump in which the TCP layer visited ``connection`` (a segment, a
        timer or a socket call changed it), and once after the next pump in any case: what arrived before
        it watched is not missed."""
        self._connection_watchers[connection] = callback
        self.request_turn(callback)

    def unwatch_connection(self, connection: Hashable) -> None:
        self._connection_watchers.pop(connection, None)

    def request_turn(self, callback: Watcher) -> None:
        """Run ``callback()`` after the next pump although its connection may not move (it stopped after a
        bounded amount of work, or its application resumed reading)."""
        self._turns[callback] = None
        self.wakeup()

    # -- the pump --------------------------------------------------------------------------------------

    def _pump(self) -> None:
        """One turn: one round of the network at the loop's time, then the transports and waiters.

        While frames keep moving the next turn is queued behind the loop's other ready callbacks (the
        applications' tasks), so a busy device never starves them and every round sees a fresh clock."""
        self._pump_scheduled = False
        loop = self.loop
        self.pumps += 1
        moved = self.network.step(loop.time())
        due, self._turns = self._turns, {}
        watching = self._connection_watchers
        for source in self._progress_sources:
            for connection in source.take_progressed():
                callback = watching.get(connection)
                if callback is not None:
                    due[callback] = None
        for watcher in list(self._watchers):
            watcher()
        for callback in due:
            callback()
        if self._waiters:
            for predicate, future in list(self._waiters):
                if not future.done() and predicate():
                    future.set_result(None)
        if self._pump_scheduled:
            return  # a watcher changed a host: pump again at once, the timer is re-armed then
        if moved:
            self.wakeup()
            return
        deadline = self.network.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = loop.call_at(deadline, self._pump)
