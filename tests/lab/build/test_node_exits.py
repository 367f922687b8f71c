"""How a dead node's process ended, as far as it can be known (no root): its wait status when this
process reaps it or finds its zombie, its last words in its log, and the time it was first seen gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.build.journal import JournalEntry
from lab.build.node_exits import UNKNOWN_CAUSE, observe_exit, recorded_exit
from lab.build.pids import (
    describe_wait_status,
    is_running,
    process_start_ticks,
    stat_fields,
    zombie_wait_status,
)
from lab.build.state import LabState


@pytest.fixture
def state(tmp_path: Path) -> LabState:
    lab = LabState.for_lab("ra1", tmp_path / "state")
    lab.create()
    return lab


def ended_process() -> JournalEntry:
    """The journal entry of a process that ran and is gone (reaped here)."""
    child = subprocess.Popen(["sleep", "30"])
    entry = JournalEntry("process", namespace="ra1-s1", name="s1", pid=child.pid,
                         start_ticks=process_start_ticks(child.pid))
    child.kill()
    child.wait(5)
    return entry


def wait_for_zombie(pid: int) -> None:
    deadline = time.monotonic() + 10
    while (stat_fields(pid) or ["Z"])[0] != "Z":
        assert time.monotonic() < deadline, f"pid {pid} never became a zombie"
        time.sleep(0.01)


def test_wait_statuses_in_words() -> None:
    assert describe_wait_status(signal.SIGKILL) == "killed by SIGKILL"
    assert describe_wait_status(2 << 8) == "exited with status 2"


def test_a_traceback_in_the_log_is_the_cause_and_the_first_sighting_is_kept(state: LabState) -> None:
    state.node_log_path("s1").write_text(
        "stack node s1: 10.0.0.2/24 on tap0 (offload), control ...\n"
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nRuntimeError: boom\n")
    entry = ended_process()
    first = observe_exit(state, "s1", entry)
    assert first.cause == "crashed: RuntimeError: boom" and first.cause_known
    assert first.last_log_line == "RuntimeError: boom"
    assert first.log_end == pytest.approx(state.node_log_path("s1").stat().st_mtime)
    assert first.pid == entry.pid and first.started_at is not None
    time.sleep(0.01)
    assert observe_exit(state, "s1", entry) == first == recorded_exit(state, "s1")  # seen once, kept


def test_without_a_status_or_last_words_the_cause_is_unknown_and_said_so(state: LabState) -> None:
    state.node_log_path("s1").write_text("stack node s1: 10.0.0.2/24 on tap0 (offload), control ...\n")
    ended = observe_exit(state, "s1", ended_process())
    assert ended.cause == UNKNOWN_CAUSE and not ended.cause_known
    assert "cause unknown" in ended.summary()


def test_the_nodes_one_line_error_is_its_last_words(state: LabState) -> None:
    state.node_log_path("s1").write_text("stack.node: s1: no such device tap0\n")
    assert observe_exit(state, "s1", ended_process()).cause == "exited: stack.node: s1: no such device tap0"


def test_a_child_of_this_process_is_reaped_and_its_signal_named(state: LabState) -> None:
    child = subprocess.Popen(["sleep", "30"])
    entry = JournalEntry("process", name="s1", pid=child.pid, start_ticks=process_start_ticks(child.pid))
    os.kill(child.pid, signal.SIGKILL)
    wait_for_zombie(child.pid)
    assert not is_running(child.pid, entry.start_ticks)  # a zombie is dead
    assert observe_exit(state, "s1", entry).cause == "killed by SIGKILL"
    assert not Path(f"/proc/{child.pid}").exists()


def test_the_zombie_of_another_parent_tells_its_status(state: LabState) -> None:
    """As when init has not yet reaped a node whose `lab up` has exited: /proc/<pid>/stat field 52."""
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    time.sleep(30)\n    os._exit(0)\n"
        "print(pid, flush=True)\n"
        "os.kill(pid, 9)\n"
        "time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        grandchild = int(parent.stdout.readline())
        wait_for_zombie(grandchild)
        ticks = process_start_ticks(grandchild)
        assert zombie_wait_status(grandchild, ticks) == signal.SIGKILL
        assert zombie_wait_status(grandchild, (ticks or 0) + 1) is None  # another process's identity
        entry = JournalEntry("process", name="s1", pid=grandchild, start_ticks=ticks)
        assert observe_exit(state, "s1", entry).cause == "killed by SIGKILL"
    finally:
        parent.kill()
        parent.wait(5)
