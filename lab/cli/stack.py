"""`lab stack NAME NODE VERB [ARG]`: a thin client of a pystack node's control socket.

Only a pystack node's stack process has a control socket. Asked about a kernel node (whose sockets
are the Linux kernel's), or a pystack node that runs no stack process (``process: false``), the
command says so and what to use instead, rather than failing to reach a socket that never existed.
"""

from __future__ import annotations

import ipaddress
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
from lab.tools.iperf3_report import iperf3_text
from stack.node.views import SS_STATE_WORDS, ss_state_name
from stack.ranges import (
    BACKLOG,
    BYTE_COUNT,
    IPERF3_SECONDS,
    IPERF3_STREAMS,
    PORT,
    SS_LIMIT,
    TIMEOUT_SECONDS,
    Range,
)

STACK_VERBS = ("ss", "stats", "tables", "listen", "connect", "close", "hello", "trace", "get")
APPS = ("echo", "discard", "source", "http", "iperf3", "none")


def stack_command(
    name: Annotated[str, typer.Argument(help="Lab name.")],
    node: Annotated[str, typer.Argument(help="A pystack node of the lab.")],
    verb: Annotated[str, typer.Argument(help="ss | stats | tables | listen PORT | connect ADDR:PORT | "
                                             "close PORT | hello | trace | get URL")],
    argument: Annotated[str | None, typer.Argument(help="PORT (listen, close), ADDR:PORT (connect) or "
                                                        "http://ADDR[:PORT]/PATH (get).")]
    = None,
    app_name: Annotated[str, typer.Option("--app", help="listen: echo, discard, source, http, iperf3, none; "
                                                         "connect: iperf3 (a test against iperf3 -s).")]
    = "echo",
    backlog: Annotated[int, typer.Option("--backlog", help="listen: the accept queue's size.")] = 128,
    send: Annotated[int, typer.Option("--send", help="connect: bytes to send, then SHUT_WR.")] = 0,
    recv: Annotated[bool, typer.Option("--recv", help="connect: read until the peer closes.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="connect: seconds for the exchange; get: the "
                                                         "longest the transfer may stall.")] = 10.0,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="get: write the body to this file "
                                                                       "instead of stdout.")] = None,
    seconds: Annotated[int, typer.Option("--seconds", help="connect --app iperf3: the test's length "
                                                           "(iperf3 -t).")] = 10,
    reverse: Annotated[bool, typer.Option("--reverse", help="connect --app iperf3: the server sends "
                                                            "(iperf3 -R).")] = False,
    parallel: Annotated[int, typer.Option("--parallel", help="connect --app iperf3: streams (iperf3 -P).")]
    = 1,
    state: Annotated[str | None, typer.Option("--state", help="ss: only this state (established, "
                                                             "syn-recv, time-wait, ..., connected).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="ss: either end's port.")] = None,
    sport: Annotated[int | None, typer.Option("--sport", help="ss: the stack's own (local) port.")] = None,
    dport: Annotated[int | None, typer.Option("--dport", help="ss: the peer's (remote) port.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="ss: either end's IPv4 address.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="ss, tables: at most this many connections shown "
                                                       "(then a line says how many more).")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Ask a pystack node's stack: connections (filtered like ss, on the node), counters, the three socket
    tables; open/close listeners; connect (the goodput counts until the peer acknowledged the last byte;
    with --app iperf3, an iperf3 test against `iperf3 -s`, printed as iperf3 prints it); get (an HTTP GET
    by the stack: the body to stdout or -o FILE, the receiver's figures on stderr; exit 1 when the status
    is 400 or more)."""
    with errors_to_exit_codes():
        if verb not in STACK_VERBS:
            raise LabError(f"stack verb {verb!r}: expected one of {', '.join(STACK_VERBS)}")
        if verb == "get":
            _get(name, node, argument, output, timeout, as_json)
            return
        for option, value, limits in (("--backlog", backlog, BACKLOG), ("--send", send, BYTE_COUNT),
                                      ("--timeout", timeout, TIMEOUT_SECONDS), ("--limit", limit, SS_LIMIT),
                                      ("--seconds", seconds, IPERF3_SECONDS),
                                      ("--parallel", parallel, IPERF3_STREAMS)):
            _check_range(option, value, limits)
        iperf3 = verb == "connect" and app_name == "iperf3"
        if verb == "connect" and app_name not in ("echo", "iperf3"):
            raise LabError(f"stack connect --app {app_name!r}: the client apps are iperf3 (or none: "
                           "leave --app out)")
        filters = _ss_filters(state, port, sport, dport, address)
        if filters and verb != "ss":
            raise LabError(f"stack {verb}: --state, --port, --sport, --dport and --address filter `ss` only")
        namespace = node_namespace(name, node)  # one-line error for an unknown lab or node
        _require_stack_process(name, node, namespace)
        with StackClient(control_socket_path(name, node)) as client:
            try:
                if iperf3:
                    peer_address, peer_port = _address_port(argument)
                    answer = client.iperf3(peer_address, peer_port, seconds=seconds, parallel=parallel,
                                           reverse=reverse, timeout=timeout)
                else:
                    answer = _stack_request(client, verb, argument, app_name, backlog, send, recv, timeout,
                                            {**filters, "limit": limit})
            except StackCommandFailed as failure:
                fail(f"{name}/{node}: {failure}", 1)
    if as_json:
        print_json(answer)
    elif iperf3:
        out.print(iperf3_text(answer), markup=False, soft_wrap=True)
    else:
        _print_stack_answer(verb, answer, limit)
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


def _ss_filters(state: str | None, port: int | None, sport: int | None, dport: int | None,
               address: str | None) -> dict[str, Any]:
    """The filters given, checked here as the node would (so a bad one is bad input, exit 2)."""
    if state is not None and ss_state_name(state) is None:
        raise LabError(f"stack ss --state: expected one of {', '.join(w.lower() for w in SS_STATE_WORDS)}, "
                       f"got {state!r}")
    for option, value in (("--port", port), ("--sport", sport), ("--dport", dport)):
        if value is not None:
            _check_range(option, value, PORT)
    if address is not None:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise LabError(f"stack ss --address: expected an IPv4 address like 10.0.0.1, got {address!r}") \
                from None
    given = {"state": state, "port": port, "sport": sport, "dport": dport, "address": address}
    return {key: value for key, value in given.items() if value is not None}


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
                   send: int, recv: bool, timeout: float, filters: dict[str, Any]) -> dict[str, Any]:
    if verb == "ss":
        return client.ss(**filters)
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
    address, port = _address_port(argument)
    return client.connect(address, port, send=send, recv="eof" if recv else 0,
                          shutdown=send > 0 or recv, timeout=timeout)


def _address_port(argument: str | None) -> tuple[str, int]:
    address, sep, port = (argument or "").rpartition(":")
    if not sep or not address:
        raise LabError(f"stack connect: expected ADDR:PORT like 10.0.0.1:7, got {argument!r}")
    return address, _port("connect", port)


def _print_stack_answer(verb: str, answer: dict[str, Any], limit: int) -> None:
    if verb == "ss":
        connections = answer["connections"]
        if connections:
            out.print(_connections_table(connections, "connections"))
        else:
            total = answer.get("total", 0)
            out.print(f"no connections match (of {total})" if total else "no connections")
        _more_line(answer.get("matched", len(connections)), len(connections), answer.get("total"))
    elif verb == "stats":
        table = Table("counter", "value", title="counters")
        for key, value in flatten(answer["counters"]):
            table.add_row(key, str(value))
        out.print(table)
    elif verb == "tables":
        _print_tables(answer, limit)
    elif verb == "connect":
        if answer.get("error"):
            out.print(f"connect failed: {answer['error']} {answer.get('message', '')}".rstrip())
            return
        out.print(f"{answer['local']} -> {answer['remote']}: connected in "
                  f"{answer['connect_seconds'] * 1000:.2f} ms, sent {answer['sent']} B, received "
                  f"{answer['received']} B in {answer['seconds']:.3f} s "
                  f"({answer.get('goodput_bps', 0) / 1e6:.1f} Mbit/s until the last ACK; "
                  f"{answer.get('buffered_goodput_bps', 0) / 1e6:.1f} Mbit/s into the send buffer)")
        if answer.get("received"):
            out.print(f"received SHA-256 {answer['received_sha256']}")
    elif verb == "trace":
        for event in answer.get("events", []):
            fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("seq", "time", "name"))
            out.print(f"{event['time']:.6f} {event['name']} {fields}")
    else:
        for key, value in answer.items():
            out.print(f"{key}: {value}")


def _connections_table(connections: list[dict[str, Any]], title: str) -> Table:
    """One row per connection; "rtt ms" is srtt/rttvar, as `ss -ti` prints the kernel's `rtt:`."""
    table = Table("state", "local", "remote", "send-q", "recv-q", "cwnd", "rtt ms", "rto ms", "retrans",
                  "mss", title=title)
    for c in connections:
        timed = c.get("srtt") is not None
        rtt = f"{milliseconds(c.get('srtt'))}/{milliseconds(c.get('rttvar'))}" if timed else ""
        table.add_row(c["state"], c["local"], c["remote"], str(c.get("send_queue", "")),
                      str(c.get("recv_queue", "")), str(c.get("cwnd", "")), rtt,
                      milliseconds(c.get("rto")), str(c.get("retransmissions", "")), str(c.get("mss", "")))
    return table


def _more_line(matched: int, shown: int, total: int | None = None) -> None:
    """The line that says what a bounded view left out."""
    if matched > shown:
        of = f" (of {total})" if total is not None else ""
        out.print(f"{matched - shown} more matched{of}: narrow with --state, --port, --address, "
                  "or raise --limit")


def _print_tables(answer: dict[str, Any], limit: int) -> None:
    """The three tables of the seeds, in the order a socket meets them: bound (bind), listening (listen:
    the SYN queue of incomplete connections, the accept queue of completed ones, and the backlog that
    caps it), established (one row per 4-tuple)."""
    bound = Table("local address", "port", "state", title="bound")
    for row in answer.get("bound", [])[:limit]:
        ip, _, port = str(row["local"]).rpartition(":")
        bound.add_row(ip, port, str(row.get("state", "")))
    out.print(bound if answer.get("bound") else "bound: none")
    _more_line(len(answer.get("bound", [])), min(limit, len(answer.get("bound", []))))
    listening = Table("local", "SYN queue", "accept queue", "backlog", "app", title="listening")
    for row in answer.get("listening", [])[:limit]:
        listening.add_row(str(row["local"]), str(row["syn_queue"]), str(row["accept_queue"]),
                          str(row["backlog"]), str(row.get("app") or ""))
    out.print(listening if answer.get("listening") else "listening: none")
    _more_line(len(answer.get("listening", [])), min(limit, len(answer.get("listening", []))))
    established = answer.get("established", [])
    out.print(_connections_table(established[:limit], "established") if established else "established: none")
    _more_line(len(established), min(limit, len(established)))
