"""The HTTP app's shortcuts give exactly what the general paths give: heads, lines, bodies, field indexes."""

from __future__ import annotations

import itertools

import pytest

from stack.node.apps.content import CHUNK, PERIOD, chunks, pattern
from stack.node.apps.http_messages import (
    Limits,
    LocalProtocolError,
    ReceiveBuffer,
    RemoteProtocolError,
    checked_head,
    format_head,
    index_fields,
    parse_fields,
    parse_request_line,
    parse_version,
)
from stack.node.apps.http_protocol import SERVER, Connection, Response

NOW = 784111777.0


@pytest.mark.parametrize("n", [0, 1, 1000, PERIOD - 1, PERIOD, PERIOD + 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7])
@pytest.mark.parametrize("offset", [0, 5, PERIOD - 1, PERIOD + 3, 10**9 + 11])
def test_a_small_pattern_is_the_same_bytes_as_the_joined_chunks(n: int, offset: int) -> None:
    assert pattern(n, offset) == b"".join(chunks(n, offset=offset))


def test_a_remembered_head_is_the_checked_head_and_bad_fields_are_refused_every_time() -> None:
    headers = (("Server", "x"), ("Content-Length", "12"))
    first = format_head("HTTP/1.1 200 OK", headers)
    assert first == format_head("HTTP/1.1 200 OK", headers) == checked_head("HTTP/1.1 200 OK", headers)
    unhashable = [["Server", "x"]]  # pairs as lists: formatted, not remembered
    expected = checked_head("HTTP/1.1 200 OK", [("Server", "x")])
    assert format_head("HTTP/1.1 200 OK", unhashable) == expected  # type: ignore[arg-type]
    assert format_head("HTTP/1.1 200 OK", iter(headers)) == first
    for _ in range(2):
        with pytest.raises(LocalProtocolError):
            format_head("HTTP/1.1 200 OK", (("X-Bad", "a\r\nInjected: 1"),))


def lines_by_the_general_rule(head: bytes) -> list[bytes]:
    """Split at LF, then drop one CR at the end of each line."""
    return [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: x",
    b"GET / HTTP/1.1\nHost: x\r",
    b"GET / HTTP/1.1\r\r\nHost: x\r\r",
    b"GET /\r HTTP/1.1\r\nA: b\rc\r\nD: e",
    b"GET / HTTP/1.1",
])
@pytest.mark.parametrize("end", [b"\n\n", b"\n\r\n"])
def test_head_lines_drop_one_cr_before_each_lf(head: bytes, end: bytes) -> None:
    buffer = ReceiveBuffer()
    buffer.append(b"\r\n\n" + head + end + b"rest")
    found = head + end[:1]
    assert buffer.take_head(Limits(), request=True) == lines_by_the_general_rule(found[:-1])
    assert buffer.take() == b"rest"


def test_remembered_field_lines_parse_as_they_did_and_folds_still_continue_them() -> None:
    lines = [b"Host: x", b"X-Long: a", b"\t b", b"Accept:  */* \t", b"X-Big: " + b"v" * 600]
    first = parse_fields(lines, Limits())
    assert first == parse_fields(lines, Limits()) == (
        ("host", "x"), ("x-long", "a b"), ("accept", "*/*"), ("x-big", "v" * 600))
    assert parse_fields([b"X-Long: a"], Limits()) == (("x-long", "a"),)  # the fold did not change it
    with pytest.raises(RemoteProtocolError):
        parse_fields([b"\t b"], Limits())  # a fold alone is still refused


def test_a_remembered_request_line_still_meets_the_target_limit() -> None:
    line = b"GET /" + b"a" * 100 + b" HTTP/1.1"
    expected = ("GET", "/" + "a" * 100, "1.1")
    assert parse_request_line(line, Limits()) == parse_request_line(line, Limits()) == expected
    with pytest.raises(RemoteProtocolError) as refused:
        parse_request_line(line, Limits(max_target=50))
    assert refused.value.status == 414


def test_known_versions_are_what_the_pattern_reads() -> None:
    assert parse_version(b"HTTP/1.1") == parse_version(b"HTTP/1.7") == "1.1"
    assert parse_version(b"HTTP/1.0") == "1.0"


REQUESTS = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"]
FIELD_CHOICES = [(), (("Content-Length", "2"),), (("Transfer-Encoding", "chunked"),),
                 (("Connection", "close"),), (("Connection", "keep-alive, x"),),
                 (("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),), (("X-A", "1"), ("x-a", "2"))]


@pytest.mark.parametrize("raw", REQUESTS)
@pytest.mark.parametrize("status", [200, 204, 304])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_the_index_of_a_final_response_is_the_index_of_its_headers(raw: bytes, status: int,
                                                                   version: str) -> None:
    """`_final_response` keeps the index of what it sends instead of indexing the head again: it must be
    what indexing the sent headers gives, for every framing and persistence case."""
    for first, second in itertools.combinations_with_replacement(FIELD_CHOICES, 2):
        conn = Connection(SERVER)
        conn.receive_data(raw)
        conn.next_event()
        response = Response(status, (*first, *second), version=version)
        try:
            headers, sent, _ = conn._final_response(response, NOW)
        except LocalProtocolError:
            continue  # a Content-Length given twice with different values, etc.
        assert sent == index_fields(headers), (raw, response)
