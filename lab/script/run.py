"""Playing one script against the sides asked for, each from a clean start.

The script is read and its calls checked before any side is built, so a script that cannot be played
builds nothing. Each side gets its own fresh world: the stack a new Host, Linux a new namespace that is
removed afterwards whatever happens.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from lab.script.calls import check_script
from lab.script.model import Script
from lab.script.player import Player, SideResult
from lab.script.syntax import parse_file

SIDES = ("linux", "stack")
DEFAULT_TOLERANCE = 0.040  # seconds; packetdrill's is 4 ms on an idle machine, ours is shared


def load(path: str | Path) -> Script:
    script = parse_file(path)
    check_script(script)
    return script


def open_side(name: str, prefix: str) -> AbstractContextManager:  # type: ignore[type-arg]
    if name == "stack":
        from lab.script.stack import StackSide
        return StackSide()
    from lab.script.linux import LinuxSide
    return LinuxSide(prefix)


def play(script: Script, sides: tuple[str, ...], *, relax: frozenset[str] = frozenset(),
         tolerance: float = DEFAULT_TOLERANCE, prefix: str = "sr") -> list[SideResult]:
    results = []
    for name in sides:
        with open_side(name, prefix) as side:
            results.append(Player(script, side, relax=relax, tolerance=tolerance).run())
    return results
