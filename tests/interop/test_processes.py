"""The stack process of a pystack node: `lab up` starts it, `lab down` stops it, a second `up` restarts
it when dead, and a `lab up` killed while starting it leaves nothing behind `down`. Also `lab stack`.

Every test runs the real `lab` CLI and the real stack process in real namespaces.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.build.control import StackClient, control_socket_path
from lab.build.journal import read_journal
from lab.build.processes import is_running
from lab.build.state import LabState
from lab.kernel.sockets import listening_socket, namespace_socket
from lab.kernel.transfers import BackgroundCall, pattern_sha256, serve_source_once

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LAB = [sys.executable, "-m", "lab"]

pytestmark = pytest.mark.root


def run_lab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT)


def stack_processes(lab: str) -> list[int]:
    """Pids of the journaled node processes that are running."""
    state = LabState.for_lab(lab)
    if not state.journal_path.exists():
        return []
    return [e.pid for e in read_journal(state.journal_path).entries
            if e.kind == "process" and e.name and e.pid and is_running(e.pid, e.start_ticks)]


def leftovers(lab: str) -> list[str]:
    """Anything of the lab that still exists: namespaces, its state directory, processes."""
    found = [f"namespace {n}" for n in os.listdir("/var/run/netns") if n.startswith(f"{lab}-")]
    if LabState.for_lab(lab).directory.exists():
        found.append("state directory")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"/{lab}/nodes/" in command and "stack.node" in command:
                found.append(f"process {entry}")
    return found


def test_up_starts_the_stack_and_down_stops_it(lab_name: str) -> None:
    up = run_lab("up", "pair", "--name", lab_name)
    assert up.returncode == 0, up.stderr
    [pid] = stack_processes(lab_name)
    assert os.readlink(f"/proc/{pid}/ns/net") == _namespace_link(f"{lab_name}-s1")
    with StackClient.for_node(lab_name, "s1") as client:
        hello = client.hello()
    assert hello["node"] == "s1" and hello["lab"] == lab_name and hello["pid"] == pid
    assert hello["address"].startswith("10.0.0.2")
    log = LabState.for_lab(lab_name).nodes_dir / "s1.log"
    assert log.exists()
    socket_path = control_socket_path(lab_name, "s1")
    assert socket_path.exists()

    down = run_lab("down", lab_name, "--json")
    assert down.returncode == 0, down.stderr
    assert f"process {pid} in {lab_name}-s1" in json.loads(down.stdout)[0]["removed"]
    assert not Path(f"/proc/{pid}").exists() or not is_running(pid, None)
    assert not socket_path.exists()
    assert leftovers(lab_name) == []


def _namespace_link(namespace: str) -> str:
    return f"net:[{os.stat(f'/var/run/netns/{namespace}').st_ino}]"


def wait_until_reaped(pid: int, seconds: float = 20) -> None:
    """Until /proc/<pid> is gone: dead *and* reaped by its parent, which for a node started by a `lab up`
    that has exited is init (or the nearest subreaper), not the lab."""
    deadline = time.monotonic() + seconds
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"pid {pid} still in /proc after {seconds} s"
        time.sleep(0.02)


def kernel_exchange(lab: str, port: int, payload: bytes, *, echoed: bool) -> None:
    """A kernel connection from h1 to the stack's app on `port`: sends `payload`, and reads it back
    from an echo app."""
    client = _kernel_socket(f"{lab}-h1")
    try:
        client.connect(("10.0.0.2", port))
        client.sendall(payload)
        if echoed:
            received = b""
            while len(received) < len(payload):
                chunk = client.recv(65536)
                assert chunk, "the echo app closed before echoing everything"
                received += chunk
            assert received == payload
    finally:
        client.close()


def test_a_second_up_restarts_a_dead_stack_with_its_apps_and_status_says_what_died(lab_name: str) -> None:
    """The node is SIGKILLed and reaped (so /proc/PID is gone) before `lab up` runs again."""
    assert run_lab("up", "pair", "--name", lab_name).returncode == 0
    [first] = stack_processes(lab_name)
    again = run_lab("up", "pair", "--name", lab_name)
    assert "nothing changed" in again.stdout and stack_processes(lab_name) == [first]

    os.kill(first, signal.SIGKILL)
    wait_until_reaped(first)
    status = run_lab("status", lab_name, "--json")
    assert status.returncode == 1, status.stderr  # a dead node is drift
    report = json.loads(status.stdout)
    assert report["drift"]["dead"] == [f"stack process of node s1 (process {first} in {lab_name}-s1)"]
    assert report["drift"]["missing"] == []
    [s1] = [node for node in report["nodes"] if node["name"] == "s1"]
    process = s1["stack_process"]
    assert process["pid"] == first and process["running"] is False
    assert process["exit"]["pid"] == first and process["exit"]["seen_gone"].endswith("Z")
    assert process["exit"]["log_ends"] is not None  # it was alive at least until its last log line
    seen_gone = process["exit"]["seen_gone"]
    human = run_lab("status", lab_name)
    assert human.returncode == 1
    assert f"stack s1: died: pid {first} " in human.stdout and f"first seen gone {seen_gone}" in human.stdout

    restarted = run_lab("up", "pair", "--name", lab_name)
    assert restarted.returncode == 0, restarted.stderr
    assert f"restarted the stack process of node s1 (pid {first} was gone: " in restarted.stdout
    assert f"first seen gone {seen_gone})" in restarted.stdout  # the time `lab status` recorded, kept
    [second] = stack_processes(lab_name)
    assert second != first
    with StackClient.for_node(lab_name, "s1") as client:
        hello = client.hello()
    assert hello["pid"] == second
    assert {"app": "echo", "port": 7} in hello["apps"] and {"app": "discard", "port": 9} in hello["apps"]
    kernel_exchange(lab_name, 7, os.urandom(100_000), echoed=True)
    kernel_exchange(lab_name, 9, os.urandom(100_000), echoed=False)

    after = run_lab("status", lab_name, "--json")
    assert after.returncode == 0, after.stdout
    [s1] = [node for node in json.loads(after.stdout)["nodes"] if node["name"] == "s1"]
    assert s1["stack_process"]["running"] is True and s1["stack_process"]["pid"] == second
    assert s1["stack_process"]["exit"]["pid"] == first  # the death that was restarted
    assert run_lab("down", lab_name).returncode == 0
    assert leftovers(lab_name) == []


def test_a_node_that_dies_as_the_labs_child_is_reported_with_its_exit_cause(lab_name: str) -> None:
    """`lab up` run in this process is the node's parent: the status it reaps names the signal."""
    from lab.build import builder
    from lab.build.pids import stat_fields
    from lab.tools.status import lab_status
    from lab.topology import DEFAULT_TOPOLOGY, load_topology

    plan = load_topology(DEFAULT_TOPOLOGY, name=lab_name)
    assert builder.up(plan).changed
    [first] = stack_processes(lab_name)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (stat_fields(first) or ["Z"])[0] != "Z":  # a zombie: only its parent (this process) may reap it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    [s1] = [node for node in lab_status(lab_name)["nodes"] if node["name"] == "s1"]
    assert s1["stack_process"]["exit"]["cause"] == "killed by SIGKILL"
    assert s1["stack_process"]["exit"]["cause_known"] is True
    assert not Path(f"/proc/{first}").exists()  # reaped by `lab status` while it looked
    again = builder.up(plan)
    seen_gone = s1["stack_process"]["exit"]["seen_gone"]
    assert again.restarted == (f"restarted the stack process of node s1 (pid {first} was gone: "
                               f"killed by SIGKILL; first seen gone {seen_gone})",)
    builder.down(lab_name)
    assert leftovers(lab_name) == []


