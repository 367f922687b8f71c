"""The stack's HTTP/1.1 server: the `http` app of topologies and of `lab stack ... listen --app http`.

Messages are parsed and framed by `http_protocol.Connection` (sans-IO, h11's design); this module moves
bytes between it and the asyncio streams, keeps the time (the Date field, timeouts) and serves:

* `GET|HEAD /`: a small HTML index;
* `GET|HEAD /bytes/N`: N bytes of `stack.node.apps.content.pattern`, streamed in pieces, for N up to
  `MAX_PATTERN_BYTES` (64 GiB: minutes at the stack's speed; larger is 404). `X-Content-SHA256` carries
  the body's SHA-256 for N up to `DIGEST_HEADER_BYTES` (1 GiB, about 0.6 s of hashing): small bodies are
  digested on the loop, larger ones on a worker thread while the loop serves everyone else, and every
  digest is remembered. Above 1 GiB, or when the worker cannot answer within `digest_wait`, the field is
  left out: the body starts at once and a client checks it with `content.pattern_sha256(N)`. HEAD gives
  the same fields as GET, without the body.
* `POST|PUT /upload`: reads a body (Content-Length or chunked, at most `max_upload_bytes`) and answers its
  length and SHA-256 (`X-Received-Bytes`, `X-Content-SHA256`): a check for clients that send.

Persistence: HTTP/1.1 connections persist unless a side says `Connection: close`; HTTP/1.0 ones persist
when the client says `Connection: keep-alive` (answered in kind). Pipelined requests are answered in order.
Errors: 400 malformed, 404 no such resource, 405 with Allow, 408 a head or body that stalls, 411 an upload
without a length, 413 an upload over the bound, 414 a target over 8000 bytes, 431 a head over 32 KiB or
100 fields, 501 an unknown method or transfer coding, 505 a version other than 1.x. Protocol errors and
timeouts close the connection after the answer; a connection idle between requests for `idle_timeout` is
closed without one, and a response the client does not read for `write_timeout` is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from stack.compat import SLOTS, within
from stack.node.apps.common import PEER_GONE, READ_SIZE, close_writer
from stack.node.apps.content import chunks, pattern, pattern_sha256
from stack.node.apps.http_messages import Headers, Limits, RemoteProtocolError, content_length, index_fields
from stack.node.apps.http_protocol import (
    DONE,
    END_OF_MESSAGE,
    IDLE,
    NEED_DATA,
    REASONS,
    SEND_RESPONSE,
    SERVER,
    Connection,
    ConnectionClosed,
    Data,
    EndOfMessage,
    InformationalResponse,
    Request,
    Response,
    Signal,
)
from stack.node.apps.watchdog import Watchdog
from stack.node.digest import BackgroundDigest, PatternDigests

SERVER_NAME = "nslab-stack"
MAX_PATTERN_BYTES = 1 << 36
DIGEST_HEADER_BYTES = 1 << 30
INLINE_DIGEST_BYTES = 256 * 1024  # at most about 0.15 ms of hashing on the loop; larger goes to the worker
SMALL_BODY = 16 * 1024  # bodies up to this go out in one write with their head
LINGER_SECONDS = 2.0  # a refused client's unread bytes are drained this long at most (lingering close) ...
LINGER_BYTES = 1 << 20  # ... and this much
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
READS = ("GET", "HEAD")
UPLOADS = ("POST", "PUT")
INDEX = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>nslab stack</title></head>
<body><h1>nslab: a Python TCP/IP stack</h1>
<p>This page came over a TCP connection of the Python stack, on a TAP in a network namespace.</p>
<ul><li><a href="/bytes/1000">/bytes/1000</a>: 1000 bytes of deterministic content
(header X-Content-SHA256 holds the body's SHA-256, up to 1 GiB); any N up to 64 GiB</li>
<li><a href="/bytes/10000000">/bytes/10000000</a>: 10 MB, streamed</li>
<li>POST or PUT /upload: answers the length and SHA-256 of the body it received</li></ul>
</body></html>
"""


@dataclass(frozen=True, **SLOTS)
class HttpSettings:
    """The server's bounds; times in seconds."""

    idle_timeout: float = 15.0  # no byte of a next request for this long: closed without an answer
    head_timeout: float = 10.0  # a request head not complete this long after its first byte: 408
    body_timeout: float = 10.0  # no byte of a request body for this long: 408
    write_timeout: float = 30.0  # a response that cannot move for this long: the connection is aborted
    digest_wait: float = 5.0  # the longest a response waits for X-Content-SHA256 before going without
    max_pattern_bytes: int = MAX_PATTERN_BYTES
    digest_header_bytes: int = DIGEST_HEADER_BYTES
    max_upload_bytes: int = 1 << 30
    limits: Limits = field(default_factory=Limits)


class RequestTimeout(Exception):
    """The client stalled inside a request (408)."""


