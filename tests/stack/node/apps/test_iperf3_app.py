"""The iperf3 app and the stack's iperf3 client against each other: two Hosts on a memory wire, real time,
no root. Each way and with several streams the byte counts agree exactly, a second client meanwhile hears
ACCESS_DENIED, and a test the server does not run is refused with iperf3's error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stack.aio import AsyncioDriver, open_connection, start_server
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.node.apps import handler_for
from stack.node.apps.iperf3 import Iperf3App
from stack.node.apps.iperf3_client import Iperf3Error, run_test
from stack.node.apps.iperf3_protocol import COOKIE_SIZE, State
from stack.tcp.config import TcpConfig

SERVER_IP = "10.0.0.2"
PORT = 5201


def run_against_app(body: Callable[[Host, Iperf3App], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        config = TcpConfig(time_wait=0.5)
        a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tcp=config)
        b = Host(f"{SERVER_IP}/24", "02:00:00:00:00:02", seed=2, tcp=config)
        async with AsyncioDriver([a, b], [MemoryWire(a, b)]):
            app = handler_for("iperf3")
            assert isinstance(app, Iperf3App)
            async with await start_server(app, b, SERVER_IP, PORT):
                return await body(a, app)

    return asyncio.run(asyncio.wait_for(main(), 40.0))


def opener(host: Host) -> Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    return lambda: open_connection(host, SERVER_IP, PORT)


@pytest.mark.parametrize(("reverse", "parallel"), [(False, 1), (True, 1), (False, 2), (True, 3)])
def test_a_test_each_way_counts_the_same_bytes_on_both_sides(reverse: bool, parallel: int) -> None:
    async def body(client: Host, app: Iperf3App) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        answer = await run_test(opener(client), seconds=1, parallel=parallel, reverse=reverse)
        for _ in range(100):
            if app.history:
                break
            await asyncio.sleep(0.01)
        return answer, list(app.history)

    answer, history = run_against_app(body)
    assert answer["parallel"] == parallel and [s["id"] for s in answer["streams"]] == [1, 3, 4][:parallel]
    assert answer["sent_bytes"] > 0 and answer["sent_bytes"] == answer["received_bytes"]
    for stream in answer["streams"]:
        assert stream["sent_bytes"] == stream["received_bytes"] > 0
    assert answer["sent_bps"] > 0 and answer["received_bps"] > 0
    assert len(answer["intervals"]) == 1 and sum(answer["intervals"][0]["bytes"]) > 0
    (served,) = history
    assert served["reverse"] is reverse and served["parallel"] == parallel
    assert served["bytes"] == served["client_bytes"] == answer["sent_bytes"]


def test_a_second_client_during_a_test_hears_access_denied() -> None:
    async def body(client: Host, app: Iperf3App) -> tuple[bytes, dict[str, Any]]:
        test = asyncio.ensure_future(run_test(opener(client), seconds=2))
        while app.test is None or not app.test.streams:
            await asyncio.sleep(0.01)
        reader, writer = await open_connection(client, SERVER_IP, PORT)
        writer.write(b"y" * (COOKIE_SIZE - 1) + b"\0")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(10), 5)
        writer.close()
        return answer, await test

    denied, answer = run_against_app(body)
    assert denied == State.ACCESS_DENIED.to_bytes(1, "big", signed=True)
    assert answer["sent_bytes"] == answer["received_bytes"] > 0


def test_a_test_the_server_does_not_run_is_refused_with_iperf3s_error() -> None:
    async def body(client: Host, app: Iperf3App) -> str:
        with pytest.raises(Iperf3Error) as refused:
            await run_test(opener(client), seconds=1, parallel=129)
        return str(refused.value)

    assert "parallel streams too large" in run_against_app(body)


def test_a_client_that_breaks_the_protocol_costs_only_its_own_test() -> None:
    """An oversized JSON length, then JSON that is not parameters: each test ends, the next one runs."""

    async def body(client: Host, app: Iperf3App) -> tuple[list[bytes], dict[str, Any]]:
        heard = []
        for bad in ((1 << 31).to_bytes(4, "big"), (4).to_bytes(4, "big") + b"[1]\n"):
            reader, writer = await open_connection(client, SERVER_IP, PORT)
            writer.write(b"z" * (COOKIE_SIZE - 1) + b"\0")
            await writer.drain()
            heard.append(await asyncio.wait_for(reader.read(1), 5))  # PARAM_EXCHANGE
            writer.write(bad)
            await writer.drain()
            assert await asyncio.wait_for(reader.read(100), 5) == b""  # the server closed this test
            writer.close()
        while app.test is not None:
            await asyncio.sleep(0.01)
        return heard, await run_test(opener(client), seconds=1)

    heard, answer = run_against_app(body)
    assert heard == [State.PARAM_EXCHANGE.to_bytes(1, "big")] * 2
    assert answer["sent_bytes"] == answer["received_bytes"] > 0
