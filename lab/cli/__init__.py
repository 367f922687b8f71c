"""The `lab` command line: every command registered here, on one typer app.

The commands live in `lab.cli.labs` (up, down, status, list, exec, graph, doctor), `lab.cli.stack`
(`lab stack`), `lab.cli.impair` (`lab impair`), `lab.cli.run` (`lab run`), `lab.cli.tutorial`
(`lab tutorial`) and `lab.cli.bench` (`lab bench`, `lab bench up`); each module only defines them,
and this one puts them on the app, in the order `lab --help` lists them.
Exit codes and error lines follow `lab.cli.output`; the `lab` command itself is `lab.__main__.main`,
which handles Ctrl-C and SIGTERM around this app.
"""

from __future__ import annotations

import typer

from lab.cli import capture, impair, labs, run, stack
from lab.cli.bench import bench_app
from lab.cli.tutorial import tutorial_app

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Network-namespace lab: kernel nodes and pystack nodes wired by netlink.")
app.add_typer(tutorial_app, name="tutorial")
app.add_typer(bench_app, name="bench")
app.command(epilog="Example: lab up topologies/router.yaml --name r1")(labs.up)
app.command(epilog="Example: lab down pair")(labs.down)
app.command(epilog="Example: lab status pair --json")(labs.status)
app.command("list", epilog="Example: lab list --json")(labs.list_command)
app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            epilog="Example: lab exec pair h1 -- ping -c1 10.0.0.2")(labs.exec_command)
app.command(epilog="Example: lab graph pair -o pair.svg")(labs.graph)
app.command("doctor", epilog="Example: lab doctor --json")(labs.doctor_command)
app.command("impair", epilog="Example: lab impair wan h1:eth1 --delay 20ms --loss 1%")(impair.impair_command)
app.command("stack", epilog="Example: lab stack pair s1 ss --state established --port 80")(
    stack.stack_command)
app.command("run", epilog="Example: lab run handshake --json")(run.run_command)
app.command("capture", epilog="Example: lab capture pair h1 eth0 -w h1.pcap --duration 5")(
    capture.capture_command)
