"""iperf3's control connection, sans-IO: the bytes each side sends and what the other side makes of them.

An iperf3 test is one control connection and one TCP connection per stream, all to the server's port
(5201). The client opens the control connection and sends a 37-byte cookie (36 printable characters and
a NUL) that names the test; every stream connection it opens later starts with the same cookie, which is
how the server tells a stream of this test from a new client. After that the control connection carries
single signed bytes, the states of the test, and two JSON documents, each preceded by its length as a
4-byte big-endian integer:

    server: PARAM_EXCHANGE          client: {parameters}      (time, parallel, reverse, len, ...)
    server: CREATE_STREAMS          client: opens `parallel` stream connections, each sends the cookie
    server: TEST_START, TEST_RUNNING                          (data flows on the streams for `time` s)
    client: TEST_END
    server: EXCHANGE_RESULTS        client: {its results}     server: {its results}
    server: DISPLAY_RESULTS         client: IPERF_DONE

A server that refuses sends ACCESS_DENIED (busy with another test) or SERVER_ERROR followed by two 4-byte
integers, iperf3's error number and the errno. Results name each stream by an id: the streams in the order
the server accepted them are 1, 3, 4, 5, ... (iperf3 numbers them so, and both sides must agree).

`Control(role)` is one side of that conversation, in h11's manner: `receive_data(bytes)` feeds what
arrived, `next_event()` returns the next `Event` or `NEED_DATA`, and the `send_*` methods return the bytes
to write. It knows which kind of message comes next from the states already exchanged, and raises
`ProtocolError` for anything out of order or malformed. It does no I/O and never reads the clock.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Union

COOKIE_SIZE = 37  # 36 characters and a NUL, as iperf3 sends it
MAX_JSON_BYTES = 1 << 20  # a parameters or results document longer than this is not iperf3's
MAX_STREAMS = 128  # iperf3's own limit on -P
DEFAULT_BLOCK = 128 * 1024  # iperf3's TCP write size (-l)
MAX_BLOCK = 1 << 20
MAX_SECONDS = 86_400

CLIENT = "client"
SERVER = "server"


class State(IntEnum):
    """The state bytes of iperf3 (`iperf_api.h`); the two negative ones are refusals."""

    TEST_START = 1
    TEST_RUNNING = 2
    TEST_END = 4
    PARAM_EXCHANGE = 9
    CREATE_STREAMS = 10
    SERVER_TERMINATE = 11
    CLIENT_TERMINATE = 12
    EXCHANGE_RESULTS = 13
    DISPLAY_RESULTS = 14
    IPERF_START = 15
    IPERF_DONE = 16
    ACCESS_DENIED = -1
    SERVER_ERROR = -2


# iperf3's error numbers (`i_errno`) that this side sends or names.
IE_UNIMPLEMENTED = 13  # "an option you are trying to set is not implemented yet"
IE_NUM_STREAMS = 6  # "number of parallel streams too large"
IE_STREAM_ID = 208
ERROR_WORDS = {IE_UNIMPLEMENTED: "an option you are trying to set is not implemented yet",
               IE_NUM_STREAMS: f"number of parallel streams too large (maximum = {MAX_STREAMS})",
               IE_STREAM_ID: "stream has an invalid id"}


class ProtocolError(ValueError):
    """The other side sent something iperf3 never sends at this point; the message says what."""


def new_cookie() -> bytes:
    """A fresh test cookie: 36 random characters of iperf3's alphabet and the NUL."""
    alphabet = string.ascii_lowercase + "234567"
    return "".join(secrets.choice(alphabet) for _ in range(COOKIE_SIZE - 1)).encode() + b"\0"


def stream_ids(count: int) -> list[int]:
    """The ids iperf3 gives `count` streams in the order they were made: 1, 3, 4, 5, ..."""
    return [1, *range(3, count + 2)] if count > 0 else []


