"""`lab stack ... get`: URLs checked before anything is asked, and the body streamed through a FIFO (no root:
a stand-in for the node writes the FIFO as the node process would)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from lab.build.control import StackCommandFailed
from lab.tools.http_get import BadUrl, Url, fetch_to_stream, parse_url, summary


@pytest.mark.parametrize(("text", "expected"), [
    ("http://10.0.0.1/", Url("10.0.0.1", 80, "/")),
    ("http://10.0.0.1", Url("10.0.0.1", 80, "/")),
    ("http://10.0.0.1:8080/a/b?c=d", Url("10.0.0.1", 8080, "/a/b?c=d")),
])
def test_urls_are_split_into_address_port_and_path(text: str, expected: Url) -> None:
    assert parse_url(text) == expected


@pytest.mark.parametrize(("text", "complaint"), [
    ("https://10.0.0.1/", "scheme"), ("10.0.0.1/x", "scheme"), ("http://h1/", "IPv4"),
    ("http://10.0.0.1:0/", "port"), ("http://10.0.0.1:99999/", "99999"), ("http://[::1]/", "IPv4"),
    ("http://u@10.0.0.1/", "user"), ("http://10.0.0.1/a b", "printable"), ("", "scheme"),
])
def test_bad_urls_are_one_line_errors_with_exit_code_2(text: str, complaint: str) -> None:
    with pytest.raises(BadUrl) as raised:
        parse_url(text)
    assert complaint in str(raised.value) and "\n" not in str(raised.value)
    assert raised.value.exit_code == 2


class FakeNode:
    """Answers http_get as the node does: opens `output` (the FIFO), writes the body, closes, answers."""

    def __init__(self, body: bytes, fail: bool = False) -> None:
        self.body, self.fail = body, fail
        self.asked: dict[str, Any] = {}

    def http_get(self, addr: str, port: int, path: str, **fields: Any) -> dict[str, Any]:
        self.asked = {"addr": addr, "port": port, "path": path, **fields}
        if self.fail:
            raise StackCommandFailed("http_get", "10.0.0.1:80/: Connection refused", "ECONNREFUSED")
        descriptor = os.open(fields["output"], os.O_WRONLY | os.O_NONBLOCK)
        os.set_blocking(descriptor, True)
        with os.fdopen(descriptor, "wb") as fifo:
            for start in range(0, len(self.body), 100_000):
                fifo.write(self.body[start : start + 100_000])
        return {"responses": [{"status": 200, "reason": "OK", "bytes": len(self.body), "seconds": 0.5,
                               "first_byte_seconds": 0.001, "goodput_bps": len(self.body) * 16.0,
                               "sha256": "ab"}], "connections": 1}


def test_the_body_streams_through_a_fifo_to_the_output_stream() -> None:
    body = os.urandom(3_000_000)  # far more than a pipe holds: the copy runs while the node writes
    node = FakeNode(body)
    stream = io.BytesIO()
    answer = fetch_to_stream(node, Url("10.0.0.1", 80, "/x"), stream, timeout=5.0)  # type: ignore[arg-type]
    assert stream.getvalue() == body and answer["responses"][0]["bytes"] == len(body)
    fifo = Path(node.asked["output"])
    assert node.asked["timeout"] == 5.0 and not fifo.exists() and not fifo.parent.exists()  # cleaned up
    line = summary(Url("10.0.0.1", 80, "/x"), answer)
    assert line.startswith("http://10.0.0.1:80/x: 200 OK, 3000000 B in 0.500 s, first byte 1.00 ms")
    assert "48.0 Mbit/s at the receiver" in line


def test_a_refusal_of_the_node_comes_back_as_its_error() -> None:
    with pytest.raises(StackCommandFailed, match="refused"):
        fetch_to_stream(FakeNode(b"", fail=True), Url("10.0.0.1", 80, "/"), io.BytesIO(),  # type: ignore[arg-type]
                        timeout=1.0)
