"""`StackNode`: one Host in the running asyncio loop, its listeners and apps, and what the control socket
asks of it (connect, http_get, ping, config). Medium-agnostic: the node process puts it on a TAP, the tests
on a memory wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from stack.api.socket import (
    IPPROTO_TCP,
    SHUT_WR,
    SO_ERROR,
    SO_KEEPALIVE,
    SO_LINGER,
    SO_REUSEADDR,
    SOL_SOCKET,
    TCP_NODELAY,
)
from stack.api.streams import DEFAULT_LIMIT, StackServer, create_server, open_connection, start_server
from stack.loops.asyncio_driver import AsyncioDriver
from stack.node.apps import APP_NAMES, handler_for, http_client, iperf3_client, protocol_for
from stack.node.apps.content import chunks, pattern_sha256
from stack.node.digest import BackgroundDigest
from stack.node.trace_ring import TraceRing
from stack.node.views import connection_json
from stack.tcp.config import TcpConfig
from stack.tcp.trace import TraceEvent

if TYPE_CHECKING:
    from stack.host import Host
    from stack.tcp import TcpSocket

RECV_CHUNK = 256 * 1024
# The bulk stream apps' StreamReader buffer limit (asyncio pauses the transport at twice the limit). With
# asyncio's 64 KB, one pump moves only 256 KB from the TCP receive buffer to the app; the buffer then fills,
# the advertised window shrinks and a kernel sender is window-limited most of the time. http too (uploads):
# its heads are bounded by its own parser (`http_messages.Limits`), not by the stream's limit. (discard and
# echo are protocols, `protocol_for`: they take what each pump brings, with no stream buffer between.)
BULK_STREAM_LIMIT = 1 << 20
STREAM_LIMITS = {"http": BULK_STREAM_LIMIT, "iperf3": BULK_STREAM_LIMIT}
SETTLE_AFTER_CLOSE = 1.0  # seconds `connect` waits after closing for CLOSE/TIME_WAIT to show in `states`
CONNECT_CLOSE_MODES = ("close", "abort", "none")


class CommandError(Exception):
    """A request the node cannot do; `errno_name` is set when an errno explains it (ECONNREFUSED...)."""

    def __init__(self, message: str, errno_name: str | None = None) -> None:
        super().__init__(message)
        self.errno_name = errno_name


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"E{code}")


@dataclass
class Listening:
    """One listener the node runs: an app behind a StackServer, or a bare socket that never accepts."""

    port: int
    app: str
    backlog: int
    server: StackServer | None = None
    socket: TcpSocket | None = None
    held: list[asyncio.StreamWriter] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class StackNode:
    """The stack side of a node: `host` driven by `driver` in the running loop."""

    def __init__(self, host: Host, driver: AsyncioDriver, trace: TraceRing) -> None:
        self.host = host
        self.driver = driver
        self.trace = trace
        self.listeners: dict[int, Listening] = {}
        self.kept_open: list[TcpSocket] = []  # connect(close="none"): closed when the node stops
        self.started = time.time()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.driver.loop

    # -- listeners ---------------------------------------------------------------------------------------

    async def listen(self, port: int, app: str = "echo", backlog: int = 128, accept: bool = True,
                     size: int | None = None) -> int:
        if not 1 <= port <= 65535:
            raise CommandError(f"listen: port {port} is outside 1..65535")
        if app not in (*APP_NAMES, "none"):
            raise CommandError(f"listen: unknown app {app!r} (choose {', '.join(APP_NAMES)} or none)")
        if backlog < 0:
            raise CommandError(f"listen: backlog {backlog} is negative")
        if port in self.listeners:
            raise CommandError(f"listen: port {port} already has a listener "
                               f"({self.listeners[port].app})", "EADDRINUSE")
        entry = Listening(port, app, backlog)
        try:
            if not accept:
                sock = self.host.tcp.socket()
                sock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
                sock.bind((self.host.ip, port))
                sock.listen(backlog)
                entry.socket = sock
            elif app == "none":
                entry.server = await start_server(self._hold(entry), self.host, self.host.ip, port,
                                                  backlog=backlog)
            elif (factory := protocol_for(app)) is not None:
                entry.server = await create_server(factory, self.host, self.host.ip, port, backlog=backlog)
            else:
                limit = STREAM_LIMITS.get(app, DEFAULT_LIMIT)
                entry.server = await start_server(handler_for(app, size), self.host, self.host.ip, port,
                                                  backlog=backlog, limit=limit)
        except OSError as exc:
            raise CommandError(f"listen: port {port}: {exc.strerror or exc}",
                               errno_name(exc.errno) if exc.errno else None) from None
        self.listeners[port] = entry
        self.driver.wakeup()
        return port

    def _hold(self, entry: Listening) -> Any:
        """app "none" with accept: take connections off the accept queue and keep them, never reading."""

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.transport.pause_reading()
            entry.held.append(writer)
            await entry.closed.wait()
            writer.transport.abort()

        return hold

    def close_listener(self, port: int) -> int:
        entry = self.listeners.pop(port, None)
        if entry is None:
            return 0
        entry.closed.set()
        if entry.server is not None:
            entry.server.close()
        if entry.socket is not None:
            with contextlib.suppress(OSError):
                entry.socket.close(self.driver.clock())
        self.driver.wakeup()
        return 1

    def app_names(self) -> dict[int, str]:
        return {port: entry.app for port, entry in self.listeners.items()}

    # -- connect -----------------------------------------------------------------------------------------

    async def connect(self, addr: str, port: int, *, send: int = 0, recv: str | int = 0,
                      shutdown: bool = False, timeout: float = 10.0, nodelay: bool = False,
                      close: str = "close", hold: float = 0.0, keepalive: bool = False,
                      digest_sent: bool = True) -> dict[str, Any]:
        """Open a connection, move data, close as asked; figures and the state sequence seen on the way.

        `timeout` bounds the handshake and then every stall (no byte moved for that long): ETIMEDOUT.
        Failures are results (`error` holds the errno name), not exceptions. What is sent is the
        first `sent` bytes of the pattern; `digest_sent` hashes them once the transfer is over
        (`sent_sha256`), which a caller checking the receiver's digest against the pattern's can skip.
        """
        if close not in CONNECT_CLOSE_MODES:
            raise CommandError(f"connect: close {close!r}: choose {', '.join(CONNECT_CLOSE_MODES)}")
        if send < 0 or hold < 0 or timeout <= 0:
            raise CommandError("connect: send and hold must not be negative, timeout must be positive")
        if recv != "eof" and (not isinstance(recv, int) or isinstance(recv, bool) or recv < 0):
            raise CommandError(f"connect: recv {recv!r}: \"eof\", 0 or a byte count")
        loop = self.loop
        states: list[list[Any]] = []
        start = loop.time()
        key: list[tuple[str, int, str, int]] = []

        def watch(event: TraceEvent) -> None:
            if key and (event.local_ip, event.local_port, event.remote_ip, event.remote_port) == key[0]:
                states.append([round(event.time - start, 6), event.fields.get("newstate")])

        self.trace.state_watchers.append(watch)
        sock = self.host.tcp.socket()
        result: dict[str, Any] = {"local": None, "remote": f"{addr}:{port}", "connect_seconds": None,
                                  "sent": 0, "received": 0, "sent_sha256": None, "received_sha256": None,
                                  "seconds": 0.0, "goodput_bps": 0.0, "buffered_seconds": 0.0,
                                  "buffered_goodput_bps": 0.0, "states": states, "snapshot": None,
                                  "error": None}
        try:
            if nodelay:
                sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
            if keepalive:
                sock.setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)  # timings: TcpConfig (the `config` command)
            try:
                sock.connect((addr, port), self.driver.clock())
            except BlockingIOError:
                pass
            except OSError as exc:
                raise CommandError(f"connect {addr}:{port}: {exc.strerror or exc}",
                                   errno_name(exc.errno) if exc.errno else None) from None
            local = sock.getsockname()
            key.append((local[0], local[1], addr, port))
            states.append([0.0, "SYN_SENT"])
            result["local"] = f"{local[0]}:{local[1]}"
            self.driver.wakeup()
            try:
                await self.driver.wait_for(lambda: sock.writable or sock.error != 0, timeout)
                code = int(sock.getsockopt(SOL_SOCKET, SO_ERROR) or 0)
            except asyncio.TimeoutError:
                code = errno.ETIMEDOUT
            if code:
                result["error"] = errno_name(code)
                return result
            result["connect_seconds"] = loop.time() - start
            transfer_start = loop.time()
            await self._transfer(sock, result, send, recv, shutdown, timeout)
            moved = result["sent"] + result["received"]
            # The old figure: until the last byte was in the send buffer (or read); then until the peer
            # acknowledged it, which is when the data has arrived: the goodput a receiver would see.
            result["buffered_seconds"] = loop.time() - transfer_start
            result["buffered_goodput_bps"] = _rate(moved, result["buffered_seconds"])
            if result["sent"] and result["error"] is None:
                try:
                    await self.driver.wait_for(lambda: sock.unacknowledged == 0 or sock.error != 0, timeout)
                except asyncio.TimeoutError:
                    result["error"] = "ETIMEDOUT"
            result["seconds"] = loop.time() - transfer_start
            result["goodput_bps"] = _rate(moved, result["seconds"])
            if hold:
                await asyncio.sleep(hold)
            result["snapshot"] = self._snapshot_of(key[0])
        finally:
            await self._finish(sock, close if result["error"] is None else "close", key, states)
            with contextlib.suppress(ValueError):
                self.trace.state_watchers.remove(watch)
        if digest_sent:  # after the transfer, on another thread: it must not compete with it for the cores
            result["sent_sha256"] = await loop.run_in_executor(None, pattern_sha256, result["sent"])
        return result

    async def _transfer(self, sock: TcpSocket, result: dict[str, Any], send: int, recv: str | int,
                        shutdown: bool, timeout: float) -> None:
        pieces = chunks(send)
        pending: memoryview | None = next(pieces, None)
        received_digest = BackgroundDigest()  # off the stack's thread
        reading = recv == "eof" or (isinstance(recv, int) and recv > 0)
        eof = False
        shut = False
        try:
            while True:
                moved = False
                while pending is not None:
                    try:
                        count = sock.send(pending)
                    except BlockingIOError:
                        break
                    result["sent"] += count
                    moved = moved or count > 0
                    pending = pending[count:] if count < len(pending) else next(pieces, None)
                if pending is None and shutdown and not shut:
                    sock.shutdown(SHUT_WR, self.driver.clock())
                    shut = True
                if reading and not eof:
                    for _ in range(64):
                        try:
                            data = sock.recv(RECV_CHUNK)
                        except BlockingIOError:
                            break
                        if not data:
                            eof = True
                            break
                        received_digest.update(data)
                        result["received"] += len(data)
                        moved = True
                        if recv != "eof" and result["received"] >= int(recv):
                            break
                recv_done = not reading or eof or (recv != "eof" and result["received"] >= int(recv))
                if pending is None and recv_done:
                    return
                if recv != "eof" and eof and not recv_done:
                    result["error"] = "ECONNRESET" if sock.error else "EPIPE"  # EOF before N bytes: short
                    return
                if moved:
                    await asyncio.sleep(0)  # let the loop run the driver and other requests
                    continue
                try:
                    await self.driver.wait_for(
                        _ready(sock, want_send=pending is not None, want_recv=reading and not recv_done),
                        timeout)
                except asyncio.TimeoutError:
                    result["error"] = "ETIMEDOUT"
                    return
                if sock.error and not sock.readable:
                    code = int(sock.getsockopt(SOL_SOCKET, SO_ERROR) or 0)
                    result["error"] = errno_name(code) if code else "ECONNRESET"
                    return
        except OSError as exc:
            result["error"] = errno_name(exc.errno) if exc.errno else "EIO"
        finally:
            result["received_sha256"] = received_digest.hexdigest()

    async def _finish(self, sock: TcpSocket, close: str, key: list[tuple[str, int, str, int]],
                      states: list[list[Any]]) -> None:
        if close == "none":
            self.kept_open.append(sock)
            return
        with contextlib.suppress(OSError):
            if close == "abort":
                sock.setsockopt(SOL_SOCKET, SO_LINGER, (1, 0))
            sock.close(self.driver.clock())
        self.driver.wakeup()
        if key:
            with contextlib.suppress(asyncio.TimeoutError):
                await self.driver.wait_for(
                    lambda: bool(states) and states[-1][1] in ("CLOSE", "TIME_WAIT"),
                    SETTLE_AFTER_CLOSE)

    def _snapshot_of(self, key: tuple[str, int, str, int]) -> dict[str, Any] | None:
        for snapshot in self.host.snapshots():
            if (snapshot.local_ip, snapshot.local_port, snapshot.remote_ip, snapshot.remote_port) == key:
                return connection_json(snapshot)
        return None

    async def iperf3(self, addr: str, port: int, *, seconds: int = 10, parallel: int = 1,
                     reverse: bool = False, timeout: float = 10.0) -> dict[str, Any]:
        """An iperf3 TCP test from this stack against the iperf3 server at addr:port (`iperf3 -c`)."""

        async def opener() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await open_connection(self.host, addr, port, limit=BULK_STREAM_LIMIT, timeout=timeout)

        try:
            return await iperf3_client.run_test(opener, seconds=seconds, parallel=parallel, reverse=reverse,
                                                timeout=timeout)
        except asyncio.TimeoutError:
            raise CommandError(f"{addr}:{port}: no connection within {timeout:g} s", "ETIMEDOUT") from None
        except OSError as exc:
            raise CommandError(f"{addr}:{port}: {os.strerror(exc.errno) if exc.errno else exc}",
                               errno_name(exc.errno) if exc.errno else None) from None
        except iperf3_client.Iperf3Error as exc:
            raise CommandError(f"{addr}:{port}: {exc}") from None

    # -- http_get, ping, config --------------------------------------------------------------------------

    async def http_get(self, addr: str, port: int, path: str, count: int = 1, timeout: float = 60.0,
                       output: str | None = None) -> dict[str, Any]:
        """GET `path` from addr:port `count` times (one connection while the server keeps it); every body
        is appended to the file `output` (an absolute path: a regular file or a FIFO someone reads) when
        given. `timeout` bounds the connect and every stall. The figures are the receiver's."""
        if not path.startswith("/"):
            raise CommandError(f"http_get: path {path!r} must start with /")
        if not 1 <= count <= 10_000:
            raise CommandError(f"http_get: count {count} is outside 1..10000")
        if timeout <= 0:
            raise CommandError(f"http_get: timeout {timeout:g} must be positive")
        sink = _open_output(output) if output is not None else None

        async def opener() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await open_connection(self.host, addr, port, timeout=timeout)

        where = f"{addr}:{port}{path}"
        try:
            responses, connections = await http_client.get(opener, f"{addr}:{port}", path, count,
                                                           timeout=timeout, output=sink)
        except asyncio.TimeoutError as exc:
            raise CommandError(f"{where}: {exc or f'no answer within {timeout:g} s'}", "ETIMEDOUT") from None
        except OSError as exc:
            raise CommandError(f"{where}: {exc.strerror or exc}",
                               errno_name(exc.errno) if exc.errno else None) from None
        except http_client.HttpClientError as exc:
            raise CommandError(f"{where}: {exc}") from None
        finally:
            if sink is not None:
                with contextlib.suppress(OSError):
                    sink.close()
        return {"responses": [r.to_json() for r in responses], "connections": connections}

    async def ping(self, addr: str, count: int = 1, timeout: float = 1.0) -> list[float | None]:
        if not 1 <= count <= 1000 or timeout <= 0:
            raise CommandError("ping: count must be 1..1000 and timeout positive")
        host = self.host
        ident = host.rng.randrange(1 << 16)
        replies: list[float | None] = []
        for sequence in range(1, count + 1):
            seen = len(host.echo_replies)
            try:
                host.send_ping(addr, ident, sequence, b"nslab ping")
            except OSError:
                raise CommandError(f"ping: {addr!r} is not an IPv4 address") from None
            sent = self.loop.time()

            def answered(seq: int = sequence, seen: int = seen) -> bool:
                return any(r.src == addr and r.ident == ident and r.sequence == seq
                           for r in host.echo_replies[seen:])

            try:
                await self.driver.wait_for(answered, timeout)
            except asyncio.TimeoutError:
                replies.append(None)
                continue
            reply = next(r for r in host.echo_replies[seen:]
                         if r.src == addr and r.ident == ident and r.sequence == sequence)
            replies.append(max(0.0, reply.time - sent))
        return replies

    def configure_tcp(self, changes: dict[str, Any]) -> dict[str, Any]:
        """New TcpConfig fields for connections made from now on (existing ones keep theirs); the fields
        changed, or with no changes every field (a read of the configuration)."""
        current = self.host.tcp.config
        known = {f.name: f for f in dataclasses.fields(TcpConfig)}
        for name, value in changes.items():
            if name not in known:
                raise CommandError(f"config: unknown TCP field {name!r} (known: {', '.join(sorted(known))})")
            old = getattr(current, name)
            if old is not None and not isinstance(value, type(old)) and not (
                    isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool)):
                raise CommandError(f"config: {name}={value!r}: expected {type(old).__name__}")
        try:
            updated = dataclasses.replace(current, **changes)
        except (ValueError, TypeError) as exc:
            raise CommandError(f"config: {exc}") from None
        self.host.tcp.config = updated
        return {name: getattr(updated, name) for name in changes or known}

    # -- shutdown ----------------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Close every listener and reset every connection (a stopping node owes its peers an RST)."""
        for port in list(self.listeners):
            self.close_listener(port)
        for sock in self.kept_open:
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_SOCKET, SO_LINGER, (1, 0))
                sock.close(self.driver.clock())
        self.kept_open.clear()
        for sock in self.host.tcp.tables.owned_sockets():
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_SOCKET, SO_LINGER, (1, 0))
                sock.close(self.driver.clock())
        self.driver.wakeup()
        await asyncio.sleep(0.01)  # one turn of the loop: the RSTs leave


def _open_output(path: str) -> BinaryIO:
    """The file http_get writes bodies to. Opened without blocking: a FIFO nobody reads is an error
    (ENXIO), not a node waiting forever."""
    if not os.path.isabs(path):
        raise CommandError(f"http_get: output {path!r} must be an absolute path")
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | os.O_CLOEXEC
        descriptor = os.open(path, flags, 0o644)
    except OSError as exc:
        raise CommandError(f"http_get: output {path}: {exc.strerror or exc}",
                           errno_name(exc.errno) if exc.errno else None) from None
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "wb")


def _rate(moved: int, seconds: float) -> float:
    return moved * 8 / seconds if seconds > 0 else 0.0


def _ready(sock: TcpSocket, *, want_send: bool, want_recv: bool) -> Callable[[], bool]:
    """What `connect` waits for: room to send, bytes (or EOF) to read, or an error."""
    return lambda: (want_send and sock.writable) or (want_recv and sock.readable) or sock.error != 0
