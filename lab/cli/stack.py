"""`lab stack NAME NODE VERB [ARG]`: a thin client of a pystack node's control socket.

Only a pystack node's stack process has a control socket. Asked about a kernel node (whose sockets
are the Linux kernel's), or a pystack node that runs no stack process (``process: false``), the
command says so and what to use instead, rather than failing to reach a socket that never existed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lab.build.control import StackClient, StackCommandFailed, control_socket_path
from lab.build.state import LabError, LabState, node_namespace
from lab.cli.output import JsonFlag, err, errors_to_exit_codes, fail, out, print_json
from lab.cli.tables import flatten, milliseconds
from lab.tools.http_get import fetch_to_file, fetch_to_stream, parse_url, summary
from stack.ranges import BACKLOG, BYTE_COUNT, TIMEOUT_SECONDS, Range

STACK_VERBS = ("ss", "stats", "tables", "listen", "connect", "close", "hello", "trace", "get")
APPS = ("echo", "discard", "source", "http", "none")


def stack_command(
    name: Annotated[str, typer.Argument(help="Lab name.")],
    node: Annotated[str, typer.Argument(help="A pystack node of the lab.")],
    verb: Annotated[str, typer.Argument(help="ss | stats | tables | listen PORT | connect ADDR:PORT | "
                                             "close PORT | hello | trace | get URL")],
    argument: Annotated[str | None, typer.Argument(help="PORT (listen, close), ADDR:PORT (connect) or "
                                                        "http://ADDR[:PORT]/PATH (get).")]
    = None,
    app_name: Annotated[str, typer.Option("--app", help="listen: echo, discard, source, http, none.")]
    = "echo",
    backlog: Annotated[int, typer.Option("--backlog", help="listen: the accept queue's size.")] = 128,
    send: Annotated[int, typer.Option("--send", help="connect: bytes to send, then SHUT_WR.")] = 0,
    recv: Annotated[bool, typer.Option("--recv", help="connect: read until the peer closes.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="connect: seconds for the exchange; get: the "
                                                         "longest the transfer may stall.")] = 10.0,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="get: write the body to this file "
                                                                       "instead of stdout.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask a pystack node's stack: connections, counters, socket tables; open/close listeners; connect;
    get (an HTTP GET by the stack: the body to stdout or -o FILE, the receiver's figures on stderr;
    exit 1 when the status is 400 or more)."""
    with errors_to_exit_codes():
        if verb not in STACK_VERBS:
            raise LabError(f"stack verb {verb!r}: expected one of {', '.join(STACK_VERBS)}")
        if verb == "get":
            _get(name, node, argument, output, timeout, as_json)
            return
        for option, value, limits in (("--backlog", backlog, BACKLOG), ("--send", send, BYTE_COUNT),
                                      ("--timeout", timeout, TIMEOUT_SECONDS)):
            _check_range(option, value, limits)
        namespace = node_namespace(name, node)  # one-line error for an unknown lab or node
        _require_stack_process(name, node, namespace)
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


def _require_stack_process(name: str, node: str, namespace: str) -> None:
    """A LabError saying what to use instead when ``node`` has no stack process to ask."""
    record = LabState.for_lab(name).read_plan() or {"plan": {"nodes": []}}
    nodes = {entry["name"]: entry for entry in record["plan"]["nodes"]}
    entry = nodes.get(node, {})
    stacks = [n for n, e in nodes.items() if e.get("kind") == "pystack" and e.get("process", True)]
    others = f"; its pystack nodes are {', '.join(stacks)}" if stacks else ""
    if entry.get("kind") == "kernel":
        raise LabError(
            f"{name}/{node} is a kernel node: its sockets are the Linux kernel's and it has no control "
            f"socket; see them with `lab exec {name} {node} -- ss -tan` (or `ip netns exec {namespace} "
            f"ss -tan`){others}")
    if entry.get("kind") == "pystack" and not entry.get("process", True):
        raise LabError(
            f"{name}/{node} runs no stack process (process: false in its topology), so nothing answers "
            f"`lab stack` there; the script that attached to it owns its stack{others}")


def _check_range(option: str, value: float, limits: Range) -> None:
    """The node refuses the same values (`stack.ranges`); saying so here makes it bad input, exit 2."""
    if value not in limits:
        shown = value if isinstance(value, int) else f"{value:g}"
        raise LabError(f"stack {option}: expected {limits.describe()}, got {shown}")


def _get(name: str, node: str, argument: str | None, output: Path | None, timeout: float,
         as_json: bool) -> None:
    url = parse_url(argument or "")
    if timeout <= 0:
        raise LabError(f"stack get --timeout: expected a positive number of seconds, got {timeout:g}")
    if as_json and output is None:
        raise LabError("stack get --json: give -o FILE (standard output carries the JSON)")
    _require_stack_process(name, node, node_namespace(name, node))  # one line for a bad lab or node
    try:
        with StackClient(control_socket_path(name, node)) as client:
            try:
                if output is not None:
                    answer = fetch_to_file(client, url, output, timeout)
                else:
                    answer = fetch_to_stream(client, url, sys.stdout.buffer, timeout)
            except StackCommandFailed as failure:
                fail(f"{name}/{node}: {failure}", 1)
    except BrokenPipeError:  # stdout closed early (`| head`): the node ended the transfer
        fail("get: standard output closed before the body ended", 1)
    if as_json:
        print_json(answer)
    else:
        (out if output is not None else err).print(summary(url, answer), markup=False, soft_wrap=True)
    if any(response["status"] >= 400 for response in answer.get("responses", [])):
        raise typer.Exit(1)


def _port(verb: str, argument: str | None) -> int:
    if argument is None or not argument.isdigit() or not 0 < int(argument) < 65536:
        raise LabError(f"stack {verb}: expected a port from 1 to 65535, got {argument!r}")
    return int(argument)


def _stack_request(client: StackClient, verb: str, argument: str | None, app_name: str, backlog: int,
                   send: int, recv: bool, timeout: float) -> dict[str, Any]:
    if verb == "ss":
        return client.ss()
    if verb == "stats":
        return client.stats()
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
    return client.connect(address, _port(verb, port), send=send, recv="eof" if recv else 0,
                          shutdown=send > 0 or recv, timeout=timeout)


def _print_stack_answer(verb: str, answer: dict[str, Any]) -> None:
    if verb == "ss":
        table = Table("state", "local", "remote", "send-q", "recv-q", "cwnd", "srtt ms", "rto ms", "retrans",
                      "mss", title="connections")
        for c in answer["connections"]:
            table.add_row(c["state"], c["local"], c["remote"], str(c.get("send_queue", "")),
                          str(c.get("recv_queue", "")), str(c.get("cwnd", "")),
                          milliseconds(c.get("srtt")), milliseconds(c.get("rto")),
                          str(c.get("retransmissions", "")), str(c.get("mss", "")))
        out.print(table if answer["connections"] else "no connections")
    elif verb == "stats":
        table = Table("counter", "value", title="counters")
        for key, value in flatten(answer["counters"]):
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
