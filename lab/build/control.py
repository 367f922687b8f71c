"""Client of a stack node's control socket (control protocol v1).

The stack process of a pystack node listens on a Unix stream socket `<state dir>/nodes/<node>.sock`
and speaks newline-delimited JSON: one request `{"cmd": NAME, ...}` per line, one response line
`{"ok": true, ...}` or `{"ok": false, "error": "...", "errno": "ECONNREFUSED" | null}`.
`lab stack`, `lab up` (waiting for `hello`) and the experiments all talk to the node through this.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from lab.build.signals import raise_if_stopping
from lab.build.state import LabError, LabState

# A response line longer than this is a broken daemon, not a big answer (ss of 10k connections ~ 5 MB).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 10.0


class StackControlError(LabError):
    """The control socket cannot be reached, or answered something that is not protocol v1."""

    exit_code = 2


class StackCommandFailed(LabError):
    """The node understood the request and refused or failed it (`{"ok": false}`)."""

    exit_code = 1

    def __init__(self, command: str, error: str, errno_name: str | None) -> None:
        super().__init__(f"{command}: {error}" + (f" ({errno_name})" if errno_name else ""))
        self.command = command
        self.error = error
        self.errno_name = errno_name


def control_socket_path(lab: str, node: str, root: Path | None = None) -> Path:
    return LabState.for_lab(lab, root).control_socket_path(node)


class StackClient:
    """One connection to one node's control socket; requests are sent one at a time, in order.

    Use one client per thread: the daemon serves many connections at once, so a long `connect`
    on one client never holds up `ss` on another.
    """

    def __init__(self, path: str | Path, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    @classmethod
    def for_node(cls, lab: str, node: str, *, root: Path | None = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> StackClient:
        return cls(control_socket_path(lab, node, root), timeout=timeout)

    # --- transport -----------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except OSError as error:
                sock.close()
                raise StackControlError(
                    f"control socket {self.path}: {error.strerror or error} "
                    "(is the node's stack process running? see `lab status`)") from None
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()

    def __enter__(self) -> StackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, command: str, *, answer_within: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one request and return the response's fields (`ok` removed).

        Raises StackCommandFailed for `{"ok": false}` and StackControlError when the socket fails.
        `answer_within` (seconds) bounds the wait for this answer; a 15 s `connect` needs more than
        the default. (`timeout` is left free: `connect` and `ping` carry a protocol field of that name.)
        """
        sock = self._connect()
        line = json.dumps({"cmd": command, **fields}, separators=(",", ":")).encode() + b"\n"
        wait = answer_within if answer_within is not None else self.timeout
        sock.settimeout(wait)
        try:
            sock.sendall(line)
            raw = self._read_line(sock, command)
        except TimeoutError:
            self.close()  # a late answer would be read as the next request's
            raise StackControlError(f"{command}: no answer from {self.path} within {wait:g} s") from None
        except OSError as error:
            self.close()
            raise StackControlError(f"{command}: control socket {self.path}: {error}") from None
        except BaseException:  # interrupted (Ctrl-C) mid-request: its answer would be read as the next's
            self.close()
            raise
        try:
            response = json.loads(raw)
        except json.JSONDecodeError:
            raise StackControlError(f"{command}: the node answered a line that is not JSON: "
                                    f"{raw[:80]!r}") from None
        if not isinstance(response, dict) or "ok" not in response:
            raise StackControlError(f"{command}: the node answered without an `ok` field: {raw[:80]!r}")
        if not response.pop("ok"):
            raise StackCommandFailed(command, str(response.get("error", "failed")), response.get("errno"))
        return response

    def _read_line(self, sock: socket.socket, command: str) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                return line
            if len(self._buffer) > MAX_RESPONSE_BYTES:
                raise StackControlError(f"{command}: response longer than {MAX_RESPONSE_BYTES} bytes")
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise StackControlError(f"{command}: the node closed the control connection")
            self._buffer += chunk

    # --- commands --------------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        return self.request("hello")

    def ss(self, **filters: Any) -> dict[str, Any]:
        """The node's answer as is: ``{"connections": [...], "matched": N, "total": M}``; filters
        (state, port, sport, dport, address, limit) are applied by the node."""
        return self.request("ss", **{key: value for key, value in filters.items() if value is not None})

    def stats(self) -> dict[str, Any]:
        """The node's answer as is: ``{"counters": {...}}``, what `lab stack ... stats --json` prints."""
        return self.request("stats")

    def tables(self) -> dict[str, Any]:
        return self.request("tables")

    def listen(self, port: int, app: str = "echo", *, backlog: int = 128, accept: bool = True,
               bytes: int | None = None) -> dict[str, Any]:
        return self.request("listen", port=port, app=app, backlog=backlog, accept=accept, bytes=bytes)

    def close_listener(self, port: int) -> dict[str, Any]:
        return self.request("close", port=port)

    def connect(self, addr: str, port: int, *, send: int = 0, recv: str | int = 0, shutdown: bool = False,
                timeout: float = 10.0, nodelay: bool = False, close: str = "close",
                hold: float = 0.0, keepalive: bool = False, digest_sent: bool = True) -> dict[str, Any]:
        """Open a connection from the stack, move data, close; the answer carries `error` (an errno
        name such as ECONNREFUSED) rather than raising, because a refused connect is a result.
        `digest_sent=False`: no `sent_sha256` (the receiver's digest is the check)."""
        fields = dict(addr=addr, port=port, send=send, recv=recv, shutdown=shutdown, timeout=timeout,
                      nodelay=nodelay, close=close, hold=hold, keepalive=keepalive, digest_sent=digest_sent)
        try:
            return self.request("connect", answer_within=timeout + hold + 60.0, **fields)
        except StackCommandFailed as failure:
            if failure.errno_name:
                return {"error": failure.errno_name, "message": failure.error}
            raise

    def iperf3(self, addr: str, port: int = 5201, *, seconds: int = 10, parallel: int = 1,
               reverse: bool = False, timeout: float = 10.0) -> dict[str, Any]:
        """An iperf3 test from the stack against an iperf3 server (`iperf3 -c`): both sides' figures."""
        return self.request("iperf3", answer_within=seconds + 2 * timeout + 30.0, addr=addr, port=port,
                            seconds=seconds, parallel=parallel, reverse=reverse, timeout=timeout)

    def trace(self, since: int = 0) -> dict[str, Any]:
        return self.request("trace", since=since)

    def config(self, **tcp: Any) -> dict[str, Any]:
        return self.request("config", tcp=tcp)

    def ping(self, addr: str, count: int = 1, timeout: float = 1.0) -> list[float | None]:
        return self.request("ping", answer_within=count * timeout + 10.0, addr=addr, count=count,
                            timeout=timeout)["replies"]

    def http_get(self, addr: str, port: int, path: str, count: int = 1, *, timeout: float = 60.0,
                 output: str | None = None, answer_within: float = 120.0) -> dict[str, Any]:
        """GET from the stack; bodies go to `output` (an absolute path the node process opens: a file,
        or a FIFO this side reads) when given. `timeout` bounds each stall on the node's side,
        `answer_within` the whole exchange on this one."""
        return self.request("http_get", answer_within=answer_within, addr=addr, port=port, path=path,
                            count=count, timeout=timeout, output=output)


def wait_for_hello(client: StackClient, deadline_seconds: float, *,
                   alive: Any = None) -> dict[str, Any]:
    """Poll `hello` until the node answers, the process dies (`alive()` False) or time runs out."""
    deadline = time.monotonic() + deadline_seconds
    last_error = "no answer"
    while True:
        try:
            return client.hello()
        except StackControlError as error:
            last_error = str(error)
            client.close()
        if alive is not None and not alive():
            raise StackControlError(f"the stack process exited before answering hello ({last_error})")
        if time.monotonic() >= deadline:
            raise StackControlError(f"no hello within {deadline_seconds:g} s: {last_error}")
        raise_if_stopping()  # `lab up` holds signals while it starts the stack processes
        time.sleep(0.02)
