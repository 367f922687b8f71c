"""The control socket (protocol v1): newline-delimited JSON over a Unix stream socket.

Each request is one line `{"cmd": NAME, ...}`; each answer one line, `{"ok": true, ...}` or
`{"ok": false, "error": "<one line>", "errno": NAME | null}`. Connections are served concurrently and a
connection's requests in order, so a long `connect` on one client never holds up `ss` on another.
`lab/build/control.py` is the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from stack.devices.impaired_tap import ImpairedTapMedium
from stack.node.runtime import CommandError, StackNode
from stack.node.settings import SettingsError, impairment_from_json, impairment_to_json
from stack.node.views import connection_json, neighbour_json, tables_json

MAX_REQUEST_BYTES = 1 << 20
Command = Callable[[StackNode, dict[str, Any]], Awaitable[dict[str, Any]]]


class Request:
    """Typed access to a request's fields; wrong types are CommandErrors naming the field."""

    def __init__(self, name: str, fields: dict[str, Any]) -> None:
        self.name = name
        self.fields = fields

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.fields or self.fields[key] is None:
            if default is ...:
                raise CommandError(f"{self.name}: field {key!r} is required")
            return default
        value = self.fields[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise CommandError(f"{self.name}: field {key!r}: {value!r} is not {names}")
        return value


class ControlServer:
    """Serves protocol v1 for one `StackNode` on the Unix socket `path`."""

    def __init__(self, node: StackNode, path: Path, hello: Callable[[], dict[str, Any]],
                 extra_counters: Callable[[], dict[str, int]] = dict,
                 medium: ImpairedTapMedium | None = None) -> None:
        self.node = node
        self.medium = medium  # the TAP path whose impairments `impair` changes (None: not on a TAP)
        self.path = path
        self.hello = hello
        self.extra_counters = extra_counters
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.requests = 0

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a node that died
        self._server = await asyncio.start_unix_server(self._serve, str(self.path), limit=MAX_REQUEST_BYTES)
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_answer_error(f"request longer than {MAX_REQUEST_BYTES} bytes") + b"\n")
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                writer.write(await self.answer(line) + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def answer(self, line: bytes) -> bytes:
        """One request line in, one answer line out (without the newline)."""
        self.requests += 1
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _answer_error(f"request is not JSON: {exc}")
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return _answer_error('request must be an object with a string "cmd"')
        name = request.pop("cmd")
        handler = COMMANDS.get(name)
        if handler is None:
            return _answer_error(f"unknown command {name!r} (known: {', '.join(sorted(COMMANDS))})")
        unknown = sorted(set(request) - FIELDS.get(name, frozenset()))
        if unknown:
            allowed = ", ".join(sorted(FIELDS.get(name, ()))) or "none"
            fields = ", ".join(map(repr, unknown))
            return _answer_error(f"{name}: unknown field(s) {fields} (allowed: {allowed})")
        try:
            result = await handler(self, Request(name, request))
        except CommandError as exc:
            return _answer_error(str(exc), exc.errno_name)
        except Exception as exc:  # a bug must cost one answer, never the node
            return _answer_error(f"{name}: internal error: {type(exc).__name__}: {exc}")
        return json.dumps({"ok": True, **result}, separators=(",", ":"), default=str).encode()


def _answer_error(message: str, errno_name: str | None = None) -> bytes:
    line = " ".join(message.split())
    return json.dumps({"ok": False, "error": line, "errno": errno_name}, separators=(",", ":")).encode()


# -- the commands ------------------------------------------------------------------------------------


async def _hello(server: ControlServer, request: Request) -> dict[str, Any]:
    return server.hello()


async def _ss(server: ControlServer, request: Request) -> dict[str, Any]:
    return {"connections": [connection_json(s) for s in server.node.host.snapshots()]}


async def _stats(server: ControlServer, request: Request) -> dict[str, Any]:
    counters = server.node.host.counters()
    counters.update(server.extra_counters())
    counters["ControlRequests"] = server.requests
    return {"counters": counters}


async def _tables(server: ControlServer, request: Request) -> dict[str, Any]:
    return tables_json(server.node.host.tables(), server.node.app_names())


async def _listen(server: ControlServer, request: Request) -> dict[str, Any]:
    port = await server.node.listen(request.get("port", int), request.get("app", str, "echo"),
                                    request.get("backlog", int, 128), request.get("accept", bool, True),
                                    request.get("bytes", int, None))
    return {"port": port}


async def _close(server: ControlServer, request: Request) -> dict[str, Any]:
    return {"closed": server.node.close_listener(request.get("port", int))}


async def _connect(server: ControlServer, request: Request) -> dict[str, Any]:
    return await server.node.connect(
        request.get("addr", str), request.get("port", int), send=request.get("send", int, 0),
        recv=request.get("recv", (str, int), 0), shutdown=request.get("shutdown", bool, False),
        timeout=float(request.get("timeout", (int, float), 10.0)),
        nodelay=request.get("nodelay", bool, False),
        close=request.get("close", str, "close"), hold=float(request.get("hold", (int, float), 0.0)),
        keepalive=request.get("keepalive", bool, False))


async def _http_get(server: ControlServer, request: Request) -> dict[str, Any]:
    return await server.node.http_get(request.get("addr", str), request.get("port", int),
                                      request.get("path", str, "/"), request.get("count", int, 1),
                                      float(request.get("timeout", (int, float), 60.0)),
                                      request.get("output", str, None))


async def _trace(server: ControlServer, request: Request) -> dict[str, Any]:
    events, following = server.node.trace.since(request.get("since", int, 0))
    return {"events": events, "next": following}


async def _config(server: ControlServer, request: Request) -> dict[str, Any]:
    return {"tcp": server.node.configure_tcp(request.get("tcp", dict, {}))}


async def _ping(server: ControlServer, request: Request) -> dict[str, Any]:
    replies = await server.node.ping(request.get("addr", str), request.get("count", int, 1),
                                     float(request.get("timeout", (int, float), 1.0)))
    return {"replies": replies}


async def _impair(server: ControlServer, request: Request) -> dict[str, Any]:
    """Change the TAP path's impairment of `egress` and/or `ingress` (topology units: ms, %, Mbit/s);
    with neither field, only say what they are. The answer is the impairment of both directions."""
    medium = server.medium
    if medium is None:
        raise CommandError("impair: this node has no impaired TAP path")
    changes = {}
    for direction in ("egress", "ingress"):
        raw = request.get(direction, dict, None)
        if raw is not None:
            try:
                changes[direction] = impairment_from_json(raw, "impair", f"{direction}.")
            except SettingsError as exc:
                raise CommandError(str(exc)) from None
    for direction, profile in changes.items():
        medium.set_impairment(direction, profile)
    server.node.driver.wakeup()
    return {direction: impairment_to_json(profile) for direction, profile in medium.profiles.items()}


async def _arp(server: ControlServer, request: Request) -> dict[str, Any]:
    return {"neighbours": [neighbour_json(entry) for entry in server.node.host.neighbours()]}


COMMANDS: dict[str, Callable[[ControlServer, Request], Awaitable[dict[str, Any]]]] = {
    "hello": _hello, "ss": _ss, "stats": _stats, "tables": _tables, "listen": _listen, "close": _close,
    "connect": _connect, "http_get": _http_get, "trace": _trace, "config": _config, "ping": _ping,
    "arp": _arp, "impair": _impair,
}
# The fields each command takes: anything else is refused, so a misspelt option is never silently ignored.
FIELDS: dict[str, frozenset[str]] = {
    "listen": frozenset({"port", "app", "backlog", "accept", "bytes"}),
    "close": frozenset({"port"}),
    "connect": frozenset({"addr", "port", "send", "recv", "shutdown", "timeout", "nodelay", "close", "hold",
                          "keepalive"}),
    "http_get": frozenset({"addr", "port", "path", "count", "timeout", "output"}),
    "trace": frozenset({"since"}),
    "config": frozenset({"tcp"}),
    "ping": frozenset({"addr", "count", "timeout"}),
    "impair": frozenset({"egress", "ingress"}),
}
