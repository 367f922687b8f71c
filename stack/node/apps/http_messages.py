"""HTTP/1.1 message syntax (RFC 9112), sans-IO: heads parsed from a receive buffer, heads formatted, bodies
framed and unframed. No sockets, no clock: the `Date` value is formatted from a time the caller passes.

`stack.node.apps.http_protocol.Connection` is what uses these pieces; they are apart so that each can be read
(and tested) alone, as in h11 (`_readers.py`, `_writers.py`, `_headers.py`, `_receivebuffer.py`).

Errors come in two kinds, as in h11: `RemoteProtocolError` when the peer sent something that is not HTTP/1.1
we accept (its `status` is what a server answers: 400, 414, 431, 501, 505), `LocalProtocolError` when our own
side asked for something HTTP forbids (a bug in the caller).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from functools import lru_cache
from typing import Union

from stack.compat import SLOTS

# (name, value) pairs in order: received names are lower case, names we send keep the case they are given
# (every lookup ignores case).
Headers = tuple[tuple[str, str], ...]
BodyPart = Union[bytes, bytearray, memoryview]


class RemoteProtocolError(Exception):
    """The peer broke HTTP/1.1; `status` is the 4xx/5xx a server answers with (then closes)."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status


class LocalProtocolError(Exception):
    """Our side asked for something HTTP/1.1 forbids (a body for HEAD, a second response, ...)."""


@dataclass(frozen=True, **SLOTS)
class Limits:
    """Bounds on what is buffered while a head is incomplete (h11's max_incomplete_event_size, split).

    `max_target`: RFC 9112 section 3 asks recipients to support request lines of at least 8000 octets;
    longer targets are 414. `max_head`: the whole head (request or status line plus fields); longer, or more
    than `max_fields` field lines, is 431. `max_chunk_line`: a chunk-size line with its extensions.
    """

    max_target: int = 8000
    max_head: int = 32 * 1024
    max_fields: int = 100
    max_chunk_line: int = 1024


TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
# Field values: visible characters, obs-text, spaces and tabs inside; never CR, LF, NUL or other controls.
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
TARGET = re.compile(rb"[\x21-\x7e]+")
VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
HEAD_END = re.compile(rb"\n\r?\n")
EMPTY_LINES = (b"\n", b"\r\n")
NEWLINE = ord("\n")
VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}  # what nearly every message says, looked up at once
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")
STATUS_CODE = re.compile(rb"[0-9]{3}")


def http_date(now: float) -> str:
    """`now` (seconds since the epoch) as RFC 9110's IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`."""
    return _imf_fixdate(int(now))


@lru_cache(maxsize=4)
def _imf_fixdate(second: int) -> str:
    return formatdate(second, usegmt=True)


