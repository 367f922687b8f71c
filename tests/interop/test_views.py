"""`lab capture` and the stack's views, on a real pair lab: pcaps tcpdump reads, bounded by time and
size, whole after Ctrl-C; `lab stack ... tables` and `ss` filters as a student runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.experiments.running import RunningLab, lab_for_experiment
from lab.topology import DEFAULT_TOPOLOGY, load_topology
from stack.devices.pcap import read_pcap
from tests.interop.conftest import unique_lab_name

pytestmark = pytest.mark.root
PROJECT_ROOT = Path(__file__).resolve().parents[2]
ECHO, HTTP = 7, 80


@pytest.fixture(scope="module")
def lab() -> Iterator[RunningLab]:
    plan = load_topology(DEFAULT_TOPOLOGY, name=unique_lab_name("tv"))
    with lab_for_experiment(plan, None) as running:
        yield running


def run_lab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=PROJECT_ROOT, check=False)


def echo_once(lab: RunningLab, payload: bytes = b"hello") -> None:
    with lab.kernel_socket("h1") as sock:
        sock.settimeout(5)
        sock.connect((lab.address("s1"), ECHO))
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += sock.recv(65536)


def capture_with_echoes(lab: RunningLab, args: list[str], payload: bytes = b"hello"
                        ) -> subprocess.CompletedProcess[str]:
    """`lab capture ARGS` while echoes go to the stack, one after another, until the capture has ended:
    `lab` takes a second or more to start on a loaded machine, so one echo at a fixed time can fall
    before tcpdump listens."""
    capture_ended = threading.Event()

    def echo_until_the_capture_ends() -> None:
        for _ in range(20):
            if capture_ended.is_set():
                return
            echo_once(lab, payload)
            time.sleep(0.2)

    thread = later(0.5, echo_until_the_capture_ends)
    try:
        return run_lab("capture", lab.name, *args, "--json")
    finally:
        capture_ended.set()
        thread.join()


def later(seconds: float, action: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def tcpdump_read(path: Path) -> str:
    result = subprocess.run(["tcpdump", "-n", "-r", str(path)], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(("node", "interface"), [("h1", None), ("s1", None), ("s1", "eth0")])
def test_capture_of_an_interface_holds_the_handshake(lab: RunningLab, tmp_path: Path, node: str,
                                                     interface: str | None) -> None:
    path = tmp_path / "c.pcap"
    result = capture_with_echoes(lab, [node, *([interface] if interface else []), "-w", str(path),
                                       "--duration", "3"])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["interface"] == interface or summary["interface"] in ("eth0", "tap0")
    text = tcpdump_read(path)
    assert "Flags [S]" in text and "Flags [S.]" in text, text
    assert summary["packets"] == len(list(read_pcap(path.open("rb"))))


def test_capture_is_cut_to_its_byte_bound(lab: RunningLab, tmp_path: Path) -> None:
    path = tmp_path / "bounded.pcap"
    result = capture_with_echoes(lab, ["s1", "-w", str(path), "--duration", "6", "--max-bytes", "20000"],
                                 b"x" * 2_000_000)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stopped_by"] == "max-bytes"
    assert 0 < path.stat().st_size <= 20000
    tcpdump_read(path)


def test_the_stack_writes_its_own_pcap(lab: RunningLab, tmp_path: Path) -> None:
    path = tmp_path / "stack.pcap"
    result = capture_with_echoes(lab, ["s1", "--stack", "-w", str(path), "--duration", "3"])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames_in"] > 0 and summary["frames_out"] > 0
    text = tcpdump_read(path)
    assert "Flags [S]" in text and "Flags [S.]" in text, text
    bounded = tmp_path / "stack-bounded.pcap"
    result = capture_with_echoes(lab, ["s1", "--stack", "-w", str(bounded), "--duration", "6",
                                       "--max-bytes", "30000"], b"y" * 2_000_000)
    assert json.loads(result.stdout)["stopped_by"] == "max-bytes"
    assert bounded.stat().st_size <= 30000
    tcpdump_read(bounded)


@pytest.mark.parametrize("stack", [False, True])
def test_ctrl_c_leaves_a_whole_file(lab: RunningLab, tmp_path: Path, stack: bool) -> None:
    path = tmp_path / "interrupted.pcap"
    process = subprocess.Popen([sys.executable, "-m", "lab", "capture", lab.name, "s1", "-w", str(path),
                                "--duration", "60", *(["--stack"] if stack else [])],
                               cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        echo_once(lab)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "stopped" in stderr and "capture" in stderr, stderr
    assert "Flags [S]" in tcpdump_read(path)


def test_bad_capture_input_is_one_line_exit_2(lab: RunningLab, tmp_path: Path) -> None:
    for args, words in ((["--duration", "0"], "--duration"), (["--max-bytes", "10"], "--max-bytes"),
                        (["wlan9"], "no interface 'wlan9'"), (["--stack", "eth0"], "--stack"),
                        (["--filter", "tcp prt 80"], "can't parse filter")):
        result = run_lab("capture", lab.name, "s1", *args, "-w", str(tmp_path / "x.pcap"))
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, result.stderr
    result = run_lab("capture", lab.name, "h1", "--stack")
    assert result.returncode == 2 and "runs no stack process" in result.stderr


def test_tables_and_ss_filters(lab: RunningLab) -> None:
    held = []
    try:
        for port in (ECHO, ECHO, HTTP):
            sock = lab.kernel_socket("h1")
            sock.settimeout(5)
            sock.connect((lab.address("s1"), port))
            held.append(sock)
        time.sleep(0.2)
        tables = run_lab("stack", lab.name, "s1", "tables")
        assert tables.returncode == 0, tables.stderr
        for words in ("bound", "listening", "established", "SYN queue", "accept queue", "backlog",
                      "10.0.0.2:80", "ESTABLISHED"):
            assert words in tables.stdout, tables.stdout
        assert "=" not in tables.stdout  # tables, not key=value walls
        answer = json.loads(run_lab("stack", lab.name, "s1", "ss", "--port", str(ECHO), "--json").stdout)
        mine = {f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in held[:2]}
        assert {c["remote"] for c in answer["connections"]} >= mine and answer["total"] >= 3
        assert answer["matched"] == len(answer["connections"])
        one = run_lab("stack", lab.name, "s1", "ss", "--state", "established", "--limit", "1")
        assert one.returncode == 0 and "more matched" in one.stdout, one.stdout
        none = json.loads(run_lab("stack", lab.name, "s1", "ss", "--state", "time-wait", "--address",
                                  "10.0.0.9", "--json").stdout)
        assert none["matched"] == 0 and none["connections"] == []
        bad = run_lab("stack", lab.name, "s1", "ss", "--state", "napping")
        assert bad.returncode == 2 and "--state" in bad.stderr
    finally:
        for sock in held:
            sock.close()


def test_graph_draws_a_running_lab_by_name(lab: RunningLab, tmp_path: Path) -> None:
    picture = tmp_path / "running.svg"
    result = run_lab("graph", lab.name, "-o", str(picture))
    assert result.returncode == 0, result.stderr
    svg = picture.read_text()
    assert f"<title>{lab.name}</title>" in svg  # the lab as built, under its own name
    for node in lab.plan.nodes:
        for interface in node.interfaces:
            assert f"{interface.name} {interface.address}" in svg
