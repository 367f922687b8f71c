"""A connection's one timer for all its bounded waits: what `asyncio.timeout` does, at a fraction of the cost.

A keep-alive connection waits, per request, for the next request's bytes and for the transport to take the
answer; each wait has its own bound. `asyncio.timeout` builds a context manager, looks up the current task
and schedules and cancels a timer handle for every one of these waits. A `Watchdog` keeps one timer handle
for its task and moves only a deadline: arming a wait is a clock read and a few attribute writes, and the
handle is re-scheduled only when it fires before the deadline that stands then (about once per bound, not
once per wait), or when a wait needs an earlier time than the handle has.

    watchdog.arm(timeout)            # or arm_at(deadline), on the loop's clock
    try:
        data = await reader.read(n)
    except asyncio.CancelledError:
        if not watchdog.expired():   # a cancellation from elsewhere stays one
            raise
        ...                          # the deadline passed: what TimeoutError means under asyncio.timeout
    finally:
        watchdog.disarm()

As with `asyncio.timeout`, an expired wait cancels the task; `expired()` tells that cancellation (and takes
it back, so the task is not left cancelling) from one that came from elsewhere, which the caller re-raises.
"""

from __future__ import annotations

import asyncio

from stack.compat import cancelling, uncancel


class Watchdog:
    """Bounds the waits of one task, one at a time."""

    __slots__ = ("_cancelling", "_deadline", "_expired", "_loop", "_task", "_timer", "_timer_when")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[object]) -> None:
        self._loop = loop
        self._task = task
        self._deadline: float | None = None  # of the wait in progress; None between waits
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0  # when the timer is due: at or before the deadline, or past a finished wait's
        self._expired = False  # the deadline passed and the task was cancelled for it
        self._cancelling = 0  # the task's pending cancellations when the wait began

    def arm(self, timeout: float) -> None:
        """Bound the next wait to `timeout` seconds from now."""
        self.arm_at(self._loop.time() + timeout)

    def arm_at(self, deadline: float) -> None:
        """Bound the next wait to `deadline` (the loop's clock)."""
        self._deadline = deadline
        self._expired = False
        self._cancelling = cancelling(self._task)
        if self._timer is None or self._timer_when > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_when = deadline
            self._timer = self._loop.call_at(deadline, self._fire)

    def disarm(self) -> None:
        """The wait is over: the timer stays, and finds nothing to do (or a later deadline) when it fires."""
        self._deadline = None
        if self._expired:  # the wait ended some other way after the deadline cancelled it: take that back
            self._expired = False
            uncancel(self._task)

    def close(self) -> None:
        """No more waits: drop the timer, so that a finished connection holds no handle on the loop."""
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def expired(self) -> bool:
        """Inside `except CancelledError`: whether the deadline caused it (then the cancellation is taken
        back), not a cancellation from elsewhere."""
        if not self._expired:
            return False
        self._expired = False
        return uncancel(self._task) <= self._cancelling

    def _fire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if deadline > self._timer_when:  # the wait in progress began after this timer was set: re-arm
            self._timer_when = deadline
            self._timer = self._loop.call_at(deadline, self._fire)
            return
        self._deadline = None
        self._expired = True
        self._task.cancel()
