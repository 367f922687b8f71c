"""Running a tutorial: its lab up under a name of its own, each step, the checks, the artifacts, the lab down.

`run_tutorial` brings the tutorial's topology up as a lab whose name is unique to the run (two
students on one machine never share a lab), runs each step with a `Session`, turns a step that
raised a run-time error into a failed check and goes on, writes the report, and always takes the
lab down (also on Ctrl-C, through `lab.experiments.running.lab_for_experiment`). The result's JSON
is what `lab tutorial run --json` prints.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.experiments.results import STEP_ERRORS
from lab.experiments.running import lab_for_experiment
from lab.topology import load_topology
from lab.topology.names import derived_lab_name
from lab.topology.plan import LabPlan
from lab.tutorials.model import Tutorial, TutorialError
from lab.tutorials.session import ARTIFACT_KINDS, Echo, Session, StepRecord

SHIPPED_TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
ProgressFn = Callable[[str], None]
StepGate = Callable[[int, str], None]  # called before step i (1-based) with its title: --step waits here


def _no_progress(step: str) -> None:
    return None


def _silent(line: str) -> None:
    return None


def _no_gate(index: int, title: str) -> None:
    return None


def tutorial_lab_name(tutorial: Tutorial, prefix: str | None = None) -> str:
    """`prefix` (default `t<N>`) and a random suffix: a lab name of this run's own."""
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return derived_lab_name(prefix if prefix is not None else f"t{tutorial.number}", suffix)


def tutorial_plan(tutorial: Tutorial, name: str) -> LabPlan:
    """The tutorial's topology: a file in its folder, or a shipped topology by name."""
    shipped = SHIPPED_TOPOLOGIES / f"{tutorial.topology}.yaml"
    for candidate in (tutorial.folder / tutorial.topology, shipped):
        if candidate.is_file():
            return load_topology(candidate, name=name)
    raise TutorialError(f"{tutorial.folder / 'tutorial.md'}: topology {tutorial.topology!r} is neither a "
                        f"file in the tutorial's folder nor a shipped topology")


def default_out(tutorial: Tutorial) -> Path:
    return Path.cwd() / f"tutorial-{tutorial.number:02d}-{tutorial.slug}"


@dataclass
class TutorialResult:
    tutorial: Tutorial
    lab: str
    out: Path
    steps: list[StepRecord]
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every check passed, and there was at least one."""
        checks = [check for step in self.steps for check in step.checks]
        return bool(checks) and all(check.passed for check in checks)

    def to_json(self) -> dict[str, Any]:
        reports = self.artifacts.get("report", [])
        ladders = self.artifacts.get("ladder", [])
        return {
            "tutorial": self.tutorial.slug, "number": self.tutorial.number, "title": self.tutorial.title,
            "passed": self.passed, "lab": self.lab, "out": str(self.out),
            "steps": [step.to_json() for step in self.steps],
            "artifacts": {"report": str(reports[0]) if reports else None,
                          "ladder": str(ladders[0]) if ladders else None,
                          "ladders": [str(p) for p in ladders],
                          "pcap": [str(p) for p in self.artifacts.get("pcap", [])],
                          "plots": [str(p) for p in self.artifacts.get("plots", [])]},
            "metrics": self.metrics,
        }


def run_tutorial(tutorial: Tutorial, *, out: Path | None = None, root: Path | None = None,
                 echo: Echo = _silent, progress: ProgressFn = _no_progress,
                 gate: StepGate = _no_gate, name_prefix: str | None = None,
                 finish: Callable[[Session, Tutorial], object] | None = None) -> TutorialResult:
    """Run every step in a lab of the run's own; `finish(session, tutorial)` writes the report while the
    lab is still up. `name_prefix` starts the lab's name (a random suffix follows). The lab is down
    when this returns or raises."""
    if not tutorial.steps:
        raise TutorialError(f"tutorial {tutorial.slug} was loaded without its steps")
    name = tutorial_lab_name(tutorial, name_prefix)
    plan = tutorial_plan(tutorial, name)  # a bad topology costs no lab
    out = (out or default_out(tutorial)).resolve()
    with lab_for_experiment(plan, None, root=root, progress=progress) as lab:
        session = Session(lab, out, echo=echo)
        for index, step in enumerate(tutorial.steps, start=1):
            gate(index, step.title)
            progress(f"step {index}/{len(tutorial.steps)}: {step.title}")
            session.begin_step(step.title)
            try:
                step.run(session)
            except STEP_ERRORS as error:
                session.check(f"{step.title}: ran to the end", False, f"{type(error).__name__}: {error}")
        if finish is not None:
            finish(session, tutorial)
    return TutorialResult(tutorial, name, out, session.steps, session.metrics,
                          {kind: list(session.artifacts[kind]) for kind in ARTIFACT_KINDS})
