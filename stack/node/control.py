"""The control socket (protocol v1): newline-delimited JSON over a Unix stream socket.

Each request is one line `{"cmd": NAME, ...}`; each answer one line, `{"ok": true, ...}` or
`{"ok": false, "error": "<one line>", "errno": NAME | null}`. Connections are served concurrently and a
connection's requests in order, so a long `connect` on one client never holds up `ss` on another.
Every request gets its answer, a bad one an error object (`stack.node.requests` says what is bad:
too large, too deep, not JSON, unknown command or field, wrong type, out of range), and the
connection and the node go on serving. `lab/build/control.py` is the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack.devices.impaired_tap import ImpairedTapMedium
from stack.devices.pcap import PcapRecorder
from stack.node.requests import (
    MAX_REQUEST_BYTES,
    RequestError,
    check_tcp_changes,
    parse_request,
    read_request_line,
)
from stack.node.runtime import CommandError, StackNode
from stack.node.settings import SettingsError, impairment_from_json, impairment_to_json
from stack.node.views import neighbour_json, ss_json, tables_json

if TYPE_CHECKING:
    from stack.node.workers import WorkerPeers

Fields = dict[str, Any]  # a request's fields, checked and completed by `stack.node.requests.parse_request`


class ControlServer:
    """Serves protocol v1 for one `StackNode` on the Unix socket `path`."""

    def __init__(self, node: StackNode, path: Path, hello: Callable[[], dict[str, Any]],
                 extra_counters: Callable[[], dict[str, int]] = dict,
                 medium: ImpairedTapMedium | None = None, peers: WorkerPeers | None = None) -> None:
        self.node = node
        self.medium = medium  # the TAP path whose impairments `impair` changes (None: not on a TAP)
        self.path = path
        self.hello = hello
        self.peers = peers  # the node's other workers, asked for what this one answers for the node
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
        if self.medium is not None and self.medium.recorder is not None:
            recorder, self.medium.recorder = self.medium.recorder, None
            recorder.close()  # a capture the node was still writing ends complete
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
                    line = await read_request_line(reader)
                except RequestError as exc:  # too long: dropped up to its newline, and the next is read
                    self.requests += 1
                    answer = _answer_error(str(exc))
                else:
                    if line is None:
                        break
                    if not line.strip():
                        continue
                    answer = await self.answer(line)
                writer.write(answer + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def answer(self, line: bytes) -> bytes:
        """One request line in, one answer line out (without the newline); it never raises."""
        self.requests += 1
        try:
            name, fields = parse_request(line)
        except RequestError as exc:
            return _answer_error(str(exc))
        try:
            if self.peers is not None:
                self.peers.refuse_unshareable(name, fields)
            result = await COMMANDS[name](self, fields)
            if self.peers is not None:
                result = await self.peers.merge(name, fields, line, result)
            return json.dumps({"ok": True, **result}, separators=(",", ":"), default=str).encode()
        except RequestError as exc:
            return _answer_error(str(exc))
        except CommandError as exc:
            return _answer_error(str(exc), exc.errno_name)
        except Exception as exc:  # a bug must cost one answer, never the node
            return _answer_error(f"{name}: internal error: {type(exc).__name__}: {exc}")


def _answer_error(message: str, errno_name: str | None = None) -> bytes:
    line = " ".join(message.split())
    return json.dumps({"ok": False, "error": line, "errno": errno_name}, separators=(",", ":")).encode()


# -- the commands ------------------------------------------------------------------------------------


async def _hello(server: ControlServer, fields: Fields) -> dict[str, Any]:
    return server.hello()


async def _ss(server: ControlServer, fields: Fields) -> dict[str, Any]:
    return ss_json(server.node.host.snapshots(), **fields)


async def _stats(server: ControlServer, fields: Fields) -> dict[str, Any]:
    counters = server.node.host.counters()
    counters.update(server.extra_counters())
    counters["ControlRequests"] = server.requests
    return {"counters": counters}


async def _tables(server: ControlServer, fields: Fields) -> dict[str, Any]:
    return tables_json(server.node.host.tables(), server.node.app_names())


async def _listen(server: ControlServer, fields: Fields) -> dict[str, Any]:
    port = await server.node.listen(fields["port"], fields["app"], fields["backlog"], fields["accept"],
                                    fields["bytes"])
    return {"port": port}


async def _close(server: ControlServer, fields: Fields) -> dict[str, Any]:
    return {"closed": server.node.close_listener(fields["port"])}


async def _connect(server: ControlServer, fields: Fields) -> dict[str, Any]:
    return await server.node.connect(
        fields["addr"], fields["port"], send=fields["send"], recv=fields["recv"], shutdown=fields["shutdown"],
        timeout=float(fields["timeout"]), nodelay=fields["nodelay"], close=fields["close"],
        hold=float(fields["hold"]), keepalive=fields["keepalive"], digest_sent=fields["digest_sent"])


async def _http_get(server: ControlServer, fields: Fields) -> dict[str, Any]:
    return await server.node.http_get(fields["addr"], fields["port"], fields["path"], fields["count"],
                                      float(fields["timeout"]), fields["output"])


async def _iperf3(server: ControlServer, fields: Fields) -> dict[str, Any]:
    return await server.node.iperf3(fields["addr"], fields["port"], seconds=fields["seconds"],
                                    parallel=fields["parallel"], reverse=fields["reverse"],
                                    timeout=float(fields["timeout"]))


async def _trace(server: ControlServer, fields: Fields) -> dict[str, Any]:
    events, following = server.node.trace.since(fields["since"])
    return {"events": events, "next": following}


async def _config(server: ControlServer, fields: Fields) -> dict[str, Any]:
    return {"tcp": server.node.configure_tcp(check_tcp_changes(fields["tcp"]))}


async def _ping(server: ControlServer, fields: Fields) -> dict[str, Any]:
    replies = await server.node.ping(fields["addr"], fields["count"], float(fields["timeout"]))
    return {"replies": replies}


async def _impair(server: ControlServer, fields: Fields) -> dict[str, Any]:
    """Change the TAP path's impairment of `egress` and/or `ingress` (topology units: ms, %, Mbit/s);
    with neither field, only say what they are. The answer is the impairment of both directions."""
    medium = server.medium
    if medium is None:
        raise CommandError("impair: this node has no impaired TAP path")
    changes = {}
    for direction in ("egress", "ingress"):
        raw = fields[direction]
        if raw is not None:
            try:
                changes[direction] = impairment_from_json(raw, "impair", f"{direction}.")
            except SettingsError as exc:
                raise CommandError(str(exc)) from None
    for direction, profile in changes.items():
        medium.set_impairment(direction, profile)
    server.node.driver.wakeup()
    return {direction: impairment_to_json(profile) for direction, profile in medium.profiles.items()}


async def _pcap(server: ControlServer, fields: Fields) -> dict[str, Any]:
    """Start (to `path`, at most `max_bytes`), stop, or ask about the node's own capture of the frames it
    sends and receives; the answer is the capture's status and whether it is still recording."""
    medium = server.medium
    if medium is None:
        raise CommandError("pcap: this node has no TAP path to record")
    recorder = medium.recorder
    if fields["action"] == "start":
        if recorder is not None:
            raise CommandError(f"pcap: already recording to {recorder.path} (stop it first)")
        if fields["path"] is None:
            raise RequestError("pcap: field 'path' is required to start")
        wall_offset = time.time() - server.node.driver.clock()
        try:
            medium.recorder = recorder = PcapRecorder.create(fields["path"], fields["max_bytes"], wall_offset)
        except OSError as exc:
            raise CommandError(f"pcap: cannot write {fields['path']}: {exc.strerror or exc}") from None
        return {**recorder.status(), "recording": True}
    if recorder is None:
        return {"recording": False}
    if fields["action"] == "stop":
        medium.recorder = None
        recorder.close()
        return {**recorder.status(), "recording": False}
    return {**recorder.status(), "recording": True}


async def _arp(server: ControlServer, fields: Fields) -> dict[str, Any]:
    return {"neighbours": [neighbour_json(entry) for entry in server.node.host.neighbours()]}


# The handlers; the fields each takes (names, types, ranges) are `stack.node.requests.COMMAND_FIELDS`'.
COMMANDS: dict[str, Callable[[ControlServer, Fields], Awaitable[dict[str, Any]]]] = {
    "hello": _hello, "ss": _ss, "stats": _stats, "tables": _tables, "listen": _listen, "close": _close,
    "connect": _connect, "http_get": _http_get, "iperf3": _iperf3, "trace": _trace, "config": _config,
    "ping": _ping, "arp": _arp, "impair": _impair, "pcap": _pcap,
}
