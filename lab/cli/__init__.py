"""The `lab` command line: every command registered here, on one typer app.

The commands live in `lab.cli.labs` (up, down, status, list, exec, graph, doctor), `lab.cli.stack`
(`lab stack`), `lab.cli.impair` (`lab impair`), `lab.cli.run` (`lab run`) and `lab.cli.bench`
(`lab bench`, `lab bench up`); each module only defines them, and this one puts them on the app, in
the order `lab --help` lists them.
Exit codes and error lines follow `lab.cli.output`; the `lab` command itself is `lab.__main__.main`,
which handles Ctrl-C and SIGTERM around this app.
"""

from __future__ import annotations

import typer

from lab.cli import impair, labs, run, stack
from lab.cli.bench import bench_app

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Network-namespace lab: kernel nodes and pystack nodes wired by netlink.")
app.add_typer(bench_app, name="bench")
app.command()(labs.up)
app.command()(labs.down)
app.command()(labs.status)
app.command("list")(labs.list_command)
app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            epilog=labs.EXEC_EXAMPLE)(labs.exec_command)
app.command()(labs.graph)
app.command("doctor")(labs.doctor_command)
app.command("impair")(impair.impair_command)
app.command("stack")(stack.stack_command)
app.command("run")(run.run_command)
