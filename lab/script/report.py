"""What a run says: one line per side, then the first difference between the sides.

Text for a reader (``linux  PASS  tests/scripts/x.pkt  9 events  0.012 s``, or FAIL with file:line and
what was expected and seen), or one JSON object per line for a program. A pass that relied on a
relaxation says which; a call, option or shell line a side skipped is listed, never passed over quietly.
"""

from __future__ import annotations

import json

from lab.script.player import SideResult


def side_line(result: SideResult) -> str:
    verdict = "PASS" if result.passed else "FAIL"
    text = f"{result.side:<6} {verdict}  {result.script}  {result.events} events  {result.seconds:.3f} s"
    if result.relaxed:
        text += f"  relaxed: {', '.join(sorted(result.relaxed))}"
    if result.difference:
        text += f"\n       {result.difference}"
    for note in result.notes:
        text += f"\n       note: {note}"
    return text


def difference(results: list[SideResult]) -> str | None:
    """The first difference between two sides' runs (None with one side, or when they agree)."""
    if len(results) != 2:
        return None
    first, second = results
    if first.passed and second.passed:
        return None
    if first.passed != second.passed:
        passed, failed = (first, second) if first.passed else (second, first)
        return f"differ: {passed.side} passes, {failed.side} fails at line {failed.line}"
    if first.line != second.line:
        return f"differ: both fail, {first.side} at line {first.line}, {second.side} at line {second.line}"
    return f"both fail at line {first.line}"


def json_lines(results: list[SideResult]) -> list[str]:
    lines = [json.dumps(result.to_json(), sort_keys=True) for result in results]
    diff = difference(results)
    if diff is not None:
        lines.append(json.dumps({"difference": diff}, sort_keys=True))
    return lines


def text_lines(results: list[SideResult]) -> list[str]:
    lines = [side_line(result) for result in results]
    diff = difference(results)
    if diff is not None:
        lines.append(diff)
    return lines
