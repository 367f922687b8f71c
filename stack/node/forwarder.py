"""`python -m stack.node.forwarder --settings <state dir>/nodes/<link>.json`: impair one kernel link.

The process `lab up` starts in a link's own namespace when the kernel has no sch_netem: it opens the
two veth ends there (`stack.devices.packet.PacketPort`), carries frames between them through
`stack.devices.forwarder.LinkForwarder` in one asyncio loop, and answers a control socket (the
protocol of `stack.node.control`: one JSON request per line, one answer per line) with

    hello                               {link, lab, pid, ports, directions}
    show                                {directions: {NAME: {impairment, counters}}}
    impair {direction, impairment}      swap one direction's impairment (topology units), answer `show`

Settings (schema version 1, written by `lab up`): lab, link, namespace, ports [two interface names],
directions [two names, "h1->h2" for frames read on the first port], impairments {direction:
impairment}, control_socket, seed (null: random). Exit codes: 0 after SIGTERM/SIGINT, 2 for bad
settings or a port that cannot be opened, with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.devices.forwarder import Direction, LinkForwarder
from stack.devices.impairment import Impairment
from stack.devices.packet import PacketPort
from stack.node.settings import SettingsError, impairment_from_json, impairment_to_json

SCHEMA_VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
BATCH = 64


@dataclass(frozen=True)
class ForwarderSettings:
    lab: str
    link: str
    namespace: str
    ports: tuple[str, str]
    directions: tuple[str, str]
    profiles: tuple[Impairment, Impairment]
    control_socket: Path
    seed: int | None = None


def load_forwarder_settings(path: str | Path) -> ForwarderSettings:
    """Read and check a forwarder's settings file; SettingsError names the file and the bad field."""
    source = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SettingsError(f"{source}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: expected an object")

    def field(name: str, kind: type) -> Any:
        value = data.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise SettingsError(f"{source}: field {name}: {value!r}: expected {kind.__name__}")
        return value

    if data.get("version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise SettingsError(f"{source}: field version: this forwarder reads schema {SCHEMA_VERSION}")
    pairs = {}
    for name in ("ports", "directions"):
        value = field(name, list)
        if len(value) != 2 or not all(isinstance(v, str) and v for v in value) or value[0] == value[1]:
            raise SettingsError(f"{source}: field {name}: {value!r}: expected two different names")
        pairs[name] = (value[0], value[1])
    impairments = field("impairments", dict)
    profiles = tuple(impairment_from_json(impairments.get(name) or {}, source, f"impairments.{name}.")
                     for name in pairs["directions"])
    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise SettingsError(f"{source}: field seed: {seed!r}: expected an integer or null")
    return ForwarderSettings(field("lab", str), field("link", str), field("namespace", str), pairs["ports"],
                             pairs["directions"], (profiles[0], profiles[1]),
                             Path(field("control_socket", str)), seed)


def direction_json(direction: Direction) -> dict[str, Any]:
    return {"impairment": impairment_to_json(direction.profile), "counters": direction.counters()}


class ForwarderProcess:
    """The running forwarder: ports, the forwarder, its timer, its control socket."""

    def __init__(self, settings: ForwarderSettings, ports: tuple[PacketPort, PacketPort]) -> None:
        self.settings = settings
        self.ports = ports
        self.forwarder = LinkForwarder(ports[0], ports[1], names=settings.directions,
                                       profiles=settings.profiles, seed=settings.seed, batch=BATCH)
        self.loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def run_once(self) -> None:
        """Move what is readable and due, then wake again when the next delayed frame is due."""
        now = self.loop.time()
        self.forwarder.step(now)
        deadline = self.forwarder.next_deadline()
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline
                                and self._timer_at > now):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.run_once()

    def answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            return {"ok": False, "error": f"request is not JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'request must be an object with a string "cmd"'}
        command = request.pop("cmd")
        if command == "hello":
            return {"ok": True, "lab": self.settings.lab, "link": self.settings.link, "pid": os.getpid(),
                    "ports": list(self.settings.ports), "directions": list(self.settings.directions)}
        if command == "show":
            return {"ok": True, "directions": {d.name: direction_json(d) for d in self.forwarder.directions}}
        if command == "impair":
            return self._impair(request)
        return {"ok": False, "error": f"unknown command {command!r} (known: hello, impair, show)"}

    def _impair(self, request: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(request) - {"direction", "impairment"})
        if unknown:
            return {"ok": False,
                    "error": f"impair: unknown field(s) {unknown} (allowed: direction, impairment)"}
        name = request.get("direction")
        try:
            direction = self.forwarder.direction(name) if isinstance(name, str) else None
        except KeyError:
            direction = None
        if direction is None:
            return {"ok": False, "error": f"impair: direction {name!r}: choose "
                                          f"{' or '.join(self.settings.directions)}"}
        try:
            profile = impairment_from_json(request.get("impairment"), "impair", "impairment.")
        except SettingsError as exc:
            return {"ok": False, "error": str(exc)}
        direction.set_profile(profile)
        self.run_once()
        return {"ok": True, "directions": {direction.name: direction_json(direction)}}

    async def serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    answer: dict[str, Any] = {"ok": False, "error": f"request over {MAX_REQUEST_BYTES} bytes"}
                    writer.write(json.dumps(answer).encode() + b"\n")
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    answer = self.answer(line)
                except Exception as exc:  # a bug costs one answer, never the link
                    answer = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def serve(settings: ForwarderSettings, stop: asyncio.Event) -> None:
    """Forward until `stop` is set; OSError from opening a port propagates."""
    first = PacketPort(settings.ports[0])
    try:
        second = PacketPort(settings.ports[1])
    except OSError:
        first.close()
        raise
    process = ForwarderProcess(settings, (first, second))
    loop = process.loop
    for port in (first, second):
        loop.add_reader(port.fileno(), process.run_once)
    path = settings.control_socket
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket of a forwarder that died
    server = await asyncio.start_unix_server(process.serve_control, str(path), limit=MAX_REQUEST_BYTES)
    os.chmod(path, 0o660)
    print(f"forwarder {settings.link}: {settings.ports[0]} <-> {settings.ports[1]}, control {path}",
          flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        for port in (first, second):
            loop.remove_reader(port.fileno())
            port.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.node.forwarder",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--settings", required=True,
                        help="the forwarder's settings JSON (written by `lab up`)")
    args = parser.parse_args(argv)
    try:
        settings = load_forwarder_settings(args.settings)
    except SettingsError as exc:
        print(f"stack.node.forwarder: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"stack.node.forwarder: {settings.link}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
