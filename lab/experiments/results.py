"""What an experiment returns: checks (each with the figures behind its verdict) and free-form metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab.build.control import StackCommandFailed, StackControlError


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
