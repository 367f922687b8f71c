"""Root tests of bad input against the real thing: values the kernel would refuse never reach it, and
a running pystack node answers every bad control request and keeps serving.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lab.build import builder
from lab.build.control import control_socket_path
from lab.build.state import LabState
from lab.kernel.namespaces import list_namespaces
from lab.topology import DEFAULT_TOPOLOGY, load_topology
from tests.lab.build.test_integration import PAIR_KERNEL

PROJECT_ROOT = Path(__file__).resolve().parents[2]

KERNEL_LINK = PAIR_KERNEL + "    impair: {rate: RATE}\n"


def run_lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.root
@pytest.mark.parametrize("rate", ["1bit", "100000gbit"])
def test_a_rate_tc_cannot_take_is_exit_2_before_anything_is_created(lab_name: str, tmp_path: Path,
                                                                    rate: str) -> None:
    topology = tmp_path / "rate.yaml"
    topology.write_text(KERNEL_LINK.replace("RATE", rate))
    result = run_lab("up", str(topology), "--name", lab_name)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"lab: {topology}:8: links[0].impair.rate: expected a rate from 1kbit to 32gbit "
                             f"like 100mbit, 1gbit or 500kbit, got '{rate}'\n")
    assert [ns for ns in list_namespaces() if ns.startswith(f"{lab_name}-")] == []
    assert not LabState.for_lab(lab_name).directory.exists()


def _exchange(sock: socket.socket, stream: socket.SocketIO, line: bytes) -> dict:
    sock.sendall(line + b"\n")
    answer = stream.readline()
    assert answer.endswith(b"\n"), f"no answer to {line[:40]!r}"
    return json.loads(answer)


@pytest.mark.root
def test_a_running_node_answers_every_bad_request_and_keeps_serving(lab_name: str) -> None:
    builder.up(load_topology(DEFAULT_TOPOLOGY, name=lab_name))
    bad = [b"[" * 100_000, b'{"cmd": "hello", "pad": "' + b"x" * (3 << 20) + b'"}', b"\xff\xfe not json",
           b'{"cmd": "listen", "port": 5000, "backlog": 1000000000000}', b'{"cmd": "teleport"}',
           b'{"cmd": "listen", "port": "5000"}',
           b'{"cmd": "connect", "addr": "10.0.0.1", "port": 7, "send": -1}',
           b'{"cmd": "config", "tcp": {"keepalive_time": 1e300}}']
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(str(control_socket_path(lab_name, "s1")))
        stream = sock.makefile("rb")
        answers = [_exchange(sock, stream, line) for line in bad]
        hello = _exchange(sock, stream, b'{"cmd": "hello"}')
        listen = _exchange(sock, stream, b'{"cmd": "listen", "port": 5000, "backlog": 16}')
    assert [answer["ok"] for answer in answers] == [False] * len(bad)
    assert all(answer["error"] and "\n" not in answer["error"] for answer in answers)
    assert "nested deeper" in answers[0]["error"] and "longer than" in answers[1]["error"]
    assert "'backlog': 1000000000000 is outside 0 to 65535" in answers[3]["error"]
    assert hello["ok"] and listen == {"ok": True, "port": 5000}
    os.kill(hello["pid"], 0)  # the node is still there
    log = LabState.for_lab(lab_name).node_log_path("s1").read_text()
    assert "Traceback" not in log, log
    stack = run_lab("stack", lab_name, "s1", "tables", "--json")  # and a new connection is served
    assert stack.returncode == 0 and any(row["local"].endswith(":5000")
                                         for row in json.loads(stack.stdout)["listening"])


@pytest.mark.root
def test_lab_stack_on_a_kernel_node_points_at_its_kernel_sockets(lab_name: str) -> None:
    builder.up(load_topology(DEFAULT_TOPOLOGY, name=lab_name))
    kernel = run_lab("stack", lab_name, "h1", "ss")
    assert kernel.returncode == 2
    assert kernel.stderr.startswith(f"lab: {lab_name}/h1 is a kernel node")
    assert f"`lab exec {lab_name} h1 -- ss -tan`" in kernel.stderr and kernel.stderr.count("\n") == 1
    shown = run_lab("exec", lab_name, "h1", "--", "ss", "-tan")  # and what it suggests works
    assert shown.returncode == 0 and "State" in shown.stdout
    assert run_lab("stack", lab_name, "s1", "ss").returncode == 0
