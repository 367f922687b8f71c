"""Finding and loading tutorials: the shipped ones, a folder of one's own, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.tutorials import TutorialError, find_tutorial, shipped_tutorials
from lab.tutorials.model import load_tutorial

GOOD_TEXT = """---
number: 7
title: my own
summary: a seventh tutorial
seed: "000: socket() has no address"
kernel: [inet_bind]
topology: pair
---
Some text.
"""
GOOD_STEPS = """from lab.tutorials import Step


def look(session):
    session.say("looked")


STEPS = [Step("look", look)]
"""


def folder(tmp_path: Path, name: str = "07-my-own", text: str = GOOD_TEXT,
           steps: str | None = GOOD_STEPS) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "tutorial.md").write_text(text)
    if steps is not None:
        (path / "steps.py").write_text(steps)
    return path


def test_the_shipped_tutorials_include_socket_accept_and_close() -> None:
    found = {t.number: t for t in shipped_tutorials()}
    assert {1, 4, 6} <= set(found)
    assert found[1].slug == "socket-bind-listen" and found[4].slug == "accept-new-socket"
    assert found[6].slug == "close"
    for tutorial in found.values():
        assert tutorial.seed and tutorial.kernel, f"tutorial {tutorial.number} names its seed and kernel"


@pytest.mark.parametrize("name", ["1", "socket-bind-listen", "4", "accept-new-socket", "6", "close"])
def test_a_shipped_tutorial_is_found_by_number_or_slug_with_its_steps(name: str) -> None:
    tutorial = find_tutorial(name)
    assert tutorial.steps and all(step.title for step in tutorial.steps)


def test_a_folder_of_ones_own_loads(tmp_path: Path) -> None:
    tutorial = find_tutorial(str(folder(tmp_path)))
    assert (tutorial.number, tutorial.slug, tutorial.title) == (7, "my-own", "my own")
    assert [step.title for step in tutorial.steps] == ["look"]
    assert tutorial.text == "Some text.\n"


def test_an_unknown_tutorial_names_the_known_ones() -> None:
    with pytest.raises(TutorialError, match=r"no tutorial '99' \(tutorials: 1 socket-bind-listen"):
        find_tutorial("99")


@pytest.mark.parametrize(("text", "steps", "message"), [
    ("number: 7\n", GOOD_STEPS, r"tutorial.md:1: expected a front matter"),
    ("---\nnumber: 7\n", GOOD_STEPS, r"no closing line"),
    (GOOD_TEXT.replace("topology: pair", "topology: pair\ncolour: red"), GOOD_STEPS,
     r"unknown front matter field 'colour'"),
    (GOOD_TEXT.replace("number: 7", "number: 8"), GOOD_STEPS, r"number 8 differs from the folder's 7"),
    (GOOD_TEXT.replace("title: my own", "title: 3"), GOOD_STEPS, r"field title: expected str, got int"),
    (GOOD_TEXT.replace("kernel: [inet_bind]", "kernel: inet_bind"), GOOD_STEPS, r"field kernel"),
    ("---\n[1, 2\n---\n", GOOD_STEPS, r"front matter is not YAML"),
    (GOOD_TEXT, "STEPS = []\n", r"steps.py: expected STEPS, a non-empty list"),
    (GOOD_TEXT, "def broken(:\n", r"steps.py:1: syntax error"),
    (GOOD_TEXT, None, r"steps.py: missing"),
])
def test_a_bad_folder_is_refused_in_one_line(tmp_path: Path, text: str, steps: str | None,
                                              message: str) -> None:
    path = folder(tmp_path, text=text, steps=steps)
    with pytest.raises(TutorialError, match=message) as raised:
        load_tutorial(path)
    assert "\n" not in str(raised.value)


def test_a_badly_named_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TutorialError, match="NN-slug"):
        load_tutorial(folder(tmp_path, name="My Tutorial"))


def test_an_oversized_text_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = folder(tmp_path, text=GOOD_TEXT + "x" * 300_000)
    with pytest.raises(TutorialError, match="over 262144 bytes"):
        load_tutorial(path)
