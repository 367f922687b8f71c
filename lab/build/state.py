"""Where a running lab keeps its state, and the lock that serializes `up`/`down` of one lab.

Each lab owns a directory `<root>/<lab>/` (root: `stack.node.paths.state_root()`):

    journal.jsonl   every object, recorded before it is created (see `lab.build.journal`); its
                    first line, the header, names the lab
    plan.json       the plan being built or up, its digest and a phase ("building" / "up")
    nodes/<n>.json  a pystack node's settings, read by the stack process

`/run` is a tmpfs, so the state disappears at reboot together with the namespaces it describes.
The lock file sits beside the directory (`<root>/<lab>.lock`) so `down` can remove the
directory while it still holds the lock.

The directory appears under the lab's name already holding the journal's header (it is built
under a hidden name and renamed into place), so a directory there without a header naming the lab
was not made by `lab up`: it is refused, never adopted as a half-built lab nor removed. Every file
is opened through `lab.build.statefiles` (no symbolic link followed, only root's files trusted).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.build.errors import LabError
from lab.build.journal import Journal, header, journal_owner
from lab.build.statefiles import (
    STATE_DIRECTORY_MODE,
    check_state_directory,
    open_state_file,
    read_state_json,
    rename_no_replace,
    write_json_atomic,
)
from lab.topology.names import is_plain_name, lab_name_problem
from stack.devices.namespace import namespace_path
from stack.node import paths
from stack.node.paths import state_root

TAG_PREFIX = "nslab:"

UNFINISHED_PREFIX = ".new-"  # `<root>/.new-<lab>.<random>`: a state directory being made
PHASE_BUILDING = "building"
PHASE_UP = "up"


class LabLocked(LabError):
    pass


class ForeignState(LabError):
    """A directory under the state root, named like the lab, that `lab up` did not make (exit 2)."""


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
        return cls(check_lab_name(name), normal_root(root))

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

    def node_log_path(self, node: str) -> Path:
        return self.nodes_dir / f"{node}.log"

    def control_socket_path(self, node: str) -> Path:
        return paths.control_socket_path(self.directory, node)

    def programs_socket_path(self, node: str) -> Path:
        return paths.programs_socket_path(self.directory, node)

    def owned(self) -> bool:
        """Whether the lab has a state directory: False when there is none, True when there is one
        made by `lab up` (trusted, its journal's header naming this lab).

        Raises ForeignState for any other directory of that name, UnsafeStateFile for a link or a
        directory or journal that is not root's alone: neither is ever adopted or removed.
        """
        if not os.path.lexists(self.directory):
            return False
        check_state_directory(self.directory)
        if journal_owner(self.journal_path) != self.name:
            raise ForeignState(f"{self.directory} is not the state directory of lab {self.name} (no journal "
                               "written by `lab up` names it); refusing to adopt or remove it")
        return True

    def belongs(self) -> bool:
        """`owned()` without the errors: True only for the lab's own state directory."""
        try:
            return self.owned()
        except LabError:
            return False

    def create(self) -> None:
        """Make the state directory, with the journal's header, appearing under its name in one step.

        ForeignState when something already has the name (the caller holds the lab's lock, so
        that is never another `lab up` of this lab).
        """
        ensure_state_root(self.root)
        self.remove_unfinished()
        building = self.root / f"{UNFINISHED_PREFIX}{self.name}.{secrets.token_hex(4)}"
        os.mkdir(building, STATE_DIRECTORY_MODE)
        try:
            os.mkdir(paths.nodes_dir(building), STATE_DIRECTORY_MODE)
            Journal(building / self.journal_path.name).record([header(self.name)])
            if not rename_no_replace(building, self.directory):
                raise ForeignState(f"{self.directory} already exists and is not the state directory of a "
                                   "lab that is up; refusing to adopt it (remove it if it is stale)")
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise

    def remove_unfinished(self) -> None:
        """Remove hidden directories of this lab's `create` cut short by a crash (hold the lock)."""
        prefix = f"{UNFINISHED_PREFIX}{self.name}."
        try:
            names = [entry for entry in os.listdir(self.root) if entry.startswith(prefix)]
        except FileNotFoundError:
            return
        for name in names:
            path = self.root / name
            try:
                check_state_directory(path)
                owner = journal_owner(path / self.journal_path.name)
            except LabError:
                continue  # not ours to remove
            if owner in (self.name, None):
                shutil.rmtree(path, ignore_errors=True)

    def read_plan(self) -> dict[str, Any] | None:
        """The stored plan record; None when there is none, it was torn by a crash, or the directory
        is not the lab's."""
        if not self.belongs():
            return None
        record = read_state_json(self.plan_path)
        return record if isinstance(record, dict) else None

    def write_plan(self, plan_json: dict[str, Any], digest: str, phase: str, *, netem: bool = True) -> None:
        """The record; `netem` says whether the kernel had sch_netem when the lab was wired (it decides
        which links go through the lab's forwarder, `lab.build.wiring.plan_wiring`)."""
        record = {"digest": digest, "phase": phase, "netem": netem, "plan": plan_json}
        write_json_atomic(self.plan_path, record)

    def remove(self) -> None:
        """Remove the state directory (only call once `owned()` said it is the lab's)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def normal_root(root: Path | None) -> Path:
    """The state root as an absolute path without `.`/`..`, so the lab's files have one spelling
    (`lab.build.statefiles.remove_inside` compares paths as written)."""
    return Path(os.path.abspath(root if root is not None else state_root()))


def ensure_state_root(root: Path) -> None:
    """Make the state root when missing; refuse one that is a link or that others may write."""
    if not os.path.lexists(root):
        root.mkdir(parents=True, exist_ok=True, mode=STATE_DIRECTORY_MODE)
    check_state_directory(root, "state root")


def list_labs(root: Path | None = None) -> list[str]:
    """Names of labs that have a state directory of their own (up, being built, or left by a crash)."""
    root = normal_root(root)
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    return [e.name for e in entries if is_plain_name(e.name) and LabState(e.name, root).belongs()]


@contextmanager
def lab_lock(state: LabState, *, wait: bool = True) -> Iterator[None]:
    """Hold the lab's lock (flock) for the duration; other labs use other files and never wait.

    When the lab has no state directory on release (after `down`, or an `up` refused before
    building), the lock file is unlinked while still held; a waiter that then wins the flock on
    the unlinked inode notices and retries on a fresh file.
    """
    ensure_state_root(state.root)
    while True:
        fd = open_state_file(state.lock_path, os.O_RDWR, create=True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LabLocked(
                f"lab {state.name} is busy: another `lab up`/`lab down` holds {state.lock_path}") from None
        try:
            current = os.lstat(state.lock_path)
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
        if not state.belongs():  # no lab left behind: leave no lock file either
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
