"""Kernel peers of the stack in an experiment: a one-connection kernel server, and a kernel client's
half-close conversation (send, SHUT_WR, keep reading)."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable
from typing import Any

from lab.experiments.running import RunningLab
from lab.kernel.transfers import BackgroundCall, pattern_chunks

ACCEPT_TIMEOUT = 10.0


def send_shutdown_and_read(sock: socket.socket, size: int) -> dict[str, Any]:
    """Send `size` pattern bytes and SHUT_WR on a thread while this one reads to EOF; counts what
    arrived after the shutdown (the half-close: our FIN is out, the peer's data still comes in)."""
    shut = threading.Event()

    def send() -> str:
        digest = hashlib.sha256()
        try:
            for chunk in pattern_chunks(size):
                sock.sendall(chunk)
                digest.update(chunk)
            sock.shutdown(socket.SHUT_WR)
        except BaseException:
            sock.shutdown(socket.SHUT_RDWR)  # wake the reader; join_result re-raises the cause
            raise
        shut.set()
        return digest.hexdigest()

    sender = BackgroundCall(send)
    sender.start()
    digest = hashlib.sha256()
    received = after = 0
    while data := sock.recv(1 << 16):
        digest.update(data)
        received += len(data)
        if shut.is_set():
            after += len(data)
    sent_sha256 = sender.join_result(ACCEPT_TIMEOUT)
    return {"sent": size, "sent_sha256": sent_sha256, "received": received,
            "received_sha256": digest.hexdigest(), "received_after_shutdown": after}


class KernelServer:
    """A kernel listener in a node's namespace that accepts one connection and runs `serve` on it
    (on a thread, so the stack's blocking `connect` request can run at the same time)."""

    def __init__(self, lab: RunningLab, node: str, port: int,
                 serve: Callable[[socket.socket], dict[str, Any]]) -> None:
        self.listener = lab.kernel_socket(node)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((lab.address(node), port))
        self.listener.listen(8)
        self.listener.settimeout(ACCEPT_TIMEOUT)
        self._call = BackgroundCall(self._accept_and_serve, serve)

    def _accept_and_serve(self, serve: Callable[[socket.socket], dict[str, Any]]) -> dict[str, Any]:
        conn, _ = self.listener.accept()
        conn.settimeout(ACCEPT_TIMEOUT)
        return serve(conn)

    def __enter__(self) -> KernelServer:
        self._call.start()
        return self

    def result(self) -> dict[str, Any]:
        return self._call.join_result(ACCEPT_TIMEOUT + 5.0)

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self._call.join(1.0)
