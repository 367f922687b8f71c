"""`lab script FILE.pkt`: a packetdrill script played against Linux, the stack, or both."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lab.cli.output import errors_to_exit_codes, fail
from lab.script.expect import parse_relaxations
from lab.script.report import json_lines, text_lines
from lab.script.run import DEFAULT_TOLERANCE, SIDES, load, play
from lab.script.syntax import ScriptError

MAX_TOLERANCE_MS = 10_000
EXAMPLE = "Example: lab script tests/scripts/handshake_passive.pkt --relax window"


def script_command(
    files: Annotated[list[Path], typer.Argument(help="Script file(s) in packetdrill syntax (.pkt).")],
    against: Annotated[str, typer.Option("--against", help="linux, stack or both.")] = "both",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Timing tolerance in ms.")]
    = DEFAULT_TOLERANCE * 1000,
    relax: Annotated[str | None, typer.Option("--relax", help="window, options, ack-timing, psh, "
                                                            "segmentation (comma-separated).")] = None,
) -> None:
    """Play packetdrill scripts: their system calls on real kernel sockets in a throw-away namespace
    (Linux) and on the Python stack on a virtual clock (stack), their segments injected and matched.
    Exit 0 when every side passed, 1 on a mismatch, 2 on a script that cannot be read (file:line).
    """
    sides = SIDES if against == "both" else (against,)
    if against not in (*SIDES, "both"):
        fail(f"--against: {against!r} is not one of linux, stack, both")
    if not 0 <= tolerance <= MAX_TOLERANCE_MS:
        fail(f"--tolerance: {tolerance:g} ms is outside 0..{MAX_TOLERANCE_MS}")
    try:
        relaxations = parse_relaxations(relax)
    except ValueError as error:
        fail(str(error))
    scripts = []
    for file in files:
        try:
            scripts.append(load(file))
        except ScriptError as error:
            fail(str(error))
    passed = True
    with errors_to_exit_codes():
        for script in scripts:
            results = play(script, sides, relax=relaxations, tolerance=tolerance / 1000)
            lines = json_lines(results) if as_json else text_lines(results)
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            passed = passed and all(result.passed for result in results)
    raise typer.Exit(0 if passed else 1)
