"""The `iperf3` app: an iperf3 server (`iperf3 -s`) on the stack, so a stock `iperf3 -c` measures it.

One test at a time, as iperf3 runs: the first connection with a new cookie becomes the test's control
connection (`iperf3_protocol.Control` says what each byte means), the next `parallel` connections that
bring the same cookie become its streams, and any other connection meanwhile hears ACCESS_DENIED. The
streams receive (the client sends) or, with `-R`, send blocks of `len` bytes of the deterministic pattern
until the client's TEST_END, or until `-n` bytes or `-k` blocks are sent.

Byte counts are exact on both sides: at TEST_END a receiving stream goes on reading until it has been
quiet for `DRAIN_QUIET` (the client wrote its last block before TEST_END, some of it may still be on the
way), so the client's sender count and this side's receiver count agree. With `-R` a sending stream stops
writing and waits until the client acknowledged every byte it wrote, so the sender count is what arrived;
a stock `iperf3 -c -R` counts only what it read before its own TEST_END (as against any server), so its
receiver line falls short of the sender line by what was in flight and in its receive buffer then.
CPU use is the node process's (user and system time over the test's wall time), as iperf3 reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stack.node.apps.common import PEER_GONE, READ_SIZE, close_writer
from stack.node.apps.content import chunks
from stack.node.apps.iperf3_protocol import (
    COOKIE_SIZE,
    NEED_DATA,
    SERVER,
    Control,
    Event,
    Parameters,
    ParametersReceived,
    ProtocolError,
    Results,
    ResultsReceived,
    State,
    StateReceived,
    StreamResult,
    stream_ids,
)

COOKIE_WAIT = 10.0  # seconds a new connection may take to send its cookie
STEP_WAIT = 30.0  # seconds the client may take for each step of the control exchange
TEST_GRACE = 60.0  # seconds past the test's duration before the server gives up on TEST_END
BYTES_TEST_LIMIT = 3600.0  # seconds a -n or -k test may last
DRAIN_QUIET = 0.2  # a receiving stream is done when nothing arrived for this long after TEST_END
DRAIN_LIMIT = 2.0  # and at most this long after TEST_END
ACK_WAIT = 10.0  # seconds a sending stream waits for the client to acknowledge what it wrote
SEND_BUFFER = 1 << 20  # bytes a sending stream's transport holds before its writes wait


class TestAborted(Exception):
    """The client ended the test early (CLIENT_TERMINATE, a close) or broke the protocol."""


@dataclass
class Stream:
    """One data connection of a test: what it moved and when."""

    id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sender: bool
    bytes: int = 0
    blocks: int = 0
    omitted: int = 0  # bytes moved during the first `omit` seconds (-O), which neither side reports
    start: float = 0.0
    end: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def result(self) -> StreamResult:
        return StreamResult(self.id, self.bytes - self.omitted, -1, 0.0, max(0.0, self.end - self.start))

    def end_omitting(self, now: float) -> None:
        """The omitted seconds are over: count from here, as iperf3 resets its statistics then."""
        self.omitted, self.start = self.bytes, now


class Iperf3App:
    """A listener's iperf3 server (`handler_for("iperf3")`); `history` keeps the last tests' figures."""

    def __init__(self) -> None:
        self.test: Iperf3Test | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=16)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            cookie = await asyncio.wait_for(reader.readexactly(COOKIE_SIZE), COOKIE_WAIT)
        except (asyncio.TimeoutError, *PEER_GONE):
            await close_writer(writer)
            return
        test = self.test
        if test is not None:
            if test.takes_stream(cookie):
                await test.serve_stream(reader, writer)
            else:  # busy with another client's test, as iperf3 -s says it
                with contextlib.suppress(*PEER_GONE):
                    writer.write(Control(SERVER).send_state(State.ACCESS_DENIED))
                    await writer.drain()
                await close_writer(writer)
            return
        test = Iperf3Test(cookie, reader, writer)
        self.test = test
        try:
            summary = await test.run()
            if summary is not None:
                self.history.append(summary)
        finally:
            self.test = None
            await test.close()


class Iperf3Test:
    """One test: its control connection, its streams, and the exchange of `iperf3_protocol`."""

    def __init__(self, cookie: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.cookie = cookie
        self.reader = reader
        self.writer = writer
        self.control = Control(SERVER)
        self.control.receive_data(cookie)
        self.control.next_event()
        self.parameters: Parameters | None = None
        self.streams: list[Stream] = []
        self.accepting = False
        self.all_streams = asyncio.Event()
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.omitting: asyncio.TimerHandle | None = None
        self.peer = writer.get_extra_info("peername")

    # -- the control connection ------------------------------------------------------------------------

    async def run(self) -> dict[str, Any] | None:
        """The whole exchange; the test's figures, or None when it did not get to the results."""
        loop = asyncio.get_running_loop()
        try:
            await self._send(self.control.send_state(State.PARAM_EXCHANGE))
            event = await self._next(ParametersReceived, STEP_WAIT)
            parameters = self.parameters = event.parameters
            refusal = parameters.refusal()
            if refusal is not None:
                await self._send(self.control.send_error(refusal))
                return None
            self.accepting = True
            await self._send(self.control.send_state(State.CREATE_STREAMS))
            await asyncio.wait_for(self.all_streams.wait(), STEP_WAIT)
            self.accepting = False
            cpu_start, start = os.times(), loop.time()
            await self._send(self.control.send_state(State.TEST_START))
            for stream in self.streams:
                stream.start = stream.end = start
                self.tasks.append(asyncio.ensure_future(
                    self._send_blocks(stream) if stream.sender else self._receive(stream)))
            await self._send(self.control.send_state(State.TEST_RUNNING))
            if parameters.omit:
                self.omitting = loop.call_later(parameters.omit, self._end_omitting)
            limit = (parameters.time + parameters.omit + TEST_GRACE if parameters.time
                     else BYTES_TEST_LIMIT)
            end = await self._next(StateReceived, limit)
            if end.state is not State.TEST_END:
                raise TestAborted(f"the client sent {end.state.name} during the test")
            if self.omitting is not None:
                self.omitting.cancel()
            await self._finish_streams()
            cpu_end, finish = os.times(), loop.time()
            ours = self._results(parameters, start, finish, cpu_start, cpu_end)
            await self._send(self.control.send_state(State.EXCHANGE_RESULTS))
            theirs = (await self._next(ResultsReceived, STEP_WAIT)).results
            await self._send(self.control.send_results(ours))
            await self._send(self.control.send_state(State.DISPLAY_RESULTS))
            with contextlib.suppress(TestAborted, asyncio.TimeoutError):
                await self._next(StateReceived, STEP_WAIT)  # IPERF_DONE (or the client just closes)
            return {"peer": f"{self.peer[0]}:{self.peer[1]}" if self.peer else None,
                    "reverse": parameters.reverse, "parallel": parameters.parallel,
                    "seconds": finish - start, "bytes": ours.total_bytes,
                    "client_bytes": theirs.total_bytes, "cpu_util_total": ours.cpu_util_total,
                    "client_cpu_util_total": theirs.cpu_util_total}
        except (TestAborted, ProtocolError, asyncio.TimeoutError, *PEER_GONE):
            return None

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _next(self, kind: type, timeout: float) -> Any:
        """The next event from the client, which must be a `kind` (or a TestAborted says what came)."""
        event = await self._read_event(timeout)
        if isinstance(event, StateReceived) and event.state in (State.CLIENT_TERMINATE, State.IPERF_DONE) \
                and kind is not StateReceived:
            raise TestAborted(f"the client sent {event.state.name}")
        if not isinstance(event, kind):
            raise TestAborted(f"expected {kind.__name__}, the client sent {event}")
        return event

    async def _read_event(self, timeout: float) -> Event:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = self.control.next_event()
            if event is not NEED_DATA:
                assert not isinstance(event, type(NEED_DATA))
                return event
            if self.control.closed:
                raise TestAborted("the client closed the control connection")
            data = await asyncio.wait_for(self.reader.read(READ_SIZE), max(0.0, deadline - loop.time()))
            self.control.receive_data(data)

    def _end_omitting(self) -> None:
        now = asyncio.get_running_loop().time()
        for stream in self.streams:
            stream.end_omitting(now)

    def _results(self, parameters: Parameters, start: float, finish: float, cpu_start: os.times_result,
                 cpu_end: os.times_result) -> Results:
        wall = max(finish - start, 1e-9)
        user = 100.0 * (cpu_end.user - cpu_start.user) / wall
        system = 100.0 * (cpu_end.system - cpu_start.system) / wall
        streams = tuple(stream.result() for stream in self.streams)
        text = None
        if parameters.get_server_output:
            lines = [f"nslab stack iperf3 server: {'sender' if parameters.reverse else 'receiver'}, "
                     f"{len(streams)} stream(s), {wall:.3f} s"]
            lines += [f"stream {s.id}: {s.bytes} bytes" for s in streams]
            lines.append(f"total: {sum(s.bytes for s in streams)} bytes, "
                         f"{sum(s.bytes for s in streams) * 8 / wall / 1e9:.3f} Gbit/s")
            text = "\n".join(lines) + "\n"
        return Results(streams, round(user + system, 4), round(user, 4), round(system, 4),
                       0 if parameters.reverse else -1, None, text)

    # -- the streams -----------------------------------------------------------------------------------

    def takes_stream(self, cookie: bytes) -> bool:
        parameters = self.parameters
        return (self.accepting and cookie == self.cookie and parameters is not None
                and len(self.streams) < parameters.parallel)

    async def serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Join the test as its next stream; the connection lives until the test closes it."""
        parameters = self.parameters
        assert parameters is not None
        stream = Stream(stream_ids(len(self.streams) + 1)[-1], reader, writer, parameters.reverse)
        if stream.sender:
            writer.transport.set_write_buffer_limits(high=SEND_BUFFER)
        self.streams.append(stream)
        if len(self.streams) == parameters.parallel:
            self.all_streams.set()
        await stream.done.wait()

    async def _receive(self, stream: Stream) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(*PEER_GONE):
            while data := await stream.reader.read(READ_SIZE):
                stream.bytes += len(data)
                stream.end = loop.time()

    async def _send_blocks(self, stream: Stream) -> None:
        parameters = self.parameters
        assert parameters is not None
        block = b"".join(chunks(parameters.length))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(*PEER_GONE):
            while not self.stopping.is_set() and not self._sent_enough(parameters):
                stream.writer.write(block)
                stream.bytes += len(block)
                stream.blocks += 1
                stream.end = loop.time()
                await stream.writer.drain()

    def _sent_enough(self, parameters: Parameters) -> bool:
        if parameters.num:
            return sum(s.bytes for s in self.streams) >= parameters.num
        if parameters.blockcount:
            return sum(s.blocks for s in self.streams) >= parameters.blockcount
        return False

    async def _finish_streams(self) -> None:
        """TEST_END: senders stop and wait for the last ACK; receivers read what is still on the way."""
        loop = asyncio.get_running_loop()
        self.stopping.set()
        deadline = loop.time() + (ACK_WAIT if any(s.sender for s in self.streams) else DRAIN_LIMIT)
        while loop.time() < deadline:
            if all(_acknowledged(s) if s.sender else loop.time() - s.end >= DRAIN_QUIET
                   for s in self.streams):
                break
            await asyncio.sleep(0.005)
        for task in self.tasks:
            task.cancel()
        for stream in self.streams:  # iperf3 closes the streams here: a reverse client reads to their EOF
            if stream.sender:
                stream.end = loop.time()
            stream.writer.close()

    async def close(self) -> None:
        if self.omitting is not None:
            self.omitting.cancel()
        for task in self.tasks:
            task.cancel()
        for stream in self.streams:
            stream.done.set()
            await close_writer(stream.writer)
        await close_writer(self.writer)


def _acknowledged(stream: Stream) -> bool:
    """Every byte this stream wrote is out of its transport and acknowledged by the client."""
    writer = stream.writer
    if writer.is_closing():
        return True
    sock = writer.get_extra_info("socket")
    unacknowledged = getattr(sock, "unacknowledged", 0)
    return writer.transport.get_write_buffer_size() == 0 and unacknowledged == 0