class HttpApp:
    """The stream handler: `await app(reader, writer)` serves one connection until either side ends it.

    One app per listener; its digests are shared by the listener's connections."""

    def __init__(self, settings: HttpSettings | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or HttpSettings()
        self.clock = clock  # wall-clock seconds for the Date field
        self.digests = PatternDigests()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = HttpSession(self, reader, writer)
        with contextlib.suppress(*PEER_GONE):
            await session.run()
        await close_writer(writer)

    async def pattern_digest(self, size: int) -> str | None:
        """X-Content-SHA256 of /bytes/`size`, or None (over the bound, or not ready in time)."""
        if size > self.settings.digest_header_bytes:
            return None
        known = self.digests.known(size)
        if known is not None:
            return known
        if size <= INLINE_DIGEST_BYTES:
            digest = pattern_sha256(size)
            self.digests.remember(size, digest)
            return digest
        return await self.digests.sha256(size, self.settings.digest_wait)


def target_path(target: str) -> str | None:
    """The path of an origin-form (`/a?b`) or absolute-form (`http://host/a`) target; None for others."""
    if target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    if not target.startswith("/"):
        return None
    return target.split("?", 1)[0].split("#", 1)[0]


class HttpSession:
    """One connection's exchanges: read a request, answer it, again while the connection persists."""

    def __init__(self, app: HttpApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.app = app
        self.settings = app.settings
        self.reader = reader
        self.writer = writer
        self.conn = Connection(SERVER, self.settings.limits)
        self.head_deadline: float | None = None
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.watchdog = Watchdog(self.loop, task)  # bounds every read and write of the connection

    async def run(self) -> None:
        try:
            await self.exchanges()
        finally:
            self.watchdog.close()

    async def exchanges(self) -> None:
        conn = self.conn
        while True:
            try:
                event = await self.next_event()
                if not isinstance(event, Request):
                    return  # the client closed, or stayed idle too long
                self.head_deadline = None
                await self.handle(event)
            except RemoteProtocolError as error:
                await self.refuse(error.status, str(error))
                return
            except RequestTimeout as timeout:
                await self.refuse(408, str(timeout))
                return
            if conn.our_state is not DONE or conn.their_state is not DONE:
                return
            conn.start_next_cycle()

    # -- bytes in -------------------------------------------------------------------------------------------

    async def next_event(self) -> Request | Data | EndOfMessage | ConnectionClosed | None:
        """The client's next event, reading as needed; None when the connection stayed idle too long."""
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not NEED_DATA:
                assert not isinstance(event, (Signal, InformationalResponse, Response))
                return event
            idle = conn.their_state is IDLE and conn.buffered == 0
            if idle:
                timeout = self.settings.idle_timeout
            elif conn.their_state is IDLE:  # a head has begun: it has head_timeout to complete
                if self.head_deadline is None:
                    self.head_deadline = self.loop.time() + self.settings.head_timeout
                timeout = max(0.0, self.head_deadline - self.loop.time())
            else:
                timeout = self.settings.body_timeout
            watchdog = self.watchdog
            watchdog.arm(timeout)
            try:
                data = await self.reader.read(READ_SIZE)
            except asyncio.CancelledError:
                if not watchdog.expired():
                    raise
                if idle:
                    return None
                what = "request head" if conn.their_state is IDLE else "request body"
                raise RequestTimeout(f"the {what} stalled for {timeout:g} s") from None
            finally:
                watchdog.disarm()
            conn.receive_data(data)

    async def read_body(self, request: Request, sink: BackgroundDigest | None) -> int | None:
        """Read the request's body into `sink` (or drop it); its length, or None once a 413 went out."""
        limit = self.settings.max_upload_bytes
        declared = request_length(request)
        if declared is not None and declared > limit:
            await self.error(413, f"a body of {declared} bytes is over this server's {limit}", close=True)
            return None
        if declared != 0 and self.conn.they_are_waiting_for_100_continue:
            await self.write(self.conn.send(InformationalResponse(100)))
        received = 0
        while True:
            event = await self.next_event()
            if isinstance(event, EndOfMessage):
                return received
            if not isinstance(event, Data):  # pragma: no cover - the protocol ends a body with EndOfMessage
                raise RemoteProtocolError("the request body ended without its end")
            received += len(event.data)
            if received > limit:
                await self.error(413, f"the body grew over the {limit} bytes this server takes", close=True)
                return None
            if sink is not None:
                await sink.room()
                sink.update(event.data)

    # -- bytes out ------------------------------------------------------------------------------------------

    async def write(self, parts: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write and wait until the transport takes more; a client that reads nothing is aborted."""
        self.writer.writelines(parts)
        watchdog = self.watchdog
        watchdog.arm(self.settings.write_timeout)
        try:
            await self.writer.drain()
        except asyncio.CancelledError:
            if not watchdog.expired():
                raise
            self.writer.transport.abort()
            raise ConnectionAbortedError("the client read nothing for the write timeout") from None
        finally:
            watchdog.disarm()

    async def respond(self, status: int, body: bytes, headers: Headers = (),
                      content_type: str = "text/plain; charset=utf-8", close: bool = False) -> None:
        fields: Headers = (("Server", SERVER_NAME), ("Content-Type", content_type),
                           ("Content-Length", str(len(body))), *headers)
        if close:
            fields = (*fields, ("Connection", "close"))
        conn = self.conn
        parts = conn.send(Response(status, fields), now=self.app.clock())
        if conn.request_method != "HEAD":
            parts += conn.send(Data(body))
        parts += conn.send(END_OF_MESSAGE)
        await self.write([b"".join(parts)])

    async def error(self, status: int, detail: str, headers: Headers = (), close: bool = False) -> None:
        body = f"{status} {REASONS.get(status, '')}: {detail}\n".encode()
        await self.respond(status, body, headers, close=close)

    async def refuse(self, status: int, detail: str) -> None:
        """Answer a protocol error or a timeout when an answer can still go out; the connection then ends,
        after a lingering close."""
        if self.conn.our_state in (IDLE, SEND_RESPONSE):
            with contextlib.suppress(*PEER_GONE):
                await self.error(status, detail, close=True)
                await self.linger()

    async def linger(self) -> None:
        """Half-close, then read and drop what the client still sends, until its EOF or a bound.

        A refused request may still be arriving (a 40 KB head answered 431 at its 32nd KB, pipelined
        requests behind it): closing with unread data makes TCP send a RST (RFC 1122 4.2.2.13), and the RST
        can destroy the answer in the client's receive queue before it is read. nginx's lingering close
        does the same, within LINGER_SECONDS and LINGER_BYTES."""
        self.writer.write_eof()

        async def drain(left: int) -> None:
            while left > 0 and (data := await self.reader.read(min(left, READ_SIZE))):
                left -= len(data)

        with contextlib.suppress(asyncio.TimeoutError):
            await within(LINGER_SECONDS, drain(LINGER_BYTES))

    # -- resources ------------------------------------------------------------------------------------------

    async def handle(self, request: Request) -> None:
        method, path = request.method, target_path(request.target)
        if path is not None and path.rstrip("/") == "/upload" and method in UPLOADS:
            await self.upload(request)
            return
        if await self.read_body(request, None) is None:
            return
        if path is None:
            await self.error(400, f"request target {request.target[:80]!r} is not a path")
        elif method not in KNOWN_METHODS:
            await self.error(501, f"method {method[:20]} is not implemented")
        elif path == "/" or path.startswith("/bytes/") or path.rstrip("/") == "/upload":
            allowed = UPLOADS if path.rstrip("/") == "/upload" else READS
            if method not in allowed:
                allow = ", ".join(allowed)
                await self.error(405, f"{path[:80]} takes {allow}", (("Allow", allow),))
            elif path == "/":
                await self.respond(200, INDEX, content_type="text/html; charset=utf-8")
            else:
                await self.pattern_bytes(path[len("/bytes/"):])
        else:
            await self.error(404, f"no resource {path[:80]!r}")

    async def pattern_bytes(self, text: str) -> None:
        limit = self.settings.max_pattern_bytes
        size = int(text) if text.isdigit() and len(text) <= 20 else -1
        if not 0 <= size <= limit:
            await self.error(404, f"/bytes/N takes a decimal byte count from 0 to {limit}, not {text[:24]!r}")
            return
        fields: Headers = (("Server", SERVER_NAME), ("Content-Type", "application/octet-stream"),
                           ("Content-Length", str(size)))
        digest = await self.app.pattern_digest(size)
        if digest is not None:
            fields = (*fields, ("X-Content-SHA256", digest))
        conn = self.conn
        parts = conn.send(Response(200, fields), now=self.app.clock())
        if conn.request_method != "HEAD":
            if size <= SMALL_BODY:
                parts += conn.send(Data(pattern(size)))
            else:
                await self.write(parts)
                for piece in chunks(size):
                    await self.write(conn.send(Data(piece)))
                parts = []
        parts += conn.send(END_OF_MESSAGE)
        await self.write([b"".join(parts)])

    async def upload(self, request: Request) -> None:
        chunked = "transfer-encoding" in index_fields(request.headers)
        if request_length(request) is None and not chunked:
            await self.read_body(request, None)  # none: the request ends at its head
            await self.error(411, "an upload needs Content-Length or Transfer-Encoding: chunked")
            return
        digest = BackgroundDigest()
        try:
            received = await self.read_body(request, digest)
        finally:
            sha256 = await asyncio.to_thread(digest.hexdigest)
        if received is None:
            return
        body = f"received {received} bytes, sha256 {sha256}\n".encode()
        await self.respond(200, body, (("X-Received-Bytes", str(received)), ("X-Content-SHA256", sha256)))


def request_length(request: Request) -> int | None:
    """The Content-Length the protocol accepted (it refused malformed or conflicting ones)."""
    return content_length(index_fields(request.headers))
