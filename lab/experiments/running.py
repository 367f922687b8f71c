"""The lab an experiment runs in (`RunningLab`), and bringing one up for an experiment and down again.

`run_experiment` parses the options first (bad input costs no lab), brings the lab up, runs, and
always takes the lab down; with `lab_name` it runs in a lab that is already up and leaves it up.
Ctrl-C or SIGTERM (`lab.build.signals`) unwinds through the same path: the lab it brought up goes,
a lab that was up before stays, and the programs the experiment started are stopped either way.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from lab.build import builder
from lab.build.control import StackClient, control_socket_path
from lab.build.processes import terminate
from lab.build.signals import note_cleanup
from lab.build.state import LabState
from lab.experiments.base import Experiment, ExperimentError
from lab.experiments.results import ExperimentResult
from lab.kernel.namespaces import popen_inside, run_inside
from lab.kernel.sockets import namespace_socket
from lab.tools.impair import show as show_impairments
from lab.topology.plan import LabPlan, NodePlan, plan_from_json


class RunningLab:
    """A lab that is up, seen from an experiment: its plan, its nodes, and ways to act inside them."""

    def __init__(self, plan: LabPlan, *, root: Path | None = None) -> None:
        self.plan = plan
        self.root = root
        self._programs: list[subprocess.Popen[bytes]] = []

    @classmethod
    def attach(cls, name: str, *, root: Path | None = None) -> RunningLab:
        """The lab `name` as it is up now (from its state directory, not from a topology file)."""
        record = LabState.for_lab(name, root).read_plan()
        if record is None:
            raise ExperimentError(f"lab {name} is not up (no plan in its state directory)")
        if record.get("phase") != "up":
            raise ExperimentError(f"lab {name} is half-built; run `lab down {name}` first")
        return cls(plan_from_json(record["plan"]), root=root)

    @property
    def name(self) -> str:
        return self.plan.name

    def node(self, name: str) -> NodePlan:
        try:
            return self.plan.node(name)
        except KeyError:
            nodes = ", ".join(n.name for n in self.plan.nodes)
            raise ExperimentError(f"lab {self.name} has no node {name!r} (nodes: {nodes})") from None

    def kernel_nodes(self) -> list[NodePlan]:
        return [n for n in self.plan.nodes if n.kind == "kernel"]

    def pystack_nodes(self) -> list[NodePlan]:
        """Pystack nodes whose stack runs as a process of the lab (the ones with a control socket)."""
        return [n for n in self.plan.nodes if n.kind == "pystack" and n.process]

    def address(self, node: str) -> str:
        """The node's first interface address, without prefix length ("10.0.0.2")."""
        return str(self.node(node).interfaces[0].address.ip)

    def stack(self, node: str, *, timeout: float = 10.0) -> StackClient:
        """A new control client for a pystack node (one per thread; close it, or use `with`)."""
        plan = self.node(node)
        if plan.kind != "pystack" or not plan.process:
            raise ExperimentError(f"node {node} of lab {self.name} runs no stack process")
        return StackClient(control_socket_path(self.name, node, self.root), timeout=timeout)

    def kernel_socket(self, node: str, family: int = socket.AF_INET,
                      type: int = socket.SOCK_STREAM) -> socket.socket:
        """A real kernel socket that lives in the node's namespace (usable from any thread)."""
        return namespace_socket(self.node(node).namespace, family, type)

    def exec(self, node: str, argv: Sequence[str], timeout: float = 30.0, *,
             input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run a program inside the node's namespace and wait for it (output captured)."""
        return run_inside(self.node(node).namespace, argv, capture_output=True, timeout=timeout, input=input)

    def popen(self, node: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a program inside the node's namespace; the caller stops it, and if it does not (an
        error, Ctrl-C), `stop_programs` does when the experiment ends, even in a lab that stays up."""
        process = popen_inside(self.node(node).namespace, argv, **kwargs)
        self._programs.append(process)
        return process

    def stop_programs(self) -> None:
        """Stop (SIGTERM, then SIGKILL after a short grace) and reap every program `popen` started."""
        running = [p for p in self._programs if p.poll() is None]
        terminate([p.pid for p in running])
        for process in self._programs:
            with suppress(subprocess.TimeoutExpired):
                process.wait(1.0)
        self._programs.clear()
        if running:
            note_cleanup(f"stopped {len(running)} program{'s' if len(running) > 1 else ''} "
                         f"it started in lab {self.name}")

    def kernel_and_stack(self) -> tuple[str, str]:
        """The first kernel node and the first pystack node with a stack process: the two ends most
        experiments connect."""
        return self.first("kernel"), self.first("pystack")

    def first(self, kind: str) -> str:
        """The first node of a kind ("kernel" or "pystack"): most experiments use one of each."""
        nodes = self.kernel_nodes() if kind == "kernel" else self.pystack_nodes()
        if not nodes:
            what = "kernel node" if kind == "kernel" else "pystack node with a stack process"
            raise ExperimentError(f"lab {self.name} has no {what}")
        return nodes[0].name


ProgressFn = Callable[[str], None]


def _no_progress(step: str) -> None:
    return None


@contextmanager
def lab_for_experiment(plan: LabPlan | None, lab_name: str | None, *, root: Path | None = None,
                       progress: ProgressFn = _no_progress) -> Iterator[RunningLab]:
    """Bring `plan` up and always down again, or use the running lab `lab_name` and leave it up.

    Either way the programs the experiment started (`RunningLab.popen`) are stopped first. Should
    a signal land between `up` returning and the `try` below, the undo `up` registered takes the lab
    down (`lab.build.signals.undo_on_stop`).
    """
    if lab_name is not None:
        lab = RunningLab.attach(lab_name, root=root)
        try:
            yield lab
        finally:
            lab.stop_programs()
            note_cleanup(f"left lab {lab_name} up (it was up before this command)")
        return
    if plan is None:
        raise ExperimentError("an experiment needs a topology or a running lab (--lab)")
    progress(f"bringing up lab {plan.name} ({len(plan.nodes)} nodes)")

    def build_step(step: str, done: int, total: int) -> None:
        progress(f"bringing up lab {plan.name}: {step} ({done}/{total})")

    result = builder.up(plan, root=root, progress=build_step)  # rolls itself back when it fails
    if not result.changed:
        raise ExperimentError(f"lab {plan.name} is already up; pass --lab {plan.name} to run in it, "
                              f"or `lab down {plan.name}` first")
    lab = RunningLab(plan, root=root)
    try:
        yield lab
    finally:
        lab.stop_programs()
        progress(f"taking down lab {plan.name}")
        builder.down(plan.name, root=root)


def run_experiment(experiment: Experiment, raw_options: dict[str, str], *, plan: LabPlan | None = None,
                   lab_name: str | None = None, root: Path | None = None,
                   progress: ProgressFn = _no_progress) -> ExperimentResult:
    """Parse options first (bad input costs no lab), then run inside a lab that is always cleaned up.

    `progress` hears what is going on, one short sentence per step (`lab run` shows it on a terminal).
    """
    options = experiment.parse_options(raw_options)
    with lab_for_experiment(plan, lab_name, root=root, progress=progress) as lab:
        progress(f"running {experiment.name} in lab {lab.name}")
        result = experiment.run(lab, options)
        result.metrics.setdefault("impairments", applied_impairments(lab.name, root))
        return result


def applied_impairments(lab: str, root: Path | None = None) -> list[dict[str, Any]]:
    """Each impaired link direction of the lab while the experiment ran, and what applied it (netem, tbf,
    forwarder or stack): results say under which conditions they were measured."""
    return [{"link": row["link"], "direction": row["direction"], "by": row["by"],
             "impairment": row["description"]} for row in show_impairments(lab, root=root) if row["by"]]
