"""`lab stack LAB NODE get URL [-o FILE]`: an HTTP GET made by a pystack node's stack.

The node's stack is the client (control command `http_get`), so the figures are the receiver's: the time
to the first response byte, to the last body byte, and the goodput over the whole exchange. The body is
written by the node process itself, beside its event loop: to FILE, or, for standard output, into a FIFO
this process reads and copies to its stdout while the request runs, so a body of any size streams through
without landing on disk and a slow reader of stdout slows the transfer instead of filling memory.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from lab.build.control import StackClient
from lab.build.state import LabError

COPY_PIECE = 1 << 16
ANSWER_WITHIN = 24 * 3600.0  # the node bounds every stall by `timeout`; the whole transfer may be long


class BadUrl(LabError):
    exit_code = 2


@dataclass(frozen=True)
class Url:
    address: str
    port: int
    path: str  # with the query

    def __str__(self) -> str:
        return f"http://{self.address}:{self.port}{self.path}"


def parse_url(text: str) -> Url:
    """`http://IPv4[:PORT][/path[?query]]`: the stack resolves no names and speaks no TLS."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise BadUrl(f"get: URL {text[:80]!r}: {error}") from None
    if parts.scheme != "http":
        raise BadUrl(f"get: URL {text[:80]!r}: the scheme must be http:// (the stack speaks no TLS)")
    host = parts.hostname or ""
    try:
        address = str(ipaddress.IPv4Address(host))
    except ValueError:
        raise BadUrl(f"get: URL {text[:80]!r}: the host must be an IPv4 address (the stack resolves no "
                     f"names), not {host[:40]!r}") from None
    if parts.username is not None or parts.fragment:
        raise BadUrl(f"get: URL {text[:80]!r}: no user information or fragment")
    if port is not None and not 1 <= port <= 65535:
        raise BadUrl(f"get: URL {text[:80]!r}: port {port} is outside 1..65535")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(ord(c) <= 0x20 or ord(c) >= 0x7f for c in path):
        raise BadUrl(f"get: URL {text[:80]!r}: the path must be printable ASCII without spaces")
    return Url(address, port or 80, path)


def fetch_to_file(client: StackClient, url: Url, output: Path, timeout: float) -> dict[str, Any]:
    """The node writes the body to `output` itself."""
    return client.http_get(url.address, url.port, url.path, timeout=timeout,
                           output=str(output.resolve()), answer_within=ANSWER_WITHIN)


def fetch_to_stream(client: StackClient, url: Url, stream: BinaryIO, timeout: float) -> dict[str, Any]:
    """The node writes the body into a FIFO; this thread copies it to `stream` while another waits for
    the node's answer. Leaving early (Ctrl-C, a closed stdout) closes the FIFO: the node's next write
    fails and it ends the transfer."""
    with tempfile.TemporaryDirectory(prefix="nslab-get-") as folder:
        fifo = Path(folder) / "body"
        os.mkfifo(fifo, 0o600)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open before the node opens its end
        outcome: dict[str, Any] = {}

        def ask() -> None:
            try:
                outcome["answer"] = client.http_get(url.address, url.port, url.path, timeout=timeout,
                                                    output=str(fifo), answer_within=ANSWER_WITHIN)
            except BaseException as error:  # handed to the main thread
                outcome["error"] = error

        asking = threading.Thread(target=ask, name="http-get", daemon=True)
        asking.start()
        try:
            _copy_until_done(reader, stream, asking)
        finally:
            os.close(reader)
            asking.join(timeout=1.0)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["answer"]


def _copy_until_done(reader: int, stream: BinaryIO, asking: threading.Thread) -> None:
    """Copy the FIFO to `stream` until the node answered and the FIFO is empty. Before the node opens the
    FIFO, and after it closed it, a read gives b"" at once: then wait a little and look again."""
    while True:
        finished = not asking.is_alive()
        readable, _, _ = select.select([reader], [], [], 0.1)
        data = b""
        if readable:
            with contextlib.suppress(BlockingIOError):
                data = os.read(reader, COPY_PIECE)
        if data:
            stream.write(data)
            continue
        if finished:
            stream.flush()
            return
        time.sleep(0.01)


def summary(url: Url, answer: dict[str, Any]) -> str:
    """One line per response: status, bytes, times and goodput at the receiver."""
    lines = []
    for response in answer.get("responses", []):
        first = response.get("first_byte_seconds")
        first_text = f", first byte {first * 1000:.2f} ms" if first is not None else ""
        lines.append(f"{url}: {response['status']} {response.get('reason', '')}".rstrip()
                     + f", {response['bytes']} B in {response['seconds']:.3f} s{first_text}, "
                     f"{response.get('goodput_bps', 0.0) / 1e6:.1f} Mbit/s at the receiver, "
                     f"sha256 {response['sha256']}")
    return "\n".join(lines)
