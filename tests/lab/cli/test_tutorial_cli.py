"""`lab tutorial`: list, show and run's contract (exit codes, one-line errors, --json, help examples).

The root tests run a tutorial as a user would (`python -m lab tutorial run ...`): once to the end,
checking the JSON shape and exit 0, and once interrupted by Ctrl-C in the middle of a step, checking
exit 130 and that the run's lab is gone (no namespace of it is left).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.build import builder
from lab.build.state import list_labs
from lab.cli import app
from tests.lab.cli.messages import one_line

PROJECT_ROOT = Path(__file__).resolve().parents[3]
NETNS_DIR = Path("/run/netns")






def test_list_prints_number_slug_title(runner: CliRunner) -> None:
    result = runner.invoke(app, ["tutorial", "list", "--json"])
    assert result.exit_code == 0
    listed = json.loads(result.stdout)
    by_number = {entry["number"]: entry for entry in listed}
    assert by_number[1]["slug"] == "socket-bind-listen" and by_number[6]["title"] == "close"
    assert set(by_number[4]) >= {"number", "slug", "title", "summary", "seed", "kernel", "topology"}
    table = runner.invoke(app, ["tutorial", "list"])
    assert table.exit_code == 0 and "accept-new-socket" in table.stdout


def test_show_prints_the_text_and_what_it_mirrors(runner: CliRunner) -> None:
    result = runner.invoke(app, ["tutorial", "show", "accept-new-socket"])
    assert result.exit_code == 0
    assert result.stdout.startswith("Tutorial 4: accept returns a new socket")
    assert "inet_csk_accept" in result.stdout and "lab tutorial run 4" in result.stdout


@pytest.mark.parametrize("argv", [["tutorial", "show", "99"], ["tutorial", "run", "nope"],
                                  ["tutorial", "run", "/no/such/07-folder"]])
def test_an_unknown_tutorial_is_exit_2_in_one_line(runner: CliRunner, argv: list[str]) -> None:
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert one_line(result.stderr).startswith("lab: ")


def test_bad_options_are_exit_2_before_any_lab(runner: CliRunner) -> None:
    result = runner.invoke(app, ["tutorial", "run", "1", "--name", "Bad Name"])
    assert result.exit_code == 2 and "lab name 'Bad Name'" in one_line(result.stderr)
    result = runner.invoke(app, ["tutorial", "run", "1", "--name", "much-too-long"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["tutorial", "run", "1", "--step", "--json"])
    assert result.exit_code == 2 and "--step" in one_line(result.stderr)
    assert runner.invoke(app, ["tutorial", "run"]).exit_code == 2


@pytest.mark.parametrize("argv", [["tutorial"], ["tutorial", "list"], ["tutorial", "show"],
                                  ["tutorial", "run"]])
def test_every_help_ends_with_an_example(runner: CliRunner, argv: list[str]) -> None:
    result = runner.invoke(app, [*argv, "--help"])
    assert result.exit_code == 0
    assert result.stdout.strip().splitlines()[-1].strip().startswith("Example: lab tutorial")


def our_namespaces(prefix: str) -> list[str]:
    return sorted(name for name in os.listdir(NETNS_DIR) if name.startswith(prefix)) \
        if NETNS_DIR.is_dir() else []


@pytest.fixture
def prefix() -> Iterator[str]:
    """The `--name` prefix of a run's lab; a lab left by a run the test had to kill is taken down."""
    prefix = f"tc{uuid.uuid4().hex[:4]}"
    yield prefix
    for name in list_labs():
        if name.startswith(prefix):
            builder.down(name)


def start(*argv: str, stdin: bool = False) -> subprocess.Popen[str]:
    """`python -m lab ARGV`; with `stdin`, its input is a pipe (the Enters `--step` waits for)."""
    with open(os.devnull) as empty:
        return subprocess.Popen([sys.executable, "-m", "lab", *argv], cwd=PROJECT_ROOT, text=True,
                                stdin=subprocess.PIPE if stdin else empty, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.root
def test_run_json_has_the_issue_shape_and_exit_0(tmp_path: Path, prefix: str) -> None:
    process = start("tutorial", "run", "4", "--json", "--out", str(tmp_path), "--name", prefix)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    result = json.loads(out)
    assert result["tutorial"] == "accept-new-socket" and result["passed"] is True
    assert result["lab"].startswith(prefix)
    assert set(result["artifacts"]) >= {"report", "ladder", "pcap", "plots"}
    assert Path(result["artifacts"]["report"]).is_file() and Path(result["artifacts"]["ladder"]).is_file()
    assert len(result["artifacts"]["pcap"]) == 2, "both ends captured"
    step = result["steps"][0]
    assert set(step) == {"title", "observed", "checks"}
    assert set(step["checks"][0]) == {"name", "passed", "detail"}
    assert our_namespaces(prefix) == []


@pytest.mark.root
def test_ctrl_c_during_a_step_exits_130_with_the_lab_down(tmp_path: Path, prefix: str) -> None:
    process = start("tutorial", "run", "6", "--out", str(tmp_path), "--name", prefix)
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("Step 1:") for line in lines):
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first step never began"
            time.sleep(0.02)
        time.sleep(0.3)  # inside the first step: its exchanges are running
        assert our_namespaces(prefix), "the lab is up during the step"
        assert process.poll() is None, "the tutorial ended before the signal"
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        err = process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    reader.join(5)
    assert process.returncode == 130, err[-2000:]
    assert "stopped by SIGINT" in err
    assert not any(line.startswith("Step 3:") for line in lines), "the run stopped where it was"
    assert our_namespaces(prefix) == []


@pytest.mark.root
def test_step_waits_for_enter_before_each_step(tmp_path: Path, prefix: str) -> None:
    process = start("tutorial", "run", "4", "--step", "--out", str(tmp_path), "--name", prefix, stdin=True)
    out, err = process.communicate("\n" * 3, timeout=120)
    assert process.returncode == 0, err[-2000:]
    assert err.count("(Enter to run this step)") == 3
    assert "Step 1: Linux: the listener" in out and "Step 3: closing a listener" in out


@pytest.mark.root
def test_ctrl_c_while_step_waits_for_enter_exits_130_with_the_lab_down(tmp_path: Path, prefix: str) -> None:
    process = start("tutorial", "run", "4", "--step", "--out", str(tmp_path), "--name", prefix, stdin=True)
    try:
        deadline = time.monotonic() + 60
        while not our_namespaces(prefix):  # the lab is up before the first step waits
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # waiting for Enter: nobody types
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err[-2000:]
    assert our_namespaces(prefix) == []
