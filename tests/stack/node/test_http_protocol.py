"""The sans-IO HTTP/1.1 connection: bytes in, events out, events in, bytes out (no sockets, no clock)."""

from __future__ import annotations

import pytest

from stack.node.apps.http_messages import Limits, LocalProtocolError, RemoteProtocolError, http_date
from stack.node.apps.http_protocol import (
    CLIENT,
    DONE,
    MUST_CLOSE,
    NEED_DATA,
    PAUSED,
    SEND_BODY,
    SERVER,
    Connection,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    InformationalResponse,
    Request,
    Response,
    Signal,
)

NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example)


def events(conn: Connection) -> list[Event | Signal]:
    """Every event until the connection needs data or pauses (the signal included)."""
    found: list[Event | Signal] = []
    while True:
        event = conn.next_event()
        found.append(event)
        if isinstance(event, (Signal, ConnectionClosed)):
            return found


def body_of(found: list[Event | Signal]) -> bytes:
    return b"".join(bytes(e.data) for e in found if isinstance(e, Data))


def respond(conn: Connection, status: int = 200, body: bytes = b"ok", *headers: tuple[str, str],
            length: bool = True) -> bytes:
    fields = (("Content-Length", str(len(body))),) if length else ()
    parts = conn.send(Response(status, (*fields, *headers)), now=NOW)
    if conn.request_method != "HEAD":
        parts += conn.send(Data(body))
    parts += conn.send(EndOfMessage())
    return b"".join(bytes(p) for p in parts)


def test_date_is_imf_fixdate_of_the_time_given() -> None:
    assert http_date(NOW) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(NOW + 0.9) == http_date(NOW)


def test_pipelined_requests_come_one_cycle_at_a_time_and_in_order() -> None:
    server = Connection(SERVER)
    server.receive_data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    targets, answers = [], []
    while True:
        found = events(server)
        request = found[0]
        assert isinstance(request, Request) and isinstance(found[1], EndOfMessage)
        targets.append(request.target)
        if request.target != "/c":
            assert found[2] is PAUSED  # the next request waits for this exchange to finish
        answers.append(respond(server, body=request.target.encode()))
        if server.our_state is not DONE:
            break
        server.start_next_cycle()
    assert targets == ["/a", "/b", "/c"]
    assert all(f"Date: {http_date(NOW)}".encode() in answer for answer in answers)
    assert b"Connection: close" in answers[-1] and server.our_state is MUST_CLOSE
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [b"/a", b"/b", b"/c"]


