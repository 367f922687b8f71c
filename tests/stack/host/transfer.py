"""A single-threaded bidirectional transfer over non-blocking sockets, pumped by the Runner."""

from __future__ import annotations

import hashlib
import random

import stack
from stack.api.socket import Socket
from stack.host import Host
from stack.loops.runner import Runner


def exchange(runner: Runner, left: Socket, right: Socket, left_data: bytes, right_data: bytes,
             time_limit: float) -> tuple[bytes, bytes]:
    """Send ``left_data`` left->right and ``right_data`` right->left at once, each side shutting down its
    write half when done; returns (what right received, what left received), each up to EOF."""
    for sock in (left, right):
        sock.setblocking(False)
    ends = [
        {"sock": left, "out": memoryview(left_data), "in": bytearray(), "shut": False, "eof": False},
        {"sock": right, "out": memoryview(right_data), "in": bytearray(), "shut": False, "eof": False},
    ]
    deadline = runner.now + time_limit
    while not all(end["eof"] for end in ends):
        for end in ends:
            sock = end["sock"]
            while end["out"]:
                try:
                    end["out"] = end["out"][sock.send(end["out"][:65536]):]
                except BlockingIOError:
                    break
            if not end["out"] and not end["shut"]:
                sock.shutdown(stack.SHUT_WR)
                end["shut"] = True
            while not end["eof"]:
                try:
                    chunk = sock.recv(1 << 20)
                except BlockingIOError:
                    break
                if chunk:
                    end["in"] += chunk
                else:
                    end["eof"] = True
        if all(end["eof"] for end in ends):
            break
        if runner.now >= deadline:
            progress = f"{len(ends[1]['in'])}/{len(left_data)} and {len(ends[0]['in'])}/{len(right_data)}"
            raise AssertionError(f"transfer unfinished at t={runner.now:.3f}: {progress}")

        def ready() -> bool:
            return any((end["sock"].readable and not end["eof"]) or (end["out"] and end["sock"].writable)
                       for end in ends)

        runner.run_until(ready, timeout=deadline - runner.now)
    return bytes(ends[1]["in"]), bytes(ends[0]["in"])


def bulk(sender: Host, receiver: Host, size: int, server: tuple[str, int] = ("10.0.0.2", 8080)) -> bytes:
    """`size` bytes from `sender` to `receiver` and the close, SHA-256 checked; the bytes sent."""
    listener = receiver.socket()
    listener.bind(server)
    listener.listen(4)
    client = sender.socket()
    client.settimeout(30)
    client.connect(server)
    accepted, _ = listener.accept()
    payload = random.Random(5).randbytes(size)
    client.sendall(payload)
    client.shutdown(1)
    received = bytearray()
    while chunk := accepted.recv(1 << 20):
        received += chunk
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    return payload
