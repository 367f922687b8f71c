"""Deadlines: how every sans-IO part of the stack says when it must be polled again.

Nothing in the stack reads a clock: time (seconds, a float) is passed in on every call, by the loop that
drives the hosts (`stack.loops`).  Each part answers `next_deadline()` with an absolute time, None when
only a received frame or a user call can give it work, or `AT_ONCE` when work is waiting now.  The loops'
clocks start at 0 (the Runner's virtual clock, `time.monotonic`, `loop.time()`), so no reading precedes
`AT_ONCE`: "poll at the next opportunity", whatever the time is then.
"""

from __future__ import annotations

AT_ONCE = 0.0


def earliest(*deadlines: float | None) -> float | None:
    """The earliest of the given deadlines, None when none is set."""
    found: float | None = None
    for deadline in deadlines:
        if deadline is not None and (found is None or deadline < found):
            found = deadline
    return found
