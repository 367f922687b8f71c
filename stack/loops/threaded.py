"""A real-time driver: the network runs in one background thread while other threads block in socket calls.

Every access to the hosts happens under one lock: the loop thread holds it while it steps the network,
socket calls from other threads hold it (``locked()``) while they touch a host, then ``wakeup()`` the
loop. Waiters sleep on a condition the loop notifies after every step.

The loop sleeps in a selector, not on the lock, until the next deadline, a wakeup (a byte on a self-pipe)
or a medium's file descriptor becoming readable: a medium whose ``fileno()`` is a descriptor (a TAP) is
registered, so frames from the kernel wake the loop at once. The memory wire has none and is driven by
deadlines and wakeups alone.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager

from stack.devices.contract import FrameNode, Medium
from stack.loops.network import FrameNetwork, NoDriverError, attach, detach


class ThreadedDriver:
    """Runs a FrameNetwork in real time (``time.monotonic``) in one background thread."""

    def __init__(self, hosts: Iterable[FrameNode], media: Iterable[Medium] = (), *,
                 clock: Callable[[], float] = time.monotonic, name: str = "nslab-driver") -> None:
        self.network = FrameNetwork(hosts, media)
        self._clock = clock
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # waiters in wait_until sleep here
        self._running = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        for fd in self.network.descriptors():
            self._selector.register(fd, selectors.EVENT_READ)
        self.failure: BaseException | None = None
        self.steps = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> ThreadedDriver:
        attach(self.network.hosts, self)
        self._running = True
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._running = False
            self._changed.notify_all()
        self.wakeup()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        detach(self.network.hosts, self)
        self._selector.close()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> ThreadedDriver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the Driver protocol -------------------------------------------------------------------------

    def locked(self) -> ContextManager[object]:
        return self._lock

    def clock(self) -> float:
        return self._clock()

    def wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a full pipe already means "wake up"
            os.write(self._wake_write, b"\0")

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking socket call from inside the driver thread would wait forever")
        with self._lock:
            end = None if timeout is None else self._clock() + timeout
            self.wakeup()  # the caller may have changed a host just before waiting
            while not predicate():
                if self.failure is not None:
                    raise RuntimeError(f"the driver thread failed: {self.failure!r}") from self.failure
                if not self._running:
                    raise NoDriverError("the threaded driver is stopped")
                if end is None:
                    self._changed.wait()
                else:
                    remaining = end - self._clock()
                    if remaining <= 0:
                        return False
                    self._changed.wait(remaining)
            return True

    # -- the loop ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        network = self.network
        try:
            while True:
                with self._lock:
                    if not self._running:
                        return
                    moved = network.step(self._clock())  # one round, then the lock is free again
                    self.steps += 1
                    self._changed.notify_all()
                    deadline = network.next_deadline()
                if moved:
                    timeout: float | None = 0.0
                else:
                    timeout = None if deadline is None else max(0.0, deadline - self._clock())
                for key, _ in self._selector.select(timeout):
                    if key.fd == self._wake_read:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(self._wake_read, 4096):
                                pass
        except Exception as exc:  # a bug in a node: hand it to the waiters instead of hanging them
            with self._lock:
                self.failure = exc
                self._running = False
                self._changed.notify_all()
