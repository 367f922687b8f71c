"""The progress line of long waits: drawn on a terminal's stderr, never on a pipe, never with --json."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rich.console import Console

from lab.cli.progress import describe, progress_line

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def fake_terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, force_interactive=True, width=100), screen


def test_the_line_is_drawn_on_a_terminal_with_each_step() -> None:
    console, screen = fake_terminal()
    with progress_line("bench: starting", console=console) as report:
        report("bench: goodput with TAP offload, each way")
        report("lab x1: 100 namespaces", 1, 8)
    drawn = screen.getvalue()
    assert "lab x1: 100 namespaces (1/8)" in drawn
    assert "0:00:00" in drawn  # the elapsed time


def test_no_line_on_a_pipe_or_with_json() -> None:
    console, screen = fake_terminal()
    with progress_line("lab run: starting", console=console, as_json=True) as report:
        report("running")
    pipe = io.StringIO()
    with progress_line("lab run: starting", console=Console(file=pipe, width=100)) as report:
        report("running")
    dumb = io.StringIO()
    with progress_line("lab run: starting",
                       console=Console(file=dumb, force_terminal=True, width=100,
                                       _environ={"TERM": "dumb"})) as report:
        report("running")
    assert screen.getvalue() == pipe.getvalue() == dumb.getvalue() == ""


def test_a_step_reads_with_its_count_when_it_has_one() -> None:
    assert describe("routes") == "routes"
    assert describe("routes", 6, 8) == "routes (6/8)"


def run_with_terminal_stderr(*args: str) -> tuple[int, str, str]:
    """`python -m lab ARGS`, stderr on a pseudo-terminal, stdout on a pipe: (code, stdout, terminal)."""
    controller, terminal = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120")
    process = subprocess.Popen([sys.executable, "-m", "lab", *args], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                               stderr=terminal, stdin=subprocess.DEVNULL, env=env)
    os.close(terminal)
    seen = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    out, _ = process.communicate(timeout=120)
    reader.join(10)
    os.close(controller)
    return process.returncode, out.decode(), seen.decode(errors="replace")


@pytest.mark.root
def test_lab_run_shows_progress_on_a_terminal_only_without_json(lab_name: str) -> None:
    code, out, terminal = run_with_terminal_stderr("run", "handshake", "--name", lab_name)
    assert code == 0, terminal
    assert f"handshake: running handshake in lab {lab_name}" in terminal
    assert "handshake: passed" in out and "running handshake" not in out  # the table on stdout only

    code, out, terminal = run_with_terminal_stderr("run", "handshake", "--name", lab_name, "--json")
    assert code == 0, terminal
    assert terminal == ""
    assert json.loads(out)["passed"] is True  # stdout is pure JSON


@pytest.mark.root
def test_without_a_terminal_stderr_has_no_progress(lab_name: str) -> None:
    for extra in ([], ["--json"]):
        argv = [sys.executable, "-m", "lab", "run", "handshake", "--name", lab_name, *extra]
        completed = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                                   check=False)
        assert completed.returncode == 0, completed.stderr
        assert completed.stderr == ""
    assert json.loads(completed.stdout)["experiment"] == "handshake"
