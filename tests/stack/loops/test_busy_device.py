"""A device that never runs dry (a kernel peer sending as fast as it can) must not starve the host's
applications: the real-time drivers take one round of the network per turn and come back with a fresh
clock, so the application's code runs between rounds and every round sees the time it happens at."""

from __future__ import annotations

import asyncio
import threading
import time

from stack.devices.contract import FrameNode
from stack.host import Host
from stack.loops.asyncio_driver import AsyncioDriver
from stack.loops.threaded import ThreadedDriver


class Flood:
    """A medium on a device that always has another frame: every step moves one, recording its `now`."""

    def __init__(self, node: FrameNode) -> None:
        self.nodes = (node,)
        self.times: list[float] = []

    def step(self, now: float) -> int:
        self.times.append(now)
        return 1

    def next_deadline(self) -> float | None:
        return None

    def fileno(self) -> int | None:
        return None


def test_asyncio_driver_lets_tasks_run_while_the_device_keeps_delivering() -> None:
    host = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
    flood = Flood(host)

    async def scenario() -> tuple[int, int]:
        async with AsyncioDriver([host], [flood]):
            ran = 0
            for _ in range(20):  # an application's task, yielding like a stream reader does
                await asyncio.sleep(0)
                ran += 1
            return ran, len(flood.times)

    ran, rounds = asyncio.run(asyncio.wait_for(scenario(), timeout=5.0))
    assert ran == 20 and rounds >= 10  # rounds and the task took turns
    assert flood.times == sorted(flood.times) and flood.times[-1] > flood.times[0]  # a fresh clock each


def test_threaded_driver_frees_its_lock_between_rounds_of_a_busy_device() -> None:
    host = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
    flood = Flood(host)
    with ThreadedDriver([host], [flood]) as driver:
        deadline = time.monotonic() + 5.0
        calls = 0
        while calls < 50 and time.monotonic() < deadline:  # a socket caller needs the lock, repeatedly
            with driver.locked():
                calls += 1
            threading.Event().wait(0.001)
        assert calls == 50
        assert len(set(flood.times)) > 1  # every round with the clock of its own time
