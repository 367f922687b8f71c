"""`lab run EXPERIMENT`: a lab up (or a running one), an interop experiment in it, its table, the lab down."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lab import experiments
from lab.build.state import LabError
from lab.cli.output import (
    DEFAULT_TOPOLOGY,
    JsonFlag,
    errors_to_exit_codes,
    out,
    print_json,
    topology_path,
)
from lab.cli.progress import progress_line
from lab.cli.tables import print_result
from lab.experiments.base import Experiment, parse_option_pairs
from lab.experiments.running import run_experiment
from lab.topology import load_topology


def run_command(
    experiment: Annotated[str | None, typer.Argument(help="handshake, bulk, refused, timeout, close, ... "
                                                          "(--list: all of them)")] = None,
    topology: Annotated[str | None, typer.Option("--topology", help="Topology (default: the experiment's).")]
    = None,
    lab: Annotated[str | None, typer.Option("--lab", help="Run in this lab, which is up (left up).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of the lab brought up.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="KEY=VALUE (repeatable).")] = None,
    list_options: Annotated[bool, typer.Option("--options", help="List the experiment's options.")] = False,
    list_experiments: Annotated[bool, typer.Option("--list", help="List the experiments, one line each.")]
    = False,
    as_json: JsonFlag = False,
) -> None:
    """Run an interop experiment: bring a lab up (or use --lab), check, print, bring it down."""
    with errors_to_exit_codes():  # Ctrl-C and SIGTERM unwind through run_experiment's cleanup
        if list_experiments:
            if experiment is not None:
                raise LabError("--list lists every experiment: give no experiment name with it")
            _print_experiments(as_json)
            return
        if experiment is None:
            raise LabError("give an experiment to run (`lab run --list` lists them)")
        chosen = experiments.get(experiment)
        if list_options:
            _print_options(chosen, as_json)
            return
        raw = parse_option_pairs(option or [])
        chosen.parse_options(raw)  # bad options fail before any lab is built
        if lab is not None and (topology or name):
            raise LabError("--lab uses a running lab: give no --topology or --name with it")
        plan = None if lab else load_topology(topology_path(topology or chosen.default_topology or
                                                             DEFAULT_TOPOLOGY), name=name)
        with progress_line(f"{chosen.name}: starting", as_json=as_json) as report:
            result = run_experiment(chosen, raw, plan=plan, lab_name=lab,
                                    progress=lambda step: report(f"{chosen.name}: {step}"))
    if as_json:
        print_json(result.to_json())
    else:
        print_result(result)
    raise typer.Exit(0 if result.passed else 1)


def _print_options(experiment: Experiment, as_json: bool) -> None:
    if as_json:
        print_json({key: {"default": default, "help": text}
                    for key, (default, text) in experiment.options.items()})
        return
    table = Table("option", "default", "meaning", title=f"{experiment.name}: {experiment.summary}",
                  title_justify="left")
    for key, (default, text) in experiment.options.items():
        table.add_row(key, str(default), text)
    out.print(table)


def _print_experiments(as_json: bool) -> None:
    """One line per experiment: its name and summary (with --json, its default topology too)."""
    listed = [experiments.get(name) for name in experiments.available()]
    if as_json:
        print_json([{"name": e.name, "summary": e.summary, "topology": e.default_topology or DEFAULT_TOPOLOGY}
                    for e in listed])
        return
    width = max((len(e.name) for e in listed), default=0)
    for e in listed:
        out.print(f"{e.name:<{width}}  {e.summary}", markup=False, soft_wrap=True)
