"""Fixtures for the interop tests: real labs with a running stack process, always taken down.

`pair_lab` is one pair lab (kernel h1, stack s1 with its node process) shared by a test module, so a
module pays for one `lab up`; `make_lab` brings up a lab from topology text for one test (MTU, offload,
router variants); `kernel_pair` is two kernel nodes without a stack. All take their lab down whatever
happened, including a failed `up` half way (the builder rolls that back itself) and a failing test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack

import pytest

from lab.experiments import get as get_experiment
from lab.experiments.results import ExperimentResult
from lab.experiments.running import RunningLab, lab_for_experiment
from lab.topology import DEFAULT_TOPOLOGY, load_topology, plan_from_text


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes about a minute (keepalive); deselect with -m 'not slow'")


def unique_lab_name(prefix: str) -> str:
    """A short lab name no other test (or test run) uses: namespaces are named `<lab>-<node>`."""
    return f"{prefix}{uuid.uuid4().hex[:7]}"


@pytest.fixture(scope="module")
def pair_lab() -> Iterator[RunningLab]:
    """The shipped pair topology (h1 kernel 10.0.0.1, s1 stack 10.0.0.2), up for the whole module."""
    plan = load_topology(DEFAULT_TOPOLOGY, name=unique_lab_name("ip"))
    with lab_for_experiment(plan, None) as lab:
        yield lab


MakeLab = Callable[[str], RunningLab]

# Two kernel nodes and no stack: the kernel-side tools of an experiment (sock_diag, curl, a kernel
# server) are checked alone, so a failure of the experiment itself points at the stack.
KERNEL_PAIR = """
name: kpair
nodes:
  a: {kind: kernel}
  b: {kind: kernel}
links:
  - endpoints: [a:eth0, b:eth0]
    subnet: 10.9.0.0/24
"""


@pytest.fixture
def make_lab() -> Iterator[MakeLab]:
    """`make_lab(yaml_text)`: a lab from topology text (its `name` replaced by a unique one), up until
    the test ends."""
    with ExitStack() as labs:

        def make(text: str) -> RunningLab:
            plan = plan_from_text(text, source="<test topology>", name=unique_lab_name("ix"))
            context: AbstractContextManager[RunningLab] = lab_for_experiment(plan, None)
            return labs.enter_context(context)

        yield make


@pytest.fixture
def kernel_pair(make_lab: MakeLab) -> RunningLab:
    """KERNEL_PAIR up for one test: nodes `a` and `b`, one link, taken down when the test ends."""
    return make_lab(KERNEL_PAIR)


def _run_in(lab: RunningLab, experiment: str, **options: object) -> ExperimentResult:
    chosen = get_experiment(experiment)
    parsed = chosen.parse_options({key: str(value) for key, value in options.items()})
    return chosen.run(lab, parsed)


def _failed_checks(result: ExperimentResult) -> str:
    return "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.passed) or "none failed"


@pytest.fixture
def run_in() -> Callable[..., ExperimentResult]:
    """`run_in(lab, "close", port=7100)`: a registered experiment run inside a lab that is already up,
    options given as `--option k=v` would give them."""
    return _run_in


@pytest.fixture
def assert_passed() -> Callable[[ExperimentResult], None]:
    """Assert every check passed; the message lists the failed checks with their figures."""

    def check(result: ExperimentResult) -> None:
        assert result.passed, f"{result.experiment} failed: {_failed_checks(result)}"

    return check
