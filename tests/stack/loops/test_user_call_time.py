"""User calls happen at the caller's time: a connect() after a long idle is stamped with the driver's clock
now, not with the last time the network was stepped (which would date the SYN in the past, fire its
retransmission at once and fold the idle time into SRTT)."""

from __future__ import annotations

import asyncio
import time

from stack.aio import AsyncioDriver, open_connection, start_server
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.threaded import ThreadedDriver

IDLE = 30.0


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pair() -> tuple[Host, Host]:
    return (Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1),
            Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2))


def assert_clean_handshake(client_host: Host) -> None:
    counters = client_host.counters()
    (snapshot,) = client_host.snapshots()
    assert counters["TcpRetransSegs"] == 0, counters["TcpRetransSegs"]
    assert snapshot.state == "ESTABLISHED"
    assert snapshot.srtt is not None and snapshot.srtt < 0.1, snapshot.srtt  # the wire takes no time
    assert snapshot.rto < 1.5, snapshot.rto


def test_threaded_driver_stamps_a_connect_after_idle_with_its_clock_now() -> None:
    a, b = pair()
    clock = FakeClock()
    with ThreadedDriver([a, b], [MemoryWire(a, b)], clock=clock) as driver:
        listener = b.socket()
        listener.bind(("10.0.0.2", 80))
        listener.listen()
        deadline = time.monotonic() + 5.0
        while (driver.steps < 2 or a.next_deadline() is not None) and time.monotonic() < deadline:
            time.sleep(0.01)  # the gratuitous ARPs go out; then every host is idle
        clock.now += IDLE
        client = a.socket()
        client.settimeout(5.0)
        client.connect(("10.0.0.2", 80))
        assert_clean_handshake(a)
        client.close()
        listener.close()


def test_asyncio_driver_stamps_a_connect_after_idle_with_the_loop_time() -> None:
    a, b = pair()
    clock = FakeClock()

    async def scenario() -> None:
        async with AsyncioDriver([a, b], [MemoryWire(a, b)]):
            server = await start_server(lambda reader, writer: None, b, "10.0.0.2", 80)
            for _ in range(10):
                await asyncio.sleep(0)  # the gratuitous ARPs go out at t=0
            clock.now += IDLE
            _reader, writer = await open_connection(a, "10.0.0.2", 80, timeout=5.0)
            assert_clean_handshake(a)
            writer.close()
            server.close()

    loop = asyncio.new_event_loop()
    loop.time = clock  # type: ignore[method-assign]  # the loop's clock is the driver's clock
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
