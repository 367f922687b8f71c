"""The HTTP/1.1 server and client: over the stack on a memory wire, and against curl on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stack.aio import AsyncioDriver, open_connection, start_server
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.node.apps import handler_for, http_client
from stack.node.apps.content import pattern, pattern_sha256
from stack.node.apps.http import DIGEST_HEADER_BYTES, INDEX, MAX_PATTERN_BYTES, HttpApp, HttpSettings
from stack.node.apps.http_messages import Limits
from stack.tcp.config import TcpConfig

SERVER_IP = "10.0.0.2"
IMF_FIXDATE = (rb"Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
               rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT\r\n")


def serve(body: Callable[[Host], Awaitable[Any]], app: HttpApp | None = None, limit: float = 30.0) -> Any:
    """Serve `app` (a default HttpApp) on port 7 of host b over a memory wire; run `body(a)` against it."""

    async def main() -> Any:
        config = TcpConfig(time_wait=0.5)
        a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tcp=config)
        b = Host(f"{SERVER_IP}/24", "02:00:00:00:00:02", seed=2, tcp=config)
        async with AsyncioDriver([a, b], [MemoryWire(a, b)]):
            server = await start_server(app or handler_for("http"), b, SERVER_IP, 7)
            async with server:
                return await body(a)

    return asyncio.run(asyncio.wait_for(main(), limit))


async def exchange(a: Host, raw: bytes, limit: float = 5.0) -> bytes:
    """Send raw request bytes, read until the server closes."""
    reader, writer = await open_connection(a, SERVER_IP, 7)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), limit)
    writer.close()
    return data


def status_lines(raw: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+(?=\r\n)", raw)


def test_client_fetches_bytes_with_keep_alive_and_checks_the_digest() -> None:
    async def body(a: Host) -> tuple[list[http_client.Fetched], int]:
        return await http_client.get(lambda: open_connection(a, SERVER_IP, 7), f"{SERVER_IP}:7",
                                     "/bytes/1000000", count=3)

    responses, connections = serve(body)
    assert connections == 1  # one connection carried all three
    assert [r.status for r in responses] == [200, 200, 200]
    for response in responses:
        assert response.bytes == 1_000_000 and response.goodput_bps > 0
        assert response.first_byte_seconds is not None and response.first_byte_seconds <= response.seconds
        headers = dict((name, value) for name, value in response.headers)
        assert response.sha256 == pattern_sha256(1_000_000) == headers["x-content-sha256"]
    assert dict(responses[-1].headers).get("connection") == "close"  # the last request asked to close


def test_pipelined_requests_are_answered_in_order_each_with_a_date() -> None:
    async def body(a: Host) -> bytes:
        return await exchange(a, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"HEAD /bytes/5000 HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                                 b"GET /bytes/5000 HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"GET /bytes/12 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    answer = serve(body)
    ok = b"HTTP/1.1 200 OK"
    refused = [b"HTTP/1.1 404 Not Found", b"HTTP/1.1 405 Method Not Allowed"]
    assert status_lines(answer) == [ok, ok, *refused, ok, ok]
    assert len(re.findall(IMF_FIXDATE, answer)) == 6
    assert INDEX in answer and b"Allow: GET, HEAD\r\n" in answer
    responses = answer.split(b"HTTP/1.1 ")[1:]
    head, get = responses[1], responses[4]
    assert head.endswith(b"\r\n\r\n")  # HEAD: the fields of GET, no body
    for fields in (head, get):
        assert b"Content-Length: 5000\r\n" in fields
        assert f"X-Content-SHA256: {pattern_sha256(5000)}".encode() in fields
    assert get.endswith(pattern(5000))
    assert answer.endswith(b"Connection: close\r\n\r\n" + pattern(12))


def test_http10_keep_alive_keeps_the_connection_and_says_so() -> None:
    async def body(a: Host) -> tuple[bytes, bytes]:
        kept = await exchange(a, b"GET /bytes/10 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
                                 b"GET /bytes/20 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                 b"GET /bytes/30 HTTP/1.0\r\n\r\n")
        return kept, await exchange(a, b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n")

    kept, plain = serve(body)
    assert status_lines(kept) == [b"HTTP/1.1 200 OK"] * 3  # all three on one connection
    assert kept.count(b"Connection: keep-alive\r\n") == 2 and kept.count(b"Connection: close\r\n") == 1
    assert kept.endswith(pattern(30))
    assert status_lines(plain) == [b"HTTP/1.1 200 OK"]  # HTTP/1.0 without keep-alive: closed after one


def test_uploads_chunked_or_by_length_are_counted_and_digested() -> None:
    data = pattern(300_001)
    pieces = (data[:1], data[1:70_000], data[70_000:])
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)

    async def body(a: Host) -> tuple[bytes, bytes]:
        return (await exchange(a, b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  + chunked + b"0\r\nX-Trailer: t\r\n\r\n"
                                  b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                await exchange(a, b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 300001\r\n"
                                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n" + data))

    by_chunks, by_length = serve(body)
    expected = f"received 300001 bytes, sha256 {hashlib.sha256(data).hexdigest()}\n".encode()
    assert status_lines(by_chunks) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]
    assert expected in by_chunks and b"X-Received-Bytes: 300001\r\n" in by_chunks
    assert by_chunks.endswith(pattern(3))  # the request after the chunked body was read where it began
    assert by_length.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert by_length.endswith(expected)


BAD_REQUESTS = [
    (b"garbage\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
    (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    (b"GET /upload HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"GET /bytes/ten HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (MAX_PATTERN_BYTES + 1), 404),
    (b"POST /upload HTTP/1.1\r\nHost: x\r\n\r\n", 411),
    (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413),
    (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + b"x" * 1001, 413),
    (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br\r\n\r\n", 501),
    (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 2000 + b"\r\n\r\n", 431),
]


def test_bad_requests_get_their_status_and_a_close() -> None:
    app = HttpApp(HttpSettings(max_upload_bytes=1000, limits=Limits(max_target=256, max_head=1024)))

    async def body(a: Host) -> list[bytes]:
        then = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        return list(await asyncio.gather(*(exchange(a, raw + then) for raw, _ in BAD_REQUESTS)))

    for (raw, status), answer in zip(BAD_REQUESTS, serve(body, app), strict=True):
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (raw[:40], answer[:80])
        assert re.search(IMF_FIXDATE, answer)
        if status in (400, 413, 414, 431, 501, 505) and b"BREW" not in raw:  # the protocol failed: closed
            assert len(status_lines(answer)) == 1 and b"Connection: close\r\n" in answer, raw[:40]
        else:  # a well-formed request refused: the next one on the connection is still answered
            assert status_lines(answer)[-1] == b"HTTP/1.1 200 OK", raw[:40]


def test_a_refused_request_still_arriving_is_drained_not_reset() -> None:
    """431 at the 1 KB bound of a head 200 KB long: the server half-closes and drains the rest (lingering
    close), so the client reads the whole answer and then EOF -- a close with unread data would send a RST
    and could wipe the answer out of the client's receive queue."""
    app = HttpApp(HttpSettings(limits=Limits(max_head=1024)))

    async def body(a: Host) -> tuple[bytes, bool]:
        reader, writer = await open_connection(a, SERVER_IP, 7)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 200_000 + b"\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5.0)
        writer.close()
        reset = False
        try:
            await writer.wait_closed()
        except ConnectionResetError:
            reset = True
        return answer, reset

    answer, reset = serve(body, app)
    assert answer.startswith(b"HTTP/1.1 431 ") and not reset


