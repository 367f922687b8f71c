"""The one error a topology file can raise, and how its message is spelled.

Every complaint about a topology is one line a person can act on without reading a traceback:
``<file>:<line>: <field.path>: <what was expected>, got <value>``. The line is where the offending
key or value sits in the YAML, so an editor can jump straight to it. A file that is not a topology
at all (not YAML, not a mapping, a device, too large) says so (`NOT_A_TOPOLOGY`) and where, with a
column for YAML syntax, and never quotes the file: it may be anything (``lab up /etc/shadow``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

PathPart = str | int
FieldPath = tuple[PathPart, ...]

_MAX_VALUE_CHARS = 60
NOT_A_TOPOLOGY = "not a YAML topology"
_PLAIN_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class TopologyError(ValueError):
    """A topology that cannot be turned into a plan; ``str()`` is one line."""

    def __init__(
        self, source: str, line: int | None, field: str, message: str, *, column: int | None = None
    ) -> None:
        self.source = source
        self.line = line
        self.column = column
        self.field = field
        self.message = message
        self.more: tuple[str, ...] = ()  # further errors found in the same pass, one line each
        super().__init__(self._one_line())

    def _one_line(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        if self.line is not None and self.column is not None:
            where += f":{self.column}"
        parts = [where, self.field, self.message] if self.field else [where, self.message]
        return ": ".join(parts).replace("\n", " ")


def format_path(path: Sequence[PathPart]) -> str:
    """``('links', 0, 'impair', 'h1->s1')`` -> ``links[0].impair["h1->s1"]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and set(part) <= _PLAIN_KEY_CHARS:
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def format_value(value: object) -> str:
    """A short, YAML-flavoured rendering of what the file said (``got ...``)."""
    text = _render(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


def _render(value: object) -> str:
    if hasattr(value, "model_dump"):  # a schema model: show it as the mapping the file held
        value = value.model_dump(exclude_none=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_render_key(k)}: {_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return str(value)


def _render_key(key: object) -> str:
    return key if isinstance(key, str) else _render(key)
