"""`make demo` (`python -m lab.cli.demo`): the demo of `lab.tools.demo`, rendered on the terminal."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.rule import Rule

from lab.cli.tables import plan_table, print_result
from lab.experiments.results import ExperimentResult
from lab.kernel.capabilities import Check
from lab.tools.demo import run_demo
from lab.topology.plan import LabPlan

STATUS_COLOURS = {"ok": "green", "warning": "yellow", "missing": "red"}


class TerminalReport:
    """The demo's steps as rules, its findings as coloured lines and tables."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def step(self, title: str) -> None:
        self.console.print(Rule(title))

    def checks(self, checks: list[Check]) -> None:
        for check in checks:
            colour = STATUS_COLOURS[check.status]
            self.console.print(f"  [{colour}]{check.status:8}[/] {check.name:13} {check.detail}")

    def plan(self, plan: LabPlan) -> None:
        self.console.print(plan_table(plan))

    def result(self, result: ExperimentResult) -> None:
        print_result(result)

    def line(self, text: str, *, problem: bool = False) -> None:
        self.console.print(f"[red]{escape(text)}[/]" if problem else text)


def main() -> int:
    return run_demo(TerminalReport(Console(highlight=False, emoji=False)))


if __name__ == "__main__":
    sys.exit(main())
