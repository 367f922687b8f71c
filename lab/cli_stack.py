"""`lab stack`, `lab run` and `lab bench` (the stack bench): the CLI side of a running stack.

`lab stack NAME NODE VERB [ARG]` is a thin client of the node's control socket (`lab.stackctl`);
`lab run` drives an experiment (`lab.experiments`); the bench lives in `lab.bench`. Rendering
sits here so the modules below stay free of terminal concerns.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from lab.cli import (
    DEFAULT_TOPOLOGY,
    JsonFlag,
    _topology_path,
    app,
    bench_app,
    errors_to_exit_codes,
    fail,
    out,
    print_json,
    sigterm_rolls_back,
)
from lab.experiments.base import Experiment, ExperimentResult
from lab.stackctl import StackClient, StackCommandFailed, control_socket_path

STACK_VERBS = ("ss", "stats", "tables", "listen", "connect", "close", "hello", "trace")
APPS = ("echo", "discard", "source", "http", "none")


@app.command("stack")
def stack_command(
    name: Annotated[str, typer.Argument(help="Lab name.")],
    node: Annotated[str, typer.Argument(help="A pystack node of the lab.")],
    verb: Annotated[str, typer.Argument(help="ss | stats | tables | listen PORT | connect ADDR:PORT | "
                                             "close PORT | hello | trace")],
    argument: Annotated[str | None, typer.Argument(help="PORT (listen, close) or ADDR:PORT (connect).")]
    = None,
    app_name: Annotated[str, typer.Option("--app", help="listen: echo, discard, source, http, none.")]
    = "echo",
    backlog: Annotated[int, typer.Option("--backlog", help="listen: the accept queue's size.")] = 128,
    send: Annotated[int, typer.Option("--send", help="connect: bytes to send, then SHUT_WR.")] = 0,
    recv: Annotated[bool, typer.Option("--recv", help="connect: read until the peer closes.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="connect: seconds for the exchange.")] = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Ask a pystack node's stack: connections, counters, socket tables; open/close listeners; connect."""
    from lab.cli import node_namespace
    from lab.state import LabError

    with errors_to_exit_codes():
        if verb not in STACK_VERBS:
            raise LabError(f"stack verb {verb!r}: expected one of {', '.join(STACK_VERBS)}")
        node_namespace(name, node)  # one-line error for an unknown lab or node
        with StackClient(control_socket_path(name, node)) as client:
            try:
                answer = _stack_request(client, verb, argument, app_name, backlog, send, recv, timeout)
            except StackCommandFailed as failure:
                fail(f"{name}/{node}: {failure}", 1)
    if as_json:
        print_json(answer)
    else:
        _print_stack_answer(verb, answer)
    if verb == "connect" and answer.get("error"):
        raise typer.Exit(1)


def _port(verb: str, argument: str | None) -> int:
    from lab.state import LabError

    if argument is None or not argument.isdigit() or not 0 < int(argument) < 65536:
        raise LabError(f"stack {verb}: expected a port from 1 to 65535, got {argument!r}")
    return int(argument)


def _stack_request(client: StackClient, verb: str, argument: str | None, app_name: str, backlog: int,
                   send: int, recv: bool, timeout: float) -> dict[str, Any]:
    from lab.state import LabError

    if verb == "ss":
        return {"connections": client.ss()}
    if verb == "stats":
        return {"counters": client.stats()}
    if verb == "tables":
        return client.tables()
    if verb == "hello":
        return client.hello()
    if verb == "trace":
        return client.trace(0)
    if verb == "listen":
        if app_name not in APPS:
            raise LabError(f"stack listen --app {app_name!r}: expected one of {', '.join(APPS)}")
        return client.listen(_port(verb, argument), app_name, backlog=backlog, accept=app_name != "none")
    if verb == "close":
        return client.close_listener(_port(verb, argument))
    address, sep, port = (argument or "").rpartition(":")
    if not sep or not address:
        raise LabError(f"stack connect: expected ADDR:PORT like 10.0.0.1:7, got {argument!r}")
    if send < 0:
        raise LabError(f"stack connect --send: expected 0 or more bytes, got {send}")
    return client.connect(address, _port(verb, port), send=send, recv="eof" if recv else 0,
                          shutdown=send > 0 or recv, timeout=timeout)


def _print_stack_answer(verb: str, answer: dict[str, Any]) -> None:
    if verb == "ss":
        table = Table("state", "local", "remote", "send-q", "recv-q", "cwnd", "srtt ms", "rto ms", "retrans",
                      "mss", title="connections")
        for c in answer["connections"]:
            table.add_row(c["state"], c["local"], c["remote"], str(c.get("send_queue", "")),
                          str(c.get("recv_queue", "")), str(c.get("cwnd", "")), _ms(c.get("srtt")),
                          _ms(c.get("rto")), str(c.get("retransmissions", "")), str(c.get("mss", "")))
        out.print(table if answer["connections"] else "no connections")
    elif verb == "stats":
        table = Table("counter", "value", title="counters")
        for key, value in _flatten(answer["counters"]):
            table.add_row(key, str(value))
        out.print(table)
    elif verb == "tables":
        _print_tables(answer)
    elif verb == "connect":
        if answer.get("error"):
            out.print(f"connect failed: {answer['error']} {answer.get('message', '')}".rstrip())
            return
        out.print(f"{answer['local']} -> {answer['remote']}: connected in "
                  f"{answer['connect_seconds'] * 1000:.2f} ms, sent {answer['sent']} B, received "
                  f"{answer['received']} B in {answer['seconds']:.3f} s "
                  f"({answer.get('goodput_bps', 0) / 1e6:.1f} Mbit/s)")
        if answer.get("received"):
            out.print(f"received SHA-256 {answer['received_sha256']}")
    elif verb == "trace":
        for event in answer.get("events", []):
            fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("seq", "time", "name"))
            out.print(f"{event['time']:.6f} {event['name']} {fields}")
    else:
        for key, value in answer.items():
            out.print(f"{key}: {value}")