def test_idle_and_slow_clients_are_closed_after_their_timeouts() -> None:
    app = HttpApp(HttpSettings(idle_timeout=0.3, head_timeout=0.3, body_timeout=0.3))

    async def timed(a: Host, raw: bytes) -> tuple[bytes, float]:
        started = time.monotonic()
        return await exchange(a, raw), time.monotonic() - started

    async def body(a: Host) -> list[tuple[bytes, float]]:
        return list(await asyncio.gather(
            timed(a, b""), timed(a, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), timed(a, b"GET / HTTP/1.1\r\nHo"),
            timed(a, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")))

    (idle, idle_s), (kept, kept_s), (slow_head, head_s), (slow_body, body_s) = serve(body, app)
    assert idle == b"" and 0.25 < idle_s < 2.0  # nothing asked: closed without an answer
    assert status_lines(kept) == [b"HTTP/1.1 200 OK"] and 0.25 < kept_s < 2.0  # kept alive, then idle
    for answer, seconds in ((slow_head, head_s), (slow_body, body_s)):
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and 0.25 < seconds < 2.0


def test_a_huge_digest_never_holds_the_loop() -> None:
    """The digest of 1 GiB (about 0.6 s of hashing) runs beside the loop: other connections and timers
    carry on; above DIGEST_HEADER_BYTES the field is left out and the answer is immediate."""

    async def body(a: Host) -> tuple[bytes, bytes, list[float], float]:
        lags: list[float] = []
        huge = asyncio.ensure_future(exchange(a, b"HEAD /bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close"
                                                 b"\r\n\r\n" % DIGEST_HEADER_BYTES, limit=20.0))
        while not huge.done():
            started = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - started - 0.01)
        started = time.monotonic()
        largest = await exchange(a, b"HEAD /bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                 % MAX_PATTERN_BYTES)
        return await huge, largest, lags, time.monotonic() - started

    huge, largest, lags, largest_seconds = serve(body)
    assert f"X-Content-SHA256: {pattern_sha256(DIGEST_HEADER_BYTES)}".encode() in huge
    assert len(lags) > 10 and max(lags) < 0.2, f"the loop stalled {max(lags):.3f} s"
    assert f"Content-Length: {MAX_PATTERN_BYTES}\r\n".encode() in largest
    assert b"X-Content-SHA256" not in largest
    assert largest_seconds < 0.5


def test_date_comes_from_the_apps_clock() -> None:
    app = HttpApp(clock=lambda: 784111777.0)

    async def body(a: Host) -> bytes:
        return await exchange(a, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    assert b"\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n" in serve(body, app)


# --- curl on loopback: the same app on asyncio's kernel sockets ------------------------------------------


def run_curl_against_app(*arguments_for: Callable[[str], list[str]]) -> list[tuple[int, bytes, str]]:
    """Start the app on 127.0.0.1; run curl with each argument list (given the base URL)."""

    async def main() -> list[tuple[int, bytes, str]]:
        server = await asyncio.start_server(HttpApp(), "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        results = []
        async with server:
            for arguments in arguments_for:
                process = await asyncio.create_subprocess_exec(
                    "curl", *arguments(base), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                out, err = await asyncio.wait_for(process.communicate(), 20.0)
                results.append((process.returncode or 0, out, err.decode()))
        return results

    return asyncio.run(main())


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_fetches_from_the_server_with_keep_alive() -> None:
    def fetch(base: str) -> list[str]:
        url = f"{base}/bytes/3000000"
        return ["-sS", "--fail", "-D", "/dev/stderr", url, url, "--next", "-sS", "--head", url]

    def http10(base: str) -> list[str]:
        return ["-sS", "--fail", "--http1.0", "-H", "Connection: keep-alive", "-o", "/dev/null",
                "-o", "/dev/null", "-w", "%{num_connects}\n", f"{base}/bytes/100", f"{base}/"]

    (code, out, headers), (code10, connects, err10) = run_curl_against_app(fetch, http10)
    assert code == 0, headers
    body, head = out[:6_000_000], out[6_000_000:].decode()
    assert hashlib.sha256(body[:3_000_000]).hexdigest() == pattern_sha256(3_000_000)
    assert body[3_000_000:] == body[:3_000_000]
    assert headers.count("HTTP/1.1 200 OK") == 2 and headers.count("Date: ") == 2
    assert f"X-Content-SHA256: {pattern_sha256(3_000_000)}" in headers
    assert head.startswith("HTTP/1.1 200 OK") and "Content-Length: 3000000" in head
    assert code10 == 0, err10
    assert connects.split() == [b"1", b"0"]  # HTTP/1.0 with keep-alive: the second reused the first
