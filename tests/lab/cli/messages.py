"""How CLI tests read an error: the CLI says what is wrong in one line."""

from __future__ import annotations


def one_line(text: str) -> str:
    """The only line of an error message (the CLI says what is wrong in one line)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]
