"""What a topology file may be and hold, checked before the work it would cost.

`lab up FILE` runs as root and FILE may be anything: ``/dev/zero``, a FIFO, ``/etc/shadow``, a
kilobyte of YAML aliases that expands to a billion values. So the file must be a regular file of
at most `MAX_FILE_BYTES` (measured before it is opened, read only up to the bound, opened without
blocking), of UTF-8 text, holding one YAML mapping with ``name``, ``nodes`` or ``links`` (the YAML
bounds themselves are `lab.topology.yaml_lines`'), and at most `MAX_NODES` nodes, `MAX_LINKS`
links and `MAX_INTERFACES` link endpoints, counted before the schema looks at any of them.

The numbers: a chain of 1000 kernel nodes is ten times the benchmark's largest
(``benchmarks/bench_up.py``: 100 nodes), a 667 KB file that loads in under 2 s, and a 1000-node lab
is still something `lab up` builds in well under a minute; a mesh has more links than nodes, a LAN
more endpoints than links, hence the larger bounds for those. Nothing here echoes what the file
holds: an error names the file, the line and the field, and says what kind of thing it found.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

from lab.topology.errors import NOT_A_TOPOLOGY, TopologyError
from lab.topology.yaml_lines import SourceMap

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 1000
MAX_LINKS = 2000
MAX_INTERFACES = 4000
TOPOLOGY_KEYS = ("name", "nodes", "links")
TOPOLOGY_EXPECTED = f"{NOT_A_TOPOLOGY}: expected a mapping with name, nodes and links"

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def read_topology_file(path: str | Path) -> str:
    """The text of a topology file, refused (`TopologyError`) unless it is a regular, bounded UTF-8 file."""
    source = str(path)
    try:
        _check_file(source, os.stat(path))  # before opening: opening a device or a FIFO may block or act
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _unreadable(source, exc) from None
    try:
        _check_file(source, os.fstat(handle))  # the same file: it may have been swapped since the stat
        data = _read_at_most(handle, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _unreadable(source, exc) from None
    finally:
        os.close(handle)
    if len(data) > MAX_FILE_BYTES:  # it grew after the stat
        raise _too_large(source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TopologyError(
            source, line, "", f"{NOT_A_TOPOLOGY}: expected UTF-8 text, got bytes that are not"
        ) from None


def _check_file(source: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = next((word for test, word in _FILE_KINDS if test(info.st_mode)), "not a regular file")
        raise TopologyError(source, None, "", f"{NOT_A_TOPOLOGY}: expected a regular file, got {kind}")
    if info.st_size > MAX_FILE_BYTES:
        raise _too_large(source)


def _unreadable(source: str, exc: OSError) -> TopologyError:
    return TopologyError(source, None, "", f"expected a readable topology file, got {exc.strerror}")


def _too_large(source: str) -> TopologyError:
    message = f"{NOT_A_TOPOLOGY}: expected a file of at most {MAX_FILE_BYTES} bytes, got a larger one"
    return TopologyError(source, None, "", message)


def _read_at_most(handle: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.read(handle, limit - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def check_shape(data: object, lines: SourceMap) -> dict[str, object]:
    """A topology is a mapping with at least one of its keys; anything else is not one (and is not quoted)."""
    if isinstance(data, dict) and any(key in data for key in TOPOLOGY_KEYS):
        return data
    raise TopologyError(lines.source, lines.line(()), "", f"{TOPOLOGY_EXPECTED}, got {_kind_of(data)}")


def _kind_of(data: object) -> str:
    if data is None:
        return "an empty file"
    if isinstance(data, dict):
        return "a mapping without any of them"
    if isinstance(data, list):
        return "a list"
    if isinstance(data, bool):
        return "true or false"
    if isinstance(data, int | float):
        return "a number"
    if isinstance(data, datetime.date):
        return "a date"
    if isinstance(data, bytes):
        return "binary data"
    return "text"


def check_counts(data: dict[str, object], lines: SourceMap) -> None:
    """At most `MAX_NODES` nodes, `MAX_LINKS` links and `MAX_INTERFACES` endpoints on all links."""
    nodes = data.get("nodes")
    if isinstance(nodes, dict) and len(nodes) > MAX_NODES:
        raise lines.error(("nodes",), f"expected at most {MAX_NODES} nodes, got {len(nodes)}", key=True)
    links = data.get("links")
    if not isinstance(links, list):
        return
    if len(links) > MAX_LINKS:
        raise lines.error(("links",), f"expected at most {MAX_LINKS} links, got {len(links)}", key=True)
    interfaces = sum(
        len(link["endpoints"])
        for link in links
        if isinstance(link, dict) and isinstance(link.get("endpoints"), list)
    )
    if interfaces > MAX_INTERFACES:
        raise lines.error(
            ("links",),
            f"expected at most {MAX_INTERFACES} interfaces (link endpoints) in all, got {interfaces}",
            key=True,
        )
