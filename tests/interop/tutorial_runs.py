"""Running a shipped tutorial in a test: a lab of the run's own, the report written, nothing left up.

The interop tests of each tutorial (test_tutorial_NN.py) run it once per module and assert the facts
it teaches from the figures it measured; `tcpdump_lines` reads a pcap back with tcpdump itself.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pyroute2 import netns

from lab.experiments.results import Check
from lab.tutorials import find_tutorial
from lab.tutorials.report import write_report
from lab.tutorials.runner import TutorialResult, run_tutorial
from tests.interop.conftest import unique_lab_name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PREFIX_LENGTH = 7  # the runner adds a random suffix of 5: lab names have at most 12 characters


def namespaces_of(lab: str) -> list[str]:
    return sorted(space for space in netns.listnetns() if space.startswith(f"{lab}-"))


def run_shipped(name: str | int, out: Path, prefix: str = "tq") -> TutorialResult:
    """Run tutorial `name` (number or slug) to the end with its report, in `out`; the lab is named
    `<prefix><hex>` and a suffix of the run's, and gone when this returns."""
    lab_prefix = unique_lab_name(prefix)[:PREFIX_LENGTH]
    result = run_tutorial(find_tutorial(str(name)), out=out, name_prefix=lab_prefix, finish=write_report)
    left = namespaces_of(result.lab)
    assert not left, f"namespaces left behind by lab {result.lab}: {left}"
    return result


def checks(result: TutorialResult) -> list[Check]:
    return [check for step in result.steps for check in step.checks]


def failed_checks(result: TutorialResult) -> list[str]:
    return [f"{step.title}: {check.name}: {check.detail}" for step in result.steps for check in step.checks
            if not check.passed]


def failed(result: TutorialResult) -> str:
    return "; ".join(failed_checks(result))


def tcpdump_lines(path: Path) -> list[str]:
    """What `tcpdump -r` prints for the file (it must read it without an error)."""
    done = subprocess.run(["tcpdump", "-r", str(path), "-n", "-tt"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, f"tcpdump -r {path}: {done.stderr.strip()[-300:]}"
    return done.stdout.splitlines()


def holds_handshake(lines: list[str]) -> bool:
    """A SYN, a SYN-ACK and an ACK, in that order, as tcpdump prints their flags."""
    order: list[str] = []
    for line in lines:
        for flags in ("Flags [S],", "Flags [S.],", "Flags [.],"):
            if flags in line and (not order or order[-1] != flags):
                order.append(flags)
    return "Flags [S], Flags [S.], Flags [.]," in " ".join(order)