@dataclass(frozen=True)
class Parameters:
    """The client's test parameters (the ones a TCP test uses; the rest are kept in `extra`)."""

    time: int = 10  # seconds of data (0 with num or blockcount)
    parallel: int = 1
    reverse: bool = False
    length: int = DEFAULT_BLOCK  # "len": the size of each write
    num: int = 0  # bytes to send (-n), 0: by time
    blockcount: int = 0  # writes to make (-k), 0: by time
    omit: int = 0
    protocol: str = "tcp"
    bidirectional: bool = False
    get_server_output: bool = False
    client_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {self.protocol: True, "omit": self.omit, "time": self.time,
                                    "num": self.num, "blockcount": self.blockcount, "parallel": self.parallel,
                                    "len": self.length, "pacing_timer": 1000}
        if self.reverse:
            document["reverse"] = True
        if self.bidirectional:
            document["bidirectional"] = True
        if self.get_server_output:
            document["get_server_output"] = 1
        document["client_version"] = self.client_version or "3.12"
        return {**self.extra, **document}

    @classmethod
    def from_json(cls, document: Any) -> Parameters:
        if not isinstance(document, dict):
            raise ProtocolError("parameters: not a JSON object")
        protocol = next((name for name in ("udp", "sctp", "tcp") if name in document), "tcp")
        known = {"tcp", "udp", "sctp", "omit", "time", "num", "blockcount", "parallel", "reverse",
                 "bidirectional", "len", "get_server_output", "client_version"}
        return cls(
            time=_number(document, "time", 10, 0, MAX_SECONDS),
            parallel=_number(document, "parallel", 1, 0, 1 << 16),
            reverse="reverse" in document,
            length=_number(document, "len", DEFAULT_BLOCK, 0, 1 << 30) or DEFAULT_BLOCK,
            num=_number(document, "num", 0, 0, 1 << 62),
            blockcount=_number(document, "blockcount", 0, 0, 1 << 62),
            omit=_number(document, "omit", 0, 0, MAX_SECONDS),
            protocol=protocol,
            bidirectional="bidirectional" in document,
            get_server_output="get_server_output" in document,
            client_version=str(document.get("client_version", "")),
            extra={key: value for key, value in document.items() if key not in known},
        )

    def refusal(self) -> int | None:
        """The iperf3 error number a server sends for a test it does not run (None: it runs it)."""
        if self.protocol != "tcp" or self.bidirectional:
            return IE_UNIMPLEMENTED
        if not 1 <= self.parallel <= MAX_STREAMS:
            return IE_NUM_STREAMS
        if self.length > MAX_BLOCK:
            return IE_UNIMPLEMENTED
        return None


def _number(document: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ProtocolError(f"parameters: {key}={value!r} is not a number from {low} to {high}")
    return int(value)


@dataclass(frozen=True)
class StreamResult:
    """One stream's figures as a side reports them: bytes sent (a sender) or received (a receiver)."""

    id: int
    bytes: int
    retransmits: int = -1
    start_time: float = 0.0
    end_time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "bytes": self.bytes, "retransmits": self.retransmits, "jitter": 0,
                "errors": 0, "packets": 0, "start_time": self.start_time, "end_time": self.end_time}


