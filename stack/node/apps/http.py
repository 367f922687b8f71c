"""A small HTTP/1.1 server and client for the stack, enough for curl, browsers and the lab's checks.

Server (`serve_http`): persistent connections (HTTP/1.1 by default, HTTP/1.0 with `Connection:
keep-alive`), Content-Length on every response, HEAD, and these resources:

* `GET /`: a small HTML index;
* `GET /bytes/N`: N bytes of `stack.node.apps.content.pattern`, streamed in pieces (never held whole), with
  `X-Content-SHA256` carrying the body's digest so any client can check it;
* anything else: 404; a method other than GET/HEAD: 405 with `Allow`; a malformed request: 400 and close.

Client (`get`): one or more GETs over one connection while the server keeps it alive, reconnecting when it
closes (an HTTP/1.0 server); bodies by Content-Length, chunked or until close, digested as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from functools import lru_cache

from stack.node.apps.common import PEER_GONE, READ_SIZE, close_writer
from stack.node.apps.content import chunks, pattern_sha256

SERVER_NAME = "nslab-stack"
MAX_HEADER_BYTES = 32 * 1024
MAX_BODY_BYTES = 1 << 40  # /bytes/N above this is refused (400): a typo, not a transfer
IDLE_TIMEOUT = 60.0  # a kept-alive connection with no new request for this long is closed
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           413: "Content Too Large", 431: "Request Header Fields Too Large", 501: "Not Implemented",
           505: "HTTP Version Not Supported"}
INDEX = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>nslab stack</title></head>
<body><h1>nslab: a Python TCP/IP stack</h1>
<p>This page came over a TCP connection of the Python stack, on a TAP in a network namespace.</p>
<ul><li><a href="/bytes/1000">/bytes/1000</a>: 1000 bytes of deterministic content
(header X-Content-SHA256 holds the body's SHA-256)</li>
<li><a href="/bytes/10000000">/bytes/10000000</a>: 10 MB, streamed</li></ul>
</body></html>
"""


class BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


def parse_request_head(head: bytes) -> Request:
    """The request line and headers (without the final blank line); BadRequest on anything malformed."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(400, "undecodable request") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise BadRequest(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if not version.startswith("HTTP/1."):
        if version.startswith("HTTP/"):
            raise BadRequest(505, f"version {version[:20]!r}")
        raise BadRequest(400, f"not HTTP: {version[:20]!r}")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(505, f"version {version[:20]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(400, f"malformed header line {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        if key in headers and key in ("content-length", "host"):
            raise BadRequest(400, f"duplicate {name} header")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if version == "HTTP/1.1" and "host" not in headers:
        raise BadRequest(400, "HTTP/1.1 request without Host")
    return Request(method, target, version, headers)


@lru_cache(maxsize=16)
def _cached_sha256(size: int) -> str:
    return pattern_sha256(size)


def _response_head(status: int, headers: dict[str, str], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", f"Server: {SERVER_NAME}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send_error(writer: asyncio.StreamWriter, status: int, detail: str, keep_alive: bool,
                      head_only: bool = False, extra: dict[str, str] | None = None) -> None:
    body = f"{status} {REASONS.get(status, '')}: {detail}\n".encode()
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)), **(extra or {})}
    writer.write(_response_head(status, headers, keep_alive))
    if not head_only:
        writer.write(body)
    await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The next request head, or None at a clean EOF between requests."""
    try:
        data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
    except asyncio.IncompleteReadError as partial:
        if partial.partial.strip():
            raise BadRequest(400, "connection closed inside a request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head longer than the stream limit") from None
    except TimeoutError:
        return None
    if len(data) > MAX_HEADER_BYTES:
        raise BadRequest(431, f"request head longer than {MAX_HEADER_BYTES} bytes")
    return data[:-4].lstrip(b"\r\n")  # RFC 9112 2.2: ignore empty lines before a request line


async def _skip_body(reader: asyncio.StreamReader, request: Request) -> None:
    if "transfer-encoding" in request.headers:
        raise BadRequest(501, "request bodies with Transfer-Encoding are not supported")
    length_text = request.headers.get("content-length", "0")
    if not length_text.isdigit():
        raise BadRequest(400, f"Content-Length {length_text[:20]!r}")
    remaining = int(length_text)
    while remaining:
        data = await reader.read(min(remaining, READ_SIZE))
        if not data:
            raise BadRequest(400, "connection closed inside the request body")
        remaining -= len(data)


