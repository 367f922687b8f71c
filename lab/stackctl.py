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

from lab.state import LabError, LabState

# A response line longer than this is a broken daemon, not a big answer (ss of 10k connections ~ 5 MB).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 10.0
FAR_FUTURE_SEQ = 2**53  # `trace since` this: no events, only the ring's next sequence number


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

    def ss(self) -> list[dict[str, Any]]:
        return self.request("ss")["connections"]

    def stats(self) -> dict[str, Any]:
        return self.request("stats")["counters"]

    def tables(self) -> dict[str, Any]:
        return self.request("tables")

    def listen(self, port: int, app: str = "echo", *, backlog: int = 128, accept: bool = True,
               bytes: int | None = None) -> dict[str, Any]:
        return self.request("listen", port=port, app=app, backlog=backlog, accept=accept, bytes=bytes)

    def close_listener(self, port: int) -> dict[str, Any]:
        return self.request("close", port=port)

    def connect(self, addr: str, port: int, *, send: int = 0, recv: str | int = 0, shutdown: bool = False,
                timeout: float = 10.0, nodelay: bool = False, close: str = "close",
                hold: float = 0.0, keepalive: bool = False) -> dict[str, Any]:
        """Open a connection from the stack, move data, close; the answer carries `error` (an errno
        name such as ECONNREFUSED) rather than raising, because a refused connect is a result."""
        fields = dict(addr=addr, port=port, send=send, recv=recv, shutdown=shutdown, timeout=timeout,
                      nodelay=nodelay, close=close, hold=hold, keepalive=keepalive)
        try:
            return self.request("connect", answer_within=timeout + hold + 60.0, **fields)
        except StackCommandFailed as failure:
            if failure.errno_name:
                return {"error": failure.errno_name, "message": failure.error}
            raise

    def trace(self, since: int = 0) -> dict[str, Any]:
        return self.request("trace", since=since)

    def config(self, **tcp: Any) -> dict[str, Any]:
        return self.request("config", tcp=tcp)

    def ping(self, addr: str, count: int = 1, timeout: float = 1.0) -> list[float | None]:
        return self.request("ping", answer_within=count * timeout + 10.0, addr=addr, count=count,
                            timeout=timeout)["replies"]

    def http_get(self, addr: str, port: int, path: str, count: int = 1) -> dict[str, Any]:
        return self.request("http_get", answer_within=120.0, addr=addr, port=port, path=path, count=count)


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
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# Reading the answers: trace events and connection snapshots
# --------------------------------------------------------------------------------------------

def endpoint(record: dict[str, Any], side: str) -> tuple[str, int]:
    """("10.0.0.2", 80) for side "local" or "remote", from `local_ip`/`local_port` or `local: "ip:port"`."""
    if f"{side}_ip" in record:
        return str(record[f"{side}_ip"]), int(record[f"{side}_port"])
    address, _, port = str(record.get(side, ":0")).rpartition(":")
    return address, int(port or 0)


def connection_trace(events: list[dict[str, Any]], local: tuple[str, int] | None = None,
                     remote: tuple[str, int] | None = None) -> list[dict[str, Any]]:
    """The stack's trace events of one connection, chosen by its local and/or remote endpoint."""
    return [e for e in events
            if (local is None or endpoint(e, "local") == local)
            and (remote is None or endpoint(e, "remote") == remote)]


def stack_state_sequence(events: list[dict[str, Any]]) -> list[str]:
    """["LISTEN", "SYN_RECV", "ESTABLISHED", ...] from the stack's inet_sock_set_state events."""
    states: list[str] = []
    for event in events:
        if event.get("name") != "inet_sock_set_state":
            continue
        if not states:
            states.append(str(event.get("oldstate", "?")))
        states.append(str(event.get("newstate", "?")))
    return states


def snapshot_wscale(snapshot: dict[str, Any]) -> tuple[int, int]:
    """(snd, rcv) window-scale shifts of a connection snapshot (either field spelling)."""
    if "wscale" in snapshot and isinstance(snapshot["wscale"], list | tuple):
        snd, rcv = snapshot["wscale"]
        return int(snd), int(rcv)
    return int(snapshot.get("snd_wscale", 0)), int(snapshot.get("rcv_wscale", 0))


def find_connection(connections: list[dict[str, Any]], *, local: tuple[str, int] | None = None,
                    remote: tuple[str, int] | None = None) -> dict[str, Any] | None:
    for connection in connections:
        if (local is None or endpoint(connection, "local") == local) and \
                (remote is None or endpoint(connection, "remote") == remote):
            return connection
    return None


def trace_cursor(client: StackClient) -> int:
    """The trace ring's next sequence number: read events after it to see only what comes next."""
    return int(client.trace(since=FAR_FUTURE_SEQ).get("next", 0))


def endpoint_port(text: object) -> int | None:
    """The port of an "ip:port" endpoint string, as the control socket writes them."""
    _, _, port = str(text).rpartition(":")
    return int(port) if port.isdigit() else None


def counter_value(counters: dict[str, Any], name: str) -> int:
    """A counter from `stats` by its nstat name ("TcpExtListenOverflows", "TcpRetransSegs"), whether the
    node groups counters (tcp: {...}) or not and whether it keeps the Tcp/TcpExt prefix; 0 when absent."""
    bare = name.removeprefix("TcpExt") if name.startswith("TcpExt") else name.removeprefix("Tcp")
    for key in (name, bare, f"Tcp{bare}", f"TcpExt{bare}"):
        value = counters.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    for group in counters.values():
        if isinstance(group, dict):
            found = counter_value(group, name)
            if found:
                return found
    return 0


def event_ports(event: dict[str, Any]) -> tuple[int | None, int | None]:
    """(local port, remote port) of a stack trace event."""
    local = event.get("local_port", endpoint_port(event.get("local", "")))
    remote = event.get("remote_port", endpoint_port(event.get("remote", "")))
    return local, remote


def read_trace(client: StackClient, since: int) -> tuple[list[dict[str, Any]], int]:
    """Trace events after `since`, and the cursor to pass next time."""
    answer = client.trace(since)
    return list(answer.get("events", [])), int(answer.get("next", since))


def retransmissions_by_local_port(events: list[dict[str, Any]], remote_port: int,
                                  name: str = "tcp_retransmit_skb") -> dict[int, int]:
    """How many `name` events each connection to `remote_port` logged, by its local port."""
    counts: dict[int, int] = {}
    for event in events:
        local, remote = event_ports(event)
        if event.get("name") == name and remote == remote_port and local is not None:
            counts[local] = counts.get(local, 0) + 1
    return counts
