"""The socket service and the program's shim, without root: two hosts on a memory wire in an asyncio loop.

Host a (10.0.0.1) serves echo on port 7 with stack.aio; host b (10.0.0.2) is the node whose socket service
listens in tmp_path. The protocol is spoken raw (`wire`) to pin its answers; the shim is tried as programs
see it, in a child interpreter started with the environment `lab exec` gives.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.api.streams import start_server
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.asyncio_driver import AsyncioDriver
from stack.node.sockets import SITE_DIR, wire
from stack.node.sockets.service import SocketService

PROGRAMS = Path(__file__).parents[2] / "interop" / "programs"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
def service_path(tmp_path: Path) -> Iterator[Path]:
    """A running socket service on host b (10.0.0.2), with host a (10.0.0.1) serving echo on port 7."""
    path = tmp_path / "node.programs.sock"
    ready, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
        b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
        async with AsyncioDriver([a, b], [MemoryWire(a, b)]) as driver:
            server = await start_server(_echo, a, "10.0.0.1", 7)
            service = SocketService(b, driver, path)
            service.start()
            ready.set()
            try:
                while not stop.is_set():
                    await asyncio.sleep(0.02)
            finally:
                service.close()
                server.close()

    def thread() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the test
            failure.append(exc)
            ready.set()

    runner = threading.Thread(target=thread, daemon=True)
    runner.start()
    assert ready.wait(10)
    assert not failure, failure
    yield path
    stop.set()
    runner.join(5)
    assert not failure, failure


def _client(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(str(path))
    sock.settimeout(5)
    return sock


def _ask(sock: socket.socket, message: dict[str, object]) -> tuple[dict[str, object], int | None]:
    wire.send(sock, message)
    answer, fd = wire.receive(sock)
    assert answer is not None
    return answer, fd


def test_messages_round_trip_with_a_descriptor() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    passed_a, passed_b = socket.socketpair()
    with left, right, passed_a, passed_b:
        wire.send(left, {"op": "open"}, passed_a.fileno())
        message, fd = wire.receive(right)
        assert message == {"op": "open"} and fd is not None
        with socket.socket(fileno=fd) as received:
            received.sendall(b"x")
            assert passed_b.recv(1) == b"x"
        left.close()
        assert wire.receive(right) == (None, None)


def test_bad_messages_are_refused() -> None:
    with pytest.raises(wire.WireError, match="over"):
        wire.encode({"pad": "x" * wire.MAX_MESSAGE})
    with pytest.raises(wire.WireError, match="JSON object"):
        wire.decode(b"[1]")
    with pytest.raises(wire.WireError, match="not JSON"):
        wire.decode(b"{")


def test_the_service_answers_every_request_and_goes_on(service_path: Path) -> None:
    with _client(service_path) as sock:
        assert _ask(sock, {"op": "nope"})[0]["errno"] == errno.EINVAL
        assert _ask(sock, {"op": "bind", "id": 999})[0]["errno"] == errno.EBADF
        assert _ask(sock, {"op": "bind", "id": "x"})[0]["errno"] == errno.EINVAL
        sock.send(b"not json")
        assert wire.receive(sock)[0]["errno"] == errno.EINVAL  # type: ignore[index]
        session = _ask(sock, {"op": "open"})[0]["id"]
        answer, _ = _ask(sock, {"op": "listen", "id": session, "backlog": 70000})
        assert answer["errno"] == errno.EINVAL and "0..65535" in str(answer["message"])
        answer, _ = _ask(sock, {"op": "bind", "id": session, "addr": ["10.0.0.2", 70000]})
        assert answer["errno"] == errno.EINVAL
        assert _ask(sock, {"op": "name", "id": session})[0] == {"errno": 0, "local": ["0.0.0.0", 0],
                                                                "peer": None}


def test_a_connect_hands_an_unwritable_descriptor_that_becomes_the_connection(service_path: Path) -> None:
    with _client(service_path) as sock:
        session = _ask(sock, {"op": "open"})[0]["id"]
        answer, fd = _ask(sock, {"op": "connect", "id": session, "addr": ["10.0.0.1", 7]})
        assert answer["errno"] == errno.EINPROGRESS and fd is not None
        with socket.socket(fileno=fd) as data:
            _, writable, _ = select.select([], [data], [], 5)
            assert writable
            assert _ask(sock, {"op": "getsockopt", "id": session, "level": socket.SOL_SOCKET,
                               "option": socket.SO_ERROR})[0]["value"] == 0
            assert _ask(sock, {"op": "name", "id": session})[0]["peer"] == ["10.0.0.1", 7]
            data.settimeout(5)
            data.sendall(b"hello")
            assert data.recv(100) == b"hello"  # the filler never reaches the peer


def test_a_refused_connect_is_told_by_so_error(service_path: Path) -> None:
    with _client(service_path) as sock:
        session = _ask(sock, {"op": "open"})[0]["id"]
        _, fd = _ask(sock, {"op": "connect", "id": session, "addr": ["10.0.0.1", 9]})
        assert fd is not None
        with socket.socket(fileno=fd) as data:
            assert select.select([], [data], [], 5)[1]
        assert _ask(sock, {"op": "getsockopt", "id": session, "level": socket.SOL_SOCKET,
                           "option": socket.SO_ERROR})[0]["value"] == errno.ECONNREFUSED


def _program(path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NSLAB_SOCKETS=str(path), PYTHONPATH=SITE_DIR)
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


SHIM_CHECKS = """
import errno, json, socket
out = {}
out["kind"] = type(socket.socket()).__name__
a, b = socket.socketpair()  # AF_UNIX: the real socket
a.send(b"u")
out["socketpair"] = b.recv(1).decode()
with socket.create_connection(("10.0.0.1", 7), timeout=5) as s:
    out["local"] = s.getsockname()[0]
    f = s.makefile("rwb")
    f.write(b"line one\\n"); f.flush()
    out["line"] = f.readline().decode()
    f.close()
try:
    socket.create_connection(("10.0.0.1", 9), timeout=5)
except OSError as exc:
    out["refused"] = errno.errorcode[exc.errno]
listener = socket.create_server(("10.0.0.2", 8000))
client = socket.socket(); client.setblocking(False)
out["inprogress"] = errno.errorcode[client.connect_ex(("10.0.0.2", 8000))]
listener.settimeout(5)
conn, peer = listener.accept()
out["peer_is_client"] = list(peer) == list(client.getsockname())
listener.setblocking(False)
try:
    listener.accept()
except BlockingIOError as exc:
    out["accept_empty"] = errno.errorcode[exc.errno]
print(json.dumps(out))
"""


def test_the_shim_makes_stdlib_sockets_the_stacks(service_path: Path) -> None:
    result = _program(service_path, "-c", SHIM_CHECKS)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "kind": "StackSocket", "socketpair": "u", "local": "10.0.0.2", "line": "line one\n",
        "refused": "ECONNREFUSED", "inprogress": "EINPROGRESS", "peer_is_client": True,
        "accept_empty": "EAGAIN"}


def test_an_asyncio_client_on_the_default_loop(service_path: Path) -> None:
    result = _program(service_path, str(PROGRAMS / "asyncio_client.py"), "10.0.0.1", "7", "300000")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["received"] == 300000 and figures["received_sha256"] == figures["sent_sha256"]


def test_without_a_service_a_program_is_told_why(tmp_path: Path) -> None:
    result = _program(tmp_path / "absent.sock", "-c", "import socket; socket.socket().bind(('', 80))")
    assert result.returncode != 0
    assert "socket service" in result.stderr and "does not answer" in result.stderr
