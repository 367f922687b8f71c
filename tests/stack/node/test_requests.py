"""The control-socket request parser: whatever arrives, a one-line RequestError or checked fields."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from typing import Any

import pytest

from stack.node.control import COMMANDS
from stack.node.requests import (
    COMMAND_FIELDS,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_DEPTH,
    RequestError,
    RequestTooLarge,
    check_tcp_changes,
    parse_request,
    read_request_line,
)
from stack.ranges import TCP_CONFIG
from stack.tcp.config import TcpConfig


def refusal(line: bytes | str) -> str:
    with pytest.raises(RequestError) as caught:
        parse_request(line.encode() if isinstance(line, str) else line)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300
    return message


def request(cmd: str, **fields: Any) -> bytes:
    return json.dumps({"cmd": cmd, **fields}).encode()


def connect(**fields: Any) -> bytes:
    return request("connect", addr="10.0.0.2", port=7, **fields)


def http_get(**fields: Any) -> bytes:
    return request("http_get", addr="10.0.0.2", port=80, **fields)


def test_every_command_has_its_fields_described() -> None:
    assert set(COMMAND_FIELDS) == set(COMMANDS)


@pytest.mark.parametrize("line", ["[" * 100_000, "{\"a\":" * 50_000, "[" * 500 + "]" * 500])
def test_deep_nesting_is_refused_not_a_recursion_error(line: str) -> None:
    assert refusal(line) == f"request nested deeper than {MAX_REQUEST_DEPTH} levels"


def test_a_request_just_within_the_depth_is_read() -> None:
    assert parse_request(request("config", tcp={"syn_retries": 2})) == ("config", {"tcp": {"syn_retries": 2}})
    nested = {"a": 1}
    for _ in range(MAX_REQUEST_DEPTH):
        nested = {"a": nested}
    assert "deeper" in refusal(request("config", tcp=nested))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"{not json", "request is not JSON: Expecting property name enclosed in double quotes at byte 1"),
        (b"\xff\xfe\x00", "request is not JSON"),
        (b'{"cmd": "listen", "port": NaN}', "NaN is not a number JSON allows"),
        (b'{"cmd": "listen", "port": Infinity}', "Infinity is not a number JSON allows"),
        (b'{"cmd": "listen", "port": ' + b"9" * 5000 + b"}", "request holds a value the node cannot read"),
        (b'["hello"]', 'request must be an object with a string "cmd"'),
        (b'{"cmd": 7}', 'request must be an object with a string "cmd"'),
        (request("fly"), "unknown command 'fly' (known: arp, close, config, connect"),
        (request("x" * 10_000), "unknown command 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (known: arp,"),
        (connect(keep_alive=True), "connect: unknown field(s) 'keep_alive'"),
        (request("listen"), "listen: field 'port' is required"),
        (request("listen", port="80"), "listen: field 'port': '80' is not an integer"),
        (request("listen", port=True), "listen: field 'port': True is not an integer"),
        (request("listen", port=80.5), "listen: field 'port': 80.5 is not an integer"),
        (request("listen", port=80, accept=1), "listen: field 'accept': 1 is not true or false"),
        (request("listen", port=0), "listen: field 'port': 0 is outside 1 to 65535"),
        (request("listen", port=70_000), "listen: field 'port': 70000 is outside 1 to 65535"),
        (request("listen", port=80, backlog=10**12),
         "listen: field 'backlog': 1000000000000 is outside 0 to 65535"),
        (request("listen", port=80, backlog=-1), "listen: field 'backlog': -1 is outside 0 to 65535"),
        (request("listen", port=80, app="telnet"), "listen: field 'app': 'telnet' is not one of echo,"),
        (request("listen", port=80, bytes=1 << 41),
         f"listen: field 'bytes': {1 << 41} is outside 0 to {1 << 40}"),
        (request("connect", addr="nowhere", port=7), "connect: field 'addr': 'nowhere': not an IPv4 address"),
        (connect(timeout=0), "connect: field 'timeout': 0 is outside 0.001"),
        (connect(timeout=1e9), "connect: field 'timeout': 1000000000.0 is"),
        (connect(send=-1), "connect: field 'send': -1 is outside 0 to"),
        (connect(recv="all"), "connect: field 'recv': 'all' is not one of eof"),
        (connect(hold=-0.5), "connect: field 'hold': -0.5 is outside 0 to 3600"),
        (connect(close="slam"), "connect: field 'close': 'slam' is not one of"),
        (http_get(path="x"), "http_get: field 'path': 'x': expected a path"),
        (http_get(path="/" * 2000), "expected a path starting with /"),
        (http_get(count=0), "http_get: field 'count': 0 is outside 1 to 10000"),
        (request("ping", addr="10.0.0.2", count=1001), "ping: field 'count': 1001 is outside 1 to 1000"),
        (request("trace", since=-1), "trace: field 'since': -1 is outside 0 to"),
        (request("config", tcp=[1]), "config: field 'tcp': [1] is not an object"),
    ],
)
def test_each_bad_request_is_one_line_naming_what_is_wrong(line: bytes, expected: str) -> None:
    assert expected in refusal(line)


def test_a_request_over_the_size_bound_is_refused() -> None:
    line = request("hello") + b" " * MAX_REQUEST_BYTES
    with pytest.raises(RequestTooLarge, match=rf"^request longer than {MAX_REQUEST_BYTES} bytes"):
        parse_request(line)


def test_defaults_are_filled_in_and_good_values_pass() -> None:
    assert parse_request(request("listen", port=80)) == (
        "listen", {"port": 80, "app": "echo", "backlog": 128, "accept": True, "bytes": None})
    command, fields = parse_request(connect(recv="eof", timeout=3))
    assert command == "connect" and fields["recv"] == "eof" and fields["timeout"] == 3 and fields["send"] == 0
    assert parse_request(request("hello")) == ("hello", {})
    assert parse_request(request("listen", port=80, app=None)) == parse_request(request("listen", port=80))


def test_tcp_config_values_have_ranges() -> None:
    numeric = {f.name for f in dataclasses.fields(TcpConfig)
               if f.type in ("int", "float", "float | None") and f.name not in ("congestion",)}
    assert numeric <= set(TCP_CONFIG), numeric - set(TCP_CONFIG)
    assert check_tcp_changes({"syn_retries": 2, "user_timeout": None, "sack": False}) == {
        "syn_retries": 2, "user_timeout": None, "sack": False}
    for change, expected in (({"somaxconn": 10**12}, "config: 'somaxconn'=1000000000000: expected a number"),
                             ({"keepalive_time": 1e300}, "config: 'keepalive_time'=1e+300: expected a"),
                             ({"user_timeout": "soon"}, "config: 'user_timeout'='soon': expected a number"),
                             ({"rcvbuf": -1}, "config: 'rcvbuf'=-1: expected a number from 0 to")):
        with pytest.raises(RequestError, match=f"^{re.escape(expected)}"):
            check_tcp_changes(change)


def _lines_read(chunks: list[bytes]) -> list[object]:
    """What `read_request_line` gives, line after line, for a stream fed ``chunks``."""

    async def main() -> list[object]:
        reader = asyncio.StreamReader(limit=MAX_REQUEST_BYTES)
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        got: list[object] = []
        while True:
            try:
                line = await read_request_line(reader)
            except RequestTooLarge:
                got.append("too large")
                continue
            if line is None:
                return got
            got.append(line)

    return asyncio.run(main())


def test_an_over_long_line_is_dropped_up_to_its_newline_and_reading_goes_on() -> None:
    huge = b"x" * (3 * MAX_REQUEST_BYTES)
    assert _lines_read([b'{"cmd":"hello"}\n', huge[:1000], huge, b'"}\n{"cmd":"ss"}\n', b"last"]) == [
        b'{"cmd":"hello"}\n', "too large", b'{"cmd":"ss"}\n', b"last"]
    assert _lines_read([huge + b"\n" + b'{"cmd":"ss"}\n']) == ["too large", b'{"cmd":"ss"}\n']
    assert _lines_read([huge]) == ["too large"]  # the client went away mid-line
