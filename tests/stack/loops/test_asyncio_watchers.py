"""The asyncio driver's watchers: run after every pump in the order they came, once each, leaving at once."""

from __future__ import annotations

import asyncio

from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.asyncio_driver import AsyncioDriver


def test_watchers_run_in_order_once_each_and_can_leave_during_a_pump() -> None:
    async def main() -> list[str]:
        a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
        b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
        calls: list[str] = []
        async with AsyncioDriver([a, b], [MemoryWire(a, b)]) as driver:

            def first() -> None:
                calls.append("first")
                driver.remove_watcher(second)  # leaves for the next pumps; this pump still calls it

            def second() -> None:
                calls.append("second")

            def third() -> None:
                calls.append("third")

            for watcher in (first, second, third, first):
                driver.add_watcher(watcher)
            driver.wakeup()
            await asyncio.sleep(0.01)
            driver.remove_watcher(third)
            driver.remove_watcher(third)  # removing twice is harmless
            driver.wakeup()
            await asyncio.sleep(0.01)
            driver.remove_watcher(first)
        return calls

    calls = asyncio.run(main())
    pumps: list[list[str]] = []  # `first` comes first in every pump: it starts each group
    for call in calls:
        if call == "first":
            pumps.append([])
        pumps[-1].append(call)
    assert pumps[0] == ["first", "second", "third"]  # added twice, `first` still runs once a pump
    later = ["+".join(pump) for pump in pumps[1:]]
    assert set(later) <= {"first+third", "first"} and "first" in later
    assert "first+third" not in later[later.index("first"):]
