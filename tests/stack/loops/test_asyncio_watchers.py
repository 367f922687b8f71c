"""The asyncio driver's watchers: those of every pump run in the order they came, once each, leaving at
once; a connection's run only after a pump that visited it."""

from __future__ import annotations

import asyncio

import pytest

from stack.api import streams
from stack.api.streams import StackTransport, create_server, open_connection
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


def test_a_pump_wakes_only_the_transports_of_connections_that_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 idle connections and one busy one: the busy one's echo exchanges call the idle transports not
    once, so a pump costs what moved and not what is open (as epoll does); the idle ones still work."""

    accepted: list[asyncio.BaseTransport] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            accepted.append(transport)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    calls: dict[int, int] = {}
    original = StackTransport._on_progress

    def counted(self: StackTransport) -> None:
        calls[id(self)] = calls.get(id(self), 0) + 1
        original(self)

    monkeypatch.setattr(streams.StackTransport, "_on_progress", counted)

    async def main() -> tuple[int, int, bytes]:
        a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
        b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
        async with AsyncioDriver([a, b], [MemoryWire(a, b)]):
            server = await create_server(Echo, b, "10.0.0.2", 7, backlog=256)
            idle = [await open_connection(a, "10.0.0.2", 7) for _ in range(200)]
            reader, writer = await open_connection(a, "10.0.0.2", 7)
            await asyncio.sleep(0.05)  # handshakes' last turns done
            busy = {id(writer.transport), id(accepted[-1])}  # both ends of the busy connection
            before = {key: count for key, count in calls.items() if key not in busy}
            for i in range(50):
                writer.write(b"ping %d\n" % i)
                assert await reader.readline() == b"ping %d\n" % i
            after = {key: count for key, count in calls.items() if key not in busy and key in before}
            woken_idle = sum(after[key] - before[key] for key in before)
            busy_calls = calls[id(writer.transport)]
            idle_reader, idle_writer = idle[123]
            idle_writer.write(b"still here\n")
            echoed = await idle_reader.readline()
            for _, w in [*idle, (reader, writer)]:
                w.close()
            server.close()
            await asyncio.sleep(0.05)
        return woken_idle, busy_calls, echoed

    woken_idle, busy_calls, echoed = asyncio.run(asyncio.wait_for(main(), 30.0))
    # 400 idle transports (200 client ends, 200 server ends), the busy client end's 50 round trips
    assert woken_idle == 0
    assert busy_calls >= 50
    assert echoed == b"still here\n"
