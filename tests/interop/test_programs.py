"""Unmodified Python programs on a pystack node (`lab exec LAB s1 -- python3 ...`), driven by stock clients.

One pair lab for the module (h1 kernel 10.0.0.1, s1 stack 10.0.0.2). The programs in `programs/` run on
s1 through `lab exec`, each its own process, several at once, while s1's own apps keep serving; curl and
nc in h1 drive them, and kernel servers in h1 answer the clients among them. `behaviours.py` runs on both
nodes and the stack's errno answers must be the kernel's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.experiments.running import RunningLab, lab_for_experiment
from lab.topology import DEFAULT_TOPOLOGY, load_topology, plan_from_text
from tests.interop.conftest import unique_lab_name

PROGRAMS = Path(__file__).parent / "programs"
STACK, KERNEL = "10.0.0.2", "10.0.0.1"


@pytest.fixture(scope="module")
def lab() -> Iterator[RunningLab]:
    plan = load_topology(DEFAULT_TOPOLOGY, name=unique_lab_name("sp"))
    with lab_for_experiment(plan, None) as running:
        yield running


def lab_exec(lab: RunningLab, node: str, *argv: str, bare: bool = False) -> list[str]:
    return [sys.executable, "-m", "lab", "exec", lab.name, node, *(["--bare"] if bare else []), "--", *argv]


class Programs:
    """Programs started in the lab for one test, each stopped (SIGTERM, then SIGKILL) at its end."""

    def __init__(self, lab: RunningLab) -> None:
        self.lab = lab
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, node: str, *argv: str, ready: str = "serving") -> subprocess.Popen[bytes]:
        process = subprocess.Popen(lab_exec(self.lab, node, *argv), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        self.started.append(process)
        assert process.stdout is not None
        deadline = time.monotonic() + 15
        seen = b""
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            seen += line
            if ready.encode() in line:
                return process
            if not line and process.poll() is not None:
                break
        raise AssertionError(f"{argv} did not say {ready!r}: {seen.decode(errors='replace')}")

    def stop(self) -> None:
        for process in self.started:
            process.terminate()
        for process in self.started:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@pytest.fixture
def programs(lab: RunningLab) -> Iterator[Programs]:
    running = Programs(lab)
    try:
        yield running
    finally:
        running.stop()


def run(lab: RunningLab, node: str, *argv: str, data: bytes | None = None, timeout: float = 30,
        bare: bool = False) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(lab_exec(lab, node, *argv, bare=bare), input=data, capture_output=True,
                          timeout=timeout, check=False)


def payload(size: int) -> bytes:
    return os.urandom(size)


@pytest.mark.root
def test_http_server_on_the_stack_serves_curl_beside_the_node_apps(lab: RunningLab, programs: Programs,
                                                                   tmp_path: Path) -> None:
    body = payload(2_000_000)
    (tmp_path / "file.bin").write_bytes(body)
    programs.start("s1", "python3", "-m", "http.server", "--bind", STACK, "8080", "--directory",
                   str(tmp_path), ready="Serving HTTP")
    got = run(lab, "h1", "curl", "-s", "--max-time", "20", f"http://{STACK}:8080/file.bin")
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(got.stdout).hexdigest() == hashlib.sha256(body).hexdigest()
    app = run(lab, "h1", "curl", "-s", "--max-time", "10", f"http://{STACK}/bytes/1000")  # the node's app
    assert app.returncode == 0 and len(app.stdout) == 1000
    (tmp_path / "small").write_bytes(b"x" * 5000)
    bench = run(lab, "h1", "ab", "-q", "-n", "300", "-c", "10", f"http://{STACK}:8080/small", timeout=60)
    report = bench.stdout.decode()
    assert bench.returncode == 0 and "Complete requests:      300" in report, report
    assert "Failed requests:        0" in report, report


@pytest.mark.root
@pytest.mark.parametrize("program", ["echo_socketserver.py", "asyncio_echo.py", "selectors_echo.py"])
def test_echo_servers_on_the_stack_echo_nc(lab: RunningLab, programs: Programs, program: str) -> None:
    port = {"echo_socketserver.py": "7001", "asyncio_echo.py": "7002", "selectors_echo.py": "7003"}[program]
    programs.start("s1", "python3", str(PROGRAMS / program), STACK, port)
    data = payload(1_000_000)
    got = run(lab, "h1", "nc", "-N", STACK, port, data=data)
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(got.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.root
def test_several_programs_at_once_each_its_own_process(lab: RunningLab, programs: Programs) -> None:
    programs.start("s1", "python3", str(PROGRAMS / "asyncio_echo.py"), STACK, "7011")
    programs.start("s1", "python3", str(PROGRAMS / "echo_socketserver.py"), STACK, "7012")
    clients = [subprocess.Popen(lab_exec(lab, "h1", "nc", "-N", STACK, port), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE) for port in ("7011", "7012", "7011", "7012")]
    data = [payload(300_000) for _ in clients]
    outputs = [client.communicate(chunk, timeout=30)[0] for client, chunk in zip(clients, data, strict=True)]
    assert outputs == data


@pytest.mark.root
def test_clients_on_the_stack_against_kernel_servers(lab: RunningLab, programs: Programs,
                                                     tmp_path: Path) -> None:
    body = payload(1_500_000)
    (tmp_path / "file.bin").write_bytes(body)
    programs.start("h1", "python3", "-m", "http.server", "--bind", KERNEL, "8081", "--directory",
                   str(tmp_path), ready="Serving HTTP")
    programs.start("h1", "python3", str(PROGRAMS / "asyncio_echo.py"), KERNEL, "7100")
    got = run(lab, "s1", "python3", str(PROGRAMS / "http_get.py"), f"http://{KERNEL}:8081/file.bin")
    assert got.returncode == 0, got.stderr
    answer = json.loads(got.stdout)
    digest = hashlib.sha256(body).hexdigest()
    assert answer["urllib"] == {"status": 200, "length": len(body), "sha256": digest}
    assert answer["http_client"]["sha256"] == digest and answer["http_client"]["local"][0] == STACK
    echoed = run(lab, "s1", "python3", str(PROGRAMS / "asyncio_client.py"), KERNEL, "7100", "500000")
    assert echoed.returncode == 0, echoed.stderr
    figures = json.loads(echoed.stdout)
    assert figures["received"] == 500_000 and figures["received_sha256"] == figures["sent_sha256"]
    assert figures["local"][0] == STACK


@pytest.mark.root
def test_errno_answers_are_the_kernels(lab: RunningLab, programs: Programs) -> None:
    programs.start("h1", "python3", str(PROGRAMS / "asyncio_echo.py"), KERNEL, "7200")
    programs.start("h1", "python3", str(PROGRAMS / "reset_server.py"), KERNEL, "7201")
    stack = run(lab, "s1", "python3", str(PROGRAMS / "behaviours.py"), KERNEL, "7200", "7201", "7299",
                "10.0.0.99", "80", STACK)
    kernel = run(lab, "h1", "python3", str(PROGRAMS / "behaviours.py"), KERNEL, "7200", "7201", "7299",
                 "10.0.0.99", "7200", KERNEL)
    assert stack.returncode == 0 and kernel.returncode == 0, (stack.stderr, kernel.stderr)
    on_stack, on_kernel = json.loads(stack.stdout), json.loads(kernel.stdout)
    assert on_stack.pop("udp").startswith("StackSocket:2")  # a UDP socket stays the real one
    on_kernel.pop("udp")
    on_stack["names"].pop("bound_ip")
    on_kernel["names"].pop("bound_ip")
    assert on_stack == on_kernel
    assert on_stack["nonblocking_refused"]["so_error"] == "ECONNREFUSED"
    assert on_stack["reset"] == {"recv": "ConnectionResetError:ECONNRESET"}


@pytest.mark.root
def test_bare_exec_and_non_python_commands_run_in_the_namespace(lab: RunningLab) -> None:
    bare = run(lab, "s1", "python3", "-c", "import socket; print(type(socket.socket()).__name__)", bare=True)
    assert bare.stdout.strip() == b"socket"
    shimmed = run(lab, "s1", "python3", "-c", "import socket; print(type(socket.socket()).__name__)")
    assert shimmed.stdout.strip() == b"StackSocket"


NO_PROCESS = """
name: noproc
nodes:
  h1: {kind: kernel}
  s1: {kind: pystack, process: false}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
