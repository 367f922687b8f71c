"""What every `lab` command shares: the consoles, the one-line error, JSON output, the exit-code contract.

Exit codes: 0 ok, 1 a check failed (drift in `status`, a failed experiment or benchmark run), 2 bad
input or a missing capability (bad topology, unknown lab or node, no sch_netem for a kernel link),
130 on Ctrl-C and 143 on SIGTERM (`lab.build.signals`, handled by the entry point `lab.__main__`).
`lab exec` passes its command's exit code through. Errors are one line on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from lab.build.state import LabError
from lab.kernel.errors import NetlinkOpError
from lab.topology import TopologyError, find_topology

DEFAULT_TOPOLOGY = "pair"
# Piped output (tests, `| less`) gets wide tables instead of rich's 80-column default.
PIPE_WIDTH = 160
# No emoji codes: a MAC address such as 7e:cd:44:... must print as itself, not with ":cd:" drawn as a disc.
out = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True, highlight=False, emoji=False, width=None if sys.stderr.isatty() else PIPE_WIDTH)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"lab: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def errors_to_exit_codes() -> Iterator[None]:
    """Turn the lab's own errors into one stderr line and the contract's exit code."""
    try:
        yield
    except TopologyError as error:
        fail(str(error), 2)
    except LabError as error:
        fail(str(error), error.exit_code)
    except NetlinkOpError as error:
        fail(f"kernel refused: {error}", 2)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def topology_path(topology: str | None) -> Path:
    """The file of a topology given by path or shipped name (the pair topology when none is given)."""
    return find_topology(topology or DEFAULT_TOPOLOGY)