@dataclass(frozen=True)
class Results:
    """What one side sends in EXCHANGE_RESULTS."""

    streams: tuple[StreamResult, ...]
    cpu_util_total: float = 0.0
    cpu_util_user: float = 0.0
    cpu_util_system: float = 0.0
    sender_has_retransmits: int = -1  # -1 from a receiver; 1 when the sender counts retransmissions
    congestion_used: str | None = None
    server_output_text: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(stream.bytes for stream in self.streams)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "cpu_util_total": self.cpu_util_total, "cpu_util_user": self.cpu_util_user,
            "cpu_util_system": self.cpu_util_system, "sender_has_retransmits": self.sender_has_retransmits}
        if self.congestion_used is not None:
            document["congestion_used"] = self.congestion_used
        if self.server_output_text is not None:
            document["server_output_text"] = self.server_output_text
        document["streams"] = [stream.to_json() for stream in self.streams]
        return document

    @classmethod
    def from_json(cls, document: Any) -> Results:
        if not isinstance(document, dict):
            raise ProtocolError("results: not a JSON object")
        for key in ("cpu_util_total", "cpu_util_user", "cpu_util_system", "sender_has_retransmits",
                    "streams"):
            if key not in document:
                raise ProtocolError(f"results: no {key!r}")
        if not isinstance(document["streams"], list):
            raise ProtocolError("results: 'streams' is not a list")
        streams = []
        for index, entry in enumerate(document["streams"]):
            if not isinstance(entry, dict) or not all(
                    isinstance(entry.get(key), (int, float)) for key in ("id", "bytes", "retransmits")):
                raise ProtocolError(f"results: streams[{index}] lacks a numeric id, bytes or retransmits")
            streams.append(StreamResult(int(entry["id"]), int(entry["bytes"]), int(entry["retransmits"]),
                                        float(entry.get("start_time", 0.0)),
                                        float(entry.get("end_time", 0.0))))
        congestion = document.get("congestion_used")
        text = document.get("server_output_text")
        return cls(tuple(streams), float(document["cpu_util_total"]), float(document["cpu_util_user"]),
                   float(document["cpu_util_system"]), int(document["sender_has_retransmits"]),
                   congestion if isinstance(congestion, str) else None,
                   text if isinstance(text, str) else None)


# -- events ----------------------------------------------------------------------------------------------


