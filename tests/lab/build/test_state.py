"""The state directory and the per-lab lock (no root)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from lab.build.state import (
    PHASE_BUILDING,
    PHASE_UP,
    LabError,
    LabLocked,
    LabState,
    check_lab_name,
    lab_lock,
    list_labs,
    remove_lock_file,
    state_root,
)
from stack.node.paths import STATE_ROOT_ENV


def test_state_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(STATE_ROOT_ENV, raising=False)
    assert state_root() == Path("/run/nslab")
    monkeypatch.setenv(STATE_ROOT_ENV, str(tmp_path))
    assert state_root() == tmp_path
    assert LabState.for_lab("pair").directory == tmp_path / "pair"


@pytest.mark.parametrize("bad", ["", "Pair", "-x", "a b", "a/b", "x" * 33, "../etc"])
def test_bad_lab_names_are_refused(bad: str) -> None:
    with pytest.raises(LabError, match="lab name"):
        check_lab_name(bad)


def test_plan_record_round_trip_and_torn_plan(tmp_path: Path) -> None:
    state = LabState.for_lab("pair", tmp_path)
    assert state.read_plan() is None
    state.create()
    state.write_plan({"name": "pair"}, "abc", PHASE_BUILDING)
    assert state.read_plan() == {"digest": "abc", "phase": PHASE_BUILDING, "netem": True,
                                 "plan": {"name": "pair"}}
    state.write_plan({"name": "pair"}, "abc", PHASE_UP)
    assert state.read_plan()["phase"] == PHASE_UP  # type: ignore[index]
    state.plan_path.write_text('{"digest": "ab')
    assert state.read_plan() is None
    assert list_labs(tmp_path) == ["pair"]
    state.remove()
    assert list_labs(tmp_path) == []


def test_second_holder_of_one_lab_waits_or_is_told_busy(tmp_path: Path) -> None:
    state = LabState.for_lab("one", tmp_path)
    with lab_lock(state), pytest.raises(LabLocked, match="busy"), lab_lock(state, wait=False):
        pass


def test_different_labs_never_wait_for_each_other(tmp_path: Path) -> None:
    with lab_lock(LabState.for_lab("one", tmp_path)), lab_lock(LabState.for_lab("two", tmp_path), wait=False):
        pass


def _hold_lock(root: str, started, release) -> None:  # type: ignore[no-untyped-def]
    with lab_lock(LabState.for_lab("one", Path(root))):
        started.set()
        release.wait(10)


def test_lock_excludes_another_process(tmp_path: Path) -> None:
    started, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(str(tmp_path), started, release))
    holder.start()
    try:
        assert started.wait(10)
        with pytest.raises(LabLocked), lab_lock(LabState.for_lab("one", tmp_path), wait=False):
            pass
    finally:
        release.set()
        holder.join(10)
    with lab_lock(LabState.for_lab("one", tmp_path), wait=False):
        pass


def test_waiter_survives_the_holder_removing_the_lock_file(tmp_path: Path) -> None:
    """`down` unlinks the lock file while holding it; a waiter must not end up on the dead inode."""
    state = LabState.for_lab("one", tmp_path)
    order: list[str] = []
    acquired = threading.Event()

    def waiter() -> None:
        with lab_lock(state):
            order.append("waiter")
            acquired.set()
            # while the waiter holds it, a third party must be excluded on the fresh file
            with pytest.raises(LabLocked), lab_lock(state, wait=False):
                pass

    with lab_lock(state):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.05)
        order.append("holder")
        remove_lock_file(state)
    assert acquired.wait(5)
    thread.join(5)
    assert order == ["holder", "waiter"]
