"""The connection watchdog: the same outcomes as asyncio.timeout, with one timer handle per task."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from stack.node.apps.watchdog import Watchdog

T = TypeVar("T")


async def guarded_sleep(watchdog: Watchdog, timeout: float, seconds: float) -> str:
    watchdog.arm(timeout)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if not watchdog.expired():
            raise
        return "expired"
    finally:
        watchdog.disarm()
    return "done"


def run_with_watchdog(body: Callable[[Watchdog], Awaitable[T]]) -> T:
    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        watchdog = Watchdog(asyncio.get_running_loop(), task)
        try:
            return await body(watchdog)
        finally:
            watchdog.close()

    return asyncio.run(main())


def test_a_wait_past_its_deadline_expires_and_the_task_is_not_left_cancelling() -> None:
    async def body(watchdog: Watchdog) -> tuple[str, int]:
        outcome = await guarded_sleep(watchdog, 0.01, 5.0)
        task = asyncio.current_task()
        assert task is not None
        return outcome, task.cancelling()

    assert run_with_watchdog(body) == ("expired", 0)


def test_waits_within_their_bounds_finish_and_one_timer_serves_them_all() -> None:
    async def body(watchdog: Watchdog) -> list[str]:
        outcomes = [await guarded_sleep(watchdog, 0.05, 0.001) for _ in range(20)]  # past the first timer
        outcomes.append(await guarded_sleep(watchdog, 0.02, 1.0))  # an earlier deadline moves the timer
        outcomes.append(await guarded_sleep(watchdog, 1.0, 0.03))  # a later one outlives the old timer
        return outcomes

    assert run_with_watchdog(body) == ["done"] * 20 + ["expired", "done"]


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def body(watchdog: Watchdog) -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.01, task.cancel)
        await guarded_sleep(watchdog, 1.0, 5.0)

    with pytest.raises(asyncio.CancelledError):
        run_with_watchdog(body)
