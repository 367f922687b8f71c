"""When and why a node's stack process ended, as far as the lab can know it.

Nothing watches a node while it runs (see `lab.build.pids` for who reaps it), so its death is
noticed by the next `lab up` or `lab status`, which writes what it found to
`nodes/<node>.exit.json` the first time: the process, the time it was first seen gone, the last
write to its log (it was alive at least until then), and the cause when one can be known: the wait
status when this process reaps it or finds its zombie, or the node's last words in its log (a
traceback, its one-line error). A SIGKILLed node already reaped by init leaves no cause; the record
says so instead of guessing.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.build.errors import LabError
from lab.build.journal import JournalEntry
from lab.build.pids import describe_wait_status, reap, started_at, zombie_wait_status
from lab.build.state import LabState
from lab.build.statefiles import open_state_file, read_state_json, write_json_atomic

LOG_TAIL_BYTES = 16 * 1024
START_BANNER = "stack node "  # the node's first line once it serves (`stack.node.daemon.serve`)
NODE_ERROR_PREFIX = "stack.node:"  # the node's one-line error before it exits (`stack.node.__main__`)
UNKNOWN_CAUSE = "ended, cause unknown (reaped by its parent before the lab looked; no error in its log)"


@dataclass(frozen=True)
class NodeExit:
    node: str
    pid: int
    start_ticks: int | None
    started_at: float | None  # wall-clock start, from the start ticks
    seen_gone_at: float  # the first time `lab up` or `lab status` found it gone
    log_end: float | None  # the last write to the node's log before that: it lived at least until then
    cause: str
    cause_known: bool
    last_log_line: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> NodeExit | None:
        try:
            return cls(**data)
        except TypeError:
            return None

    def report(self) -> dict[str, Any]:
        """What `lab status --json` shows: the record with its times also as ISO 8601 (UTC)."""
        return {**self.to_json(), "started": iso_time(self.started_at),
                "seen_gone": iso_time(self.seen_gone_at), "log_ends": iso_time(self.log_end)}

    def summary(self) -> str:
        """One line: how it ended and when, for `lab up` and `lab status`."""
        when = f"first seen gone {iso_time(self.seen_gone_at)}"
        if self.log_end is not None:
            when += f", its log ends {iso_time(self.log_end)}"
        return f"pid {self.pid} {self.cause}; {when}"


def iso_time(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def exit_record_path(state: LabState, node: str) -> Path:
    return state.nodes_dir / f"{node}.exit.json"


def recorded_exit(state: LabState, node: str) -> NodeExit | None:
    """The last exit recorded for the node (maybe of an earlier process than the current one)."""
    try:
        data = read_state_json(exit_record_path(state, node))
    except LabError:
        return None
    return NodeExit.from_json(data) if isinstance(data, dict) else None


def observe_exit(state: LabState, node: str, entry: JournalEntry, *, record: bool = True) -> NodeExit:
    """The death of `node`'s journaled process `entry` (which must be dead): its record if one was
    made when it was first seen gone, or a new one, written unless `record` is False."""
    if entry.pid is None:
        raise ValueError(f"journal entry {entry.describe()} has no pid")
    known = recorded_exit(state, node)
    if known is not None and (known.pid, known.start_ticks) == (entry.pid, entry.start_ticks):
        return known
    status = reap(entry.pid)
    if status is None:
        status = zombie_wait_status(entry.pid, entry.start_ticks)
    log_end, last_line, last_words = log_facts(state, node)
    if status is not None:
        cause, cause_known = describe_wait_status(status), True
    elif last_words is not None:
        cause, cause_known = last_words, True
    else:
        cause, cause_known = UNKNOWN_CAUSE, False
    found = NodeExit(node, entry.pid, entry.start_ticks, started_at(entry.start_ticks), time.time(), log_end,
                     cause, cause_known, last_line)
    if record:
        try:
            write_json_atomic(exit_record_path(state, node), found.to_json())
        except (OSError, LabError):
            pass  # the state is going away (a `down` at the same moment): nothing to keep it for
    return found


def log_facts(state: LabState, node: str) -> tuple[float | None, str | None, str | None]:
    """The log's last write time, its last line, and the node's last words if the log ends with
    them (a traceback after the start banner, or the node's one-line error)."""
    path = state.node_log_path(node)
    try:
        fd = open_state_file(path, os.O_RDONLY)
    except (OSError, LabError):
        return None, None, None
    try:
        st = os.fstat(fd)
        tail = os.pread(fd, LOG_TAIL_BYTES, max(0, st.st_size - LOG_TAIL_BYTES))
    finally:
        os.close(fd)
    lines = [line.strip() for line in tail.decode(errors="replace").splitlines() if line.strip()]
    if not lines:
        return st.st_mtime, None, None
    last = lines[-1][:200]
    since_start = lines[max((i for i, line in enumerate(lines) if line.startswith(START_BANNER)), default=0):]
    if last.startswith(NODE_ERROR_PREFIX):
        return st.st_mtime, last, f"exited: {last}"
    if any(line.startswith("Traceback") for line in since_start):
        return st.st_mtime, last, f"crashed: {last}"
    return st.st_mtime, last, None
