"""The seventh tutorial docs/tutorials.md shows how to write runs as written, from a folder of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.tutorials import find_tutorial
from lab.tutorials.runner import run_tutorial
from tests.interop.conftest import unique_lab_name
from tests.interop.tutorial_runs import failed, namespaces_of

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tutorials.md"


def block(text: str, language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", text, re.DOTALL)
    assert match, f"docs/tutorials.md has no {language} block"
    return match.group(1)


def test_the_docs_front_matter_and_steps_make_a_tutorial(tmp_path: Path) -> None:
    text = DOCS.read_text()
    folder = tmp_path / "07-my-topic"
    folder.mkdir()
    front = re.sub(r"\s+# .*", "", block(text, "markdown"))  # the comments explain the fields
    (folder / "tutorial.md").write_text(front)
    (folder / "steps.py").write_text(block(text, "python"))
    tutorial = find_tutorial(str(folder))
    assert (tutorial.number, tutorial.slug) == (7, "my-topic")
    assert [step.title for step in tutorial.steps] == ["a first look"]


@pytest.mark.root
def test_the_docs_example_runs_and_passes(tmp_path: Path) -> None:
    test_the_docs_front_matter_and_steps_make_a_tutorial(tmp_path)
    result = run_tutorial(find_tutorial(str(tmp_path / "07-my-topic")), out=tmp_path / "out",
                          name_prefix=unique_lab_name("tc")[:7])
    assert result.passed, failed(result)
    assert len(result.artifacts["pcap"]) == 2 and result.artifacts["ladder"]
    assert namespaces_of(result.lab) == []