class NeedData:
    """`next_event()`'s answer when the next message has not fully arrived."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


@dataclass(frozen=True)
class CookieReceived:
    cookie: bytes


@dataclass(frozen=True)
class ParametersReceived:
    parameters: Parameters


@dataclass(frozen=True)
class StateReceived:
    state: State


@dataclass(frozen=True)
class ResultsReceived:
    results: Results


@dataclass(frozen=True)
class ServerErrorReceived:
    """SERVER_ERROR and its two numbers: iperf3's error number and the server's errno."""

    error: int
    errno: int

    @property
    def words(self) -> str:
        return ERROR_WORDS.get(self.error, f"iperf3 error {self.error}") + (
            f" (errno {self.errno})" if self.errno else "")


Event = Union[CookieReceived, ParametersReceived, StateReceived, ResultsReceived, ServerErrorReceived]

# What a side reads next: a cookie, a JSON document, a state byte, or SERVER_ERROR's two integers.
_COOKIE, _JSON, _STATE, _ERROR_CODES, _NOTHING = "cookie", "json", "state", "error codes", "nothing"

# The states each side may send, and the states after which its peer sends a JSON document.
_SERVER_SENDS = frozenset({State.PARAM_EXCHANGE, State.CREATE_STREAMS, State.TEST_START, State.TEST_RUNNING,
                           State.EXCHANGE_RESULTS, State.DISPLAY_RESULTS, State.ACCESS_DENIED,
                           State.SERVER_ERROR, State.SERVER_TERMINATE})
_CLIENT_SENDS = frozenset({State.TEST_END, State.IPERF_DONE, State.CLIENT_TERMINATE})


class Control:
    """One side (`CLIENT` or `SERVER`) of an iperf3 control connection; see the module docstring."""

    def __init__(self, role: str) -> None:
        if role not in (CLIENT, SERVER):
            raise ValueError(f"role {role!r}: choose {CLIENT!r} or {SERVER!r}")
        self.role = role
        self.state: State | None = None  # the last state either side sent
        self.cookie: bytes | None = None
        self.parameters: Parameters | None = None
        self._buffer = bytearray()
        self._expect = _COOKIE if role == SERVER else _STATE
        self._sent_results = False
        self._received_results = False
        self.closed = False

    # -- what arrives ----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; b"" is its end of stream."""
        if not data:
            self.closed = True
        self._buffer += data

    def next_event(self) -> Event | NeedData:
        """The next complete message from the peer, or NEED_DATA; ProtocolError when it is out of order
        or the peer closed in the middle of one."""
        event = self._parse()
        if event is NEED_DATA and self.closed and self._buffer:
            raise ProtocolError(f"the {self._peer} closed in the middle of a message ({len(self._buffer)} "
                                f"bytes of a {self._expect})")
        return event

    @property
    def _peer(self) -> str:
        return SERVER if self.role == CLIENT else CLIENT

    def _parse(self) -> Event | NeedData:
        if self._expect == _NOTHING:
            if self._buffer:
                raise ProtocolError(f"{len(self._buffer)} bytes from the {self._peer} after the test ended")
            return NEED_DATA
        if self._expect == _COOKIE:
            if len(self._buffer) < COOKIE_SIZE:
                return NEED_DATA
            cookie = bytes(self._buffer[:COOKIE_SIZE])
            del self._buffer[:COOKIE_SIZE]
            self.cookie = cookie
            self._expect = _NOTHING  # until the server asks for the parameters
            return CookieReceived(cookie)
        if self._expect == _JSON:
            document = self._take_json()
            if document is NEED_DATA:
                return NEED_DATA
            return self._json_event(document)
        if self._expect == _ERROR_CODES:
            if len(self._buffer) < 8:
                return NEED_DATA
            error, code = int.from_bytes(self._buffer[:4], "big", signed=True), int.from_bytes(
                self._buffer[4:8], "big", signed=True)
            del self._buffer[:8]
            self._expect = _NOTHING
            return ServerErrorReceived(error, code)
        if not self._buffer:
            return NEED_DATA
        raw = int.from_bytes(self._buffer[:1], "big", signed=True)
        del self._buffer[:1]
        try:
            state = State(raw)
        except ValueError:
            raise ProtocolError(f"the {self._peer} sent {raw}, which is no iperf3 state") from None
        allowed = _SERVER_SENDS if self.role == CLIENT else _CLIENT_SENDS
        if state not in allowed:
            raise ProtocolError(f"the {self._peer} sent {state.name}, which only a {self.role} sends")
        self._on_state(state)
        return StateReceived(state)

    def _take_json(self) -> Any:
        if len(self._buffer) < 4:
            return NEED_DATA
        size = int.from_bytes(self._buffer[:4], "big")
        if size > MAX_JSON_BYTES:
            raise ProtocolError(f"a JSON document of {size} bytes (at most {MAX_JSON_BYTES})")
        if len(self._buffer) < 4 + size:
            return NEED_DATA
        text = bytes(self._buffer[4:4 + size])
        del self._buffer[:4 + size]
        try:
            return json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"a JSON document that is not JSON: {exc}") from None

    def _json_event(self, document: Any) -> Event:
        if self.role == SERVER and self.parameters is None:
            self.parameters = Parameters.from_json(document)
            self._expect = _NOTHING  # until CREATE_STREAMS is sent
            return ParametersReceived(self.parameters)
        results = Results.from_json(document)
        self._received_results = True
        self._expect = _STATE
        return ResultsReceived(results)

    def _on_state(self, state: State) -> None:
        """The peer sent `state`: what comes after it."""
        self.state = state
        if state is State.SERVER_ERROR:
            self._expect = _ERROR_CODES
        elif state in (State.ACCESS_DENIED, State.IPERF_DONE, State.CLIENT_TERMINATE,
                       State.SERVER_TERMINATE):
            self._expect = _NOTHING
        elif state is State.EXCHANGE_RESULTS:
            self._expect = _NOTHING  # the client sends its results first, then reads the server's
        elif state is State.DISPLAY_RESULTS and not self._received_results:
            raise ProtocolError("the server sent DISPLAY_RESULTS before its results")
        elif state is State.TEST_END:
            self._expect = _NOTHING  # the server answers EXCHANGE_RESULTS, then reads the results

    # -- what this side sends --------------------------------------------------------------------------

    def send_cookie(self, cookie: bytes) -> bytes:
        if self.role != CLIENT or self.cookie is not None:
            raise ProtocolError("only a client sends the cookie, once")
        if len(cookie) != COOKIE_SIZE:
            raise ValueError(f"a cookie is {COOKIE_SIZE} bytes, not {len(cookie)}")
        self.cookie = cookie
        return cookie

    def send_state(self, state: State) -> bytes:
        allowed = _SERVER_SENDS if self.role == SERVER else _CLIENT_SENDS
        if state not in allowed:
            raise ProtocolError(f"a {self.role} does not send {state.name}")
        if self.role == SERVER and state is State.PARAM_EXCHANGE:
            if self.cookie is None:
                raise ProtocolError("PARAM_EXCHANGE before the cookie arrived")
            self._expect = _JSON
        elif self.role == SERVER and state is State.CREATE_STREAMS:
            if self.parameters is None:
                raise ProtocolError("CREATE_STREAMS before the parameters arrived")
            self._expect = _STATE
        elif self.role == SERVER and state is State.EXCHANGE_RESULTS:
            if self.state is not State.TEST_END:
                raise ProtocolError("EXCHANGE_RESULTS before the client's TEST_END")
            self._expect = _JSON
        elif self.role == SERVER and state is State.DISPLAY_RESULTS:
            if not self._sent_results:
                raise ProtocolError("DISPLAY_RESULTS before the server's results")
            self._expect = _STATE
        elif self.role == SERVER and state is State.SERVER_ERROR:
            raise ProtocolError("SERVER_ERROR goes with its numbers: use send_error()")
        elif self.role == SERVER and state is State.TEST_START and self.state is not State.CREATE_STREAMS:
            raise ProtocolError("TEST_START before CREATE_STREAMS")
        elif self.role == CLIENT and state is State.TEST_END and self.state is not State.TEST_RUNNING:
            raise ProtocolError("TEST_END before the server's TEST_RUNNING")
        elif state in (State.ACCESS_DENIED, State.SERVER_TERMINATE, State.IPERF_DONE):
            self._expect = _NOTHING
        elif self.role == SERVER:
            self._expect = _STATE
        self.state = state
        return state.to_bytes(1, "big", signed=True)

    def send_error(self, error: int, code: int = 0) -> bytes:
        """SERVER_ERROR with iperf3's error number `error` and an errno `code`."""
        if self.role != SERVER:
            raise ProtocolError("only a server sends SERVER_ERROR")
        self.state = State.SERVER_ERROR
        self._expect = _NOTHING
        return (State.SERVER_ERROR.to_bytes(1, "big", signed=True) + error.to_bytes(4, "big", signed=True)
                + code.to_bytes(4, "big", signed=True))

    def send_parameters(self, parameters: Parameters) -> bytes:
        if self.role != CLIENT or self.state is not State.PARAM_EXCHANGE or self.parameters is not None:
            raise ProtocolError("a client sends its parameters once, after PARAM_EXCHANGE")
        self.parameters = parameters
        return _framed(parameters.to_json())

    def send_results(self, results: Results) -> bytes:
        if self.state is not State.EXCHANGE_RESULTS:
            raise ProtocolError("results go after EXCHANGE_RESULTS")
        if self._sent_results:
            raise ProtocolError("results are sent once")
        if self.role == SERVER and not self._received_results:
            raise ProtocolError("the server sends its results after the client's")
        self._sent_results = True
        if self.role == CLIENT:
            self._expect = _JSON
        return _framed(results.to_json())


def _framed(document: dict[str, Any]) -> bytes:
    text = json.dumps(document, separators=(",", ":")).encode()
    return len(text).to_bytes(4, "big") + text
