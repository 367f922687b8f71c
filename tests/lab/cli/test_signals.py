"""Ctrl-C and SIGTERM at any moment of `lab up`, `lab run`, `lab bench` and `lab down` (root).

Each test runs `python -m lab ...` as a user would, sends the signal at a chosen moment (the transfer
under way, the build half done), and checks the contract: exit 130 (SIGINT) or 143 (SIGTERM) within
a second and a half of the signal, one stderr line saying what was cleaned, and nothing of the lab
left: no namespace, no state, no root interface, no process the command started. A lab that was up
before `lab run --lab` stays up with its stack process alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest

from lab.build import builder
from lab.build.control import StackClient, StackControlError
from lab.build.processes import is_running, journaled_processes
from lab.build.state import LabError, LabState
from lab.topology import load_topology
from lab.topology.chain import chain_yaml
from tests.lab.build.test_integration import NOTHING, traces

PROJECT_ROOT = Path(__file__).resolve().parents[3]
STOP_WITHIN_SECONDS = 1.5
SIGNALS = [pytest.param(signal.SIGINT, 130, id="SIGINT"), pytest.param(signal.SIGTERM, 143, id="SIGTERM")]


def start_lab(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lab", *args], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], timeout: float,
             what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"`lab` exited {process.returncode} before {what}: {err[-500:]} {out[-300:]}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate()
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.01)


def descendants(pid: int) -> set[int]:
    """Every living process below `pid` (children, their children, ...)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def signal_and_wait(process: subprocess.Popen[str], signum: int, *,
                    again_after: float | None = None) -> tuple[int, float, str]:
    """Send `signum` (and once more after `again_after` s); (exit code, seconds to exit, stderr)."""
    started = time.monotonic()
    process.send_signal(signum)
    if again_after is not None:
        time.sleep(again_after)
        if process.poll() is None:
            process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"`lab` still ran 30 s after {signal.Signals(signum).name}: {err[-500:]}")
    return process.returncode, time.monotonic() - started, err


def transfer_started(lab: str, ports: tuple[int, ...] = (7200, 7201)) -> Callable[[], bool]:
    """True once the stack node s1 has an established connection to one of `ports` (bulk's, by default)."""
    remotes = tuple(f":{port}" for port in ports)

    def check() -> bool:
        try:
            with StackClient.for_node(lab, "s1", timeout=1.0) as client:
                return any(c["state"] == "ESTABLISHED" and c["remote"].endswith(remotes)
                           for c in client.ss()["connections"])
        except (StackControlError, OSError):
            return False
    return check


def lab_is_up(lab: str) -> Callable[[], bool]:
    def check() -> bool:
        record = LabState.for_lab(lab).read_plan()
        return record is not None and record.get("phase") == "up"
    return check


def assert_one_line(err: str, signum: int, *mentions: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"lab: stopped by {signal.Signals(signum).name}; "), err
    for mention in mentions:
        assert mention in lines[0], err


@pytest.mark.root
@pytest.mark.parametrize("signum, code", SIGNALS)
def test_a_signal_during_a_bulk_transfer_takes_its_lab_down_at_once(lab_name: str, signum: int,
                                                                    code: int) -> None:
    process = start_lab("run", "bulk", "--name", lab_name, "--option", "bytes=4G")
    wait_for(transfer_started(lab_name), process, 30, "the transfer started")
    children = descendants(process.pid)
    assert children, "the run started no stack process"
    exit_code, seconds, err = signal_and_wait(process, signum)
    assert exit_code == code, err
    assert seconds < STOP_WITHIN_SECONDS, f"took {seconds:.2f} s to stop"
    assert_one_line(err, signum, f"took down lab {lab_name}")
    assert traces(lab_name) == NOTHING
    assert not [pid for pid in children if is_running(pid, None)], "processes of the run outlived it"


@pytest.mark.root
@pytest.mark.parametrize("signum, code", SIGNALS)
def test_a_signal_during_a_silent_wait_stops_within_a_second(lab_name: str, signum: int, code: int) -> None:
    """`lab run timeout` spends 15 s in one control request: the signal must not wait for its answer."""
    process = start_lab("run", "timeout", "--name", lab_name)
    wait_for(lab_is_up(lab_name), process, 30, "the lab came up")
    time.sleep(1.5)  # inside the connect to the silent address
    children = descendants(process.pid)
    exit_code, seconds, err = signal_and_wait(process, signum)
    assert exit_code == code, err
    assert seconds < STOP_WITHIN_SECONDS, f"took {seconds:.2f} s to stop"
    assert_one_line(err, signum, f"took down lab {lab_name}")
    assert traces(lab_name) == NOTHING
    assert not [pid for pid in children if is_running(pid, None)]


