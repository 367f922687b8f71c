"""The chunk-keeping StreamReader the stack's streams use under PyPy behaves as asyncio's, call for call:
each scenario runs against both readers and must give the same bytes, exceptions and transport pauses."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stack.api.stream_reader import StackStreamReader
from stack.tcp.buffers import ReceiveBuffer

READERS = (asyncio.StreamReader, StackStreamReader)


class PausableTransport:
    """Records pause_reading/resume_reading as the reader calls them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


Scenario = Callable[[asyncio.StreamReader, PausableTransport], Awaitable[Any]]


def outcome(scenario: Scenario, reader_class: type[asyncio.StreamReader], limit: int = 16) -> Any:
    async def main() -> Any:
        reader = reader_class(limit=limit, loop=asyncio.get_running_loop())
        transport = PausableTransport()
        reader.set_transport(transport)  # type: ignore[arg-type]
        try:
            result = await scenario(reader, transport)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            result = (type(error).__name__, str(error), getattr(error, "partial", None),
                      getattr(error, "consumed", None))
        return result, transport.calls, reader.at_eof()

    return asyncio.run(main())


def same_for_both(scenario: Scenario, limit: int = 16) -> Any:
    expected, ours = (outcome(scenario, reader_class, limit) for reader_class in READERS)
    assert ours == expected
    return ours


def test_read_returns_at_most_n_in_order_across_chunks() -> None:
    async def scenario(reader: asyncio.StreamReader, _: PausableTransport) -> list[bytes]:
        for chunk in (b"abc", b"defgh", b"ij", b"klmnopq"):
            reader.feed_data(chunk)
        reader.feed_eof()
        return [await reader.read(4) for _ in range(6)]

    result, _, at_eof = same_for_both(scenario, limit=64)
    assert result == [b"abcd", b"efgh", b"ijkl", b"mnop", b"q", b""] and at_eof


def test_a_chunk_that_fits_is_handed_over_without_a_copy() -> None:
    async def main() -> None:
        reader = StackStreamReader(limit=1 << 20, loop=asyncio.get_running_loop())
        chunk = bytes(range(256)) * 256
        reader.feed_data(chunk)
        assert await reader.read(1 << 20) is chunk

    asyncio.run(main())


def test_readexactly_joins_chunks_and_reports_a_short_stream() -> None:
    async def scenario(reader: asyncio.StreamReader, _: PausableTransport) -> list[bytes]:
        for chunk in (b"12", b"345", b"6789"):
            reader.feed_data(chunk)
        reader.feed_eof()
        return [await reader.readexactly(4), await reader.readexactly(0), await reader.readexactly(9)]

    result, _, _ = same_for_both(scenario)
    assert result[0] == "IncompleteReadError" and result[2] == b"56789"


def test_readexactly_waits_for_the_rest() -> None:
    async def scenario(reader: asyncio.StreamReader, _: PausableTransport) -> bytes:
        async def feed() -> None:
            for chunk in (b"he", b"ll", b"o!"):
                await asyncio.sleep(0)
                reader.feed_data(chunk)

        feeder = asyncio.ensure_future(feed())
        data = await reader.readexactly(5)
        await feeder
        return data + await reader.read(10)

    result, _, _ = same_for_both(scenario)
    assert result == b"hello!"


def test_readuntil_and_readline_find_a_separator_split_across_chunks() -> None:
    async def scenario(reader: asyncio.StreamReader, _: PausableTransport) -> list[bytes]:
        for chunk in (b"GET / HTTP/1.1\r", b"\nHost: x\r\n\r", b"\nbody\nrest"):
            reader.feed_data(chunk)
        reader.feed_eof()
        return [await reader.readuntil(b"\r\n"), await reader.readuntil(b"\r\n\r\n"), await reader.readline(),
                await reader.readline(), await reader.readline()]

    result, _, at_eof = same_for_both(scenario, limit=64)
    assert result == [b"GET / HTTP/1.1\r\n", b"Host: x\r\n\r\n", b"body\n", b"rest", b""] and at_eof