class ReceiveBuffer:
    """Bytes received and not yet consumed; heads are taken whole, bodies in pieces."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._searched = 0  # where the next search for a head's end starts (no quadratic re-scans)

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def append(self, data: BodyPart) -> None:
        self._data += data

    def take(self, count: int | None = None) -> bytes:
        """The first `count` bytes (all of them with None), removed from the buffer."""
        data = self._data
        if count is None or count >= len(data):
            taken = bytes(data)
            data.clear()
        else:
            taken = bytes(data[:count])
            del data[:count]
        self._searched = 0
        return taken

    def peek(self, count: int) -> bytes:
        return bytes(self._data[:count])

    def take_line_end(self) -> bool | None:
        """Consume one CRLF (or bare LF): True when taken, None while incomplete, 400 for anything else."""
        start = self.peek(2)
        if start[:1] == b"\n" or start == b"\r\n":
            self.take(1 if start[:1] == b"\n" else 2)
            return True
        if start in (b"", b"\r"):
            return None
        raise RemoteProtocolError(f"expected a line end, got {start!r}")

    def take_line(self, max_length: int) -> bytes | None:
        """One line without its CRLF (or bare LF), or None while incomplete; over `max_length`: 400."""
        end = self._data.find(b"\n", 0, max_length + 2)
        if end < 0:
            if len(self._data) > max_length + 1:
                raise RemoteProtocolError(f"line longer than {max_length} bytes")
            return None
        line = bytes(self._data[:end])
        del self._data[: end + 1]
        self._searched = 0
        return line[:-1] if line.endswith(b"\r") else line

    def take_head(self, limits: Limits, *, request: bool) -> list[bytes] | None:
        """The head's lines (start line first, without line ends), or None while incomplete.

        Empty lines before a start line are skipped (RFC 9112 section 2.2). A head that cannot end within
        `limits.max_head` is 431, or 414 when it is a request whose first line is the long part.
        """
        data = self._data
        if not data:  # nothing received yet: the usual state between keep-alive requests
            return None
        while data.startswith(EMPTY_LINES):
            del data[: 1 if data[0] == NEWLINE else 2]
            self._searched = 0
        found = HEAD_END.search(data, max(0, self._searched - 2))
        if found is None:
            self._searched = len(data)
            if len(data) > limits.max_head:
                first_line_end = data.find(b"\n")
                if request and (first_line_end < 0 or first_line_end > limits.max_target):
                    raise RemoteProtocolError(f"request target longer than {limits.max_target} bytes", 414)
                raise RemoteProtocolError(f"head longer than {limits.max_head} bytes", 431)
            return None
        if found.start() > limits.max_head:
            if request and data.find(b"\n") > limits.max_target:
                raise RemoteProtocolError(f"request target longer than {limits.max_target} bytes", 414)
            raise RemoteProtocolError(f"head longer than {limits.max_head} bytes", 431)
        # Each line with its LF: dropping the CR of every CRLF is dropping one CR before each LF.
        lines = bytes(data[: found.start() + 1]).replace(b"\r\n", b"\n").split(b"\n")
        del data[: found.end()]
        self._searched = 0
        lines.pop()  # the empty piece after the last LF
        return lines


# --- heads in ----------------------------------------------------------------------------------------------


def parse_version(raw: bytes) -> str:
    """"1.0" or "1.1" (a later 1.x is read as 1.1, RFC 9110 section 2.5); anything else 400 or 505."""
    known = VERSIONS.get(raw)
    if known is not None:
        return known
    matched = VERSION.fullmatch(raw)
    if matched is None:
        raise RemoteProtocolError(f"not an HTTP version: {raw[:20]!r}")
    major, minor = matched.groups()
    if major != b"1":
        raise RemoteProtocolError(f"HTTP version {raw.decode()} is not supported", 505)
    return "1.0" if minor == b"0" else "1.1"


# Lines already parsed (request lines here, field lines below): clients repeat the same lines, and checking
# them again costs more than a lookup. Short lines only; a full table is dropped whole (a bound on memory).
PARSED_LINES_KEPT = 512
PARSED_LINE_BYTES = 512
# The one check that depends on the limits (the target's length) runs on every call.
PARSED_REQUEST_LINES: dict[bytes, tuple[str, str, str]] = {}


def parse_request_line(line: bytes, limits: Limits) -> tuple[str, str, str]:
    """method, target, version of `METHOD SP request-target SP HTTP/1.x` (RFC 9112 section 3)."""
    parsed = PARSED_REQUEST_LINES.get(line)
    if parsed is not None:
        if len(parsed[1]) > limits.max_target:
            raise RemoteProtocolError(f"request target longer than {limits.max_target} bytes", 414)
        return parsed
    parts = line.split(b" ")
    if len(parts) != 3:
        raise RemoteProtocolError(f"malformed request line {line[:80]!r}")
    method, target, version = parts
    if not TOKEN.fullmatch(method):
        raise RemoteProtocolError(f"method {method[:20]!r} is not a token")
    if len(target) > limits.max_target:
        raise RemoteProtocolError(f"request target longer than {limits.max_target} bytes", 414)
    if not TARGET.fullmatch(target):
        raise RemoteProtocolError(f"malformed request target {target[:80]!r}")
    parsed = method.decode("ascii"), target.decode("ascii"), parse_version(version)
    if len(line) <= PARSED_LINE_BYTES:
        if len(PARSED_REQUEST_LINES) >= PARSED_LINES_KEPT:
            PARSED_REQUEST_LINES.clear()
        PARSED_REQUEST_LINES[bytes(line)] = parsed
    return parsed


def parse_status_line(line: bytes) -> tuple[str, int, str]:
    """version, status, reason of `HTTP/1.x SP 3DIGIT SP [reason]` (RFC 9112 section 4)."""
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not STATUS_CODE.fullmatch(parts[1]):
        raise RemoteProtocolError(f"malformed status line {line[:80]!r}")
    reason = parts[2] if len(parts) == 3 else b""
    if not FIELD_VALUE.fullmatch(reason):
        raise RemoteProtocolError(f"malformed reason phrase {reason[:40]!r}")
    return parse_version(parts[0]), int(parts[1]), reason.decode("latin-1")


# Field lines already parsed, each to its (name, value); only lines that parse alone (not folded) are kept.
PARSED_FIELD_LINES: dict[bytes, tuple[str, str]] = {}


def parse_fields(lines: list[bytes], limits: Limits) -> Headers:
    """Field lines into (lower-case name, value) pairs; obsolete line folding is unfolded (RFC 9112
    section 5.2), a fold before any field, a space before the colon or a control character is 400."""
    if len(lines) > limits.max_fields:
        raise RemoteProtocolError(f"more than {limits.max_fields} header fields", 431)
    fields: list[tuple[str, str]] = []
    known = PARSED_FIELD_LINES
    for line in lines:
        pair = known.get(line)
        if pair is not None:
            fields.append(pair)
            continue
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise RemoteProtocolError("a folded line before the first header field")
            if not FIELD_VALUE.fullmatch(line):
                raise RemoteProtocolError(f"control character in header line {line[:80]!r}")
            name, value = fields[-1]
            continued = line.strip(b" \t").decode("latin-1")
            fields[-1] = (name, f"{value} {continued}".strip())
            continue
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name):
            raise RemoteProtocolError(f"malformed header line {line[:80]!r}")
        if not FIELD_VALUE.fullmatch(value):
            raise RemoteProtocolError(f"control character in header {name[:40]!r}")
        pair = (name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1"))
        if len(line) <= PARSED_LINE_BYTES:
            if len(known) >= PARSED_LINES_KEPT:
                known.clear()
            known[bytes(line)] = pair
        fields.append(pair)
    return tuple(fields)


# A message's fields by lower-case name, each with its values in order: built once per message, so that the
# many questions asked of a head (framing, persistence, Host, Expect) cost one pass over it.
Fields = dict[str, list[str]]


def index_fields(headers: Headers) -> Fields:
    fields: Fields = {}
    for name, value in headers:
        fields.setdefault(name.lower(), []).append(value)
    return fields


def field_values(fields: Fields, name: str) -> list[str]:
    """Every comma-separated element of the fields called `name`, stripped, empty ones dropped."""
    items = (item.strip() for value in fields.get(name, ()) for item in value.split(","))
    return [item for item in items if item]


def connection_tokens(fields: Fields) -> set[str]:
    return {token.lower() for token in field_values(fields, "connection")}


# --- framing -----------------------------------------------------------------------------------------------

# How a body is delimited (RFC 9112 section 6.3): ("length", N), ("chunked", 0) or ("close", 0).
Framing = tuple[str, int]
NO_BODY: Framing = ("length", 0)


def content_length(fields: Fields) -> int | None:
    """The Content-Length, None when absent; a list of equal values counts as one, anything else is 400."""
    if "content-length" not in fields:
        return None
    values = field_values(fields, "content-length")
    if not values or any(not value.isdigit() or len(value) > 18 for value in values):
        raise RemoteProtocolError(f"malformed Content-Length {', '.join(fields['content-length'])!r:.40}")
    if len(set(values)) > 1:
        raise RemoteProtocolError(f"conflicting Content-Length values {sorted(set(values))[:4]}")
    return int(values[0])


def body_framing(fields: Fields, version: str) -> Framing | None:
    """The framing a message's own fields declare, None when they declare none.

    Transfer-Encoding wins over Content-Length, but a message with both is refused (RFC 9112 section 6.1:
    the classic request-smuggling shape); a coding other than a lone `chunked` is 501; Transfer-Encoding in
    an HTTP/1.0 message is 400 (section 6.1: the framing is faulty).
    """
    if "transfer-encoding" in fields:
        if version == "1.0":
            raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 message")
        if "content-length" in fields:
            raise RemoteProtocolError("both Transfer-Encoding and Content-Length")
        codings = field_values(fields, "transfer-encoding")
        if [coding.lower() for coding in codings] != ["chunked"]:
            raise RemoteProtocolError(f"Transfer-Encoding {', '.join(fields['transfer-encoding'])!r:.40}: "
                                      "only a lone chunked is supported", 501)
        return ("chunked", 0)
    length = content_length(fields)
    return None if length is None else ("length", length)


# --- bodies in ---------------------------------------------------------------------------------------------


class LengthReader:
    """A body of exactly `length` bytes."""

    def __init__(self, length: int) -> None:
        self.remaining = length

    def read(self, buffer: ReceiveBuffer, limits: Limits) -> bytes | Headers | None:
        """The next piece of body (bytes), the trailers at the end (a tuple), or None: need more data."""
        if self.remaining == 0:
            return ()
        if not buffer:
            return None
        data = buffer.take(self.remaining)
        self.remaining -= len(data)
        return data

    def eof(self) -> Headers:
        raise RemoteProtocolError(f"connection closed with {self.remaining} body bytes still to come")


class ChunkedReader:
    """A chunked body (RFC 9112 section 7.1): size lines, data, CRLFs, a last chunk and trailer fields."""

    def __init__(self) -> None:
        self._chunk_left = 0
        self._need_crlf = False
        self._in_trailers = False

    def read(self, buffer: ReceiveBuffer, limits: Limits) -> bytes | Headers | None:
        while True:
            if self._in_trailers:
                lines = self._take_trailers(buffer, limits)
                return None if lines is None else parse_fields(lines, limits)
            if self._chunk_left:
                if not buffer:
                    return None
                data = buffer.take(self._chunk_left)
                self._chunk_left -= len(data)
                self._need_crlf = self._chunk_left == 0
                return data
            if self._need_crlf:  # the CRLF that ends a chunk's data
                if buffer.take_line_end() is None:
                    return None
                self._need_crlf = False
                continue
            line = buffer.take_line(limits.max_chunk_line)
            if line is None:
                return None
            matched = CHUNK_SIZE.fullmatch(line)
            if matched is None:
                raise RemoteProtocolError(f"malformed chunk size line {line[:40]!r}")
            size = int(matched.group(1), 16)
            if size == 0:
                self._in_trailers = True
                continue
            self._chunk_left = size

    @staticmethod
    def _take_trailers(buffer: ReceiveBuffer, limits: Limits) -> list[bytes] | None:
        """The trailer field lines after the last chunk ([] for none), or None while incomplete."""
        start = buffer.peek(2)
        if start in (b"", b"\r"):
            return None
        if start[:1] == b"\n" or start == b"\r\n":
            buffer.take_line_end()
            return []
        return buffer.take_head(limits, request=False)

    def eof(self) -> Headers:
        raise RemoteProtocolError("connection closed inside a chunked body")


class CloseReader:
    """A body that runs until the peer closes (a response without length, RFC 9112 section 6.3 item 8)."""

    def read(self, buffer: ReceiveBuffer, limits: Limits) -> bytes | Headers | None:
        return buffer.take() if buffer else None

    def eof(self) -> Headers:
        return ()


BodyReader = Union[LengthReader, ChunkedReader, CloseReader]


def reader_for(framing: Framing) -> BodyReader:
    kind, length = framing
    if kind == "chunked":
        return ChunkedReader()
    if kind == "close":
        return CloseReader()
    return LengthReader(length)


# --- heads and bodies out -----------------------------------------------------------------------------------


# Heads already formatted, by (start line, headers): a server answers the same few heads over and over (only
# Date moves, once a second), and checking every name and value again costs more than the rest of the head.
# Small heads only, and the whole table is dropped when full: a bound on memory, not an eviction policy.
FORMATTED_HEADS: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
FORMATTED_HEADS_KEPT = 256
FORMATTED_HEAD_BYTES = 2048


def format_head(start_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """A head ready to send; names and values are checked, so a caller can never smuggle a line end."""
    key = (start_line, tuple(headers))
    try:
        head = FORMATTED_HEADS.get(key)
    except TypeError:  # an unhashable pair (a list): formatted, not remembered
        return checked_head(*key)
    if head is None:
        head = checked_head(*key)
        if len(head) <= FORMATTED_HEAD_BYTES:
            if len(FORMATTED_HEADS) >= FORMATTED_HEADS_KEPT:
                FORMATTED_HEADS.clear()
            FORMATTED_HEADS[key] = head
    return head


def checked_head(start_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """`format_head` without the table: every name and value checked, then joined."""
    lines = [start_line]
    for name, value in headers:
        if not TOKEN.fullmatch(name.encode("latin-1")) or not FIELD_VALUE.fullmatch(value.encode("latin-1")):
            raise LocalProtocolError(f"header {name[:40]!r}: {value[:40]!r} is not a valid field")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class BodyWriter:
    """Frames our body: `data` gives the bytes to send for a piece, `end` those that finish the message.

    kind "length" checks the count against the declared Content-Length, "chunked" adds chunk framing,
    "close" sends pieces as they are (the connection's close ends the body), "none" (HEAD, 1xx, 204, 304)
    accepts no body at all.
    """

    def __init__(self, kind: str, length: int = 0) -> None:
        self.kind = kind
        self.remaining = length

    def data(self, piece: BodyPart) -> list[BodyPart]:
        size = len(piece)
        if not size:
            return []
        if self.kind == "none":
            raise LocalProtocolError("this message has no body (HEAD, 1xx, 204 or 304)")
        if self.kind == "length":
            if size > self.remaining:
                raise LocalProtocolError(f"{size} bytes exceed the {self.remaining} left by Content-Length")
            self.remaining -= size
            return [piece]
        if self.kind == "chunked":
            return [b"%x\r\n" % size, piece, b"\r\n"]
        return [piece]

    def end(self, trailers: Headers = ()) -> list[BodyPart]:
        if self.kind == "length" and self.remaining:
            raise LocalProtocolError(f"the body ended {self.remaining} bytes short of its Content-Length")
        if self.kind == "chunked":
            return [format_head("0", trailers)]
        if trailers:
            raise LocalProtocolError("trailers need a chunked body")
        return []
