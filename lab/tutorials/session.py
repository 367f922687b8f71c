"""What a tutorial's step works with: the running lab, and a place to say what it saw and checked.

A step (`lab.tutorials.model.Step`) gets a `Session`. It acts through `session.lab` (a
`lab.experiments.running.RunningLab`: kernel sockets in a node's namespace, the stack's control
socket, programs inside nodes) and tells the session, in a student's words, what happened
(`say`), what it verified from measured values (`check`), the figures worth keeping (`metric`),
and what it wrote for the student to look at (`artifact`, `figure`, `states`). The runner
(`lab.tutorials.runner`) prints as it goes and gathers all of it into the result and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lab.experiments.results import Check
from lab.experiments.running import RunningLab

ArtifactKind = Literal["report", "ladder", "pcap", "plots"]
ARTIFACT_KINDS: tuple[ArtifactKind, ...] = ("report", "ladder", "pcap", "plots")


@dataclass
class StepRecord:
    """What one step observed (lines in a student's words) and checked."""

    title: str
    observed: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "observed": list(self.observed),
                "checks": [check.to_json() for check in self.checks]}


@dataclass(frozen=True)
class Figure:
    """A picture for the report: an SVG or PNG file the tutorial wrote, with what it shows."""

    title: str
    path: Path
    caption: str = ""
    step: str = ""


@dataclass(frozen=True)
class StateSequence:
    """The states one side's socket went through (Linux's names), shown beside the other side's."""

    side: str
    connection: str
    states: tuple[str, ...]
    step: str = ""


Echo = Callable[[str], None]


def _silent(line: str) -> None:
    return None


class Session:
    """The lab, the output folder, and the record of the steps so far (one per tutorial run)."""

    def __init__(self, lab: RunningLab, out: Path, *, echo: Echo = _silent) -> None:
        self.lab = lab
        self.out = out
        self.steps: list[StepRecord] = []
        self.metrics: dict[str, Any] = {}
        self.artifacts: dict[str, list[Path]] = {kind: [] for kind in ARTIFACT_KINDS}
        self.figures: list[Figure] = []
        self.state_sequences: list[StateSequence] = []
        self._echo = echo

    # -- the runner's side ----------------------------------------------------------------------

    def begin_step(self, title: str) -> StepRecord:
        record = StepRecord(title)
        self.steps.append(record)
        return record

    @property
    def current(self) -> StepRecord:
        if not self.steps:
            return self.begin_step("setting up")
        return self.steps[-1]

    # -- what a step calls ----------------------------------------------------------------------

    def say(self, text: str) -> None:
        """One thing the student should see happen, with why (printed as the step runs)."""
        self.current.observed.append(text)
        self._echo(text)

    def show(self, text: str) -> None:
        """Print something for the terminal only (a text ladder): the report has its picture already."""
        self._echo(text)

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        """A verdict from measured values; `detail` is the figures behind it. Returns `passed`."""
        self.current.checks.append(Check(name, bool(passed), detail))
        self._echo(f"{'PASS' if passed else 'FAIL'} {name}: {detail}" if detail else
                   f"{'PASS' if passed else 'FAIL'} {name}")
        return bool(passed)

    def metric(self, key: str, value: Any) -> None:
        """A figure the result keeps (JSON-able: numbers, strings, lists and dicts of them)."""
        self.metrics[key] = value

    def path(self, name: str) -> Path:
        """Where to write a file called `name` in this run's output folder."""
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / name

    def artifact(self, kind: ArtifactKind, path: Path) -> Path:
        """A file the run produced, listed under `artifacts[kind]` of the result."""
        if kind not in ARTIFACT_KINDS:
            raise ValueError(f"artifact kind {kind!r}: expected one of {', '.join(ARTIFACT_KINDS)}")
        self.artifacts[kind].append(path)
        return path

    def figure(self, title: str, path: Path, caption: str = "") -> Path:
        """A picture (SVG or PNG) to show in the report under the current step."""
        self.figures.append(Figure(title, path, caption, self.current.title))
        return path

    def states(self, side: str, connection: str, states: list[str] | tuple[str, ...]) -> None:
        """The state sequence one side saw for a connection; the report puts the sides side by side."""
        self.state_sequences.append(StateSequence(side, connection, tuple(states), self.current.title))
