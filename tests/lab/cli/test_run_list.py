"""`lab run --list`: one line per experiment; the README documents every one of them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lab import experiments
from lab.cli import app

README = Path(__file__).resolve().parents[3] / "README.md"


def test_list_is_one_line_per_experiment() -> None:
    result = CliRunner().invoke(app, ["run", "--list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == experiments.available()
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # each with its summary


def test_list_as_json() -> None:
    result = CliRunner().invoke(app, ["run", "--list", "--json"])
    listed = json.loads(result.stdout)
    assert [entry["name"] for entry in listed] == experiments.available()
    assert all(entry["summary"] and entry["topology"] for entry in listed)


def test_no_experiment_and_no_list_is_bad_input() -> None:
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 2 and "lab run --list" in result.stderr
    result = CliRunner().invoke(app, ["run", "bulk", "--list"])
    assert result.exit_code == 2


def test_the_readme_documents_every_experiment() -> None:
    text = README.read_text()
    missing = [name for name in experiments.available() if f"| `{name}` |" not in text]
    assert not missing, f"README.md has no row for: {', '.join(missing)}"
