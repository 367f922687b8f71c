"""`lab script` against Linux: kernel sockets in a throw-away namespace behind the runner's TUN device.

The starter scripts pass on Linux and on the stack, the must-fail ones fail on both at their line, shell
lines run inside the namespace in the script's folder, the CLI's exit codes hold, and no namespace of the
runner is left behind, also after a call that was still blocked when the script ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lab.script.run import load, play
from lab.script.syntax import parse_text

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
PASSING = sorted(SCRIPTS.glob("*.pkt"))
MUST_FAIL = {"wrong_flag.pkt": 6, "wrong_ack.pkt": 6, "wrong_seq.pkt": 10, "missing_segment.pkt": 9,
             "wrong_errno.pkt": 3}
LAB = [sys.executable, "-m", "lab"]
# This run's own prefix: other runs of `lab script` on the machine make `sr...` namespaces of their own.
PREFIX = f"sr{uuid.uuid4().hex[:4]}t"


def runner_namespaces() -> set[str]:
    try:
        names = os.listdir("/run/netns")
        return {name for name in names if name.startswith(PREFIX) and name.endswith("-pkt")}
    except FileNotFoundError:
        return set()


@pytest.fixture
def no_namespace_left() -> object:
    before = runner_namespaces()
    yield
    assert before == set() and runner_namespaces() == set(), "a script namespace was left behind"


@pytest.mark.root
@pytest.mark.parametrize("path", PASSING, ids=lambda path: path.name)
def test_starter_scripts_pass_on_linux_and_the_stack(path: Path, no_namespace_left: object) -> None:
    linux, stack = play(load(path), ("linux", "stack"), prefix=PREFIX)
    assert linux.passed, linux.difference
    assert stack.passed, stack.difference


@pytest.mark.root
@pytest.mark.parametrize(("name", "line"), sorted(MUST_FAIL.items()))
def test_must_fail_scripts_fail_on_linux_and_the_stack(name: str, line: int,
                                                       no_namespace_left: object) -> None:
    for result in play(load(SCRIPTS / "must-fail" / name), ("linux", "stack"), prefix=PREFIX):
        assert not result.passed and result.line == line, (result.side, result.difference)


@pytest.mark.root
def test_shell_lines_run_inside_the_namespace_in_the_script_folder(tmp_path: Path,
                                                                   no_namespace_left: object) -> None:
    (tmp_path / "beside.txt").write_text("here\n")
    script = tmp_path / "shell.pkt"
    script.write_text("0 `test -f beside.txt`\n"
                      "+0 `grep -q tun0 /proc/net/dev`\n"
                      "+0 `! grep -q veth /proc/net/dev`\n")
    [linux] = play(load(script), ("linux",), prefix=PREFIX)
    assert linux.passed, linux.difference
    script.write_text("0 `exit 3`\n")
    [failed] = play(load(script), ("linux",), prefix=PREFIX)
    assert not failed.passed and "exited 3" in (failed.difference or "")


@pytest.mark.root
def test_a_call_blocked_at_the_end_fails_and_leaves_nothing(no_namespace_left: object) -> None:
    script = parse_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n"
                        "+0 listen(3, 1) = 0\n+0 accept(3, ..., ...) = 4\n", "blocked.pkt")
    for result in play(script, ("linux", "stack"), prefix=PREFIX):
        assert not result.passed and "still blocked" in (result.difference or ""), result.side
    connecting = parse_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 connect(3, ..., ...) = 0\n"
                            "+0 > S 0:0(0) <...>\n", "connecting.pkt")
    started = time.monotonic()
    [linux] = play(connecting, ("linux",), prefix=PREFIX)
    assert not linux.passed and "still blocked" in (linux.difference or "")
    assert time.monotonic() - started < 10  # the SYN_SENT socket was woken, not left to time out


@pytest.mark.root
def test_cli_exit_codes_against_both(tmp_path: Path) -> None:
    ok = subprocess.run([*LAB, "script", str(SCRIPTS / "data_out.pkt"), "--json"], capture_output=True,
                        text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    sides = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [side["side"] for side in sides] == ["linux", "stack"] and all(side["passed"] for side in sides)
    failing = subprocess.run([*LAB, "script", str(SCRIPTS / "must-fail" / "wrong_errno.pkt")],
                             capture_output=True, text=True, timeout=120, check=False)
    assert failing.returncode == 1 and "wrong_errno.pkt:3:" in failing.stdout
    bad = tmp_path / "bad.pkt"
    bad.write_text("0 < S 0:0(0) win 99999\n")
    unreadable = subprocess.run([*LAB, "script", str(bad), "--against", "linux"], capture_output=True,
                                text=True, timeout=120, check=False)
    assert unreadable.returncode == 2 and f"{bad}:1:" in unreadable.stderr


@pytest.mark.root
def test_ctrl_c_stops_a_linux_run_with_130() -> None:
    argv = [*LAB, "script", str(SCRIPTS / "syn_ack_retransmit.pkt"), "--against", "linux"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # inside the 3 s of SYN-ACK backoff
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "stopped by SIGINT" in err
