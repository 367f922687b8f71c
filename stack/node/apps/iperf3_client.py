"""The stack as an iperf3 client (`iperf3 -c`): a TCP test against any iperf3 server, a kernel's `iperf3 -s`
or the stack's own `iperf3` app (`lab stack LAB NODE connect ADDR:PORT --app iperf3`).

`run_test` speaks the control connection through `iperf3_protocol.Control`, opens `parallel` streams,
sends blocks of the deterministic pattern for `seconds` (or with `reverse` reads what the server sends),
exchanges results and returns both sides' figures: per stream and summed, the sender's bytes and the
receiver's, each side's CPU use, and one interval per second as iperf3 prints them.

Byte counts are exact, as the server app makes them: before TEST_END a sending stream waits until the
server acknowledged what it wrote, and in reverse each stream is read until the server closes it (which
iperf3 does at TEST_END), so what the server says it sent is what arrived here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from stack.node.apps.common import PEER_GONE, READ_SIZE, close_writer
from stack.node.apps.content import chunks
from stack.node.apps.iperf3_protocol import (
    CLIENT,
    DEFAULT_BLOCK,
    NEED_DATA,
    Control,
    Event,
    Parameters,
    ProtocolError,
    Results,
    ResultsReceived,
    ServerErrorReceived,
    State,
    StateReceived,
    StreamResult,
    new_cookie,
    stream_ids,
)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[], Awaitable[Streams]]
ACK_WAIT = 10.0  # seconds the streams may take to have every byte acknowledged before TEST_END
EOF_WAIT = 5.0  # seconds, in reverse, for the server to close its streams after TEST_END
SEND_BUFFER = 1 << 20
CLIENT_VERSION = "3.12"  # the iperf3 whose protocol this speaks


class Iperf3Error(Exception):
    """The test could not run: the server refused it, broke the protocol or went silent."""


@dataclass
class _Stream:
    id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    local: str
    bytes: int = 0
    eof: bool = False


async def run_test(opener: Opener, *, seconds: int = 10, parallel: int = 1, reverse: bool = False,
                   length: int = DEFAULT_BLOCK, timeout: float = 10.0) -> dict[str, Any]:
    """One iperf3 TCP test over connections from `opener`; `timeout` bounds each step of the exchange.
    Raises Iperf3Error (or OSError for a refused connect)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.wait_for(opener(), timeout)
    control = Control(CLIENT)
    streams: list[_Stream] = []
    tasks: list[asyncio.Task[None]] = []

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    async def expect(state: State, wait: float = timeout) -> None:
        event = await _next_event(control, reader, wait)
        if isinstance(event, StateReceived) and event.state is State.SERVER_ERROR:
            event = await _next_event(control, reader, wait)  # its two numbers
        if isinstance(event, ServerErrorReceived):
            raise Iperf3Error(f"the server refused the test: {event.words}")
        if not isinstance(event, StateReceived) or event.state is not state:
            if isinstance(event, StateReceived) and event.state is State.ACCESS_DENIED:
                raise Iperf3Error("the server is busy running a test (ACCESS_DENIED)")
            raise Iperf3Error(f"expected {state.name}, the server sent {event}")

    try:
        cookie = new_cookie()
        await send(control.send_cookie(cookie))
        await expect(State.PARAM_EXCHANGE)
        parameters = Parameters(time=seconds, parallel=parallel, reverse=reverse, length=length,
                                client_version=CLIENT_VERSION)
        await send(control.send_parameters(parameters))
        await expect(State.CREATE_STREAMS)
        for stream_id in stream_ids(parallel):
            stream_reader, stream_writer = await asyncio.wait_for(opener(), timeout)
            stream_writer.transport.set_write_buffer_limits(high=SEND_BUFFER)
            name = stream_writer.get_extra_info("sockname")
            stream = _Stream(stream_id, stream_reader, stream_writer, f"{name[0]}:{name[1]}" if name else "")
            streams.append(stream)
            stream_writer.write(cookie)
            await stream_writer.drain()
        await expect(State.TEST_START)
        await expect(State.TEST_RUNNING)
        cpu_start, start = os.times(), loop.time()
        stopping = asyncio.Event()
        for stream in streams:
            work = _receive(stream) if reverse else _send_blocks(stream, length, stopping)
            tasks.append(asyncio.ensure_future(work))
        intervals = await _intervals(streams, seconds, start, control, reader)
        stopping.set()
        if not reverse:
            await _all_acknowledged(streams, ACK_WAIT)
        if not reverse:
            for task in tasks:
                task.cancel()
        finish = loop.time()
        await send(control.send_state(State.TEST_END))
        await expect(State.EXCHANGE_RESULTS, timeout + ACK_WAIT)
        if reverse:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), EOF_WAIT)
        cpu_end = os.times()
        ours = _results(streams, start, finish, cpu_start, cpu_end, reverse)
        await send(control.send_results(ours))
        event = await _next_event(control, reader, timeout)
        if not isinstance(event, ResultsReceived):
            raise Iperf3Error(f"expected the server's results, it sent {event}")
        theirs = event.results
        await expect(State.DISPLAY_RESULTS)
        with contextlib.suppress(*PEER_GONE):
            await send(control.send_state(State.IPERF_DONE))
    except ProtocolError as exc:
        raise Iperf3Error(f"the server broke iperf3's protocol: {exc}") from None
    except asyncio.TimeoutError:
        raise Iperf3Error(f"the server did not answer within {timeout:g} s") from None
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        raise Iperf3Error(f"the server closed the test: {exc or type(exc).__name__}") from None
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            await close_writer(stream.writer)
        await close_writer(writer)
    peer = writer.get_extra_info("peername")
    return _report(streams, ours, theirs, reverse, finish - start, intervals,
                   f"{peer[0]}:{peer[1]}" if peer else "")


