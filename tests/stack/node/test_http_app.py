"""The HTTP/1.1 server and client: over the stack on a memory wire, and against curl on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import subprocess

import pytest

from stack.aio import open_connection
from stack.host import Host
from stack.node.apps import http
from stack.node.apps.content import pattern, pattern_sha256

from .test_apps import SERVER_IP, run_pair


async def exchange(a: Host, raw: bytes) -> bytes:
    """Send raw request bytes, read until the server closes."""
    reader, writer = await open_connection(a, SERVER_IP, 7)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    return data


def test_client_fetches_bytes_with_keep_alive_and_checks_the_digest() -> None:
    async def body(a: Host) -> tuple[list[http.Response], int]:
        return await http.get(lambda: open_connection(a, SERVER_IP, 7), f"{SERVER_IP}:7", "/bytes/1000000",
                              count=3)

    responses, connections = run_pair("http", body)
    assert connections == 1  # one connection carried all three
    assert [r.status for r in responses] == [200, 200, 200]
    for response in responses:
        assert response.bytes == 1_000_000
        assert response.sha256 == pattern_sha256(1_000_000) == response.headers["x-content-sha256"]
    assert responses[-1].headers.get("connection") == "close"  # the last request asked to close


def test_server_answers_index_head_404_405_400() -> None:
    async def body(a: Host) -> list[bytes]:
        pipelined = (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"HEAD /bytes/5000 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /bytes/12 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        bad_number = b"GET /bytes/ten HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        return [await exchange(a, pipelined), await exchange(a, bad_number),
                await exchange(a, b"garbage\r\n\r\n"), await exchange(a, b"GET / HTTP/1.1\r\n\r\n"),
                await exchange(a, b"GET / HTTP/1.0\r\n\r\n")]

    pipelined, bad_number, garbage, no_host, http10 = run_pair("http", body)
    heads = re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+(?=\r\n)", pipelined)
    assert heads == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found",
                     b"HTTP/1.1 405 Method Not Allowed", b"HTTP/1.1 200 OK"]
    assert http.INDEX in pipelined
    assert b"Allow: GET, HEAD" in pipelined
    head_response = pipelined.split(b"HTTP/1.1 ")[2]
    assert b"Content-Length: 5000" in head_response
    assert f"X-Content-SHA256: {pattern_sha256(5000)}".encode() in head_response
    assert head_response.endswith(b"\r\n\r\n")  # HEAD: no body
    assert pipelined.endswith(pattern(12))
    assert bad_number.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in bad_number
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert no_host.startswith(b"HTTP/1.1 400 ")
    assert http10.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in http10  # 1.0: closes by default


@pytest.mark.parametrize("head", [b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n",
                                  b"GET / HTTP/2.0\r\nHost: a\r\n", b"GET / HTTP/1.1\r\n Host: a\r\n"])
def test_malformed_heads_are_refused(head: bytes) -> None:
    with pytest.raises(http.BadRequest):
        http.parse_request_head(head.rstrip(b"\r\n"))


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_fetches_from_the_server_with_keep_alive() -> None:
    """The same handler on asyncio's kernel sockets on loopback: what curl (a demanding client) accepts."""

    async def main() -> tuple[int, bytes, str]:
        server = await asyncio.start_server(http.serve_http, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/bytes/3000000"
        async with server:
            process = await asyncio.create_subprocess_exec(
                "curl", "-sS", "--fail", "-D", "/dev/stderr", url, url, "--next", "-sS", "--head", url,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), 20.0)
            return process.returncode or 0, out, err.decode()

    code, out, headers = asyncio.run(main())
    assert code == 0, headers
    body, head = out[:6_000_000], out[6_000_000:].decode()
    assert hashlib.sha256(body[:3_000_000]).hexdigest() == pattern_sha256(3_000_000)
    assert body[3_000_000:] == body[:3_000_000]
    assert headers.count("HTTP/1.1 200 OK") == 2
    assert f"X-Content-SHA256: {pattern_sha256(3_000_000)}" in headers
    assert head.startswith("HTTP/1.1 200 OK") and "Content-Length: 3000000" in head
