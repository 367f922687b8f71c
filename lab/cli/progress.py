"""A progress line on stderr for the long waits (`lab run`, `lab bench`, a big `lab up`).

Only a terminal that can redraw a line gets it (not TERM=dumb), and never a `--json` run: piped
stderr and JSON output stay free of it. The line is a spinner, what is going on now and the time
since the command started; rich draws it on a thread of its own (so it moves while the command
blocks) and erases it when the block ends, whether it ended well, with an error or by Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from lab.cli.output import err


class Report(Protocol):
    """Says what the command is doing now: a short sentence, with steps done and total when known."""

    def __call__(self, step: str, done: int | None = None, total: int | None = None) -> None: ...


def describe(step: str, done: int | None = None, total: int | None = None) -> str:
    return f"{step} ({done}/{total})" if done is not None and total else step


def _ignore(step: str, done: int | None = None, total: int | None = None) -> None:
    return None


@contextmanager
def progress_line(first_step: str, *, as_json: bool = False, console: Console | None = None,
                  ) -> Iterator[Report]:
    """A `Report` for the block, drawn on `console` (stderr) when it is a terminal and not --json."""
    console = console if console is not None else err
    if as_json or not console.is_interactive:  # a pipe, a file, or a terminal that cannot redraw
        yield _ignore
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as line:
        task = line.add_task(first_step, total=None)

        def report(step: str, done: int | None = None, total: int | None = None) -> None:
            line.update(task, description=describe(step, done, total))

        yield report
