"""The experiment framework: what an experiment is, what it returns, and the lab it runs in.

An experiment is one module in `lab/experiments/` holding one `Experiment` subclass whose `name`
is the module's name. It gets a `RunningLab` (the lab is already up) and the `--option k=v`
pairs, drives kernel sockets and the stack's control socket, and returns an `ExperimentResult`:
a list of `Check`s (each with the figures behind its verdict in `detail`) and free-form
`metrics`. `run_experiment` brings the lab up and always down again; `lab run` prints the result
and exits 0 when every check passed, 1 when one failed, 2 on bad input.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lab.build.control import StackClient, StackCommandFailed, StackControlError, control_socket_path
from lab.build.state import LabError, LabState
from lab.kernel.sockets import namespace_socket
from lab.topology.plan import LabPlan, NodePlan, plan_from_json
from stack.devices.namespace import move_to, namespace_path


class ExperimentError(LabError):
    """Bad input to an experiment (unknown option, a value of the wrong type, a missing node): exit 2."""

    exit_code = 2


@dataclass
class Check:
    """One verdict. `detail` is one line with the figures behind it ("sent 10485760 B, sha256 equal")."""

    name: str
    passed: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class ExperimentResult:
    experiment: str
    passed: bool
    checks: list[Check]
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_checks(cls, experiment: str, checks: list[Check], metrics: dict[str, Any]) -> ExperimentResult:
        """Passed when there is at least one check and every check passed."""
        return cls(experiment, bool(checks) and all(c.passed for c in checks), checks, metrics)

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "passed": self.passed,
                "checks": [c.to_json() for c in self.checks], "metrics": self.metrics}


# What one step of an experiment may fail with at run time: a kernel socket error or timeout, or the
# stack's control socket failing. The step becomes a failed check and the experiment goes on; bad input
# (ExperimentError) is not caught, it is exit 2.
STEP_ERRORS = (OSError, StackControlError, StackCommandFailed)


def step_failed(step: str, error: BaseException) -> Check:
    """The failed check that stands for a step that raised one of STEP_ERRORS."""
    return Check(f"{step}: ran to the end", False, f"{type(error).__name__}: {error}")


class RunningLab:
    """A lab that is up, seen from an experiment: its plan, its nodes, and ways to act inside them."""

    def __init__(self, plan: LabPlan, *, root: Path | None = None) -> None:
        self.plan = plan
        self.root = root

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
        path = namespace_path(self.node(node).namespace)
        return subprocess.run(list(argv), preexec_fn=lambda: move_to(path), capture_output=True,
                              timeout=timeout, input=input, check=False)

    def popen(self, node: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a program inside the node's namespace; the caller stops it (`lab down` would too)."""
        path = namespace_path(self.node(node).namespace)
        return subprocess.Popen(list(argv), preexec_fn=lambda: move_to(path), **kwargs)

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


Options = dict[str, tuple[Any, str]]  # option -> (default, one-line help)


class Experiment:
    """One interop experiment. Subclasses set `summary` and `options` and implement `run`.

    `name` is the name of the subclass's module (what `lab run NAME` looks up), unless the subclass
    sets one. `options` maps each accepted option to (default, one-line help); `parse_options`
    converts the command line's strings to the default's type, so `--option bytes=1000000` arrives
    as an int.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    default_topology: ClassVar[str] = "pair"
    options: ClassVar[Options] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__module__.rpartition(".")[2]

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        raise NotImplementedError

    def parse_options(self, raw: dict[str, str]) -> dict[str, Any]:
        parsed = {key: default for key, (default, _) in self.options.items()}
        for key, text in raw.items():
            if key not in self.options:
                known = ", ".join(sorted(self.options)) or "none"
                raise ExperimentError(f"experiment {self.name}: unknown option {key!r} (options: {known})")
            parsed[key] = convert_option(self.name, key, text, self.options[key][0])
        return parsed


def convert_option(experiment: str, key: str, text: str, default: Any) -> Any:
    """`text` converted to the type of `default` (bool, int, float, str), or ExperimentError."""
    try:
        if isinstance(default, bool):
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return parse_size(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = {bool: "true or false", int: "an integer (suffixes k, M, G allowed)",
                float: "a number"}[type(default)]
        raise ExperimentError(
            f"experiment {experiment}: option {key}: expected {kind}, got {text!r}") from None
    return text


_SIZE_SUFFIXES = {"k": 1000, "K": 1024, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """An integer with an optional suffix: 1000, 64k (×1000), 64K (×1024), 10M, 1G (binary)."""
    text = text.strip()
    if text and text[-1] in _SIZE_SUFFIXES:
        return int(float(text[:-1]) * _SIZE_SUFFIXES[text[-1]])
    return int(text)


def parse_option_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """`["bytes=10M", "seed=3"]` → `{"bytes": "10M", "seed": "3"}` (ExperimentError on `x`)."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ExperimentError(f"--option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


@contextmanager
def lab_for_experiment(plan: LabPlan | None, lab_name: str | None, *,
                       root: Path | None = None) -> Iterator[RunningLab]:
    """Bring `plan` up and always down again, or use the running lab `lab_name` and leave it up."""
    from lab.build import builder

    if lab_name is not None:
        yield RunningLab.attach(lab_name, root=root)
        return
    if plan is None:
        raise ExperimentError("an experiment needs a topology or a running lab (--lab)")
    result = builder.up(plan, root=root)  # rolls itself back when it fails
    if not result.changed:
        raise ExperimentError(f"lab {plan.name} is already up; pass --lab {plan.name} to run in it, "
                              f"or `lab down {plan.name}` first")
    try:
        yield RunningLab(plan, root=root)
    finally:
        builder.down(plan.name, root=root)


def run_experiment(experiment: Experiment, raw_options: dict[str, str], *, plan: LabPlan | None = None,
                   lab_name: str | None = None, root: Path | None = None) -> ExperimentResult:
    """Parse options first (bad input costs no lab), then run inside a lab that is always cleaned up."""
    options = experiment.parse_options(raw_options)
    with lab_for_experiment(plan, lab_name, root=root) as lab:
        return experiment.run(lab, options)
