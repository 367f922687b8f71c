"""The journal: every object a lab creates, written down (and fsync'd) before it exists.

Why before: `lab up` may die at any instant (SIGKILL, power cut of the process). Whatever it was
about to create is then already on record, so `lab down` can find it without the topology file.
An entry for an object that never came to be is harmless: `down` ignores missing objects.

The file is JSON Lines, one object per line, appended only. A crash can tear the last line; reading
skips a line that does not parse instead of failing, so `down` always works. Its first line is a
header naming the lab (`kind: lab`), written before the state directory appears under its name: a
directory without it was not made by `lab up` and is never adopted or removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from lab.build.statefiles import open_state_file, read_state_bytes

ObjectKind = Literal["lab", "namespace", "veth", "bridge", "tap", "qdisc", "process", "file"]
OBJECT_KINDS: tuple[str, ...] = ("lab", "namespace", "veth", "bridge", "tap", "qdisc", "process", "file")
HEADER_BYTES = 4096  # the header line is far shorter; reading more is never needed to find it


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One object the lab created; which fields it sets depends on its kind."""

    kind: ObjectKind
    namespace: str | None = None  # where it lives, None for the root namespace (a veth: its first end)
    name: str | None = None  # the interface (bridge, TAP, veth end, qdisc's device); a file's absolute
    # path (inside the lab's state directory); the node a stack process serves; the header's lab
    peer_namespace: str | None = None  # a veth's other end ...
    peer_name: str | None = None  # ... and its name there
    qdisc: str | None = None  # the root qdisc's kind on namespace/name: "tbf" or "netem"
    pid: int | None = None  # a process, with start_ticks: field 22 of /proc/<pid>/stat, so that a
    start_ticks: int | None = None  # pid reused by another process is never signalled

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict) -> JournalEntry:
        if not isinstance(data, dict) or data.get("kind") not in OBJECT_KINDS:
            raise ValueError(f"not a journal entry: {data!r}")
        fields = set(cls.__dataclass_fields__)
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown journal fields {sorted(unknown)}")
        return cls(**data)

    def describe(self) -> str:
        where = self.namespace or "root"
        if self.kind == "lab":
            return f"lab {self.name}"
        if self.kind == "namespace":
            return f"namespace {self.namespace}"
        if self.kind == "veth":
            return f"veth {where}:{self.name} <-> {self.peer_namespace or 'root'}:{self.peer_name}"
        if self.kind == "qdisc":
            return f"qdisc {self.qdisc} on {where}:{self.name}"
        if self.kind == "process":
            return f"process {self.pid} in {where}"
        if self.kind == "file":
            return f"file {self.name}"
        return f"{self.kind} {where}:{self.name}"


@dataclass(frozen=True)
class JournalContents:
    entries: tuple[JournalEntry, ...]
    skipped_lines: tuple[int, ...]  # 1-based numbers of lines that did not parse (a torn tail)


class Journal:
    """Append-only writer; `record()` returns only once the entries are on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, entries: Iterable[JournalEntry]) -> None:
        """Append entries and fsync before returning: call it BEFORE creating the objects.

        A batch costs one fsync; a torn previous tail is closed off by a leading newline so the
        new entries always start on their own line.
        """
        lines = [json.dumps(entry.to_json(), sort_keys=True) for entry in entries]
        if not lines:
            return
        fd = open_state_file(self.path, os.O_RDWR | os.O_APPEND, create=True)
        try:
            prefix = "" if _ends_with_newline(fd) else "\n"
            os.write(fd, (prefix + "\n".join(lines) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> JournalContents:
        return read_journal(self.path)


def _ends_with_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    if size == 0:
        return True
    return os.pread(fd, 1, size - 1) == b"\n"


def header(lab: str) -> JournalEntry:
    """The journal's first entry: which lab the journal (and the directory holding it) belongs to."""
    return JournalEntry("lab", name=lab)


def journal_owner(path: Path) -> str | None:
    """The lab the journal's header names; None when there is no journal or it has no header.

    Raises UnsafeStateFile when the journal is a link or not trusted (`lab.build.statefiles`).
    """
    raw = read_state_bytes(path, HEADER_BYTES)
    if not raw:
        return None
    try:
        first = JournalEntry.from_json(json.loads(raw.split(b"\n", 1)[0]))
    except (ValueError, TypeError):
        return None
    return first.name if first.kind == "lab" else None


def read_journal(path: Path) -> JournalContents:
    """All entries in creation order; an unparsable line is skipped and reported, never fatal."""
    raw = read_state_bytes(path)
    if raw is None:
        return JournalContents((), ())
    entries: list[JournalEntry] = []
    skipped: list[int] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            entries.append(JournalEntry.from_json(json.loads(line)))
        except (ValueError, TypeError):
            skipped.append(number)
    return JournalContents(tuple(entries), tuple(skipped))


def removal_order(entries: Iterable[JournalEntry]) -> list[JournalEntry]:
    """Newest first, each object once: the reverse of creation, so dependents go before what holds them.

    Processes are listed first whatever their position: a process pins its namespace, so it must
    be gone before the namespace is removed.
    """
    seen: set[JournalEntry] = set()
    ordered: list[JournalEntry] = []
    for entry in reversed(list(entries)):
        if entry not in seen:
            seen.add(entry)
            ordered.append(entry)
    return [e for e in ordered if e.kind == "process"] + [e for e in ordered if e.kind != "process"]