"""


@pytest.mark.root
def test_exec_on_a_pystack_node_without_a_stack_process_says_so() -> None:
    plan = plan_from_text(NO_PROCESS, source="<test topology>", name=unique_lab_name("sp"))
    with lab_for_experiment(plan, None) as running:
        result = subprocess.run(lab_exec(running, "s1", "python3", "-c", "print('ran')"),
                                capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ran"
    assert "without a socket service" in result.stderr and "process: false" in result.stderr


@pytest.mark.root
def test_a_killed_program_frees_its_port_and_the_node_serves_on(lab: RunningLab, programs: Programs) -> None:
    server = programs.start("s1", "python3", str(PROGRAMS / "echo_socketserver.py"), STACK, "7400")
    client = subprocess.Popen(lab_exec(lab, "h1", "nc", STACK, "7400"), stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
    assert client.stdin is not None
    client.stdin.write(b"x" * 100_000)
    client.stdin.flush()
    time.sleep(0.5)
    subprocess.run(["pkill", "-KILL", "-P", str(server.pid)], check=False)  # the program, under lab exec
    server.wait(10)
    client.kill()
    client.wait(5)
    answer = run(lab, "h1", "curl", "-s", "--max-time", "10", f"http://{STACK}/bytes/100")
    assert answer.returncode == 0 and len(answer.stdout) == 100
    deadline = time.monotonic() + 10
    rebind = ("import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
              f"s.bind(('{STACK}', 7400)); s.listen()")  # SO_REUSEADDR: the closed connection is in TIME_WAIT
    while True:  # the listener closes when the killed program's descriptors do
        again = run(lab, "s1", "python3", "-c", rebind)
        if again.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.returncode == 0, again.stderr


@pytest.mark.root
def test_a_program_that_does_not_accept_fills_the_accept_queue(lab: RunningLab, programs: Programs) -> None:
    programs.start("s1", "python3", "-c", "import socket, time; s = socket.socket(); "
                   f"s.bind(('{STACK}', 7500)); s.listen(2); print('serving', flush=True); time.sleep(60)")
    clients = [subprocess.Popen(lab_exec(lab, "h1", "nc", STACK, "7500"), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL) for _ in range(6)]
    try:
        deadline = time.monotonic() + 10
        queue = None
        while time.monotonic() < deadline:
            command = [sys.executable, "-m", "lab", "stack", lab.name, "s1", "tables", "--json"]
            tables = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
            entry = [e for e in json.loads(tables.stdout)["listening"] if e["local"] == f"{STACK}:7500"]
            queue = entry[0]["accept_queue"] if entry else None
            if queue == 3:
                break
            time.sleep(0.3)
        assert queue == 3  # backlog 2 holds 3, as Linux's does; one more waits in the program's listener
    finally:
        for client in clients:
            client.kill()
            client.wait(5)