@pytest.mark.root
def test_a_second_ctrl_c_during_cleanup_still_leaves_nothing(lab_name: str) -> None:
    process = start_lab("run", "bulk", "--name", lab_name, "--option", "bytes=4G")
    wait_for(transfer_started(lab_name), process, 30, "the transfer started")
    exit_code, seconds, err = signal_and_wait(process, signal.SIGINT, again_after=0.02)
    assert exit_code == 130, err
    assert seconds < STOP_WITHIN_SECONDS
    assert traces(lab_name) == NOTHING


@pytest.mark.root
@pytest.mark.parametrize("signum, code", SIGNALS)
def test_a_lab_that_was_up_before_the_run_stays_up(lab_name: str, signum: int, code: int) -> None:
    plan = load_topology(str(PROJECT_ROOT / "topologies/pair.yaml"), name=lab_name)
    builder.up(plan)
    stack = journaled_processes(LabState.for_lab(lab_name))["s1"]
    process = start_lab("run", "bulk", "--lab", lab_name, "--option", "bytes=4G")
    wait_for(transfer_started(lab_name), process, 30, "the transfer started")
    children = descendants(process.pid)
    exit_code, seconds, err = signal_and_wait(process, signum)
    assert exit_code == code, err
    assert seconds < STOP_WITHIN_SECONDS, f"took {seconds:.2f} s to stop"
    assert_one_line(err, signum, f"left lab {lab_name} up")
    assert lab_is_up(lab_name)()
    assert is_running(stack.pid, stack.start_ticks), "the lab's stack process died with the run"
    with StackClient.for_node(lab_name, "s1", timeout=5.0) as client:
        assert client.hello()
    assert not [pid for pid in children if is_running(pid, None)], "the run's own children outlived it"
    builder.down(lab_name)


@pytest.mark.root
@pytest.mark.parametrize("signum, code", SIGNALS)
def test_a_signal_midway_through_up_removes_what_was_built(lab_name: str, tmp_path: Path, signum: int,
                                                           code: int) -> None:
    chain = tmp_path / "chain.yaml"
    chain.write_text(chain_yaml(100, name=lab_name))
    journal = LabState.for_lab(lab_name).journal_path
    for _ in range(3):
        process = start_lab("up", str(chain))
        wait_for(journal.exists, process, 30, "the build started")
        time.sleep(0.1)
        exit_code, seconds, err = signal_and_wait(process, signum)
        if exit_code == 0:  # the build won the race: take it down and try again
            builder.down(lab_name)
            continue
        assert exit_code == code, err
        assert seconds < STOP_WITHIN_SECONDS, f"took {seconds:.2f} s to stop"
        assert_one_line(err, signum, f"rolled back lab {lab_name}")
        assert traces(lab_name) == NOTHING
        return
    pytest.fail("three builds finished before the signal reached them")


@pytest.mark.root
def test_a_signal_during_down_finishes_the_teardown(lab_name: str, tmp_path: Path) -> None:
    chain = tmp_path / "chain.yaml"
    chain.write_text(chain_yaml(100, name=lab_name))
    builder.up(load_topology(str(chain)))
    process = start_lab("down", lab_name)
    namespaces_before = len(traces(lab_name)["namespaces"])
    wait_for(lambda: len(traces(lab_name)["namespaces"]) < namespaces_before, process, 30,
             "the teardown started")
    exit_code, seconds, err = signal_and_wait(process, signal.SIGINT, again_after=0.02)
    assert exit_code in (0, 130), err
    assert seconds < STOP_WITHIN_SECONDS
    if exit_code == 130:
        assert_one_line(err, signal.SIGINT, f"took down lab {lab_name}")
    assert traces(lab_name) == NOTHING


@pytest.mark.root
@pytest.mark.parametrize("signum, code", SIGNALS)
def test_a_signal_during_bench_takes_its_labs_down(lab_name: str, signum: int, code: int) -> None:
    labs = [f"{lab_name}o", f"{lab_name}p", f"{lab_name}ok"]
    process = start_lab("bench", "--name", lab_name, "--seconds", "5")
    try:
        wait_for(transfer_started(labs[0], (7510, 7511)), process, 30, "the first measurement started")
        children = descendants(process.pid)
        exit_code, seconds, err = signal_and_wait(process, signum)
        assert exit_code == code, err
        assert seconds < STOP_WITHIN_SECONDS, f"took {seconds:.2f} s to stop"
        assert_one_line(err, signum, f"took down lab {labs[0]}")
        for lab in labs:
            assert traces(lab) == NOTHING
        assert not [pid for pid in children if is_running(pid, None)]
    finally:
        process.kill()
        process.communicate()
        for lab in labs:
            with suppress(LabError):
                builder.down(lab)
