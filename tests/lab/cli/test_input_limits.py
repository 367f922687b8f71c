"""The CLI against input that tries to hurt: exit 2, one line on stderr, within a second, nothing echoed.

These run `lab` in-process (typer's CliRunner) and, for the real exit code and timing of a process a
person starts, as `python -m lab`; none of them needs root, since the refusal comes before anything
is built.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.build.state import LabState
from lab.cli import app
from lab.topology import DEFAULT_TOPOLOGY, load_topology
from tests.lab.topology.test_limits import SHADOW_LIKE, billion_laughs

PROJECT_ROOT = Path(__file__).resolve().parents[3]




def refused_line(runner: CliRunner, *args: str) -> tuple[str, float]:
    started = time.monotonic()
    result = runner.invoke(app, list(args))
    seconds = time.monotonic() - started
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0], seconds


@pytest.mark.parametrize("verb", ["up", "graph"])
def test_an_alias_bomb_is_exit_2_within_a_second(runner: CliRunner, tmp_path: Path, verb: str) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    line, seconds = refused_line(runner, verb, str(bomb))
    assert seconds < 1.0
    assert line.startswith(f"lab: {bomb}:7:")
    assert "not a YAML topology: expected at most 200000 YAML values" in line


@pytest.mark.parametrize("verb", ["up", "graph"])
def test_dev_zero_is_exit_2_within_a_second(runner: CliRunner, verb: str) -> None:
    line, seconds = refused_line(runner, verb, "/dev/zero")
    assert seconds < 1.0
    assert line == "lab: /dev/zero: not a YAML topology: expected a regular file, got a character device"


def test_a_secret_file_is_refused_without_a_word_of_it(runner: CliRunner, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text(SHADOW_LIKE)
    line, _ = refused_line(runner, "up", str(shadow))
    assert line == (f"lab: {shadow}:1: not a YAML topology: expected a mapping with name, nodes and links, "
                    "got a mapping without any of them")


@pytest.mark.parametrize("target", ["/dev/zero", "bomb"])
def test_as_a_process_too(tmp_path: Path, target: str) -> None:
    if target == "bomb":
        target = str(tmp_path / "bomb.yaml")
        Path(target).write_text(billion_laughs())
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "lab", "up", target], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    seconds = time.monotonic() - started
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "not a YAML topology" in result.stderr
    assert seconds < 10  # the interpreter's start and imports included; the refusal itself is milliseconds


def test_lab_stack_on_a_kernel_node_says_what_to_use(runner: CliRunner,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    plan = load_topology(DEFAULT_TOPOLOGY, name="rbpair")
    state = LabState.for_lab("rbpair")
    state.create()
    state.write_plan(plan.to_json(), plan.digest(), "up")
    monkeypatch.setattr("lab.cli.stack.node_namespace", lambda name, node: f"{name}-{node}")
    line, _ = refused_line(runner, "stack", "rbpair", "h1", "ss")
    assert line == (
        "lab: rbpair/h1 is a kernel node: its sockets are the Linux kernel's and it has no control socket; "
        "see them with `lab exec rbpair h1 -- ss -tan` (or `ip netns exec rbpair-h1 ss -tan`); "
        "its pystack nodes are s1"
    )


def test_lab_stack_on_a_node_without_a_process_says_so(runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    topology = tmp_path / "mine.yaml"
    topology.write_text("name: mine\nnodes:\n  h1: {kind: kernel}\n  s1: {kind: pystack, process: false}\n"
                        "links:\n  - endpoints: [h1:eth0, s1:eth0]\n    subnet: 10.0.0.0/24\n")
    plan = load_topology(topology)
    state = LabState.for_lab("mine")
    state.create()
    state.write_plan(plan.to_json(), plan.digest(), "up")
    monkeypatch.setattr("lab.cli.stack.node_namespace", lambda name, node: f"{name}-{node}")
    line, _ = refused_line(runner, "stack", "mine", "s1", "ss")
    assert line.startswith("lab: mine/s1 runs no stack process (process: false in its topology)")


@pytest.mark.parametrize(("args", "expected"), [
    (["listen", "80", "--backlog", str(10**12)],
     "lab: stack --backlog: expected 0 to 65535, got 1000000000000"),
    (["connect", "10.0.0.1:7", "--send", "-1"], f"lab: stack --send: expected 0 to {1 << 40}, got -1"),
    (["connect", "10.0.0.1:7", "--timeout", "0"], "lab: stack --timeout: expected 0.001 to 3600, got 0"),
])
def test_lab_stack_options_out_of_range_are_bad_input(runner: CliRunner, args: list[str],
                                                      expected: str) -> None:
    line, _ = refused_line(runner, "stack", "nolab", "s1", *args)  # refused before the lab is even looked up
    assert line == expected