def test_sigkill_of_up_while_it_starts_the_stack_then_down_leaves_nothing(lab_name: str) -> None:
    up = subprocess.Popen([*LAB, "up", "pair", "--name", lab_name], cwd=PROJECT_ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = LabState.for_lab(lab_name).journal_path
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:  # the process is journaled before it runs
            if journal.exists() and '"kind": "process"' in journal.read_text():
                break
            time.sleep(0.001)
        else:
            pytest.fail("lab up never journaled the stack process")
        up.send_signal(signal.SIGKILL)
    finally:
        up.wait(10)
    down = run_lab("down", lab_name)
    assert down.returncode == 0, down.stderr
    assert leftovers(lab_name) == []


def test_process_false_starts_no_stack(lab_name: str, tmp_path: Path) -> None:
    topology = tmp_path / "scripted.yaml"
    topology.write_text("name: scripted\nnodes:\n  h1: {kind: kernel}\n"
                        "  s1: {kind: pystack, process: false}\n"
                        "links:\n  - endpoints: [h1:eth0, s1:eth0]\n    subnet: 10.0.0.0/24\n")
    assert run_lab("up", str(topology), "--name", lab_name).returncode == 0
    assert stack_processes(lab_name) == []
    settings = json.loads(LabState.for_lab(lab_name).node_settings_path("s1").read_text())
    assert settings["process"] is False
    answer = run_lab("stack", lab_name, "s1", "ss")
    assert answer.returncode == 2
    assert answer.stderr.startswith(f"lab: {lab_name}/s1 runs no stack process (process: false")
    assert run_lab("down", lab_name).returncode == 0


def test_lab_stack_verbs_with_json(lab_name: str) -> None:
    assert run_lab("up", "pair", "--name", lab_name).returncode == 0
    listen = run_lab("stack", lab_name, "s1", "listen", "7700", "--app", "echo", "--json")
    assert listen.returncode == 0, listen.stderr
    assert json.loads(listen.stdout)["port"] == 7700

    tables = json.loads(run_lab("stack", lab_name, "s1", "tables", "--json").stdout)
    ports = {row["local"].rsplit(":", 1)[-1] if isinstance(row["local"], str) else row["local"]
             for row in tables["listening"]}
    assert {"7", "9", "19", "80", "7700"} <= {str(p) for p in ports}
    assert all({"backlog", "syn_queue", "accept_queue"} <= set(row) for row in tables["listening"])

    # the kernel connects to the stack's echo listener and holds the connection while we look
    client = _kernel_socket(f"{lab_name}-h1")
    try:
        client.connect(("10.0.0.2", 7700))
        client.sendall(b"ping")
        assert client.recv(4) == b"ping"
        connections = json.loads(run_lab("stack", lab_name, "s1", "ss", "--json").stdout)["connections"]
        [mine] = [c for c in connections if c["remote"] == f"10.0.0.1:{client.getsockname()[1]}"]
        assert mine["state"] == "ESTABLISHED" and mine["local"] == "10.0.0.2:7700"
    finally:
        client.close()

    stats = run_lab("stack", lab_name, "s1", "stats", "--json")
    assert stats.returncode == 0 and json.loads(stats.stdout)["counters"]

    listener = listening_socket(f"{lab_name}-h1", ("10.0.0.1", 7701), timeout=20)
    server = _background(serve_source_once, listener, 100_000)
    connect = run_lab("stack", lab_name, "s1", "connect", "10.0.0.1:7701", "--recv", "--json")
    server.join(20)
    listener.close()
    assert connect.returncode == 0, connect.stderr
    answer = json.loads(connect.stdout)
    assert answer["received"] == 100_000 and answer["received_sha256"] == pattern_sha256(100_000)

    refused = run_lab("stack", lab_name, "s1", "connect", "10.0.0.1:7702", "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"] == "ECONNREFUSED"
    closed = run_lab("stack", lab_name, "s1", "close", "7700", "--json")
    assert closed.returncode == 0 and json.loads(closed.stdout)["closed"] == 1
    bad = run_lab("stack", lab_name, "s1", "listen", "99999")
    assert bad.returncode == 2
    assert bad.stderr == "lab: stack listen: expected a port from 1 to 65535, got '99999'\n"
    unknown = run_lab("stack", lab_name, "nope", "ss")
    assert unknown.returncode == 2 and "has no node 'nope'" in unknown.stderr
    assert run_lab("down", lab_name).returncode == 0


def _kernel_socket(namespace: str) -> socket.socket:
    sock = namespace_socket(namespace)
    sock.settimeout(10)
    return sock


def _background(function: Callable[..., object], *args: object) -> BackgroundCall:
    call = BackgroundCall(function, *args)
    call.start()
    return call


def test_a_stack_whose_journaling_failed_never_runs(lab_name: str, tmp_path: Path) -> None:
    """The child waits behind a pipe until its pid is journaled; if journaling fails (or `up` dies
    there), the pipe closes and the child exits without exec'ing the stack."""
    from lab.build.processes import spawn_node
    from lab.topology.plan import plan_from_json

    topology = tmp_path / "scripted.yaml"
    topology.write_text("name: scripted\nnodes:\n  h1: {kind: kernel}\n"
                        "  s1: {kind: pystack, process: false}\n"
                        "links:\n  - endpoints: [h1:eth0, s1:eth0]\n    subnet: 10.0.0.0/24\n")
    assert run_lab("up", str(topology), "--name", lab_name).returncode == 0
    state = LabState.for_lab(lab_name)
    plan = plan_from_json(state.read_plan()["plan"])

    class FailingJournal:
        def record(self, entries: object) -> None:
            raise OSError("disk full")

    before = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    with pytest.raises(OSError, match="disk full"):
        spawn_node(state, plan.node("s1"), FailingJournal())  # type: ignore[arg-type]
    [child] = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in before
               and Path(f"/proc/{p}/stat").read_text().split()[3] == str(os.getpid())]
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1  # the gate's EOF, not the stack's exit
    assert (state.nodes_dir / "s1.log").read_text() == ""
    assert not control_socket_path(lab_name, "s1").exists()
    assert run_lab("down", lab_name).returncode == 0
