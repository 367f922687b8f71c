"""`lab tutorial`: list the tutorial labs, show one's text, run one in a lab of its own.

`run` brings the tutorial's lab up under a name unique to the run, prints what each step does and
why as it goes, writes the artifacts (an HTML report, ladder diagrams, both ends' pcaps, plots) into
`--out`, takes the lab down, and exits 0 when every check passed, 1 otherwise, 2 on bad input and
130 on Ctrl-C (after the lab is down).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lab.build.state import LabError, check_lab_name
from lab.cli.output import JsonFlag, errors_to_exit_codes, out, print_json
from lab.tutorials import find_tutorial, shipped_tutorials
from lab.tutorials.report import write_report
from lab.tutorials.runner import TutorialResult, run_tutorial

tutorial_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                           help="Tutorial labs: the socket API and the kernel behind it, one lab per topic.",
                           epilog="Example: lab tutorial run 1")

NameArgument = Annotated[str, typer.Argument(
    help="A number (1), a slug (socket-bind-listen) or a folder NN-slug/.")]


@tutorial_app.command("list", epilog="Example: lab tutorial list --json")
def list_command(as_json: JsonFlag = False) -> None:
    """The shipped tutorials, one line each: number, slug, title."""
    with errors_to_exit_codes():
        tutorials = shipped_tutorials()
    if as_json:
        print_json([t.to_json() for t in tutorials])
        return
    table = Table("#", "slug", "title", "what it shows", title="tutorials (lab tutorial run N)",
                  title_justify="left")
    for tutorial in tutorials:
        table.add_row(str(tutorial.number), tutorial.slug, tutorial.title, tutorial.summary)
    out.print(table)


@tutorial_app.command("show", epilog="Example: lab tutorial show 4")
def show_command(name: NameArgument) -> None:
    """Print a tutorial's text: what it teaches, the seed passage, the kernel functions it mirrors."""
    with errors_to_exit_codes():
        tutorial = find_tutorial(name)
    out.print(f"Tutorial {tutorial.number}: {tutorial.title}", markup=False, style="bold")
    out.print(f"seed: {tutorial.seed}", markup=False)
    out.print(f"kernel: {', '.join(tutorial.kernel)}", markup=False)
    out.print(f"run it: lab tutorial run {tutorial.number}\n", markup=False)
    out.print(tutorial.text, markup=False, highlight=False)


@tutorial_app.command("run", epilog="Example: lab tutorial run 1 --out /tmp/lab1")
def run_command(
    name: NameArgument,
    as_json: JsonFlag = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the report, ladders, pcaps "
                                                 "(default ./tutorial-NN-slug).")] = None,
    step: Annotated[bool, typer.Option("--step", help="Wait for Enter before each step (for a class).")]
    = False,
    prefix: Annotated[str | None, typer.Option("--name", help="Start of the lab's name (a random suffix "
                                               "follows; default tN).")] = None,
) -> None:
    """Run a tutorial: its lab up, each step with what happens and why, checks, report, lab down.

    Exit 0 when every check passed, 1 otherwise, 2 on bad input, 130 on Ctrl-C (the lab is down).
    """
    with errors_to_exit_codes():
        if prefix is not None:
            check_lab_name(prefix)
            check_lab_name(f"{prefix}xxxxx")  # with the run's suffix
        tutorial = find_tutorial(name)
        if step and as_json:
            raise LabError("--step waits for Enter on a terminal; it cannot go with --json")
        # The step titles and what each step says are the run's progress: no spinner line is drawn
        # over them (with --json nothing but the JSON is printed).
        if as_json:
            echo, gate = _silent, _quiet
        else:
            echo, gate = _echo, (_wait_for_enter if step else _announce)
        result = run_tutorial(tutorial, out=out_dir, echo=echo, name_prefix=prefix, gate=gate,
                              finish=write_report)
    if as_json:
        print_json(result.to_json())
    else:
        _print_summary(result)
    raise typer.Exit(0 if result.passed else 1)


def _silent(line: str) -> None:
    return None


def _echo(line: str) -> None:
    out.print(f"  {line}" if "\n" not in line else line, markup=False, highlight=False, soft_wrap=True)


def _quiet(index: int, title: str) -> None:
    return None


def _announce(index: int, title: str) -> None:
    out.print(f"\nStep {index}: {title}", markup=False, style="bold")


def _wait_for_enter(index: int, title: str) -> None:
    _announce(index, title)
    sys.stderr.write("  (Enter to run this step) ")
    sys.stderr.flush()
    sys.stdin.readline()


def _print_summary(result: TutorialResult) -> None:
    checks = [check for step in result.steps for check in step.checks]
    passed = sum(check.passed for check in checks)
    out.print(f"\n{'PASSED' if result.passed else 'FAILED'}: {passed}/{len(checks)} checks "
              f"(lab {result.lab}, now down)", markup=False,
              style="bold green" if result.passed else "bold red")
    for check in checks:
        if not check.passed:
            out.print(f"  FAIL {check.name}: {check.detail}", markup=False)
    data = result.to_json()["artifacts"]
    out.print(f"report: {data['report']}", markup=False)
    for kind in ("ladders", "pcap", "plots"):
        if data[kind]:
            out.print(f"{kind}: {' '.join(data[kind])}", markup=False)
