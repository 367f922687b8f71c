"""Reading one control-socket request: bounded in size and depth, every field typed and in range.

A request is one line of JSON, ``{"cmd": NAME, FIELD: VALUE, ...}``. Whoever can reach the socket
can send anything, so nothing here trusts it: a line longer than `MAX_REQUEST_BYTES` is dropped
(up to its newline, so the connection goes on), JSON nested deeper than `MAX_REQUEST_DEPTH` is
refused (Python's decoder stops at its recursion limit, which would otherwise escape as a
RecursionError), and each command's fields are checked against `COMMAND_FIELDS`: known names,
JSON types, and the ranges of `stack.ranges` (a backlog of 10^12 is refused here, not by the TCP
layer later). Every problem is a `RequestError` whose one-line message is the answer's ``error``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stack.node.apps import APP_NAMES
from stack.node.runtime import CONNECT_CLOSE_MODES
from stack.node.views import SS_STATE_WORDS, ss_state_name
from stack.ranges import (
    BACKLOG,
    BYTE_COUNT,
    HOLD_SECONDS,
    HTTP_GET_COUNT,
    IPERF3_SECONDS,
    IPERF3_STREAMS,
    PCAP_BYTES,
    PING_COUNT,
    PORT,
    SS_LIMIT,
    TCP_CONFIG,
    TIMEOUT_SECONDS,
    TRACE_SEQUENCE,
    Range,
)
from stack.tcp.config import TcpConfig

MAX_REQUEST_BYTES = 1 << 20
MAX_REQUEST_DEPTH = 8  # the deepest request there is, `config`'s {"tcp": {...}}, is 2
MAX_PATH_CHARS = 1024  # an http_get path
_SHOWN_CHARS = 40  # of a refused value, in the error line
_OPTIONAL_TCP = frozenset(f.name for f in dataclasses.fields(TcpConfig) if f.default is None)


class RequestError(ValueError):
    """A request the node refuses before doing anything; the message is one line."""


class RequestTooLarge(RequestError):
    def __init__(self) -> None:
        super().__init__(f"request longer than {MAX_REQUEST_BYTES} bytes (dropped up to its newline)")


_REQUIRED: Any = object()


@dataclass(frozen=True)
class FieldSpec:
    """One field of a command: its JSON types, its default (or required), and what else it must be."""

    kinds: tuple[type, ...]
    default: Any = _REQUIRED
    limits: Range | None = None  # for numbers
    choices: tuple[str, ...] = ()  # for strings: the words allowed (empty: any, subject to `check`)
    check: Callable[[str], str | None] | None = None  # for strings: None, or what is wrong

    def read(self, command: str, name: str, value: Any) -> Any:
        where = f"{command}: field {name!r}"
        if isinstance(value, bool) != (bool in self.kinds) or not isinstance(value, self.kinds):
            raise RequestError(f"{where}: {_shown(value)} is not {_kind_words(self.kinds)}")
        if isinstance(value, str):
            if self.choices and value not in self.choices:
                raise RequestError(f"{where}: {_shown(value)} is not one of {', '.join(self.choices)}")
            problem = self.check(value) if self.check is not None else None
            if problem:
                raise RequestError(f"{where}: {_shown(value)}: {problem}")
        elif self.limits is not None and not isinstance(value, bool) and value not in self.limits:
            raise RequestError(f"{where}: {_shown(value)} is outside {self.limits.describe()}")
        return value


_KIND_WORDS = {bool: "true or false", int: "an integer", str: "a string", dict: "an object"}


def _kind_words(kinds: tuple[type, ...]) -> str:
    if float in kinds:
        return "a number"
    return " or ".join(_KIND_WORDS.get(kind, kind.__name__) for kind in kinds)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _integer(limits: Range, default: Any = _REQUIRED) -> FieldSpec:
    return FieldSpec((int,), default, limits)


def _seconds(limits: Range, default: float) -> FieldSpec:
    return FieldSpec((int, float), default, limits)


def _flag(default: bool) -> FieldSpec:
    return FieldSpec((bool,), default)


def _ipv4_problem(text: str) -> str | None:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return "not an IPv4 address"
    return None


def _path_problem(text: str) -> str | None:
    if not text.startswith("/") or len(text) > MAX_PATH_CHARS or not text.isprintable():
        return f"expected a path starting with / of at most {MAX_PATH_CHARS} printable characters"
    return None


def _output_problem(text: str) -> str | None:
    if not text.startswith("/") or len(text) > MAX_PATH_CHARS or "\0" in text:
        return f"expected an absolute path of at most {MAX_PATH_CHARS} characters"
    return None


def _state_problem(text: str) -> str | None:
    if ss_state_name(text) is None:
        return f"expected a state ({', '.join(SS_STATE_WORDS)}; ss's time-wait spelling too)"
    return None


_ADDRESS = FieldSpec((str,), check=_ipv4_problem)
_PORT = _integer(PORT)

COMMAND_FIELDS: dict[str, dict[str, FieldSpec]] = {
    "hello": {},
    "ss": {  # filters like ss(8)'s, applied on the node; absent means any
        "state": FieldSpec((str,), None, check=_state_problem),
        "port": _integer(PORT, None),
        "sport": _integer(PORT, None),
        "dport": _integer(PORT, None),
        "address": FieldSpec((str,), None, check=_ipv4_problem),
        "limit": _integer(SS_LIMIT, None),
    },
    "stats": {},
    "tables": {},
    "arp": {},
    "listen": {
        "port": _PORT,
        "app": FieldSpec((str,), "echo", choices=(*APP_NAMES, "none")),
        "backlog": _integer(BACKLOG, 128),
        "accept": _flag(True),
        "bytes": _integer(BYTE_COUNT, None),
    },
    "close": {"port": _PORT},
    "connect": {
        "addr": _ADDRESS,
        "port": _PORT,
        "send": _integer(BYTE_COUNT, 0),
        "recv": FieldSpec((int, str), 0, BYTE_COUNT, choices=("eof",)),
        "shutdown": _flag(False),
        "timeout": _seconds(TIMEOUT_SECONDS, 10.0),
        "nodelay": _flag(False),
        "close": FieldSpec((str,), "close", choices=CONNECT_CLOSE_MODES),
        "hold": _seconds(HOLD_SECONDS, 0.0),
        "keepalive": _flag(False),
        "digest_sent": _flag(True),
    },
    "http_get": {
        "addr": _ADDRESS,
        "port": _PORT,
        "path": FieldSpec((str,), "/", check=_path_problem),
        "count": _integer(HTTP_GET_COUNT, 1),
        "timeout": _seconds(TIMEOUT_SECONDS, 60.0),
        "output": FieldSpec((str,), None, check=_output_problem),  # the body to this file (or a FIFO)
    },
    "iperf3": {
        "addr": _ADDRESS,
        "port": _integer(PORT, 5201),
        "seconds": _integer(IPERF3_SECONDS, 10),
        "parallel": _integer(IPERF3_STREAMS, 1),
        "reverse": _flag(False),
        "timeout": _seconds(TIMEOUT_SECONDS, 10.0),
    },
    "trace": {"since": _integer(TRACE_SEQUENCE, 0)},
    "config": {"tcp": FieldSpec((dict,), {})},
    "ping": {"addr": _ADDRESS, "count": _integer(PING_COUNT, 1), "timeout": _seconds(TIMEOUT_SECONDS, 1.0)},
    "impair": {"egress": FieldSpec((dict,), None), "ingress": FieldSpec((dict,), None)},  # profiles: settings
    "pcap": {  # the node's own capture of what it sends and receives
        "action": FieldSpec((str,), "status", choices=("start", "stop", "status")),
        "path": FieldSpec((str,), None, check=_output_problem),
        "max_bytes": _integer(PCAP_BYTES, 100 << 20),
    },
}


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """(command, its fields checked and with defaults filled in) from one request line."""
    if len(line) > MAX_REQUEST_BYTES:
        raise RequestTooLarge()
    try:
        request = json.loads(line, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError(f"request nested deeper than {MAX_REQUEST_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"request is not JSON: {exc.msg} at byte {exc.pos}") from None
    except UnicodeDecodeError:
        raise RequestError("request is not JSON: not UTF-8 text") from None
    except ValueError as exc:  # a number of more than 4300 digits; NaN and Infinity (`_no_constant`)
        raise RequestError(f"request holds a value the node cannot read: {exc}") from None
    if _deeper_than(request, MAX_REQUEST_DEPTH):
        raise RequestError(f"request nested deeper than {MAX_REQUEST_DEPTH} levels")
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise RequestError('request must be an object with a string "cmd"')
    command = request.pop("cmd")
    specs = COMMAND_FIELDS.get(command)
    if specs is None:
        raise RequestError(f"unknown command {_shown(command)} (known: {', '.join(sorted(COMMAND_FIELDS))})")
    unknown = sorted(set(request) - set(specs))
    if unknown:
        names = ", ".join(_shown(name) for name in unknown[:5])
        raise RequestError(f"{command}: unknown field(s) {names} (allowed: {', '.join(specs) or 'none'})")
    fields: dict[str, Any] = {}
    for name, spec in specs.items():
        value = request.get(name)
        if value is None:
            if spec.default is _REQUIRED:
                raise RequestError(f"{command}: field {name!r} is required")
            fields[name] = spec.default
        else:
            fields[name] = spec.read(command, name, value)
    return command, fields


def check_tcp_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """`config`'s numeric ``tcp`` values against `stack.ranges.TCP_CONFIG` (the node checks the rest)."""
    for name, value in changes.items():
        limits = TCP_CONFIG.get(name)
        if limits is None or (value is None and name in _OPTIONAL_TCP):
            continue
        if value not in limits:
            raise RequestError(f"config: {_shown(name)}={_shown(value)}: expected a number from "
                               f"{limits.describe()}")
    return changes


def _no_constant(word: str) -> Any:
    raise ValueError(f"{word} is not a number JSON allows")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` deep (iterative: any depth is safe)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return False


async def read_request_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next request line, None at the end of the stream; `RequestTooLarge` once an over-long line
    has been dropped up to its newline (the reader's ``limit`` is `MAX_REQUEST_BYTES`)."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None  # a last request without its newline still counts
    except asyncio.LimitOverrunError as exc:
        consumed = exc.consumed
    while True:
        try:
            await reader.readexactly(consumed)
            await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            consumed = exc.consumed
            continue
        except asyncio.IncompleteReadError:
            pass  # the client went away in the middle of its line
        raise RequestTooLarge()
