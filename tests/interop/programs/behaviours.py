"""Socket behaviours as on Linux, checked from a program: prints one JSON object of check -> detail.

argv: PEER ECHO_PORT RESET_PORT CLOSED_PORT SILENT_ADDRESS BUSY_LOCAL_PORT LOCAL_ADDRESS
"""

import errno
import json
import select
import socket
import sys
from collections.abc import Callable

peer, silent, local = sys.argv[1], sys.argv[5], sys.argv[7]
echo, reset, closed, busy = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[6])
results: dict[str, object] = {}


def check(name: str, function: Callable[[], object]) -> None:
    try:
        results[name] = function()
    except Exception as exc:
        results[name] = f"{type(exc).__name__}: {exc}"


def errno_of(function: Callable[[], object]) -> str:
    try:
        function()
    except OSError as exc:
        return f"{type(exc).__name__}:{errno.errorcode.get(exc.errno, exc.errno) if exc.errno else exc}"
    return "no error"


def refused_blocking() -> str:
    with socket.socket() as sock:
        return errno_of(lambda: sock.connect((peer, closed)))


def nonblocking_connect(port: int) -> dict[str, object]:
    sock = socket.socket()
    sock.setblocking(False)
    first = errno_of(lambda: sock.connect((peer, port)))
    _, writable, _ = select.select([], [sock], [], 5)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    answer = {"connect": first, "writable": bool(writable), "so_error": errno.errorcode.get(error, error)}
    if not error:
        answer["peer"] = list(sock.getpeername())
    sock.close()
    return answer


def connect_ex() -> str:
    with socket.socket() as sock:
        sock.setblocking(False)
        return errno.errorcode.get(sock.connect_ex((peer, echo)), "0")


def timeouts() -> dict[str, str]:
    with socket.create_connection((peer, echo), timeout=5) as sock:
        sock.settimeout(0.3)
        recv_timeout = errno_of(lambda: sock.recv(10))
        sock.setblocking(False)
        recv_eagain = errno_of(lambda: sock.recv(10))
        return {"recv_timeout": recv_timeout, "recv_nonblocking": recv_eagain}


def silent_connect() -> str:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return errno_of(lambda: sock.connect((silent, 80)))


def eof_and_epipe() -> dict[str, object]:
    with socket.create_connection((peer, echo), timeout=5) as sock:
        sock.sendall(b"ping")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(100):
            data += chunk
        return {"echoed": data.decode(), "eof": sock.recv(100) == b"",
                "send_after_shutdown": errno_of(lambda: sock.send(b"x"))}


def reset_seen() -> dict[str, str]:
    with socket.create_connection((peer, reset), timeout=5) as sock:
        sock.sendall(b"x")
        first = errno_of(lambda: sock.recv(100))
        return {"recv": first}


def names() -> dict[str, object]:
    with socket.socket() as sock:
        unbound = list(sock.getsockname())
        not_connected = errno_of(sock.getpeername)
        sock.bind((local, 0))
        bound = list(sock.getsockname())
    return {"unbound": unbound, "getpeername": not_connected, "bound_ip": bound[0],
            "ephemeral": 32768 <= bound[1] <= 60999 or bound[1] > 0}


def busy_port() -> str:
    with socket.socket() as sock:
        return errno_of(lambda: sock.bind((local, busy)))


def udp_is_real() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return type(sock).__name__ + ":" + str(sock.type)


check("refused_blocking", refused_blocking)
check("nonblocking_refused", lambda: nonblocking_connect(closed))
check("nonblocking_ok", lambda: nonblocking_connect(echo))
check("connect_ex_nonblocking", connect_ex)
check("timeouts", timeouts)
check("silent_connect", silent_connect)
check("eof_and_epipe", eof_and_epipe)
check("reset", reset_seen)
check("names", names)
check("busy_port", busy_port)
check("udp", udp_is_real)
print(json.dumps(results))
