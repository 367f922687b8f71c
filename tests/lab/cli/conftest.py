"""What the CLI tests share: a typer runner whose labs' state lives in the test's own folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stack.node.paths import STATE_ROOT_ENV


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv(STATE_ROOT_ENV, str(tmp_path / "state"))
    return CliRunner()
