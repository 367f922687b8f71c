"""Data movers for experiments and benchmarks: kernel sockets sending and receiving the stack's pattern.

Both ends of a transfer derive the bytes from `stack.node.apps.content`, so each checks the other against
one SHA-256 without holding the data; a transfer's server side runs on a `BackgroundCall` thread
while the caller drives the client.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stack.node.apps.content import chunks
from stack.node.apps.content import pattern_sha256 as content_sha256


def pattern_chunks(total: int) -> Iterator[memoryview]:
    """The stack's deterministic content (`stack.node.apps.content`), the first `total` bytes in pieces,
    so both ends of a transfer check it against one digest without holding 1 GB at once."""
    return chunks(total)


def pattern_sha256(total: int) -> str:
    """SHA-256 of the first `total` bytes of the content the stack's apps and `connect` send."""
    return content_sha256(total)


@dataclass
class Transfer:
    """What one kernel socket moved: bytes, their SHA-256, and wall time from first to last byte."""

    sent: int = 0
    received: int = 0
    sent_sha256: str = ""
    received_sha256: str = ""
    seconds: float = 0.0
    error: str | None = None

    @property
    def goodput_bps(self) -> float:
        moved = max(self.sent, self.received)
        return moved * 8 / self.seconds if self.seconds > 0 else 0.0


def send_pattern(sock: socket.socket, total: int, *, verify: bool = True) -> Transfer:
    """Send `total` bytes of the pattern, SHUT_WR, then read until EOF (the peer's close).

    `verify=False` skips hashing what is sent (`sent_sha256` stays empty): the pattern's digest is
    known beforehand (`pattern_sha256`), the receiver's digest is what checks a transfer, and at
    benchmark speeds SHA-256 in this process would take a core the transfer otherwise has."""
    result = Transfer()
    digest = hashlib.sha256()
    started = time.perf_counter()
    for chunk in pattern_chunks(total):
        sock.sendall(chunk)
        if verify:
            digest.update(chunk)
        result.sent += len(chunk)
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(1 << 16):
        pass
    result.seconds = time.perf_counter() - started
    result.sent_sha256 = digest.hexdigest() if verify else ""
    return result


def receive_all(sock: socket.socket, *, verify: bool = True) -> Transfer:
    """Read until EOF, hashing (unless `verify` is False); the clock starts at the first byte."""
    result = Transfer()
    digest = hashlib.sha256()
    buffer = bytearray(1 << 18)
    view = memoryview(buffer)
    started = None
    while True:
        count = sock.recv_into(buffer)
        if not count:
            break
        if started is None:
            started = time.perf_counter()
        if verify:
            digest.update(view[:count])
        result.received += count
    result.seconds = time.perf_counter() - started if started is not None else 0.0
    result.received_sha256 = digest.hexdigest()
    return result


class BackgroundCall(threading.Thread):
    """Run one function on a thread and keep its result or exception for `join_result`."""

    def __init__(self, function: Any, *args: Any) -> None:
        super().__init__(daemon=True)
        self._function = function
        self._args = args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._function(*self._args)
        except BaseException as error:  # handed to the joining thread
            self.error = error

    def join_result(self, timeout: float) -> Any:
        self.join(timeout)
        if self.is_alive():
            name = getattr(self._function, "__name__", "call")
            raise TimeoutError(f"{name} still running after {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.result


def serve_source_once(listener: socket.socket, total: int) -> Transfer:
    """Accept one connection and send it `total` bytes of the pattern (then wait for its close),
    unhashed: the receiver's SHA-256 against `pattern_sha256(total)` checks the transfer."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(listener.gettimeout())
        return send_pattern(conn, total, verify=False)


def serve_sink_once(listener: socket.socket, verify: bool = True) -> Transfer:
    """Accept one connection, read it to EOF hashing, then close."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(listener.gettimeout())
        return receive_all(conn, verify=verify)
