"""The nslab pytest plugin: labs for a user's own interop tests, always taken down.

Installed with the package (entry point `pytest11: nslab`), so any test run on a machine with nslab
has these fixtures:

- `nslab`: a lab for one test, from `@pytest.mark.nslab_topology(TOPOLOGY)` (a shipped topology's name
  such as "pair", a topology file's path, YAML text or a dict; without the marker, "pair"), as a
  `lab.testing.handles.Lab`; `@pytest.mark.nslab_capture("s1", ...)` captures those nodes for the
  whole test (`nslab.captures`);
- `nslab_up`: a factory, `nslab_up(TOPOLOGY)`, for tests that want several labs, or one of their own;
- `nslab_prefix`: the prefix of the labs' unique names (`--nslab-prefix`, or NSLAB_PREFIX; default "pt").

Every lab gets a name of its own (prefix + random hex: tests of several runs and users share one
machine) and is taken down when its test ends, passed, failed or interrupted: Ctrl-C stops the run,
and pytest's teardown takes the lab down before it exits; SIGTERM, while a test holds a lab, does
the same. Nothing here acts unless a test asks for
a fixture: no autouse fixtures, and names that never clash with a project's own (`nslab_...`).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from lab.build.signals import Interrupted
from lab.build.state import LabError
from lab.experiments.running import lab_for_experiment
from lab.kernel.capabilities import check_privileges, check_tun_device
from lab.testing.handles import Lab
from lab.topology import find_topology, load_topology, plan_from_data, plan_from_text, shipped_topologies
from lab.topology.errors import TopologyError
from lab.topology.names import MAX_NAME_LENGTH
from lab.topology.plan import LabPlan

DEFAULT_PREFIX = "pt"
DEFAULT_TOPOLOGY_NAME = "pair"
SUFFIX_LENGTH = 7  # hex digits after the prefix
MAX_PREFIX_LENGTH = MAX_NAME_LENGTH - SUFFIX_LENGTH
PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]*")
PREFIX_ENV = "NSLAB_PREFIX"
MARKER = "nslab_topology"
CAPTURE_MARKER = "nslab_capture"
LABS_KEY = pytest.StashKey[list[Lab]]()  # the labs a test brought up, for its failure report

Topology = str | Path | dict[str, Any]
LabUp = Callable[[Topology], Lab]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nslab", "nslab labs (network namespaces with a Python TCP stack)")
    group.addoption("--nslab-prefix", default=None, metavar="PREFIX",
                    help=f"prefix of the labs' names (1 to {MAX_PREFIX_LENGTH} lowercase letters and digits, "
                         f"starting with a letter; default ${PREFIX_ENV} or {DEFAULT_PREFIX!r})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(topology): the lab the `nslab` fixture brings up: a "
                                       "shipped topology's name, a file's path, YAML text or a dict")
    config.addinivalue_line("markers", f"{CAPTURE_MARKER}(*nodes): capture these nodes of the `nslab` lab "
                                       "for the whole test (nslab.captures); the pcaps are named in a "
                                       "failure's report")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report names its labs and the pcaps it captured (kept in its tmp_path)."""
    report = yield
    labs = item.stash.get(LABS_KEY, [])
    if report.failed and labs:
        lines = [f"lab {lab.name}: nodes {', '.join(n.name for n in lab.running.plan.nodes)}" for lab in labs]
        lines += [f"capture of {c.node}: {c.path}" for lab in labs for c in lab.captures]
        report.sections.append(("nslab", "\n".join(lines)))
    return report


def prefix_problem(prefix: str) -> str | None:
    if len(prefix) > MAX_PREFIX_LENGTH or PREFIX_PATTERN.fullmatch(prefix) is None:
        return (f"nslab prefix {prefix!r}: expected 1 to {MAX_PREFIX_LENGTH} lowercase letters and digits "
                "starting with a letter (the lab's name is the prefix and 7 hex digits)")
    return None


def unique_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:SUFFIX_LENGTH]}"


def plan_for(topology: Topology, name: str) -> LabPlan:
    """The plan of a topology given as a shipped name, a path, YAML text or a dict, named `name`."""
    if isinstance(topology, dict):
        return plan_from_data(topology, "<test topology>", name=name)
    if isinstance(topology, str) and "\n" in topology:
        return plan_from_text(topology, source="<test topology>", name=name)
    return load_topology(find_topology(topology), name=name)


def capability_missing() -> str | None:
    """Why labs cannot be built here (no root, no /dev/net/tun), or None."""
    for check in (check_privileges(), check_tun_device()):
        if not check.ok:
            return check.detail
    return None


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """While a test holds labs, SIGTERM (a CI job's timeout, `kill`) stops the run as Ctrl-C does, so
    pytest's teardown takes the labs down; death by SIGTERM would leave them up. Put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def nslab_prefix(pytestconfig: pytest.Config) -> str:
    """The prefix of every lab name this run brings up (`--nslab-prefix`, $NSLAB_PREFIX, or "pt")."""
    prefix = pytestconfig.getoption("--nslab-prefix") or os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX
    problem = prefix_problem(prefix)
    if problem is not None:
        raise pytest.UsageError(problem)
    return prefix


@pytest.fixture
def nslab_up(request: pytest.FixtureRequest, nslab_prefix: str, tmp_path: Path) -> Iterator[LabUp]:
    """`nslab_up(topology)`: bring a lab up for this test; every one is down when the test ends."""
    missing = capability_missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and nslab labs cannot be built here: {missing}", pytrace=False)
        pytest.skip(f"nslab labs cannot be built here: {missing}")
    with ExitStack() as labs:
        labs.enter_context(sigterm_as_ctrl_c())

        def up(topology: Topology) -> Lab:
            try:
                plan = plan_for(topology, unique_name(nslab_prefix))
            except TopologyError as error:  # file:line, field, value: one line, no traceback
                shipped = ", ".join(shipped_topologies())
                pytest.fail(f"nslab topology: {error} (shipped topologies: {shipped})", pytrace=False)
            try:
                running = labs.enter_context(lab_for_experiment(plan, None))
            except Interrupted:
                raise KeyboardInterrupt from None  # Ctrl-C while building: pytest stops the whole run
            except LabError as error:  # the build rolled itself back: nothing is left half-built
                pytest.fail(f"nslab: lab {plan.name} could not be brought up: {error}", pytrace=False)
            cleanup = labs.enter_context(ExitStack())  # sockets, clients, traces: closed before the lab
            lab = Lab(running, cleanup, tmp_path)
            request.node.stash.setdefault(LABS_KEY, []).append(lab)
            return lab

        try:
            yield up
        except Interrupted:
            raise KeyboardInterrupt from None


@pytest.fixture
def nslab(request: pytest.FixtureRequest, nslab_up: LabUp) -> Lab:
    """The lab of `@pytest.mark.nslab_topology(...)` (default: the shipped pair topology), for one test."""
    marker = request.node.get_closest_marker(MARKER)
    topology: Topology = DEFAULT_TOPOLOGY_NAME
    if marker is not None:
        if len(marker.args) != 1 or marker.kwargs:
            pytest.fail(f"@pytest.mark.{MARKER}: expected one topology, got {marker.args!r} "
                        f"{marker.kwargs!r}", pytrace=False)
        topology = marker.args[0]
    lab = nslab_up(topology)
    capture = request.node.get_closest_marker(CAPTURE_MARKER)
    for node in capture.args if capture is not None else ():
        lab.capture(node)
    return lab