@pytest.mark.parametrize("chunks", [
    (b"0123456789", b"0123456789abc\nnext\n"),  # found, but beyond the limit
    (b"0123456789", b"0123456789", b"0123456789"),  # not found, and more than the limit held
])
def test_a_line_longer_than_the_limit_is_refused_alike(chunks: tuple[bytes, ...]) -> None:
    async def scenario(reader: asyncio.StreamReader, _: PausableTransport) -> Any:
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        try:
            await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as error:
            first = ("LimitOverrunError", error.consumed)
        return first, await reader.read(4)  # the data stays for another try

    result, _, _ = same_for_both(scenario)
    assert result[0][0] == "LimitOverrunError"

    async def readline_scenario(reader: asyncio.StreamReader, _: PausableTransport) -> Any:
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        try:
            await reader.readline()
        except ValueError as error:
            return str(error), await reader.read()  # readline dropped the long line (or everything)
        return None

    same_for_both(readline_scenario)


def test_the_transport_pauses_above_twice_the_limit_and_resumes_at_the_limit() -> None:
    async def scenario(reader: asyncio.StreamReader, transport: PausableTransport) -> list[Any]:
        steps: list[Any] = []
        for _ in range(5):
            reader.feed_data(b"x" * 10)  # 50 bytes held > 2 * 16: paused once
            steps.append(list(transport.calls))
        steps.append(await reader.read(20))
        steps.append(list(transport.calls))  # 30 held: still paused
        steps.append(await reader.read(20))
        steps.append(list(transport.calls))  # 10 held: resumed
        return steps

    steps, calls, _ = same_for_both(scenario)
    assert steps[:5] == [[], [], [], ["pause"], ["pause"]] and calls == ["pause", "resume"]


def test_read_all_reads_to_eof_and_an_exception_reaches_the_reader() -> None:
    async def scenario(reader: asyncio.StreamReader, _: PausableTransport) -> Any:
        async def feed() -> None:
            for index in range(20):
                await asyncio.sleep(0)
                reader.feed_data(bytes([index]) * (index + 1))
            reader.feed_eof()

        feeder = asyncio.ensure_future(feed())
        everything = await reader.read()
        await feeder
        reader.set_exception(ConnectionResetError("reset"))
        try:
            await reader.read(1)
        except ConnectionResetError as error:
            return len(everything), everything[-3:], str(error)
        return None

    result, _, _ = same_for_both(scenario)
    assert result == (210, b"\x13\x13\x13", "reset")


@pytest.mark.parametrize("seed", range(20))
def test_random_chunks_and_calls_give_the_same_bytes(seed: int) -> None:
    rng = random.Random(seed)
    chunks = [rng.randbytes(rng.randint(1, 40)).replace(b"\n", b"") + (b"\n" if rng.random() < 0.4 else b"")
              for _ in range(60)]
    calls = [(rng.choice(("read", "readexactly", "readline", "readuntil")), rng.randint(0, 50))
             for _ in range(200)]

    async def scenario(reader: asyncio.StreamReader, _: PausableTransport) -> list[Any]:
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        results: list[Any] = []
        for name, size in calls:
            try:
                if name == "read":
                    results.append(await reader.read(size))
                elif name == "readexactly":
                    results.append(await reader.readexactly(size))
                elif name == "readline":
                    results.append(await reader.readline())
                else:
                    results.append(await reader.readuntil(b"\n"))
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
                results.append((type(error).__name__, getattr(error, "partial", None)))
        return results

    same_for_both(scenario, limit=64)


def test_the_receive_buffer_reads_from_the_middle_of_a_chunk_and_across_chunks_and_joins_to_search() -> None:
    buffer = ReceiveBuffer()
    for chunk in (b"abcdef", bytes(bytearray(b"gh")), memoryview(b"ijkl")):
        buffer.append(chunk)
    buffer.append(b"")
    assert len(buffer) == 12
    assert buffer.read(2) == b"ab" and buffer.read(5) == b"cdefg"
    assert buffer.joined().find(b"j") == 2 and buffer.joined().startswith(b"hi") and len(buffer) == 5
    assert buffer.read(100) == b"hijkl" and not len(buffer) and buffer.read(1) == b""
    buffer.append(b"more")
    buffer.clear()
    assert len(buffer) == 0 and buffer.joined() == b""