def _print_tables(answer: dict[str, Any]) -> None:
    """The three tables of the seeds: bound, listening (SYN queue and accept queue), established."""
    listening = Table("local", "backlog", "SYN queue", "accept queue", "app", title="listening")
    for row in answer.get("listening", []):
        listening.add_row(str(row["local"]), str(row["backlog"]), str(row["syn_queue"]),
                          str(row["accept_queue"]), str(row.get("app", "")))
    out.print(listening)
    for title in ("established", "bound"):
        rows = answer.get(title, [])
        table = Table("entry", title=title)
        for row in rows:
            table.add_row(row if isinstance(row, str) else " ".join(f"{k}={v}" for k, v in row.items()))
        out.print(table if rows else f"{title}: none")


def _ms(seconds: Any) -> str:
    return f"{seconds * 1000:.2f}" if isinstance(seconds, int | float) else ""


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


# --- lab run ---------------------------------------------------------------------------------

@app.command("run")
def run_command(
    experiment: Annotated[str, typer.Argument(help="handshake, bulk, refused, timeout, close, ...")],
    topology: Annotated[str | None, typer.Option("--topology", help="Topology (default: the experiment's).")]
    = None,
    lab: Annotated[str | None, typer.Option("--lab", help="Run in this lab, which is up (left up).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of the lab brought up.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="KEY=VALUE (repeatable).")] = None,
    list_options: Annotated[bool, typer.Option("--options", help="List the experiment's options.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run an interop experiment: bring a lab up (or use --lab), check, print, bring it down."""
    from lab import experiments
    from lab.experiments.base import parse_option_pairs, run_experiment
    from lab.state import LabError
    from lab.topology import load_topology

    with errors_to_exit_codes(), sigterm_rolls_back():  # SIGTERM still takes the lab down
        chosen = experiments.get(experiment)
        if list_options:
            _print_options(chosen, as_json)
            return
        raw = parse_option_pairs(option or [])
        chosen.parse_options(raw)  # bad options fail before any lab is built
        if lab is not None and (topology or name):
            raise LabError("--lab uses a running lab: give no --topology or --name with it")
        plan = None if lab else load_topology(_topology_path(topology or chosen.default_topology or
                                                             DEFAULT_TOPOLOGY), name=name)
        result = run_experiment(chosen, raw, plan=plan, lab_name=lab)
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


def result_table(result: ExperimentResult) -> Table:
    table = Table("check", "result", "detail", title=f"{result.experiment}: "
                  + ("passed" if result.passed else "FAILED"), title_justify="left")
    for check in result.checks:
        table.add_row(check.name, "[green]pass[/]" if check.passed else "[red]FAIL[/]", check.detail)
    return table


METRICS_TABLE_DEPTH = 2  # deeper values (snapshots, TCP_INFO dumps) are for --json


def metrics_table(result: ExperimentResult) -> Table:
    table = Table("metric", "value", title=f"{result.experiment} metrics", title_justify="left")
    hidden = 0
    for key, value in _flatten(result.metrics):
        if key.count(".") >= METRICS_TABLE_DEPTH:
            hidden += 1
            continue
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    if hidden:
        table.caption = f"{hidden} more values (connection snapshots, TCP_INFO) with --json"
    return table


def print_result(result: ExperimentResult) -> None:
    out.print(result_table(result))
    if result.metrics:
        out.print(metrics_table(result))


# --- lab bench (the stack against the kernel) ------------------------------------------------

@bench_app.callback(invoke_without_command=True)
def bench_stack(
    ctx: typer.Context,
    as_json: JsonFlag = False,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each measurement.")] = 3.0,
    name: Annotated[str | None, typer.Option("--name", help="Prefix of the labs it brings up.")] = None,
) -> None:
    """Goodput and accept rate of the stack next to the kernel (`lab bench up`: lab up/down times)."""
    if ctx.invoked_subcommand is not None:
        return
    from lab.bench import BENCH_TARGETS, run_bench
    from lab.state import check_lab_name

    if not 0.2 <= seconds <= 60:
        fail(f"--seconds: expected 0.2 to 60, got {seconds:g}")
    with errors_to_exit_codes(), sigterm_rolls_back():
        if name is not None:
            check_lab_name(name)
            check_lab_name(f"{name}ok")  # the longest name it derives: 30 characters at most
        figures = run_bench(seconds=seconds, name=name)
    if as_json:
        print_json(figures)
        return
    table = Table("measurement", "value", "target", title="stack vs kernel (pair topology)")
    for key, value in figures.items():
        if isinstance(value, dict):
            continue
        target = BENCH_TARGETS.get(key)
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value),
                      "" if target is None else f">= {target:g}")
    out.print(table)
