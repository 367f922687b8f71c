"""A pystack node under PyPy (`python: pypy`) against Linux: the same apps, the same bytes, the same clean
exchanges as under CPython; workers fork as PyPy too; and a missing PyPy is refused before anything
is built."""

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

from lab.build.interpreters import PYPY_GC_MIN
from lab.experiments.bulk import kernel_to_stack, stack_to_kernel
from lab.experiments.running import RunningLab, lab_for_experiment
from lab.experiments.stack_answers import counter_value
from lab.kernel.transfers import pattern_sha256
from lab.topology import plan_from_text
from stack.node.apps.content import pattern_sha256 as content_sha256
from tests.interop.conftest import MakeLab, unique_lab_name

pytestmark = pytest.mark.root

PROJECT = Path(__file__).resolve().parents[2]
PYPY_PAIR = """
name: pypy
nodes:
  h1: {kind: kernel}
  s1:
    kind: pystack
    python: pypy
    apps:
      - {app: echo, port: 7}
      - {app: discard, port: 9}
      - {app: http, port: 80}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
"""
BULK_BYTES = 48 << 20  # several windows of 64 KB TSO segments, through the send and receive buffers
CONNECTIONS = 300


@pytest.fixture(scope="module")
def pypy_lab() -> Iterator[RunningLab]:
    plan = plan_from_text(PYPY_PAIR, source="<pypy topology>", name=unique_lab_name("py"))
    with lab_for_experiment(plan, None) as lab:
        yield lab


def test_the_node_runs_under_pypy(pypy_lab: RunningLab) -> None:
    hello = pypy_lab.stack("s1").hello()
    assert hello["python"].startswith("PyPy 3.")
    exe = os.readlink(f"/proc/{hello['pid']}/exe")
    assert "pypy" in exe
    environment = dict(item.split(b"=", 1) for item in
                       Path(f"/proc/{hello['pid']}/environ").read_bytes().split(b"\0") if b"=" in item)
    assert environment[b"PYPY_GC_MIN"] == os.environ.get("PYPY_GC_MIN", PYPY_GC_MIN).encode()


def test_echo_and_http_answer_byte_for_byte(pypy_lab: RunningLab) -> None:
    address = pypy_lab.address("s1")
    with pypy_lab.kernel_socket("h1") as sock:
        sock.settimeout(10)
        sock.connect((address, 7))
        message = os.urandom(100_000)
        sock.sendall(message)
        sock.shutdown(1)
        echoed = b""
        while chunk := sock.recv(65536):
            echoed += chunk
    assert echoed == message
    done = pypy_lab.exec("h1", ["curl", "--silent", "--show-error", "--max-time", "20",
                                f"http://{address}/bytes/300000"], timeout=30)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == content_sha256(300000)


def test_bulk_each_way_arrives_sha256_exact(pypy_lab: RunningLab) -> None:
    for transfer, port in ((kernel_to_stack, 7211), (stack_to_kernel, 7212)):
        figures = transfer(pypy_lab, "h1", "s1", port, BULK_BYTES)
        assert figures["error"] is None and figures["received"] == BULK_BYTES, figures
        assert figures["sha256"] == pattern_sha256(BULK_BYTES)


def test_sequential_connect_close_is_clean(pypy_lab: RunningLab) -> None:
    stack = pypy_lab.stack("s1")
    before = stack.stats()["counters"]
    address = (pypy_lab.address("s1"), 9)
    slow = 0
    for _ in range(CONNECTIONS):
        with pypy_lab.kernel_socket("h1") as sock:
            sock.settimeout(10)
            started = time.monotonic()
            sock.connect(address)
            slow += time.monotonic() - started > 0.5
    time.sleep(0.3)  # the last FINs and ACKs cross
    after = stack.stats()["counters"]
    assert slow == 0
    for counter in ("RetransSegs", "ListenOverflows", "ListenDrops"):
        assert counter_value(after, counter) == counter_value(before, counter), counter
    assert counter_value(after, "PassiveOpens") - counter_value(before, "PassiveOpens") == CONNECTIONS


def test_workers_fork_as_pypy(make_lab: MakeLab) -> None:
    lab = make_lab(PYPY_PAIR.replace("    python: pypy\n", "    python: pypy\n    workers: 2\n"))
    hello = lab.stack("s1").hello()
    assert hello["workers"] == 2 and hello["python"].startswith("PyPy")
    for pid in hello["pids"]:
        assert "pypy" in os.readlink(f"/proc/{pid}/exe")


def test_a_missing_pypy_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    name = unique_lab_name("pm")
    topology = tmp_path / "pypy.yaml"
    topology.write_text(PYPY_PAIR.replace("name: pypy", f"name: {name}"))
    env = dict(os.environ, NSLAB_PYPY=str(tmp_path / "no-such-pypy"))
    done = subprocess.run([sys.executable, "-m", "lab", "up", str(topology)], capture_output=True, text=True,
                          timeout=60, cwd=PROJECT, env=env)
    try:
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "python: pypy" in lines[0] and "NSLAB_PYPY" in lines[0], done.stderr
        status = subprocess.run([sys.executable, "-m", "lab", "status", "--json"], capture_output=True,
                                text=True, timeout=60, cwd=PROJECT)
        assert name not in status.stdout
        assert not Path(f"/run/netns/{name}-s1").exists()
    finally:
        subprocess.run([sys.executable, "-m", "lab", "down", name], capture_output=True, timeout=60,
                       cwd=PROJECT)


def test_a_heap_size_pypy_cannot_read_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    name = unique_lab_name("pg")
    topology = tmp_path / "pypy.yaml"
    topology.write_text(PYPY_PAIR.replace("name: pypy", f"name: {name}"))
    env = dict(os.environ, PYPY_GC_MIN="lots")
    done = subprocess.run([sys.executable, "-m", "lab", "up", str(topology)], capture_output=True, text=True,
                          timeout=60, cwd=PROJECT, env=env)
    try:
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "PYPY_GC_MIN 'lots' is not a size" in lines[0], done.stderr
        assert not Path(f"/run/netns/{name}-s1").exists()
    finally:
        subprocess.run([sys.executable, "-m", "lab", "down", name], capture_output=True, timeout=60,
                       cwd=PROJECT)


def test_the_bench_runs_the_stack_under_pypy_after_a_warmup(lab_name: str) -> None:
    command = [sys.executable, "-m", "lab", "bench", "--json", "--seconds", "0.5", "--name", lab_name,
               "--python", "pypy"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=PROJECT)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["stack_python"].startswith("PyPy") and figures["stack_warmup_seconds"] > 0
    assert figures["stack_accept_cps"] > 0 and figures["kernel_accept_cps"] > 0
    assert figures["stack_peak_rss_mb"] > 0
