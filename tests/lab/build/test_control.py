"""The control client (`lab.build.control`) against a protocol double (no root)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.build.control import StackClient, StackCommandFailed, StackControlError, wait_for_hello

Handler = Callable[[dict[str, Any]], bytes | None]


class ProtocolDouble:
    """A control-socket server speaking protocol v1 from a table of handlers (one thread per client)."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                request = json.loads(line)
                self.requests.append(request)
                answer = self.handler(request)
                if answer is None:
                    return  # hang up without answering
                try:
                    conn.sendall(answer)
                except BrokenPipeError:
                    return  # the client gave up waiting

    def close(self) -> None:
        self.server.close()


def reply(**fields: Any) -> bytes:
    return json.dumps({"ok": True, **fields}).encode() + b"\n"


def refuse(error: str, errno_name: str | None = None) -> bytes:
    return json.dumps({"ok": False, "error": error, "errno": errno_name}).encode() + b"\n"


def standard_handler(request: dict[str, Any]) -> bytes | None:
    command = request["cmd"]
    if command == "hello":
        return reply(node="s1", lab="pair", pid=42, address="10.0.0.2/24", offload=True)
    if command == "ss":
        return reply(connections=[{"state": "ESTABLISHED", "local": "10.0.0.2:80", "remote": "10.0.0.1:40000",
                                   "mss": 1448, "wscale": [7, 9], "sack": True, "timestamps": True}])
    if command == "connect":
        if request["port"] == 1:
            return refuse("connection refused", "ECONNREFUSED")
        return reply(local="10.0.0.2:50000", remote=f"{request['addr']}:{request['port']}",
                     sent=request["send"], received=0, error=None)
    if command == "split":  # one answer delivered in two pieces
        return b'{"ok": true, "par' + b't": 2}\n'
    if command == "garbage":
        return b"not json\n"
    if command == "noisy":
        return b'{"answer": 1}\n'
    if command == "hangup":
        return None
    return refuse(f"unknown command {command!r}")


@pytest.fixture
def double(tmp_path: Path) -> Iterator[ProtocolDouble]:
    server = ProtocolDouble(tmp_path / "s1.sock", standard_handler)
    yield server
    server.close()


def test_requests_are_one_json_line_and_answers_lose_ok(double: ProtocolDouble) -> None:
    with StackClient(double.path) as client:
        hello = client.hello()
        assert hello == {"node": "s1", "lab": "pair", "pid": 42, "address": "10.0.0.2/24", "offload": True}
        [connection] = client.ss()["connections"]
        assert connection["state"] == "ESTABLISHED"
        assert client.request("split") == {"part": 2}
    assert double.requests[:2] == [{"cmd": "hello"}, {"cmd": "ss"}]


def test_a_refused_connect_is_a_result_not_an_exception(double: ProtocolDouble) -> None:
    with StackClient(double.path) as client:
        answer = client.connect("10.0.0.1", 1)
        assert answer == {"error": "ECONNREFUSED", "message": "connection refused"}
        ok = client.connect("10.0.0.1", 7, send=10, recv="eof", shutdown=True)
        assert ok["sent"] == 10 and ok["error"] is None
    sent = double.requests[-1]
    assert sent == {"cmd": "connect", "addr": "10.0.0.1", "port": 7, "send": 10, "recv": "eof",
                    "shutdown": True, "timeout": 10.0, "nodelay": False, "close": "close", "hold": 0.0,
                    "keepalive": False, "digest_sent": True}


def test_a_failed_command_raises_with_its_errno(double: ProtocolDouble) -> None:
    with StackClient(double.path) as client, pytest.raises(StackCommandFailed) as failure:
        client.request("frobnicate")
    assert str(failure.value) == "frobnicate: unknown command 'frobnicate'"
    assert failure.value.exit_code == 1


@pytest.mark.parametrize(("command", "message"), [
    ("garbage", "garbage: the node answered a line that is not JSON: b'not json'"),
    ("noisy", "noisy: the node answered without an `ok` field: b'{\"answer\": 1}'"),
    ("hangup", "hangup: the node closed the control connection"),
])
def test_broken_answers_are_one_line_errors(double: ProtocolDouble, command: str, message: str) -> None:
    with StackClient(double.path) as client, pytest.raises(StackControlError) as failure:
        client.request(command)
    assert str(failure.value) == message


def test_no_socket_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(StackControlError) as failure:
        StackClient(tmp_path / "missing.sock").hello()
    assert str(failure.value).startswith(f"control socket {tmp_path / 'missing.sock'}: No such file")


def test_a_slow_answer_times_out_and_the_connection_is_dropped(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow(request: dict[str, Any]) -> bytes:
        gate.wait(5)
        return reply()

    server = ProtocolDouble(tmp_path / "slow.sock", slow)
    try:
        client = StackClient(server.path, timeout=0.2)
        with pytest.raises(StackControlError, match=r"ss: no answer from .* within 0.2 s"):
            client.ss()
        assert client._sock is None  # a late answer must not be read as the next request's
    finally:
        gate.set()
        server.close()


def test_wait_for_hello_stops_when_the_process_is_dead(tmp_path: Path) -> None:
    client = StackClient(tmp_path / "never.sock")
    with pytest.raises(StackControlError, match="exited before answering hello"):
        wait_for_hello(client, 5.0, alive=lambda: False)
    with pytest.raises(StackControlError, match=r"no hello within 0.1 s"):
        wait_for_hello(client, 0.1)
