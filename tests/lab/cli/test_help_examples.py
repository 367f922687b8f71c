"""Every command's `--help`, sub-apps' included, ends with a line `Example: lab ...`."""

from __future__ import annotations

from typing import Any

import typer
import typer.main
from typer.testing import CliRunner

from lab.cli import app


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command of the app as the words that call it: ("up",), ("bench",), ("bench", "up"), ..."""
    paths = [path] if path else []
    for name, sub in sorted(getattr(command, "commands", {}).items()):  # a group's (typer's own click)
        paths += command_paths(sub, (*path, name))
    return paths


def test_the_walk_finds_the_sub_apps() -> None:
    paths = command_paths(typer.main.get_command(app))
    assert ("up",) in paths and ("bench",) in paths and ("bench", "up") in paths


def test_every_help_ends_with_an_example() -> None:
    runner = CliRunner()
    missing = []
    for path in command_paths(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], terminal_width=100)
        lines = [line for line in result.output.splitlines() if line.strip()]
        if result.exit_code != 0 or not lines or not lines[-1].strip().startswith("Example: lab "):
            missing.append(" ".join(path))
    assert not missing, f"--help without a last line `Example: lab ...`: {', '.join(missing)}"
