"""`lab impair`: change or show a running lab's link impairments (a thin layer over `lab.tools.impair`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lab.cli.output import JsonFlag, errors_to_exit_codes, fail, out, print_json
from lab.tools import impair as impairments
from lab.topology.plan import Impairment


def impair_command(
    name: Annotated[str, typer.Argument(help="Lab name.")],
    endpoint: Annotated[str | None, typer.Argument(help="NODE:IFACE whose link to change.")] = None,
    delay: Annotated[str | None, typer.Option("--delay", help="e.g. 20ms")] = None,
    jitter: Annotated[str | None, typer.Option("--jitter", help="e.g. 5ms (needs --delay)")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="e.g. 1%")] = None,
    duplicate: Annotated[str | None, typer.Option("--duplicate", help="e.g. 1%")] = None,
    reorder: Annotated[str | None, typer.Option("--reorder", help="e.g. 5% (needs --delay)")] = None,
    corrupt: Annotated[str | None, typer.Option("--corrupt", help="e.g. 0.1%")] = None,
    rate: Annotated[str | None, typer.Option("--rate", help="e.g. 100mbit")] = None,
    direction: Annotated[str, typer.Option("--direction", help="out (leaving NODE:IFACE), in, or both.")
                         ] = "both",
    clear: Annotated[bool, typer.Option("--clear", help="Make the direction(s) clean.")] = False,
    show: Annotated[bool, typer.Option("--show", help="Show every link direction's impairment.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Change (or --show) the impairments of a running lab's links, per direction, while it runs.

    lab impair LAB NODE:IFACE --delay 20ms --loss 1% [--direction out|in|both];
    lab impair LAB NODE:IFACE --clear; lab impair LAB --show.
    A change replaces the whole impairment of the direction; values and ranges are a topology file's.
    """
    values = {"delay": delay, "jitter": jitter, "loss": loss, "duplicate": duplicate, "reorder": reorder,
              "corrupt": corrupt, "rate": rate}
    given = [f"--{key}" for key, value in values.items() if value is not None]
    with errors_to_exit_codes():
        if show:
            if endpoint or given or clear:
                fail("--show takes only the lab name (and --json)")
            rows = impairments.show(name)
            if as_json:
                print_json(rows)
                return
            table = Table("link", "direction", "by", "impairment", "offered", "lost", "delivered",
                          title=f"lab {name}: impairments")
            for row in rows:
                counters = row["counters"] or {}
                table.add_row(str(row["link"]), row["direction"], row["by"] or row["mechanism"] or "-",
                              row["description"] if not row["error"] else f"? ({row['error']})",
                              *(str(counters.get(key, counters.get(key.title(), ""))) for key in
                                ("offered", "lost", "delivered")))
            out.print(table)
            return
        if endpoint is None:
            fail("give NODE:IFACE (and --delay/--loss/... or --clear), or --show")
        if clear and given:
            fail(f"--clear makes the direction clean; it takes no values (got {', '.join(given)})")
        if not clear and not given:
            fail("give at least one of --delay, --jitter, --loss, --duplicate, --reorder, --corrupt, "
                 "--rate, or --clear")
        impairment = Impairment() if clear else impairments.parse_impairment(values)
        applied = impairments.change(name, endpoint, impairment, direction)
    if as_json:
        print_json(applied)
        return
    for row in applied:
        out.print(f"lab {name}: link {row['link']} {row['direction']}: {row['description']} "
                  f"(by {row['mechanism']})")