async def _respond(writer: asyncio.StreamWriter, request: Request, keep_alive: bool) -> None:
    head_only = request.method == "HEAD"
    if request.method not in ("GET", "HEAD"):
        await _send_error(writer, 405, f"method {request.method[:20]}", keep_alive,
                          extra={"Allow": "GET, HEAD"})
        return
    path = request.target.split("?", 1)[0]
    if path == "/":
        headers = {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(INDEX))}
        writer.write(_response_head(200, headers, keep_alive))
        if not head_only:
            writer.write(INDEX)
        await writer.drain()
        return
    if path.startswith("/bytes/"):
        text = path[len("/bytes/"):]
        if not text.isdigit() or len(text) > 15:
            await _send_error(writer, 400, f"/bytes/N needs a decimal byte count, not {text[:20]!r}",
                              keep_alive, head_only)
            return
        size = int(text)
        if size > MAX_BODY_BYTES:
            await _send_error(writer, 400, f"{size} bytes is more than {MAX_BODY_BYTES}", keep_alive,
                              head_only)
            return
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size),
                   "X-Content-SHA256": _cached_sha256(size)}
        writer.write(_response_head(200, headers, keep_alive))
        if not head_only:
            for piece in chunks(size):
                writer.write(piece)
                await writer.drain()
        await writer.drain()
        return
    await _send_error(writer, 404, f"no resource {path[:80]!r}", keep_alive, head_only)


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve requests on one connection until either side ends it."""
    with contextlib.suppress(*PEER_GONE):
        while True:
            try:
                head = await _read_head(reader)
                if head is None:
                    break
                request = parse_request_head(head)
                await _skip_body(reader, request)
            except BadRequest as bad:
                await _send_error(writer, bad.status, str(bad), keep_alive=False)
                break
            keep_alive = request.keep_alive
            await _respond(writer, request, keep_alive)
            if not keep_alive:
                break
    await close_writer(writer)


# --- client -----------------------------------------------------------------------------------------------

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class HttpClientError(Exception):
    """The server's answer was not HTTP this client can read (the message says what and where)."""


@dataclass(slots=True)
class Response:
    status: int
    bytes: int
    sha256: str
    seconds: float
    headers: dict[str, str]

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        del data["headers"]
        return data


async def get(opener: Opener, authority: str, path: str, count: int = 1, *,
              timeout: float = 60.0) -> tuple[list[Response], int]:
    """GET `path` `count` times, on one connection while the server keeps it open.

    Returns (responses, connections used)."""
    if count < 1:
        raise ValueError(f"count {count} must be at least 1")
    responses: list[Response] = []
    connections = 0
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        for index in range(count):
            if streams is None:
                streams = await asyncio.wait_for(opener(), timeout)
                connections += 1
            reader, writer = streams
            last = index == count - 1
            request = (f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {SERVER_NAME}\r\n"
                       f"Accept: */*\r\n{'Connection: close' if last else 'Connection: keep-alive'}\r\n\r\n")
            started = time.monotonic()
            writer.write(request.encode("latin-1"))
            await writer.drain()
            response, reusable = await asyncio.wait_for(_read_response(reader), timeout)
            response.seconds = time.monotonic() - started
            responses.append(response)
            if not reusable:
                await close_writer(writer)
                streams = None
    finally:
        if streams is not None:
            await close_writer(streams[1])
    return responses, connections


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        raise HttpClientError("the server closed the connection before a response") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    if len(status_parts) < 2 or not status_parts[0].startswith("HTTP/1.") or not status_parts[1].isdigit():
        raise HttpClientError(f"malformed status line {lines[0][:80]!r}")
    version, status = status_parts[0], int(status_parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    reusable = "close" not in tokens and (version != "HTTP/1.0" or "keep-alive" in tokens)
    digest = hashlib.sha256()
    received = 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size_text = size_line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpClientError(f"malformed chunk size {size_line[:40]!r}") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            received += await _read_exactly(reader, size, digest)
            await reader.readexactly(2)
    elif "content-length" in headers:
        length_text = headers["content-length"]
        if not length_text.isdigit():
            raise HttpClientError(f"Content-Length {length_text[:20]!r}")
        received = await _read_exactly(reader, int(length_text), digest)
    elif status in (204, 304) or 100 <= status < 200:
        pass
    else:  # the body runs until the server closes
        while data := await reader.read(READ_SIZE):
            digest.update(data)
            received += len(data)
        reusable = False
    return Response(status, received, digest.hexdigest(), 0.0, headers), reusable


async def _read_exactly(reader: asyncio.StreamReader, size: int, digest: hashlib._Hash) -> int:
    remaining = size
    while remaining:
        data = await reader.read(min(remaining, READ_SIZE))
        if not data:
            raise HttpClientError(f"the body ended after {size - remaining} of {size} bytes")
        digest.update(data)
        remaining -= len(data)
    return size
