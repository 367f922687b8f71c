"""Who drives the Hosts: the contracts between sans-IO Hosts, the media that carry their frames, and the
drivers that make time pass.

A Host does nothing on its own: someone must feed it frames, call ``poll(now)`` and wake it at
``next_deadline()``. A *driver* does that for a set of hosts and media. The blocking socket API needs one:
while the caller waits in ``recv()``, the driver keeps the network running until the socket becomes
readable. Three drivers exist:

- ``stack.loops.runner.Runner``: virtual time, single thread, deterministic (tests, simulations);
- ``stack.loops.threaded.ThreadedDriver``: real time in one background thread, for scripts that block in
  socket calls;
- ``stack.loops.asyncio_driver.AsyncioDriver``: real time inside a running asyncio loop, for streams.

All three step a ``FrameNetwork``: nodes plus the media joining them (memory wires, TAP devices), under the
contract of ``stack.devices.contract``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager
from typing import Protocol, runtime_checkable

from stack.deadlines import earliest
from stack.devices.contract import FrameNode, Medium


@runtime_checkable
class Driver(Protocol):
    """What the blocking socket API needs from whoever runs the host."""

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Run the network until ``predicate()`` holds (True) or ``timeout`` seconds pass (False)."""
        ...

    def locked(self) -> ContextManager[object]:
        """Hold this while touching a host from outside the driver (a no-op for single-threaded drivers)."""
        ...

    def wakeup(self) -> None:
        """Say that a host's state changed outside the driver (a socket call), so it must be polled."""
        ...

    def clock(self) -> float:
        """The driver's current time (virtual for the Runner): socket timeouts are measured on it."""
        ...


class NoDriverError(RuntimeError):
    """A blocking socket call on a Host that nobody drives."""


class SimulationStalled(RuntimeError):
    """The deterministic runner was asked to wait forever for something that can no longer happen."""


class LivelockError(RuntimeError):
    """Frames kept moving at one instant without end: a bug in a node or a forwarding loop."""


MAX_ROUNDS_PER_INSTANT = 1_000_000


class FrameNetwork:
    """Hosts and the media joining them, stepped together at one instant by whichever driver runs them."""

    def __init__(self, hosts: Iterable[FrameNode], media: Iterable[Medium] = (), *,
                 max_rounds: int = MAX_ROUNDS_PER_INSTANT) -> None:
        self.max_rounds = max_rounds
        self.media: tuple[Medium, ...] = tuple(media)
        on_media = {id(node) for medium in self.media for node in medium.nodes}
        self.hosts: tuple[FrameNode, ...] = tuple(hosts)
        for medium in self.media:  # hosts only named on a medium still belong to the network
            for node in medium.nodes:
                if all(node is not h for h in self.hosts):
                    self.hosts += (node,)
        # Nodes on no medium are still polled (their timers run); their frames go nowhere.
        self._unwired = tuple(h for h in self.hosts if id(h) not in on_media)
        self.frames_unwired = 0

    def step(self, now: float) -> int:
        """One round at ``now``: every medium moves what its nodes have to send and what has arrived for
        them; returns frames moved (0: nothing happened)."""
        moved = 0
        for medium in self.media:
            moved += medium.step(now)
        for node in self._unwired:
            dropped = len(node.poll(now))
            self.frames_unwired += dropped
            moved += dropped
        for node in self.hosts:  # the sockets' select()able descriptors follow what this round did
            readiness = getattr(node, "readiness", None)
            if readiness is not None:
                readiness.refresh()
        return moved

    def settle(self, now: float) -> int:
        """Rounds at ``now`` until nothing more happens; returns frames moved.

        For a virtual clock only: with a real device, frames from outside keep arriving while the rounds
        run, so settling could go on for as long as a peer keeps sending, at a `now` growing ever staler,
        with the host's applications starved.  Real-time loops take one `step` per turn and come back
        with a fresh clock after the applications ran."""
        total = 0
        for _ in range(self.max_rounds):
            moved = self.step(now)
            total += moved
            if not moved:
                return total
        raise LivelockError(f"frames still moving after {self.max_rounds} rounds at t={now}")

    def next_deadline(self) -> float | None:
        return earliest(*(node.next_deadline() for node in self.hosts),
                        *(medium.next_deadline() for medium in self.media))

    def descriptors(self) -> list[int]:
        """The media's file descriptors a loop waits on (a TAP's), beside its deadlines."""
        return [fd for fd in (medium.fileno() for medium in self.media) if fd is not None]


@runtime_checkable
class Drivable(Protocol):
    """A node whose blocking calls (sockets, ping) wait on a driver: a Host."""

    driver: Driver | None


def attach(nodes: Iterable[FrameNode], driver: Driver) -> None:
    """Make ``driver`` the one that blocking socket calls on these nodes wait on."""
    for node in nodes:
        if isinstance(node, Drivable):
            current = node.driver
            if current is not None and current is not driver:
                raise RuntimeError(f"{node!r} is already driven by {current!r}; detach it first")
            node.driver = driver


def detach(nodes: Iterable[FrameNode], driver: Driver) -> None:
    for node in nodes:
        if isinstance(node, Drivable) and node.driver is driver:
            node.driver = None
