"""Running a shipped tutorial once per test module, in a lab named by this project's tests, and checking
afterwards that the lab left nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyroute2 import netns

from lab.tutorials import find_tutorial
from lab.tutorials import runner as tutorial_runner
from lab.tutorials.runner import TutorialResult, run_tutorial
from tests.interop.conftest import unique_lab_name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_shipped(name: str, out: Path, prefix: str = "tq") -> TutorialResult:
    """Run tutorial `name` with its output in `out`; the lab is `<prefix><hex>`, gone when this returns."""
    patch = pytest.MonkeyPatch()
    patch.setattr(tutorial_runner, "tutorial_lab_name", lambda tutorial: unique_lab_name(prefix))
    try:
        result = run_tutorial(find_tutorial(name), out=out)
    finally:
        patch.undo()
    left = [space for space in netns.listnetns() if space.startswith(f"{result.lab}-")]
    assert not left, f"namespaces left behind by lab {result.lab}: {left}"
    return result


def failed_checks(result: TutorialResult) -> list[str]:
    return [f"{step.title}: {check.name}: {check.detail}" for step in result.steps for check in step.checks
            if not check.passed]
