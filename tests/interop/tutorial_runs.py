"""Running a shipped tutorial in a test: a lab of the run's own, the report written, nothing left up.

The interop tests of each tutorial (test_tutorial_NN.py) run it once per module and assert the facts
it teaches from the figures it measured; `tcpdump_lines` reads a pcap back with tcpdump itself.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lab.experiments.results import Check
from lab.tutorials import find_tutorial
from lab.tutorials.report import write_report
from lab.tutorials.runner import TutorialResult, run_tutorial
from tests.interop.conftest import unique_lab_name

NETNS_DIR = Path("/run/netns")


def namespaces_of(lab: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(name for name in os.listdir(NETNS_DIR) if name.startswith(f"{lab}-"))


def run_shipped(number: int, out: Path) -> TutorialResult:
    """Run tutorial `number` to the end (lab name `tc` + random hex + the run's suffix)."""
    prefix = unique_lab_name("tc")[:7]
    result = run_tutorial(find_tutorial(str(number)), out=out, name_prefix=prefix, finish=write_report)
    assert namespaces_of(result.lab) == [], f"lab {result.lab} left namespaces behind"
    return result


def checks(result: TutorialResult) -> list[Check]:
    return [check for step in result.steps for check in step.checks]


def failed(result: TutorialResult) -> str:
    return "; ".join(f"{c.name}: {c.detail}" for c in checks(result) if not c.passed)


def tcpdump_lines(path: Path) -> list[str]:
    """What `tcpdump -r` prints for the file (it must read it without an error)."""
    done = subprocess.run(["tcpdump", "-r", str(path), "-n", "-tt"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, f"tcpdump -r {path}: {done.stderr.strip()[-300:]}"
    return done.stdout.splitlines()


def holds_handshake(lines: list[str]) -> bool:
    """A SYN, a SYN-ACK and an ACK, in that order, as tcpdump prints their flags."""
    order = []
    for line in lines:
        for flags in ("Flags [S],", "Flags [S.],", "Flags [.],"):
            if flags in line and (not order or order[-1] != flags):
                order.append(flags)
    text = " ".join(order)
    return "Flags [S], Flags [S.], Flags [.]," in text