def test_http10_keep_alive_is_answered_in_kind_and_http10_without_it_closes() -> None:
    server = Connection(SERVER)
    server.receive_data(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    events(server)
    answer = respond(server)
    assert b"Connection: keep-alive\r\n" in answer and answer.startswith(b"HTTP/1.1 200 OK\r\n")
    server.start_next_cycle()
    server.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    events(server)
    assert b"Connection: close\r\n" in respond(server) and server.our_state is MUST_CLOSE


def test_http10_keep_alive_needs_a_known_length() -> None:
    server = Connection(SERVER)
    server.receive_data(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    events(server)
    answer = respond(server, 200, b"streamed", length=False)  # no length: a 1.0 body ends at the close
    assert b"Transfer-Encoding" not in answer and b"Connection: close" in answer
    assert answer.endswith(b"\r\n\r\nstreamed") and server.our_state is MUST_CLOSE


def test_http11_response_without_length_is_chunked() -> None:
    server = Connection(SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    events(server)
    answer = respond(server, 200, b"hello", length=False)
    assert b"Transfer-Encoding: chunked" in answer and answer.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert server.our_state is DONE


def test_head_keeps_the_length_of_get_and_sends_no_body() -> None:
    server = Connection(SERVER)
    server.receive_data(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
    events(server)
    parts = server.send(Response(200, (("Content-Length", "5000"),)), now=NOW)
    with pytest.raises(LocalProtocolError):
        Connection.send(server, Data(b"body"))
    assert b"Content-Length: 5000" in parts[0]


def test_chunked_request_body_split_at_every_byte() -> None:
    raw = (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n1a\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: yes\r\n\r\n")
    server = Connection(SERVER)
    found: list[Event | Signal] = []
    for index in range(len(raw)):
        server.receive_data(raw[index : index + 1])
        found += [e for e in events(server) if e is not NEED_DATA]
    assert isinstance(found[0], Request) and body_of(found) == b"hello" + b"z" * 26
    assert found[-1] == EndOfMessage((("x-trailer", "yes"),))


def test_expect_100_continue_is_tracked_until_the_server_answers() -> None:
    server = Connection(SERVER)
    server.receive_data(b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                        b"Expect: 100-continue\r\n\r\n")
    assert isinstance(server.next_event(), Request) and server.they_are_waiting_for_100_continue
    assert server.send(InformationalResponse(100)) == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    assert not server.they_are_waiting_for_100_continue
    server.receive_data(b"abc")
    assert server.next_event() == Data(b"abc") and isinstance(server.next_event(), EndOfMessage)


@pytest.mark.parametrize(("raw", "status"), [
    (b"garbage\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),  # a fold before any field
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),  # space before the colon
    (b"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\n\r\n", 505),
    (b"GET / HTTX/1.1\r\n\r\n", 400),
    (b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET /" + b"a" * 40000, 414),  # over the head bound before its first line ended
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 40000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: b\r\n" * 200 + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 400),
])
def test_malformed_requests_carry_the_status_to_answer(raw: bytes, status: int) -> None:
    server = Connection(SERVER)
    server.receive_data(raw)
    with pytest.raises(RemoteProtocolError) as raised:
        events(server)
    assert raised.value.status == status
    answer = respond(server, status, b"no")  # an answer still goes out, and the connection then ends
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and b"Connection: close" in answer
    assert server.our_state is MUST_CLOSE


def test_bounds_are_settings() -> None:
    server = Connection(SERVER, Limits(max_target=10))
    server.receive_data(b"GET /12345678901 HTTP/1.1\r\nHost: a\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as raised:
        server.next_event()
    assert raised.value.status == 414


def test_leading_empty_lines_bare_lf_and_folded_fields_are_accepted() -> None:
    server = Connection(SERVER)
    server.receive_data(b"\r\n\nGET / HTTP/1.1\nHost: a\nX-Long: one\r\n  two\n\n")
    request = server.next_event()
    assert isinstance(request, Request) and request.headers == (("host", "a"), ("x-long", "one two"))


def test_peer_closing_mid_head_or_mid_body_is_an_error_and_between_requests_is_not() -> None:
    mid_head = Connection(SERVER)
    mid_head.receive_data(b"GET / HT")
    mid_head.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        mid_head.next_event()
    mid_body = Connection(SERVER)
    mid_body.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc")
    mid_body.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="6 body bytes"):
        events(mid_body)
    idle = Connection(SERVER)
    idle.receive_data(b"")
    assert isinstance(idle.next_event(), ConnectionClosed)


def test_a_half_closed_client_still_gets_its_answer() -> None:
    server = Connection(SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    server.receive_data(b"")
    assert isinstance(events(server)[-1], ConnectionClosed)
    assert respond(server).startswith(b"HTTP/1.1 200 OK") and server.our_state is MUST_CLOSE


def test_our_own_mistakes_are_local_errors() -> None:
    server = Connection(SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    events(server)
    with pytest.raises(LocalProtocolError, match="Date"):
        server.send(Response(200, (("Content-Length", "2"),)))  # no `now`
    other = Connection(SERVER)
    other.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    events(other)
    other.send(Response(200, (("Content-Length", "2"),)), now=NOW)
    with pytest.raises(LocalProtocolError, match="exceed"):
        other.send(Data(b"abc"))
    with pytest.raises(LocalProtocolError):
        Connection(SERVER).send(Response(200, (("X-Bad", "a\r\nInjected: 1"),)), now=NOW)


@pytest.mark.parametrize(("method", "response", "body", "reusable"), [
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", b"abc", True),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", b"abc", True),
    ("GET", b"HTTP/1.1 200 OK\r\n\r\nuntil close", b"until close", False),
    ("GET", b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", b"x", False),
    ("GET", b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx", b"x", True),
    ("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", b"", True),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", b"", True),
])
def test_client_reads_every_response_framing(method: str, response: bytes, body: bytes,
                                             reusable: bool) -> None:
    client = Connection(CLIENT)
    sent = b"".join(client.send(Request(method, "/", (("Host", "a"),))) + client.send(EndOfMessage()))
    assert sent == f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    client.receive_data(response)
    found = events(client)
    if found[-1] is NEED_DATA and not reusable:
        client.receive_data(b"")
        found += events(client)
    finals = [e for e in found if isinstance(e, Response)]
    assert len(finals) == 1 and body_of(found) == body
    assert any(isinstance(e, EndOfMessage) for e in found)
    assert (client.states == {CLIENT: DONE, SERVER: DONE}) is reusable


def test_client_refuses_to_send_a_body_it_did_not_declare() -> None:
    client = Connection(CLIENT)
    client.send(Request("GET", "/", (("Host", "a"),)))
    assert client.our_state is SEND_BODY
    with pytest.raises(LocalProtocolError):
        client.send(Data(b"x"))
