"""The stack's HTTP/1.1 client (the control socket's `http_get`, `lab stack ... get URL`).

One or more GETs over one connection while the server keeps it alive, reconnecting when it closes (an
HTTP/1.0 server); messages parsed by `http_protocol.Connection`, so bodies by Content-Length, chunked or
until close. Each body is digested, and written to `output` when one is given, on a worker thread
(`stack.node.digest.BackgroundDigest`): the loop only moves bytes. The figures are the receiver's: time
from sending the request to its first response byte and to its last body byte, and the goodput over that
whole time (as curl's speed_download).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from stack.compat import SLOTS
from stack.node.apps.common import READ_SIZE, close_writer
from stack.node.apps.http_messages import Headers, LocalProtocolError, RemoteProtocolError
from stack.node.apps.http_protocol import (
    CLIENT,
    DONE,
    NEED_DATA,
    Connection,
    Data,
    EndOfMessage,
    InformationalResponse,
    Request,
    Response,
)
from stack.node.digest import BackgroundDigest

USER_AGENT = "nslab-stack"
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[], Awaitable[Streams]]


class HttpClientError(Exception):
    """The server's answer was not HTTP this client can read, or the body could not be written."""


@dataclass(**SLOTS)
class Fetched:
    """One response as the client received it."""

    status: int
    reason: str
    bytes: int
    sha256: str
    seconds: float  # request sent -> last body byte
    first_byte_seconds: float | None  # request sent -> first response byte
    headers: Headers

    @property
    def goodput_bps(self) -> float:
        return self.bytes * 8 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "bytes": self.bytes, "sha256": self.sha256,
                "seconds": self.seconds, "first_byte_seconds": self.first_byte_seconds,
                "goodput_bps": self.goodput_bps, "headers": [list(pair) for pair in self.headers]}


async def get(opener: Opener, authority: str, path: str, count: int = 1, *, timeout: float = 60.0,
              output: BinaryIO | None = None) -> tuple[list[Fetched], int]:
    """GET `path` `count` times, on one connection while the server keeps it open; every body is
    appended to `output` when given. `timeout` bounds the connect and every stall (no byte for that long).

    Returns (responses, connections used)."""
    if count < 1:
        raise ValueError(f"count {count} must be at least 1")
    responses: list[Fetched] = []
    connections = 0
    streams: Streams | None = None
    conn = Connection(CLIENT)
    try:
        for index in range(count):
            if streams is None:
                streams = await asyncio.wait_for(opener(), timeout)
                connections += 1
                conn = Connection(CLIENT)
            last = index == count - 1
            headers = (("Host", authority), ("User-Agent", USER_AGENT), ("Accept", "*/*"),
                       ("Connection", "close" if last else "keep-alive"))
            request = Request("GET", path, headers)
            responses.append(await _exchange(conn, streams, request, timeout, output))
            if conn.our_state is DONE and conn.their_state is DONE:
                conn.start_next_cycle()
            else:
                await close_writer(streams[1])
                streams = None
    except (RemoteProtocolError, LocalProtocolError) as error:
        raise HttpClientError(str(error)) from None
    finally:
        if streams is not None:
            await close_writer(streams[1])
    return responses, connections


async def _exchange(conn: Connection, streams: Streams, request: Request, timeout: float,
                    output: BinaryIO | None) -> Fetched:
    reader, writer = streams
    started = time.monotonic()
    writer.writelines([*conn.send(request), *conn.send(EndOfMessage())])
    await writer.drain()
    sink = BackgroundDigest(output=output)
    response: Response | None = None
    received = 0
    first_byte: float | None = None
    try:
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
                except asyncio.TimeoutError:
                    raise asyncio.TimeoutError(f"no byte from the server for {timeout:g} s") from None
                if first_byte is None and data:
                    first_byte = time.monotonic() - started
                conn.receive_data(data)
            elif isinstance(event, Response):
                response = event
            elif isinstance(event, Data):
                await sink.room()
                sink.update(event.data)
                received += len(event.data)
            elif isinstance(event, EndOfMessage):
                break
            elif not isinstance(event, InformationalResponse):
                raise HttpClientError(f"unexpected {type(event).__name__} from the server")
    except OSError as error:
        if sink.error is not error:
            raise
    sha256 = await asyncio.to_thread(sink.hexdigest)
    if sink.error is not None:
        raise HttpClientError(f"writing the body: {sink.error.strerror or sink.error}")
    seconds = time.monotonic() - started
    assert response is not None
    return Fetched(response.status, response.reason, received, sha256, seconds, first_byte, response.headers)
