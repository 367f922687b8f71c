"""Where a running lab keeps its state, and the lock that serializes `up`/`down` of one lab.

Each lab owns a directory `<root>/<lab>/` (root: `stack.node.paths.state_root()`):

    journal.jsonl   every object, recorded before it is created (see `lab.build.journal`)
    plan.json       the plan being built or up, its digest and a phase ("building" / "up")
    nodes/<n>.json  a pystack node's settings, read by the stack process

`/run` is a tmpfs, so the state disappears at reboot together with the namespaces it describes.
The lock file sits beside the directory (`<root>/<lab>.lock`) so `down` can remove the
directory while it still holds the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.topology.names import is_plain_name, lab_name_problem
from stack.devices.namespace import namespace_path
from stack.node import paths
from stack.node.paths import state_root

TAG_PREFIX = "nslab:"

PHASE_BUILDING = "building"
PHASE_UP = "up"


class LabError(Exception):
    """A lab operation cannot go on. `exit_code` follows the CLI contract (1 failed, 2 bad input)."""

    exit_code = 2


class LabLocked(LabError):
    pass


def check_lab_name(name: str) -> str:
    """`name` when it can name a lab (the topology's rule, `lab.topology.names`); LabError otherwise."""
    problem = lab_name_problem(name)
    if problem:
        raise LabError(f"lab name {name!r}: {problem}")
    return name


def lab_tag(lab: str) -> str:
    """The ifalias every lab interface carries (and the namespace marker on its loopback)."""
    return f"{TAG_PREFIX}{lab}"


@dataclass(frozen=True)
class LabState:
    """The paths of one lab's state directory (nothing is created by constructing this)."""

    name: str
    root: Path

    @classmethod
    def for_lab(cls, name: str, root: Path | None = None) -> LabState:
        return cls(check_lab_name(name), root if root is not None else state_root())

    @property
    def directory(self) -> Path:
        return self.root / self.name

    @property
    def journal_path(self) -> Path:
        return self.directory / "journal.jsonl"

    @property
    def plan_path(self) -> Path:
        return self.directory / "plan.json"

    @property
    def nodes_dir(self) -> Path:
        return paths.nodes_dir(self.directory)

    @property
    def lock_path(self) -> Path:
        return self.root / f"{self.name}.lock"

    def node_settings_path(self, node: str) -> Path:
        return paths.node_settings_path(self.directory, node)

    def control_socket_path(self, node: str) -> Path:
        return paths.control_socket_path(self.directory, node)

    def exists(self) -> bool:
        return self.directory.is_dir()

    def create(self) -> None:
        self.nodes_dir.mkdir(parents=True, exist_ok=True)

    def read_plan(self) -> dict[str, Any] | None:
        """The stored plan record, or None when there is none (or it was torn by a crash)."""
        try:
            return json.loads(self.plan_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_plan(self, plan_json: dict[str, Any], digest: str, phase: str, *, netem: bool = True) -> None:
        """The record; `netem` says whether the kernel had sch_netem when the lab was wired (it decides
        which links go through the lab's forwarder, `lab.build.wiring.plan_wiring`)."""
        record = {"digest": digest, "phase": phase, "netem": netem, "plan": plan_json}
        write_json_atomic(self.plan_path, record)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def write_json_atomic(path: Path, data: Any, *, indent: int | None = None) -> None:
    """Write via a temporary file and rename, so a crash leaves the old or the new file, never half.

    No indent by default: only then does the json module use its C encoder (a 100-node plan).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    text = json.dumps(data, indent=indent, sort_keys=True)
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def list_labs(root: Path | None = None) -> list[str]:
    """Names of labs that have a state directory (up, being built, or left by a crash)."""
    root = root if root is not None else state_root()
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    return [e.name for e in entries if e.is_dir() and is_plain_name(e.name)]


@contextmanager
def lab_lock(state: LabState, *, wait: bool = True) -> Iterator[None]:
    """Hold the lab's lock (flock) for the duration; other labs use other files and never wait.

    When the lab has no state directory on release (after `down`, or an `up` refused before
    building), the lock file is unlinked while still held; a waiter that then wins the flock on
    the unlinked inode notices and retries on a fresh file.
    """
    state.root.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(state.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LabLocked(
                f"lab {state.name} is busy: another `lab up`/`lab down` holds {state.lock_path}") from None
        try:
            current = os.stat(state.lock_path)
        except FileNotFoundError:
            os.close(fd)
            continue
        held = os.fstat(fd)
        if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
            os.close(fd)
            continue
        break
    try:
        yield
    finally:
        if not state.directory.exists():  # no lab left behind: leave no lock file either
            remove_lock_file(state)
        os.close(fd)


def remove_lock_file(state: LabState) -> None:
    """Unlink the lock file; only call while holding `lab_lock(state)`."""
    try:
        state.lock_path.unlink()
    except FileNotFoundError:
        pass


def node_namespace(name: str, node: str, root: Path | None = None) -> str:
    """The namespace of a node of a lab that is up (LabError otherwise)."""
    record = LabState.for_lab(name, root).read_plan()
    if record is None:
        raise LabError(f"lab {name} is not up")
    nodes = {n["name"]: n["namespace"] for n in record["plan"]["nodes"]}
    if node not in nodes:
        raise LabError(f"lab {name} has no node {node!r} (nodes: {', '.join(nodes)})")
    if not os.path.exists(namespace_path(nodes[node])):
        raise LabError(f"namespace {nodes[node]} of lab {name} is missing; run `lab status {name}`")
    return nodes[node]
