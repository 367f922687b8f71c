"""The demo: the Python stack against Linux kernel TCP, end to end, on real namespaces.

1. `lab doctor`: what this machine offers;
2. the pair topology up: kernel node h1, pystack node s1 whose stack process serves echo,
   discard, source and http on its TAP;
3. `lab run handshake`: kernel client -> stack server and stack client -> kernel server, the
   state sequence and the negotiated options as each side sees them;
4. `lab run bulk`: bytes each way, SHA-256 checked, goodput next to kernel-to-kernel;
5. everything down, also when a step fails.

`run_demo` does the steps and tells a `DemoReport` what happened; `lab.cli.demo` (what `make demo`
runs) renders it. Exit code: 0 when every check passed, 1 when one failed, 2 when the machine lacks
something.
"""

from __future__ import annotations

import os
from typing import Protocol

from lab.build import builder
from lab.build.state import LabError
from lab.experiments import get
from lab.experiments.results import ExperimentResult
from lab.experiments.running import RunningLab
from lab.kernel.capabilities import Check
from lab.tools import doctor
from lab.topology import DEFAULT_TOPOLOGY, TopologyError, load_topology
from lab.topology.plan import LabPlan
from stack.devices.namespace import NETNS_DIR

DEMO_OPTIONS = {"handshake": {}, "bulk": {"bytes": "64M"}}


def demo_lab_name() -> str:
    """The demo's lab: a name of this run's own (two demos on one machine never share a lab)."""
    return f"demo{os.getpid() % 100000}"


class DemoReport(Protocol):
    """Where the demo says what it does (a terminal, a test's recorder)."""

    def step(self, title: str) -> None: ...

    def checks(self, checks: list[Check]) -> None: ...

    def plan(self, plan: LabPlan) -> None: ...

    def result(self, result: ExperimentResult) -> None: ...

    def line(self, text: str, *, problem: bool = False) -> None: ...


def run_demo(report: DemoReport) -> int:
    """Every step, the lab always taken down at the end; the exit code."""
    report.step("1. lab doctor")
    checks = doctor.run_checks()
    report.checks(checks)
    if not doctor.report(checks)["ok"]:
        report.line("this machine lacks something the lab needs (see above)", problem=True)
        return 2
    try:
        plan = load_topology(DEFAULT_TOPOLOGY, name=demo_lab_name())
    except TopologyError as error:
        report.line(str(error), problem=True)
        return 2
    try:
        return run_steps(report, plan)
    finally:
        report.step("5. lab down")
        try:
            result = builder.down(plan.name)
            left = sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"{plan.name}-"))
            report.line(f"  removed {len(result.removed)} objects in {result.seconds:.3f} s "
                        f"(stack process included); namespaces left: {left or 'none'}")
        except LabError as error:
            report.line(f"  {error}")


def run_steps(report: DemoReport, plan: LabPlan) -> int:
    """Steps 2 to 4: the lab up, then the experiments in it."""
    report.step(f"2. lab up {plan.source} --name {plan.name}")
    try:
        result = builder.up(plan)
    except LabError as error:
        report.line(str(error), problem=True)
        return error.exit_code
    report.line(f"  {result.message} in {result.seconds:.3f} s")
    report.plan(plan)
    lab = RunningLab(plan)
    with lab.stack(lab.first("pystack")) as control:
        hello = control.hello()
    offload = "on" if hello.get("offload") else f"off ({hello.get('offload_reason') or 'not requested'})"
    report.line(f"  stack process of s1: pid {hello.get('pid')}, {hello.get('address')}, "
                f"TAP offload {offload}, apps {', '.join(str(a) for a in hello.get('apps', []))}")

    results: list[ExperimentResult] = []
    for step, name in ((3, "handshake"), (4, "bulk")):
        experiment = get(name)
        options = DEMO_OPTIONS[name]
        shown = " ".join(f"--option {k}={v}" for k, v in options.items())
        report.step(f"{step}. lab run {name} --lab {plan.name} {shown}".rstrip())
        try:
            outcome = experiment.run(lab, experiment.parse_options(options))
        except (LabError, OSError) as error:
            report.line(f"  {name} could not run: {error}", problem=True)
            return 1
        report.result(outcome)
        results.append(outcome)
    failed = [r.experiment for r in results if not r.passed]
    report.step("summary")
    report.line(f"  failed: {', '.join(failed)}" if failed else "  every check passed", problem=bool(failed))
    return 1 if failed else 0
