"""The commands on labs themselves: `up`, `down`, `status`, `list`, `exec`, `graph`, `doctor`.

Each is a thin layer over `lab.build.builder` and the tools (`lab.tools.status`, `lab.tools.graph`,
`lab.tools.doctor`): it parses, calls, and renders a table or `--json`.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lab.build import builder
from lab.build.state import LabError, list_labs, node_namespace
from lab.cli.output import (
    DEFAULT_TOPOLOGY,
    JsonFlag,
    errors_to_exit_codes,
    fail,
    out,
    print_json,
    topology_path,
)
from lab.cli.progress import progress_line
from lab.cli.tables import plan_rows, plan_table
from lab.kernel.namespaces import run_inside
from lab.tools import doctor
from lab.tools.graph import plan_to_draw, render, render_image
from lab.tools.programs import exec_plan
from lab.tools.status import lab_status, labs_summary
from lab.topology import TopologyError, load_topology, shipped_topologies


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"
    png = "png"


# --- up / down -------------------------------------------------------------------------------

def up(
    topology: Annotated[str | None, typer.Argument(help="Topology file or shipped name (pair).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Lab name (default: the topology's).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create the namespaces, links and bridges of a topology (idempotent)."""
    with errors_to_exit_codes():
        plan = load_topology(topology_path(topology), name=name)
        with progress_line(f"lab {plan.name}: {len(plan.nodes)} nodes", as_json=as_json) as report:
            result = builder.up(plan, progress=lambda step, done, total: report(
                f"lab {plan.name}: {step}", done, total))
        if as_json:
            print_json({"lab": result.lab, "changed": result.changed, "message": result.message,
                        "seconds": round(result.seconds, 4), "objects": result.objects,
                        "nodes": plan_rows(plan)})
        else:
            out.print(f"{result.message} [{result.seconds:.2f} s]")
            out.print(plan_table(plan))
    builder.keep_on_stop(plan.name)  # reported up: a Ctrl-C from here on leaves it up


