"""The socket service's messages, as both sides (the node's service and the program's shim) speak them.

One message is one datagram of a SOCK_SEQPACKET Unix connection: a JSON object, at most `MAX_MESSAGE`
bytes, with at most one file descriptor beside it (SCM_RIGHTS). A request names its `op` and, but for
`open`, the session `id` it acts on; the answer holds `errno` (0 when the call succeeded) and the call's
results. `close` has no answer. A listener's channel carries one message per accepted connection: the
connection's session id, its peer and local address, and its data descriptor.

Standard library only: this module runs inside the program's process too.
"""

from __future__ import annotations

import array
import json
import socket
from typing import Any

MAX_MESSAGE = 64 * 1024
OPS = frozenset({"open", "bind", "listen", "connect", "setsockopt", "getsockopt", "name", "shutdown",
                 "status", "close"})
SERVICE_ENV = "NSLAB_SOCKETS"  # where `lab exec` tells the program the service listens
ADDRESS_ENV = "NSLAB_NODE_ADDRESS"  # the node's address (what the program's "0.0.0.0" binds to)
_FD_SIZE = array.array("i").itemsize


class WireError(Exception):
    """A message that is not one of the protocol's (bad JSON, too long, not an object)."""


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise WireError(f"message of {len(data)} bytes is over {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE:
        raise WireError(f"message of {len(data)} bytes is over {MAX_MESSAGE}")
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise WireError("a message is a JSON object")
    return message


def send(sock: socket.socket, message: dict[str, Any], fd: int | None = None, flags: int = 0) -> None:
    """One message, with `fd` passed along when given."""
    data = encode(message)
    if fd is None:
        sock.sendmsg([data], [], flags)
    else:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], flags)


def receive(sock: socket.socket, flags: int = 0) -> tuple[dict[str, Any] | None, int | None]:
    """One message and the descriptor that came with it; (None, None) at EOF.

    Descriptors beyond the first are closed: the protocol passes one at most."""
    data, ancillary, _flags, _address = sock.recvmsg(MAX_MESSAGE + 1, socket.CMSG_SPACE(4 * _FD_SIZE),
                                                     flags)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[:len(payload) - len(payload) % _FD_SIZE])
            fds.extend(received)
    if not data and not fds:
        return None, None
    for extra in fds[1:]:
        socket.close(extra)
    fd = fds[0] if fds else None
    try:
        return decode(data), fd
    except WireError:
        if fd is not None:
            socket.close(fd)
        raise
