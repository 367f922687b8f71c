"""`make demo`: the Python stack against Linux kernel TCP, end to end, on real namespaces.

1. `lab doctor`: what this machine offers;
2. the pair topology up: kernel node h1, pystack node s1 whose stack process serves echo,
   discard, source and http on its TAP;
3. `lab run handshake`: kernel client -> stack server and stack client -> kernel server, the
   state sequence and the negotiated options as each side sees them;
4. `lab run bulk`: bytes each way, SHA-256 checked, goodput next to kernel-to-kernel;
5. everything down, also when a step fails.

Exit code: 0 when every check passed, 1 when one failed, 2 when the machine lacks something.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.rule import Rule

from lab import builder, doctor
from lab.experiments import get
from lab.experiments.base import ExperimentResult, RunningLab
from lab.plan import LabPlan
from lab.state import LabError
from lab.topology import DEFAULT_TOPOLOGY, TopologyError, load_topology
from stack.devices.namespace import NETNS_DIR

DEMO_LAB = "nslabdemo"
DEMO_OPTIONS = {"handshake": {}, "bulk": {"bytes": "64M"}}


def main() -> int:
    console = Console(highlight=False)
    console.print(Rule("1. lab doctor"))
    checks = doctor.run_checks()
    for check in checks:
        colour = {"ok": "green", "warning": "yellow", "missing": "red"}[check.status]
        console.print(f"  [{colour}]{check.status:8}[/] {check.name:13} {check.detail}")
    if not doctor.report(checks)["ok"]:
        console.print("[red]this machine lacks something the lab needs (see above)[/]")
        return 2
    try:
        plan = load_topology(DEFAULT_TOPOLOGY, name=DEMO_LAB)
    except TopologyError as error:
        console.print(f"[red]{error}[/]")
        return 2
    try:
        return _run(console, plan)
    finally:
        console.print(Rule("5. lab down"))
        try:
            result = builder.down(DEMO_LAB)
            left = sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"{DEMO_LAB}-"))
            console.print(f"  removed {len(result.removed)} objects in {result.seconds:.3f} s "
                          f"(stack process included); namespaces left: {left or 'none'}")
        except LabError as error:
            console.print(f"  {error}")


def _run(console: Console, plan: LabPlan) -> int:
    from lab.cli import _plan_table
    from lab.cli_stack import print_result

    console.print(Rule(f"2. lab up {plan.source} --name {DEMO_LAB}"))
    try:
        result = builder.up(plan)
    except LabError as error:
        console.print(f"[red]{error}[/]")
        return error.exit_code
    console.print(f"  {result.message} in {result.seconds:.3f} s")
    console.print(_plan_table(plan))
    lab = RunningLab(plan)
    with lab.stack(lab.first("pystack")) as control:
        hello = control.hello()
    offload = "on" if hello.get("offload") else f"off ({hello.get('offload_reason') or 'not requested'})"
    console.print(f"  stack process of s1: pid {hello.get('pid')}, {hello.get('address')}, "
                  f"TAP offload {offload}, apps {', '.join(str(a) for a in hello.get('apps', []))}")

    results: list[ExperimentResult] = []
    for step, name in ((3, "handshake"), (4, "bulk")):
        experiment = get(name)
        options = DEMO_OPTIONS[name]
        shown = " ".join(f"--option {k}={v}" for k, v in options.items())
        console.print(Rule(f"{step}. lab run {name} --lab {DEMO_LAB} {shown}".rstrip()))
        try:
            outcome = experiment.run(lab, experiment.parse_options(options))
        except (LabError, OSError) as error:
            console.print(f"[red]  {name} could not run: {error}[/]")
            return 1
        print_result(outcome)
        results.append(outcome)
    failed = [r.experiment for r in results if not r.passed]
    console.print(Rule("summary"))
    console.print("  every check passed" if not failed else f"[red]  failed: {', '.join(failed)}[/]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