def down(
    name: Annotated[str | None, typer.Argument(
        help="Lab name (default: the default topology's lab, pair, which `lab up` alone brings up).")] = None,
    all_labs: Annotated[bool, typer.Option("--all", help="Take down every lab (for an operator).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Remove everything a lab created, from its journal and its tags; works after crashes.

    A lab that is not up is no error (exit 0, "not up"), like a repeated `lab up`.
    """
    with errors_to_exit_codes():
        if all_labs and name is not None:
            fail("give a lab name or --all, not both")
        # An empty name is bad input, not "the default lab": `lab down "$LAB"` with LAB unset must not take
        # down pair.
        names = builder.labs_to_take_down() if all_labs else [_default_lab() if name is None else name]
        results = [builder.down(n) for n in names]
    if as_json:
        print_json([{"lab": r.lab, "was_up": r.was_up, "removed": list(r.removed), "swept": list(r.swept),
                     "refused": list(r.refused), "skipped_journal_lines": list(r.skipped_journal_lines),
                     "seconds": round(r.seconds, 4)}
                    for r in results])
        return
    if not results:
        out.print("no labs are up")
    for r in results:
        if not r.was_up:
            out.print(f"lab {r.lab} is not up; nothing to do")
            continue
        extra = f", swept {len(r.swept)} untracked" if r.swept else ""
        out.print(f"lab {r.lab} is down: removed {len(r.removed)} objects{extra} [{r.seconds:.2f} s]")
        if r.refused:
            out.print(f"  left alone {len(r.refused)} its journal named that are not the lab's: "
                      + ", ".join(r.refused), markup=False)
        if r.skipped_journal_lines:
            out.print(f"  (skipped unreadable journal lines {list(r.skipped_journal_lines)})")


def _default_lab() -> str:
    """The lab `lab up` with no topology brings up: the default topology's name."""
    return load_topology(topology_path(None)).name


# --- status / list ---------------------------------------------------------------------------

def status(
    name: Annotated[str | None, typer.Argument(help="Lab name (default: a summary of all labs).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Nodes, namespaces, interfaces, processes, and drift from the journal (exit 1 on drift)."""
    with errors_to_exit_codes():
        if name is None:
            rows = labs_summary()
            if as_json:
                print_json(rows)
            else:
                table = Table("lab", "phase", "nodes", "missing", "untracked", "dead", "source", title="labs")
                for row in rows:
                    table.add_row(row["lab"], row["phase"], str(row["nodes"]), str(row["missing"]),
                                  str(row["untracked"]), str(row["dead"]), str(row["source"] or ""))
                out.print(table if rows else "no labs are up")
            drifted = any(row["missing"] or row["untracked"] or row["dead"] for row in rows)
        else:
            report = lab_status(name)
            if as_json:
                print_json(report)
            else:
                _print_status(report)
            drifted = not _drift_clean(report["drift"])
    if drifted:
        raise typer.Exit(1)


def _print_status(report: dict) -> None:
    out.print(f"lab {report['lab']}: {report['phase']} (digest {report['digest']}, from {report['source']})")
    table = Table("node", "kind", "namespace", "interface", "addresses", "mac", "mtu", "state", "bridge")
    groups = [(n["name"], n["kind"], n) for n in report["nodes"]]
    groups += [(f"lan{lan['link']}", "lan", lan) for lan in report["lans"]]
    for node, kind, group in groups:
        if not group["present"]:
            table.add_row(node, kind, group["namespace"], "[red]namespace missing[/red]", "", "", "", "", "")
        stack = group.get("stack")
        if stack:
            table.add_row(node, kind, group["namespace"], f"(stack on {stack['tap']})", stack["address"],
                          stack["mac"], str(stack["mtu"]), "-", "")
        for iface in group["interfaces"]:
            table.add_row(node, kind, group["namespace"], iface["name"], " ".join(iface["addresses"]),
                          iface["mac"] or "", str(iface["mtu"]), iface["operstate"].lower(),
                          iface["bridge"] or "")
    out.print(table)
    running = [f"{p} ({n['name']})" for n in report["nodes"] for p in n["processes"]]
    out.print(f"processes: {', '.join(running) if running else 'none'}")
    for node in report["nodes"]:
        _print_stack_process(report["lab"], node["name"], node.get("stack_process"))
    forwarders = [f"{p['pid']} ({p['link']}{'' if p['running'] else ', gone'})" for p in report["forwarders"]]
    if forwarders:
        out.print(f"forwarders: {', '.join(forwarders)}")
    for row in report["impairments"]:
        how = f"? ({row['error']})" if row["error"] else row["description"]
        by = row["by"] or row["mechanism"]
        out.print(f"impairment: link {row['link']} {row['direction']}: {how} (by {by})")
    if not report["impairments"]:
        out.print("impairments: none")
    drift = report["drift"]
    if _drift_clean(drift):
        out.print("drift: none")
    for what in drift["missing"]:
        out.print(f"[red]drift: missing[/red] {what}")
    for what in drift["untracked"]:
        out.print(f"[yellow]drift: untracked[/yellow] {what}")
    for what in drift["dead"]:
        out.print(f"[red]drift: dead[/red] {what}")


def _drift_clean(drift: dict) -> bool:
    return not (drift["missing"] or drift["untracked"] or drift["dead"])


def _print_stack_process(lab: str, node: str, process: dict | None) -> None:
    """One line per stack node: running since when, or dead: how, when; and the last death if restarted."""
    if process is None:
        return
    ended = process["exit"]
    if ended is None and process["pid"] is None:
        out.print(f"[red]stack {node}: never started[/red]; `lab up {lab}` again starts it")
    elif not process["running"]:
        line = f"pid {ended['pid']} {ended['cause']}; first seen gone {ended['seen_gone']}" if ended else ""
        log = f", its log ends {ended['log_ends']}" if ended and ended["log_ends"] else ""
        out.print(f"[red]stack {node}: died[/red]: {line}{log}; `lab up` with its topology restarts it")
    else:
        since = f" since {process['started']}" if process["started"] else ""
        earlier = ""
        if ended is not None and ended["pid"] != process["pid"]:
            earlier = (f" (restarted: pid {ended['pid']} {ended['cause']}, "
                       f"first seen gone {ended['seen_gone']})")
        out.print(f"stack {node}: pid {process['pid']} running{since}{earlier}")


def list_command(as_json: JsonFlag = False) -> None:
    """Shipped topologies and the labs that are up."""
    with errors_to_exit_codes():
        shipped = []
        for topo_name, path in shipped_topologies().items():
            try:
                plan = load_topology(path)
                shipped.append({"name": topo_name, "path": str(path), "nodes": len(plan.nodes),
                                "links": len(plan.links), "error": None})
            except TopologyError as error:
                shipped.append({"name": topo_name, "path": str(path), "nodes": None, "links": None,
                                "error": str(error)})
        labs = list_labs()
    if as_json:
        print_json({"topologies": shipped, "labs": labs})
        return
    table = Table("topology", "nodes", "links", "path", title="shipped topologies")
    for row in shipped:
        table.add_row(row["name"], str(row["nodes"] or "-"), str(row["links"] or "-"),
                      row["error"] or row["path"])
    out.print(table)
    out.print(f"labs up: {', '.join(labs) if labs else 'none'}")


# --- exec ------------------------------------------------------------------------------------


def exec_command(
    name: Annotated[str, typer.Argument(help="Lab name.")],
    node: Annotated[str, typer.Argument(help="Node name.")],
    command: Annotated[list[str], typer.Argument(help="The command, after `--`.")],
    bare: Annotated[bool, typer.Option("--bare", help="On a pystack node: Python's sockets stay the "
                                                      "namespace kernel's (no address), not the stack's.")]
    = False,
) -> None:
    """Run a command in a node's namespace: lab exec NAME NODE -- CMD... (its exit code is passed on).

    On a pystack node a Python program's TCP sockets are the node's stack (its address, its TCP), beside the
    node's apps; several programs may run at once. Other programs, and Python with --bare, run in the bare
    namespace, whose kernel holds no address.
    """
    with errors_to_exit_codes():
        namespace = node_namespace(name, node)
        plan = exec_plan(name, node, bare=bare)
    if plan.note:
        print(plan.note, file=sys.stderr)
    try:
        completed = run_inside(namespace, command, env=plan.env)
    except FileNotFoundError:
        fail(f"{command[0]}: command not found", 127)
    except PermissionError:
        fail(f"{command[0]}: permission denied", 126)
    raise typer.Exit(completed.returncode if completed.returncode >= 0 else 128 - completed.returncode)


# --- graph / doctor ------------------------------------------------------------------------

def graph(
    target: Annotated[str | None, typer.Argument(
        help="A topology file, a lab that is up (drawn as built), or a shipped topology's name.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to this file; .svg and .png "
                                                "are drawn by Graphviz, .dot and .mmd are text.")] = None,
    fmt: Annotated[GraphFormat | None, typer.Option("--format", help="mermaid, dot, svg or png (default: "
                                                    "from -o's suffix, else mermaid).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Lab name to render a topology under.")] = None,
) -> None:
    """Draw a topology or a running lab: Mermaid or Graphviz text, or an SVG/PNG picture."""
    with errors_to_exit_codes():
        chosen = fmt.value if fmt is not None else _format_for(output)
        if chosen == "png" and output is None:
            raise LabError("graph --format png: give -o FILE (a PNG is not for the terminal)")
        plan = plan_to_draw(target or DEFAULT_TOPOLOGY, name=name)
        data = render_image(plan, chosen) if chosen in ("svg", "png") else render(plan, chosen).encode()
        if output is None:
            sys.stdout.write(data.decode())
            return
        try:
            output.write_bytes(data)
        except OSError as error:
            raise LabError(f"graph -o {output}: {error.strerror or error}") from None
        links = f"{len(plan.links)} link{'' if len(plan.links) == 1 else 's'}"
        out.print(f"wrote {output} ({chosen}, {len(plan.nodes)} nodes, {links})", markup=False)


def _format_for(output: Path | None) -> str:
    suffixes = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid"}
    if output is None:
        return "mermaid"
    if output.suffix.lower() not in suffixes:
        raise LabError(f"graph -o {output}: expected a file ending in {', '.join(suffixes)} "
                       "(or give --format)")
    return suffixes[output.suffix.lower()]


def doctor_command(as_json: JsonFlag = False) -> None:
    """Check what the lab needs from this machine (exit 2 if something required is missing)."""
    checks = doctor.run_checks()
    report = doctor.report(checks)
    if as_json:
        print_json(report)
    else:
        table = Table("check", "status", "detail", title="lab doctor")
        colours = {"ok": "green", "warning": "yellow", "missing": "red"}
        for check in checks:
            table.add_row(check.name, f"[{colours[check.status]}]{check.status}[/]", check.detail)
        out.print(table)
    if not report["ok"]:
        raise typer.Exit(2)
