"""The deterministic runner: a virtual clock that jumps from deadline to deadline.

Time does not flow; it is advanced to the earliest deadline of any host or wire, everything due then is
processed until the network settles, and so on. A test therefore runs a 60 s TIME_WAIT or a SYN backoff
of two minutes in milliseconds, and the same seeds give the same run, frame for frame.

The runner is also a ``Driver``: a blocking socket call made by single-threaded test code
(``client.connect(...)``) runs the whole simulated network until the call can complete, so the listener
on another host completes the handshake by itself while the client waits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager

from stack.devices.contract import FrameNode, Medium
from stack.loops.network import FrameNetwork, SimulationStalled, attach, detach

MAX_WAIT = 24 * 3600.0  # a wait without timeout that lasts a virtual day is a stall, not a long wait


class Runner:
    """Drives hosts and wires on a virtual clock starting at ``start``."""

    def __init__(self, hosts: Iterable[FrameNode], wires: Iterable[Medium] = (), *,
                 start: float = 0.0, max_wait: float = MAX_WAIT) -> None:
        self.network = FrameNetwork(hosts, wires)
        self.now = start
        self.max_wait = max_wait
        self.instants = 0  # distinct virtual instants processed (a measure of simulation work)
        attach(self.network.hosts, self)

    @property
    def hosts(self) -> tuple[FrameNode, ...]:
        return self.network.hosts

    def close(self) -> None:
        """Detach from the hosts (so another driver may take them)."""
        detach(self.network.hosts, self)

    def step(self) -> int:
        """Process everything due at the current instant; returns frames moved."""
        self.instants += 1
        return self.network.settle(self.now)

    def next_deadline(self) -> float | None:
        return self.network.next_deadline()

    def run_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Advance until ``predicate()`` holds (True) or ``timeout`` virtual seconds pass (False).

        Without a timeout, waiting for something that can no longer happen (no deadline left, or still
        false after ``max_wait`` virtual seconds: e.g. a blocked sendall to a peer that never reads, kept
        alive by zero-window probes) raises ``SimulationStalled`` rather than spinning for ever.
        """
        limit = None if timeout is None else self.now + max(0.0, timeout)
        stall_at = self.now + self.max_wait
        while True:
            self.step()
            if predicate():
                return True
            deadline = self.network.next_deadline()
            if limit is not None and (deadline is None or deadline > limit):
                self.now = limit
                self.step()
                return predicate()
            if deadline is None:
                raise SimulationStalled(f"t={self.now:.6f}: waiting for a condition no pending event can "
                                        "bring about (no deadlines left)")
            if limit is None and deadline > stall_at:
                raise SimulationStalled(f"t={self.now:.6f}: still waiting after {self.max_wait:.0f} virtual "
                                        "seconds without a timeout (is the peer reading/accepting?)")
            self.now = max(self.now, deadline)

    def run_for(self, seconds: float) -> None:
        """Advance the clock by ``seconds``, processing every event on the way."""
        self.run_until(lambda: False, timeout=seconds)

    def run_until_idle(self, timeout: float | None = None) -> bool:
        """Advance until no host or wire has a deadline left (every timer done); False on timeout."""
        return self.run_until(lambda: self.network.next_deadline() is None, timeout)

    # -- the Driver protocol -------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        return self.run_until(predicate, timeout)

    def clock(self) -> float:
        return self.now

    def locked(self) -> ContextManager[object]:
        return contextlib.nullcontext()

    def wakeup(self) -> None:
        """Nothing to do: single-threaded callers make the runner step on their next wait."""
