"""One HTTP/1.1 connection as a state machine, sans-IO, in the shape of h11: bytes in, events out; events
in, bytes out. No sockets, no threads, no clock (a server's `Date` comes from the `now` passed to `send`).

    conn = Connection(SERVER)
    conn.receive_data(data)              # b"" when the peer closed its side
    event = conn.next_event()            # Request, Data, EndOfMessage, ConnectionClosed, NEED_DATA or PAUSED
    parts = conn.send(Response(200, headers), now=time.time())   # the bytes to write, in order
    conn.start_next_cycle()              # when both sides are DONE: the next request on the same connection

Each side has a state (`State`); what an event does to it is the table `EVENT_TRANSITIONS`, and the joint
states that force another are `STATE_TRANSITIONS` (h11's `_state.py`, the same tables). A side that is DONE
while keep-alive is off moves to MUST_CLOSE: the connection ends after this exchange.

Behaviour follows h11 where it has one, with these differences for this lab's server and client:
- an HTTP/1.0 request with `Connection: keep-alive` keeps the connection when the response's length is known,
  and the response says `Connection: keep-alive` (RFC 9112 appendix C.2.2; h11 closes every 1.0 exchange);
- a server's Response gets a `Date` field (RFC 9110 section 6.6.1) from the `now` given to `send`;
- no protocol switching (Upgrade, CONNECT): a 101 from a server is a protocol error here.
Pipelined requests wait in the receive buffer (`next_event` answers PAUSED) until `start_next_cycle`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from stack.compat import SLOTS
from stack.node.apps.http_messages import (
    NO_BODY,
    BodyPart,
    BodyReader,
    BodyWriter,
    Fields,
    Framing,
    Headers,
    Limits,
    LocalProtocolError,
    ReceiveBuffer,
    RemoteProtocolError,
    body_framing,
    connection_tokens,
    field_values,
    format_head,
    http_date,
    index_fields,
    parse_fields,
    parse_request_line,
    parse_status_line,
    reader_for,
)

REASONS = {100: "Continue", 200: "OK", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
           413: "Content Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}


class Sentinel:
    """A named constant compared by identity (h11's sentinels): the roles, the states and the signals.
    Not an Enum: these are dictionary keys on every event, and an Enum member's hash runs Python code."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


class Role(Sentinel):
    __slots__ = ()


class State(Sentinel):
    __slots__ = ()


class Signal(Sentinel):
    __slots__ = ()


CLIENT, SERVER = Role("client"), Role("server")
IDLE = State("IDLE")
SEND_RESPONSE = State("SEND_RESPONSE")  # the server, between a request and its final response
SEND_BODY = State("SEND_BODY")
DONE = State("DONE")
MUST_CLOSE = State("MUST_CLOSE")
CLOSED = State("CLOSED")
ERROR = State("ERROR")
NEED_DATA = Signal("NEED_DATA")  # give `receive_data` more bytes (or b"" at the peer's EOF)
PAUSED = Signal("PAUSED")  # the peer's next message is buffered; it comes after `start_next_cycle`


@dataclass(frozen=True, **SLOTS)
class Request:
    method: str
    target: str
    headers: Headers = ()
    version: str = "1.1"


@dataclass(frozen=True, **SLOTS)
class InformationalResponse:
    status: int  # 1xx
    headers: Headers = ()
    reason: str = ""


@dataclass(frozen=True, **SLOTS)
class Response:
    status: int
    headers: Headers = ()
    reason: str = ""
    version: str = "1.1"


@dataclass(frozen=True, **SLOTS)
class Data:
    data: BodyPart


@dataclass(frozen=True, **SLOTS)
class EndOfMessage:
    trailers: Headers = ()


@dataclass(frozen=True, **SLOTS)
class ConnectionClosed:
    pass


END_OF_MESSAGE = EndOfMessage()  # the usual end, without trailers: events are immutable, so one serves all


Event = Union[Request, InformationalResponse, Response, Data, EndOfMessage, ConnectionClosed]
SERVER_SEES_REQUEST = (Request, CLIENT)  # the server's machine moves on the client's Request too

# What each event does to its sender's state; an event missing here is a protocol error in that state.
EVENT_TRANSITIONS: dict[Role, dict[State, dict[object, State]]] = {
    CLIENT: {
        IDLE: {Request: SEND_BODY, ConnectionClosed: CLOSED},
        SEND_BODY: {Data: SEND_BODY, EndOfMessage: DONE},
        DONE: {ConnectionClosed: CLOSED},
        MUST_CLOSE: {ConnectionClosed: CLOSED},
        CLOSED: {ConnectionClosed: CLOSED},
        ERROR: {},
    },
    SERVER: {
        IDLE: {ConnectionClosed: CLOSED, Response: SEND_BODY, SERVER_SEES_REQUEST: SEND_RESPONSE},
        SEND_RESPONSE: {InformationalResponse: SEND_RESPONSE, Response: SEND_BODY},
        SEND_BODY: {Data: SEND_BODY, EndOfMessage: DONE},
        DONE: {ConnectionClosed: CLOSED},
        MUST_CLOSE: {ConnectionClosed: CLOSED},
        CLOSED: {ConnectionClosed: CLOSED},
        ERROR: {},
    },
}
# Joint (client, server) states that move a side on: once one side closed or failed, the other's finished
# exchange is the last one.
STATE_TRANSITIONS: dict[tuple[State, State], dict[Role, State]] = {
    (CLOSED, DONE): {SERVER: MUST_CLOSE},
    (CLOSED, IDLE): {SERVER: MUST_CLOSE},
    (ERROR, DONE): {SERVER: MUST_CLOSE},
    (DONE, CLOSED): {CLIENT: MUST_CLOSE},
    (IDLE, CLOSED): {CLIENT: MUST_CLOSE},
    (DONE, ERROR): {CLIENT: MUST_CLOSE},
}


def keeps_alive(fields: Fields, version: str) -> bool:
    """Whether a message lets the connection persist (RFC 9112 section 9.3): HTTP/1.1 unless it says
    `Connection: close`; HTTP/1.0 only when it says `Connection: keep-alive`."""
    if "connection" not in fields:
        return version != "1.0"
    tokens = connection_tokens(fields)
    if "close" in tokens:
        return False
    return version != "1.0" or "keep-alive" in tokens


def without(headers: Headers, *names: str) -> Headers:
    return tuple((name, value) for name, value in headers if name.lower() not in names)


class Connection:
    """Both sides' states of one HTTP/1.1 connection, seen from `our_role`."""

    def __init__(self, our_role: Role, limits: Limits | None = None) -> None:
        self.our_role = our_role
        self.their_role = SERVER if our_role is CLIENT else CLIENT
        self.limits = limits or Limits()
        self.states = {CLIENT: IDLE, SERVER: IDLE}
        self.keep_alive = True  # once False it stays False: the connection ends after this exchange
        self.their_http_version: str | None = None
        self.request_method: str | None = None  # of the exchange in progress
        self.client_is_waiting_for_100_continue = False
        self._buffer = ReceiveBuffer()
        self._peer_closed = False
        self._reader: BodyReader | None = None  # the body the peer is sending
        self._writer: BodyWriter | None = None  # the body we are sending
        self._head_fields: Fields | None = None  # the index of the head just parsed, for `_process`

    @property
    def our_state(self) -> State:
        return self.states[self.our_role]

    @property
    def their_state(self) -> State:
        return self.states[self.their_role]

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        return self.their_role is CLIENT and self.client_is_waiting_for_100_continue

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events (a started head, pipelined requests)."""
        return len(self._buffer)

    # -- receiving -----------------------------------------------------------------------------------------

    def receive_data(self, data: BodyPart) -> None:
        """Bytes from the peer; b"" says the peer closed its sending side."""
        if not data:
            self._peer_closed = True
        elif self._peer_closed:
            raise LocalProtocolError("data received after the peer's EOF")
        else:
            self._buffer.append(data)

    def next_event(self) -> Event | Signal:
        """The peer's next event, NEED_DATA or PAUSED; RemoteProtocolError (their state ERROR) when the
        bytes are not HTTP/1.1 this connection accepts."""
        if self.their_state is ERROR:
            raise RemoteProtocolError("cannot read after the peer's protocol error")
        try:
            event = self._extract_event()
            if not isinstance(event, Signal):
                fields, self._head_fields = self._head_fields, None
                self._process(self.their_role, event, fields)
            return event
        except RemoteProtocolError:
            self._fail(self.their_role)
            raise

    def _extract_event(self) -> Event | Signal:
        state, buffer = self.their_state, self._buffer
        if state is DONE and buffer:
            return PAUSED
        event: Event | None = None
        if state is IDLE and self.their_role is CLIENT:
            lines = buffer.take_head(self.limits, request=True)
            event = None if lines is None else self._request_from(lines)
        elif state in (IDLE, SEND_RESPONSE):  # their role is SERVER
            lines = buffer.take_head(self.limits, request=False)
            event = None if lines is None else self._response_from(lines)
        elif state is SEND_BODY:
            assert self._reader is not None
            piece = self._reader.read(buffer, self.limits)
            if isinstance(piece, bytes):
                event = Data(piece)
            elif piece is not None:
                event = EndOfMessage(piece) if piece else END_OF_MESSAGE
        elif buffer:  # DONE is handled above: MUST_CLOSE or CLOSED
            raise RemoteProtocolError(f"{len(buffer)} bytes after a message that ends the connection")
        if event is not None:
            return event
        if not self._peer_closed:
            return NEED_DATA
        if buffer:
            raise RemoteProtocolError("the peer closed the connection inside a message head")
        if state is SEND_BODY:
            assert self._reader is not None
            return EndOfMessage(self._reader.eof())
        if state in (IDLE, DONE, MUST_CLOSE, CLOSED):
            return ConnectionClosed()
        raise RemoteProtocolError("the peer closed the connection before responding")

    def _request_from(self, lines: list[bytes]) -> Request:
        method, target, version = parse_request_line(lines[0], self.limits)
        headers = parse_fields(lines[1:], self.limits)
        fields = index_fields(headers)
        if version == "1.1" and len(fields.get("host", ())) != 1:
            raise RemoteProtocolError("an HTTP/1.1 request needs exactly one Host")
        self._head_fields = fields
        return Request(method, target, headers, version)

    def _response_from(self, lines: list[bytes]) -> InformationalResponse | Response:
        version, status, reason = parse_status_line(lines[0])
        headers = parse_fields(lines[1:], self.limits)
        if status == 101:
            raise RemoteProtocolError("101 Switching Protocols: protocol switching is not supported")
        if 100 <= status < 200:
            return InformationalResponse(status, headers, reason)
        self._head_fields = index_fields(headers)
        return Response(status, headers, reason, version)

    # -- sending -------------------------------------------------------------------------------------------

    def send(self, event: Event, now: float | None = None) -> list[BodyPart]:
        """The bytes that carry `event`, in order (body pieces are passed through, not copied).

        A server's Response needs `now` (seconds since the epoch) for its Date field. LocalProtocolError
        (our state ERROR) when the event is not allowed here."""
        if self.our_state is ERROR:
            raise LocalProtocolError("cannot send after our own protocol error")
        try:
            if isinstance(event, Data):  # the most frequent event first: the others are tested below
                self._process(self.our_role, event)
                assert self._writer is not None
                return self._writer.data(event.data)
            if isinstance(event, Response) and self.our_role is SERVER:
                headers, fields, writer = self._final_response(event, now)
                self._process(self.our_role, event, fields)  # the sent fields: the caller's and those added
                self._writer = writer
                reason = event.reason or REASONS.get(event.status, "")
                return [format_head(f"HTTP/1.1 {event.status} {reason}", headers)]
            if isinstance(event, InformationalResponse):
                if not 100 <= event.status < 200 or event.status == 101:
                    raise LocalProtocolError(f"status {event.status} is not an informational response")
                self._process(self.our_role, event)
                reason = event.reason or REASONS.get(event.status, "")
                return [format_head(f"HTTP/1.1 {event.status} {reason}", event.headers)]
            if isinstance(event, Request):
                if self.our_role is not CLIENT:
                    raise LocalProtocolError("a server does not send requests")
                writer = self._request_writer(event)
                self._process(self.our_role, event)
                self._writer = writer
                return [format_head(f"{event.method} {event.target} HTTP/{event.version}", event.headers)]
            if isinstance(event, Response):
                raise LocalProtocolError("a client does not send responses")
            if isinstance(event, ConnectionClosed):
                self._process(self.our_role, event)
                return []
            self._process(self.our_role, event)
            assert self._writer is not None
            return self._writer.end(event.trailers)
        except LocalProtocolError:
            self._fail(self.our_role)
            raise

    def _final_response(self, response: Response, now: float | None) -> tuple[Headers, Fields, BodyWriter]:
        """The response's headers with the fields its framing and persistence need, their index, and the
        writer of its body (the index follows each field added or dropped: one pass over the head).

        As in h11: the framing the caller declared stays, a 1.1 client gets chunked when no length is
        given, a 1.0 client gets a close-delimited body (no chunked for 1.0); HEAD, 204 and 304 carry no
        body but keep their fields (HEAD's Content-Length is GET's)."""
        if now is None:
            raise LocalProtocolError("a server's response needs `now` for its Date field")
        if self.states[CLIENT] is IDLE and self.our_state is IDLE:  # an answer to no request (400, 408)
            self.keep_alive = False
        headers = response.headers
        fields = index_fields(headers)
        sent = dict(fields)  # the index of the headers that go out
        length = fields.get("content-length", [])
        chunked = "transfer-encoding" in fields
        old_client = self.their_http_version == "1.0"
        if length:
            kind = "length"
        elif chunked and not old_client:
            kind = "chunked"
        elif old_client or self.their_http_version is None:
            kind = "close"
            if chunked:
                headers = without(headers, "transfer-encoding")
                del sent["transfer-encoding"]
        else:
            kind = "chunked"
            headers = (*headers, ("Transfer-Encoding", "chunked"))
            sent["transfer-encoding"] = ["chunked"]
        if self.request_method == "HEAD" or response.status in (204, 304):
            writer = BodyWriter("none")
        elif kind == "length":
            if len(length) != 1 or not length[0].isdigit():
                raise LocalProtocolError(f"Content-Length {length!r} is not one decimal count")
            writer = BodyWriter("length", int(length[0]))
        else:
            writer = BodyWriter(kind)
        if kind == "close" and writer.kind != "none":
            self.keep_alive = False
        if not keeps_alive(fields, "1.1"):
            self.keep_alive = False
        if "connection" in fields:
            headers = without(headers, "connection")
            del sent["connection"]
        if not self.keep_alive:
            headers = (*headers, ("Connection", "close"))
            sent["connection"] = ["close"]
        elif old_client:
            headers = (*headers, ("Connection", "keep-alive"))
            sent["connection"] = ["keep-alive"]
        if "date" not in fields:
            date = http_date(now)
            headers = (("Date", date), *headers)
            sent["date"] = [date]
        return headers, sent, writer

    def _request_writer(self, request: Request) -> BodyWriter:
        fields = index_fields(request.headers)
        if request.version == "1.1" and len(fields.get("host", ())) != 1:
            raise LocalProtocolError("an HTTP/1.1 request needs exactly one Host")
        try:
            framing = body_framing(fields, request.version) or NO_BODY
        except RemoteProtocolError as error:
            raise LocalProtocolError(str(error)) from None
        kind, length = framing
        return BodyWriter(kind, length)

    # -- the state machine ---------------------------------------------------------------------------------

    def _process(self, role: Role, event: Event, fields: Fields | None = None) -> None:
        """Apply `event` sent by `role`: persistence, 100-continue, framing of what follows, transitions.

        `fields`: the index of a Request's or Response's headers when the caller has it already."""
        if isinstance(event, (Data, EndOfMessage)):  # most events: only the states move
            if role is CLIENT:
                self.client_is_waiting_for_100_continue = False
            self._move(role, type(event))
            self._settle()
            return
        if isinstance(event, Request):
            if fields is None:
                fields = index_fields(event.headers)
            self.request_method = event.method
            if role is self.their_role:
                self.their_http_version = event.version
            if not keeps_alive(fields, event.version):
                self.keep_alive = False
            if "expect" in fields:
                expect = {value.lower() for value in field_values(fields, "expect")}
                if event.version == "1.1" and "100-continue" in expect:
                    self.client_is_waiting_for_100_continue = True
        elif isinstance(event, (InformationalResponse, Response)):
            self.client_is_waiting_for_100_continue = False
            if isinstance(event, Response):
                if fields is None:
                    fields = index_fields(event.headers)
                if role is self.their_role:
                    self.their_http_version = event.version
                if not keeps_alive(fields, event.version):
                    self.keep_alive = False
        self._move(role, type(event))
        if isinstance(event, Request):
            self._move(SERVER, SERVER_SEES_REQUEST)
        if role is self.their_role and isinstance(event, (Request, Response)):
            assert fields is not None
            framing = self._their_framing(event, fields)
            if framing[0] == "close":
                self.keep_alive = False
            self._reader = reader_for(framing)
        self._settle()

    def _their_framing(self, message: Request | Response, fields: Fields) -> Framing:
        declared = body_framing(fields, message.version)
        if isinstance(message, Request):
            return declared or NO_BODY
        if self.request_method == "HEAD" or message.status in (204, 304):
            return NO_BODY
        return declared or ("close", 0)

    def _move(self, role: Role, event_type: object) -> None:
        state = self.states[role]
        new_state = EVENT_TRANSITIONS[role][state].get(event_type)
        if new_state is None:
            kind = event_type[0] if isinstance(event_type, tuple) else event_type
            problem = f"{role.name} cannot take {getattr(kind, '__name__', kind)} in state {state.name}"
            raise (LocalProtocolError(problem) if role is self.our_role else RemoteProtocolError(problem))
        self.states[role] = new_state

    def _fail(self, role: Role) -> None:
        """A side broke the protocol: nothing more can be framed reliably, so this exchange is the last."""
        self.states[role] = ERROR
        self.keep_alive = False
        self._settle()

    def _settle(self) -> None:
        """Apply the state-triggered transitions until nothing changes."""
        states = self.states
        while True:
            client, server = states[CLIENT], states[SERVER]
            if not self.keep_alive:
                if client is DONE:
                    states[CLIENT] = MUST_CLOSE
                if server is DONE:
                    states[SERVER] = MUST_CLOSE
            moves = STATE_TRANSITIONS.get((states[CLIENT], states[SERVER]))
            if moves is not None:
                states.update(moves)
            if states[CLIENT] is client and states[SERVER] is server:
                return

    def start_next_cycle(self) -> None:
        """Reuse the connection for the next exchange (both sides DONE, keep-alive on)."""
        if self.states[CLIENT] is not DONE or self.states[SERVER] is not DONE:
            raise LocalProtocolError(f"not reusable: client {self.states[CLIENT].name}, "
                                     f"server {self.states[SERVER].name}")
        self.states = {CLIENT: IDLE, SERVER: IDLE}
        self.request_method = None
        self.client_is_waiting_for_100_continue = False
        self._reader = self._writer = None
