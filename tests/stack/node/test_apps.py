"""The apps over the stack: two Hosts on a memory wire, asyncio streams (stack.aio), real time, no root."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stack.aio import AsyncioDriver, open_connection, start_server
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.node.apps import handler_for
from stack.node.apps.content import PERIOD, PatternChecker, chunks, pattern, pattern_sha256, pattern_slice
from stack.tcp.config import TcpConfig

SERVER_IP = "10.0.0.2"


def run_pair(app: str, body: Callable[[Host], Awaitable[Any]], size: int | None = None) -> Any:
    """Serve `app` on port 7 of host b; run `body(a)` against it; 20 s at most."""

    async def main() -> Any:
        config = TcpConfig(time_wait=0.5)
        a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tcp=config)
        b = Host(f"{SERVER_IP}/24", "02:00:00:00:00:02", seed=2, tcp=config)
        async with AsyncioDriver([a, b], [MemoryWire(a, b)]):
            server = await start_server(handler_for(app, size), b, SERVER_IP, 7)
            async with server:
                return await body(a)

    return asyncio.run(asyncio.wait_for(main(), 20.0))


# --- content ------------------------------------------------------------------------------------------------


def test_pattern_is_deterministic_and_consistent_across_offsets() -> None:
    whole = pattern(3 * PERIOD + 17)
    assert len(whole) == 3 * PERIOD + 17 and whole == pattern(3 * PERIOD + 17)
    assert whole[:PERIOD] == whole[PERIOD : 2 * PERIOD]  # one period repeats
    assert pattern(100, offset=PERIOD - 50) == whole[PERIOD - 50 : PERIOD + 50]
    assert b"".join(chunks(len(whole), size=1000)) == whole
    assert bytes(pattern_slice(123, 456)) == whole[123:579]
    assert pattern_sha256(len(whole)) == hashlib.sha256(whole).hexdigest()
    assert len(set(whole[:PERIOD])) == 256  # not a trivial fill


def test_pattern_checker_finds_the_first_bad_chunk() -> None:
    good = PatternChecker()
    data = pattern(700_000)
    good.update(data[:1234])
    good.update(data[1234:])
    assert good.mismatch_at is None and good.sha256 == pattern_sha256(700_000)
    bad = PatternChecker()
    broken = bytearray(data)
    broken[500_000] ^= 1
    bad.update(broken)
    assert bad.mismatch_at is not None and bad.mismatch_at <= 500_000


def test_unknown_app_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown app 'chargen'"):
        handler_for("chargen")


# --- echo, discard, source ---------------------------------------------------------------------------


def test_echo_returns_every_byte_then_closes() -> None:
    payload = random.Random(1).randbytes(300_000)

    async def body(a: Host) -> bytes:
        reader, writer = await open_connection(a, SERVER_IP, 7)

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        received = await reader.read()  # the echo, then the server's FIN after our EOF
        await sender
        writer.close()
        return received

    assert run_pair("echo", body) == payload


def test_discard_reads_everything_and_closes_after_eof() -> None:
    async def body(a: Host) -> tuple[bytes, int]:
        reader, writer = await open_connection(a, SERVER_IP, 7)
        writer.write(pattern(200_000))
        await writer.drain()
        writer.write_eof()
        received = await reader.read()  # nothing comes back, then EOF
        writer.close()
        return received, sum(c.recv_queue for c in a.snapshots())

    assert run_pair("discard", body) == (b"", 0)


def test_source_sends_exactly_n_pattern_bytes_then_closes() -> None:
    async def body(a: Host) -> bytes:
        reader, writer = await open_connection(a, SERVER_IP, 7)
        data = await reader.read()
        writer.close()
        return data

    assert run_pair("source", body, size=1_000_003) == pattern(1_000_003)


def test_source_without_size_streams_until_the_peer_stops() -> None:
    async def body(a: Host) -> bytes:
        reader, writer = await open_connection(a, SERVER_IP, 7)
        data = await reader.readexactly(3 * PERIOD + 5)
        writer.transport.abort()  # a reset ends the endless stream
        await asyncio.sleep(0.05)
        return data

    assert run_pair("source", body) == pattern(3 * PERIOD + 5)