async def _next_event(control: Control, reader: asyncio.StreamReader, timeout: float) -> Event:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = control.next_event()
        if event is not NEED_DATA:
            assert not isinstance(event, type(NEED_DATA))
            return event
        if control.closed:
            raise Iperf3Error("the server closed the control connection")
        data = await asyncio.wait_for(reader.read(READ_SIZE), max(0.0, deadline - loop.time()))
        control.receive_data(data)


async def _intervals(streams: list[_Stream], seconds: int, start: float, control: Control,
                     reader: asyncio.StreamReader) -> list[dict[str, Any]]:
    """Wait out the test, noting every second what each stream moved; a server that ends or breaks the
    test early (SERVER_TERMINATE, a close) ends it here too."""
    loop = asyncio.get_running_loop()
    intervals: list[dict[str, Any]] = []
    last = [0] * len(streams)
    watch = asyncio.ensure_future(_next_event(control, reader, seconds + 3600.0))
    try:
        for second in range(1, seconds + 1):
            done, _ = await asyncio.wait([watch], timeout=max(0.0, start + second - loop.time()))
            now = [s.bytes for s in streams]
            intervals.append({"start": float(second - 1), "end": round(loop.time() - start, 6),
                              "bytes": [b - a for a, b in zip(last, now)]})
            last = now
            if done:
                event = watch.result()
                raise Iperf3Error(f"the server ended the test early: {event}")
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watch
    return intervals


async def _send_blocks(stream: _Stream, length: int, stopping: asyncio.Event) -> None:
    block = b"".join(chunks(length))
    with contextlib.suppress(*PEER_GONE):
        while not stopping.is_set():
            stream.writer.write(block)
            stream.bytes += len(block)
            await stream.writer.drain()


async def _receive(stream: _Stream) -> None:
    with contextlib.suppress(*PEER_GONE):
        while data := await stream.reader.read(READ_SIZE):
            stream.bytes += len(data)
    stream.eof = True


async def _all_acknowledged(streams: list[_Stream], limit: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        if all(_acknowledged(stream.writer) for stream in streams):
            return
        await asyncio.sleep(0.005)


def _acknowledged(writer: asyncio.StreamWriter) -> bool:
    if writer.is_closing():
        return True
    sock = writer.get_extra_info("socket")
    return writer.transport.get_write_buffer_size() == 0 and getattr(sock, "unacknowledged", 0) == 0


def _results(streams: list[_Stream], start: float, finish: float, cpu_start: os.times_result,
             cpu_end: os.times_result, reverse: bool) -> Results:
    wall = max(finish - start, 1e-9)
    user = 100.0 * (cpu_end.user - cpu_start.user) / wall
    system = 100.0 * (cpu_end.system - cpu_start.system) / wall
    return Results(tuple(StreamResult(s.id, s.bytes, -1, 0.0, wall) for s in streams),
                   round(user + system, 4), round(user, 4), round(system, 4), -1 if reverse else 0)


def _report(streams: list[_Stream], ours: Results, theirs: Results, reverse: bool, seconds: float,
            intervals: list[dict[str, Any]], remote: str) -> dict[str, Any]:
    """Both sides' figures, named by role: the sender's bytes and the receiver's, per stream and summed."""
    by_id = {result.id: result for result in theirs.streams}
    rows = []
    for stream, mine in zip(streams, ours.streams):
        other = by_id.get(stream.id)
        other_bytes = other.bytes if other is not None else 0
        other_seconds = (other.end_time - other.start_time) if other is not None else 0.0
        sent, received = (other_bytes, mine.bytes) if reverse else (mine.bytes, other_bytes)
        sender_seconds, receiver_seconds = ((other_seconds, seconds) if reverse else (seconds, other_seconds))
        rows.append({"id": stream.id, "local": stream.local, "sent_bytes": sent, "received_bytes": received,
                     "sender_seconds": sender_seconds, "receiver_seconds": receiver_seconds})
    sent = sum(row["sent_bytes"] for row in rows)
    received = sum(row["received_bytes"] for row in rows)
    sender_seconds = max((row["sender_seconds"] for row in rows), default=0.0) or seconds
    receiver_seconds = max((row["receiver_seconds"] for row in rows), default=0.0) or seconds
    return {"remote": remote, "reverse": reverse, "parallel": len(streams), "seconds": seconds,
            "streams": rows, "sent_bytes": sent, "received_bytes": received,
            "sender_seconds": sender_seconds, "receiver_seconds": receiver_seconds,
            "sent_bps": sent * 8 / sender_seconds if sender_seconds > 0 else 0.0,
            "received_bps": received * 8 / receiver_seconds if receiver_seconds > 0 else 0.0,
            "cpu_util_local": ours.cpu_util_total, "cpu_util_remote": theirs.cpu_util_total,
            "intervals": intervals}
