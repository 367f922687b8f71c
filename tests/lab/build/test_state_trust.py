"""The state root is read without trusting it: no link followed, no foreign directory adopted, only root's
files used (`lab.build.statefiles`, `lab.build.state`). Each test has a state root of its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.build.journal import Journal, JournalEntry
from lab.build.state import LabState
from lab.cli import app
from stack.node.paths import STATE_ROOT_ENV


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state_root = tmp_path / "state"
    state_root.mkdir(mode=0o755)
    monkeypatch.setenv(STATE_ROOT_ENV, str(state_root))
    return state_root


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# --- through the CLI: what a user sees ------------------------------------------------------------

def test_a_symlinked_lock_file_is_refused_and_its_target_never_created(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "created-by-root"
    (root / "ra1.lock").symlink_to(target)
    for command in (["down", "ra1"], ["up", "pair", "--name", "ra1"]):
        code, _, stderr = invoke(*command)
        assert not os.path.lexists(target)
        assert code == 2
        lock = root / "ra1.lock"
        assert one_line(stderr) == f"lab: state file {lock} is a symbolic link; refusing to follow it"
    assert not (root / "ra1").exists()


def test_a_foreign_directory_under_the_state_root_is_refused_not_adopted(root: Path) -> None:
    foreign = root / "ra2"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    for command in (["down", "ra2"], ["up", "pair", "--name", "ra2"], ["status", "ra2"]):
        code, _, stderr = invoke(*command)
        assert (foreign / "thesis.tex").exists(), command
        assert code == 2, command
        assert "is not the state directory of lab ra2" in one_line(stderr)
    assert (foreign / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in root.iterdir()) == ["ra2"]  # no lock file left either


def test_a_journal_without_the_labs_header_is_not_a_lab(root: Path) -> None:
    """A directory holding a journal that `lab up` did not start (no header naming the lab)."""
    forged = root / "ra3"
    forged.mkdir()
    Journal(forged / "journal.jsonl").record([JournalEntry("file", name="/etc/hostname")])
    code, _, stderr = invoke("down", "ra3")
    assert code == 2 and "is not the state directory of lab ra3" in one_line(stderr)
    assert (forged / "journal.jsonl").exists()
    other = root / "ra4"
    other.mkdir()
    Journal(other / "journal.jsonl").record([JournalEntry("lab", name="ra5")])  # another lab's header
    code, _, stderr = invoke("down", "ra4")
    assert code == 2 and "is not the state directory of lab ra4" in one_line(stderr)


def test_a_symlinked_state_directory_is_refused(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    LabState.for_lab("ra6", tmp_path / "other-root").create()
    (tmp_path / "other-root" / "ra6").rename(elsewhere)
    (root / "ra6").symlink_to(elsewhere)
    code, _, stderr = invoke("down", "ra6")
    assert code == 2
    link = root / "ra6"
    assert one_line(stderr) == f"lab: state directory {link} is a symbolic link; refusing to follow it"
    assert (elsewhere / "journal.jsonl").exists()


def test_state_files_others_may_write_are_refused(root: Path) -> None:
    state = LabState.for_lab("ra7", root)
    state.create()
    os.chmod(state.journal_path, 0o666)
    code, _, stderr = invoke("down", "ra7")
    assert code == 2
    assert one_line(stderr) == (f"lab: state file {state.journal_path} is writable by group or others "
                                "(mode 0666); refusing to use it")
    assert state.journal_path.exists()
    os.chmod(state.journal_path, 0o644)
    os.chmod(state.directory, 0o777)
    code, _, stderr = invoke("status", "ra7")
    assert code == 2 and "is writable by group or others (mode 0777)" in one_line(stderr)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_state_files_owned_by_another_user_are_refused(root: Path) -> None:
    state = LabState.for_lab("ra8", root)
    state.create()
    os.chown(state.journal_path, 4321, 4321)
    code, _, stderr = invoke("down", "ra8")
    assert code == 2
    assert one_line(stderr) == (f"lab: state file {state.journal_path} is owned by uid 4321, not by root; "
                                "refusing to use it")


def test_a_state_root_others_may_write_is_refused(root: Path) -> None:
    os.chmod(root, 0o1777)
    code, _, stderr = invoke("down", "ra9")
    assert code == 2 and one_line(stderr) == (f"lab: state root {root} is writable by group or others "
                                              "(mode 1777); refusing to use it")
    assert list(root.iterdir()) == []


# --- the pieces --------------------------------------------------------------------------------

def test_create_makes_the_directory_with_its_header_in_one_step(root: Path) -> None:
    from lab.build.journal import journal_owner, read_journal
    from lab.build.state import ForeignState, list_labs

    state = LabState.for_lab("ra1", root)
    assert not state.owned()
    state.create()
    assert state.owned() and journal_owner(state.journal_path) == "ra1"
    assert read_journal(state.journal_path).entries == (JournalEntry("lab", name="ra1"),)
    assert sorted(p.name for p in root.iterdir()) == ["ra1"]  # the hidden building directory is gone
    with pytest.raises(ForeignState):
        state.create()  # never over an existing directory
    (root / "notalab").mkdir()
    assert list_labs(root) == ["ra1"]


def test_an_unfinished_create_is_removed_by_the_next_one(root: Path) -> None:
    from lab.build.state import UNFINISHED_PREFIX

    leftover = root / f"{UNFINISHED_PREFIX}ra1.dead"  # what SIGKILL during `create` leaves
    leftover.mkdir()
    LabState.for_lab("ra1", root).create()
    assert not leftover.exists()


def test_a_planted_link_at_a_state_file_is_replaced_never_written_through(root: Path, tmp_path: Path) -> None:
    state = LabState.for_lab("ra1", root)
    state.create()
    target = tmp_path / "target"
    target.write_text("untouched")
    state.plan_path.symlink_to(target)
    from lab.build.statefiles import UnsafeStateFile

    with pytest.raises(UnsafeStateFile, match="symbolic link"):
        state.read_plan()
    state.write_plan({"name": "ra1"}, "abc", "up")
    assert target.read_text() == "untouched"
    assert not state.plan_path.is_symlink()
    assert state.read_plan() == {"digest": "abc", "phase": "up", "netem": True, "plan": {"name": "ra1"}}


def test_remove_inside_stays_inside_and_walks_no_link(tmp_path: Path) -> None:
    from lab.build.statefiles import remove_inside

    home = tmp_path / "lab"
    (home / "nodes").mkdir(parents=True)
    (home / "nodes" / "x").write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("")
    (home / "escape").symlink_to(outside)
    (home / "nodes" / "link").symlink_to(outside / "victim")
    assert not remove_inside(home, str(outside / "victim"))
    assert not remove_inside(home, f"{home}/../outside/victim")
    assert not remove_inside(home, str(home / "escape" / "victim"))
    assert not remove_inside(home, "nodes/x")  # relative
    assert not remove_inside(home, str(home / "nodes"))  # a directory
    assert (outside / "victim").exists()
    assert remove_inside(home, str(home / "nodes" / "link"))  # the link itself goes, not its target
    assert (outside / "victim").exists() and not (home / "nodes" / "link").exists()
    assert remove_inside(home, str(home / "nodes" / "x")) and not (home / "nodes" / "x").exists()
    assert not remove_inside(home, str(home / "nodes" / "x"))  # already gone
