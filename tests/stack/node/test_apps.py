"""The apps over the stack: two Hosts on a memory wire, asyncio streams (stack.aio), real time, no root."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stack.aio import AsyncioDriver, StackTransport, create_server, open_connection, start_server
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.node.apps import handler_for, protocol_for
from stack.node.apps.common import close_writer
from stack.node.apps.content import PERIOD, PatternChecker, chunks, pattern, pattern_sha256, pattern_slice
from stack.tcp.config import TcpConfig

SERVER_IP = "10.0.0.2"


SHAPES = ("stream", "protocol")  # the two forms of echo and discard: a stream handler, a protocol


def run_pair(app: str, body: Callable[[Host], Awaitable[Any]], size: int | None = None,
             shape: str = "stream", hosts: list[Host] | None = None) -> Any:
    """Serve `app` (as a stream handler or, with shape "protocol", as its protocol) on port 7 of host b;
    run `body(a)` against it; 20 s at most. `hosts`, when given, receives a and b."""

    async def main() -> Any:
        config = TcpConfig(time_wait=0.5)
        a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tcp=config)
        b = Host(f"{SERVER_IP}/24", "02:00:00:00:00:02", seed=2, tcp=config)
        if hosts is not None:
            hosts.extend((a, b))
        async with AsyncioDriver([a, b], [MemoryWire(a, b)]):
            factory = protocol_for(app)
            if shape == "protocol":
                assert factory is not None
                server = await create_server(factory, b, SERVER_IP, 7)
            else:
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


@pytest.mark.parametrize("shape", SHAPES)
def test_echo_returns_every_byte_then_closes(shape: str) -> None:
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

    assert run_pair("echo", body, shape=shape) == payload


@pytest.mark.parametrize("shape", SHAPES)
def test_discard_reads_everything_and_closes_after_eof(shape: str) -> None:
    async def body(a: Host) -> tuple[bytes, int]:
        reader, writer = await open_connection(a, SERVER_IP, 7)
        writer.write(pattern(200_000))
        await writer.drain()
        writer.write_eof()
        received = await reader.read()  # nothing comes back, then EOF
        writer.close()
        return received, sum(c.recv_queue for c in a.snapshots())

    assert run_pair("discard", body, shape=shape) == (b"", 0)


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


def test_only_echo_and_discard_have_protocols() -> None:
    assert protocol_for("echo") is not None and protocol_for("discard") is not None
    assert [app for app in ("source", "http", "iperf3", "none") if protocol_for(app) is not None] == []


@pytest.mark.parametrize("shape", SHAPES)
def test_echo_to_a_peer_that_does_not_read_closes_the_window_then_catches_up(shape: str) -> None:
    """A client that sends without reading: the echo's writes back stall, so it stops reading, its
    receive buffer fills and the window closes: the client's bytes stay queued on its side. Reading
    then brings every byte back, in order."""
    payload = random.Random(2).randbytes(6_000_000)

    hosts: list[Host] = []

    async def body(a: Host) -> tuple[bool, bytes]:
        reader, writer = await open_connection(a, SERVER_IP, 7)
        writer.write(payload)
        await asyncio.sleep(0.5)
        server_side = [s for s in hosts[1].snapshots() if s.local_port == 7]
        stalled = writer.transport.get_write_buffer_size() > 0 and len(server_side) == 1 and (
            server_side[0].recv_queue > 0 and server_side[0].rcv_wnd == 0)
        sender = asyncio.create_task(writer.drain())
        received = await reader.readexactly(len(payload))
        await sender
        writer.write_eof()
        rest = await reader.read()  # EOF after ours: the echo closes
        writer.close()
        return stalled, received + rest

    stalled, received = run_pair("echo", body, shape=shape, hosts=hosts)
    assert stalled and received == payload


@pytest.mark.parametrize("app", ["echo", "discard"])
@pytest.mark.parametrize("shape", SHAPES)
def test_a_reset_peer_ends_the_connection_quietly(app: str, shape: str) -> None:
    """The peer resets mid-stream: the server's connection ends, its socket is closed, nothing is logged."""
    errors: list[dict[str, Any]] = []
    hosts: list[Host] = []

    async def body(a: Host) -> list[Any]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        _reader, writer = await open_connection(a, SERVER_IP, 7)
        writer.write(pattern(500_000))
        await asyncio.sleep(0.05)
        writer.transport.abort()
        await asyncio.sleep(0.2)
        return [s for s in hosts[1].snapshots() if s.local_port == 7]

    assert run_pair(app, body, shape=shape, hosts=hosts) == []
    assert errors == []


def test_close_writer_waits_for_a_stack_stream_only_until_it_let_go() -> None:
    """With nothing left to send, closing lets go of the socket at once (`socket_closed`) and close_writer
    returns within a turn; while the peer does not read, the transport holds on to the unsent bytes."""

    async def body(a: Host) -> tuple[bool, bool, bool]:
        reader, writer = await open_connection(a, SERVER_IP, 7)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        transport = writer.transport
        assert isinstance(transport, StackTransport)
        await asyncio.wait_for(close_writer(writer), 1.0)
        quick = transport.socket_closed

        _slow_reader, stuck = await open_connection(a, SERVER_IP, 7)
        stuck.write(bytes(8_000_000))  # the echo comes back to a reader that never reads: all stalls
        await asyncio.sleep(0.3)
        stuck.close()
        held = isinstance(stuck.transport, StackTransport) and not stuck.transport.socket_closed
        stuck.transport.abort()
        return quick, held, stuck.transport.is_closing()

    assert run_pair("echo", body, shape="protocol") == (True, True, True)
