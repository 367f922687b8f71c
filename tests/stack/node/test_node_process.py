"""The node process on a real lab: `python -m stack.node` on s1's TAP, kernel sockets and curl in h1.

The pair topology with `process: false` on s1, so this test starts (and stops) the process itself, in both
TAP modes. Everything the test creates is taken down whether it passes or not.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stack.node.apps.content import pattern, pattern_sha256

pytestmark = pytest.mark.root
PROJECT = Path(__file__).resolve().parents[3]
STACK_IP, KERNEL_IP = "10.0.0.2", "10.0.0.1"
TOPOLOGY = """
name: {name}
nodes:
  h1: {{kind: kernel}}
  s1:
    kind: pystack
    process: false
    offload: {offload}
    apps:
      - {{app: echo, port: 7}}
      - {{app: discard, port: 9}}
      - {{app: source, port: 19, bytes: 3000000}}
      - {{app: http, port: 80}}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
"""


@dataclass
class RunningNode:
    process: subprocess.Popen[bytes]
    control: Path
    kernel_namespace: str
    log: Path

    def request(self, cmd: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.control))
            sock.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                assert chunk, f"the node closed the control connection ({self.log.read_text()[-500:]})"
                data += chunk
        return json.loads(data)

    def kernel_socket(self) -> socket.socket:
        from pyroute2 import netns

        sock = netns.create_socket(self.kernel_namespace, socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(20)
        return sock


def start_node(settings: Path, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    def enter() -> None:
        from pyroute2 import netns

        netns.setns(namespace, flags=0)

    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "stack.node", "--settings", str(settings)],
                                preexec_fn=enter, stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.fixture(params=[True, False], ids=["offload", "plain"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningNode]:
    from lab.build import builder
    from lab.topology import load_topology

    name = f"n{uuid.uuid4().hex[:7]}"
    topology = tmp_path / "pair.yaml"
    topology.write_text(TOPOLOGY.format(name=name, offload=str(request.param).lower()))
    root = tmp_path / "state"
    plan = load_topology(topology)
    builder.up(plan, root=root)
    process = None
    try:
        state_dir = root / name
        log = tmp_path / "node.log"
        process = start_node(state_dir / "nodes" / "s1.json", plan.node("s1").namespace, log)
        running = RunningNode(process, state_dir / "nodes" / "s1.sock", plan.node("h1").namespace, log)
        deadline = time.monotonic() + 20
        while not running.control.exists():
            assert process.poll() is None, f"the node exited: {log.read_text()}"
            assert time.monotonic() < deadline, "no control socket within 20 s"
            time.sleep(0.05)
        yield running
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        builder.down(name, root=root)


def test_kernel_clients_use_every_app_and_the_node_stops_cleanly(node: RunningNode) -> None:
    hello = node.request("hello")
    assert hello["ok"] and hello["node"] == "s1" and hello["address"] == f"{STACK_IP}/24"
    assert [a["port"] for a in hello["apps"]] == [7, 9, 19, 80]
    offload = hello["offload"]
    payload = pattern(2_000_000)
    with node.kernel_socket() as echo:
        echo.connect((STACK_IP, 7))

        def upload() -> None:  # concurrently: the echo comes back while we still send
            echo.sendall(payload)
            echo.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=upload)
        sender.start()
        received = bytearray()
        while chunk := echo.recv(1 << 20):
            received += chunk
        sender.join(20)
    assert hashlib.sha256(received).hexdigest() == pattern_sha256(2_000_000)
    with node.kernel_socket() as source:
        source.connect((STACK_IP, 19))
        digest, total = hashlib.sha256(), 0
        while chunk := source.recv(1 << 20):
            digest.update(chunk)
            total += len(chunk)
    assert total == 3_000_000 and digest.hexdigest() == pattern_sha256(3_000_000)
    with node.kernel_socket() as discard:
        discard.connect((STACK_IP, 9))
        discard.sendall(payload)
        discard.shutdown(socket.SHUT_WR)
        assert discard.recv(10) == b""  # the node closes after our EOF, having sent nothing
    stats = node.request("stats")["counters"]
    if offload:
        assert stats["TapRxChecksumsTrusted"] > 0 and stats["TapTxGsoFrames"] > 0
    # Each pump reads the TAP until it is empty: at most one empty read per pump, and frames outnumber pumps
    # when a busy node batches.
    assert 0 < stats["TapRxEmptyReads"] <= stats["DriverPumps"] < stats["TapRxFrames"] + stats["TapTxFrames"]
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(10) == 0
    assert not node.control.exists()


def test_curl_fetches_ten_megabytes_over_keep_alive(node: RunningNode) -> None:
    url = f"http://{STACK_IP}/bytes/10000000"
    result = subprocess.run(
        ["ip", "netns", "exec", node.kernel_namespace, "curl", "-sS", "--fail", "--max-time", "60",
         "-D", "/dev/stderr", url, url], capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr.decode()
    headers = result.stderr.decode()
    expected = pattern_sha256(10_000_000)
    assert len(result.stdout) == 20_000_000
    assert hashlib.sha256(result.stdout[:10_000_000]).hexdigest() == expected
    assert hashlib.sha256(result.stdout[10_000_000:]).hexdigest() == expected
    assert headers.count(f"X-Content-SHA256: {expected}") == 2
    assert node.request("stats")["counters"]["TcpPassiveOpens"] == 1  # both over one kept-alive connection


def test_control_connect_and_ping_reach_the_kernel(node: RunningNode) -> None:
    with node.kernel_socket() as listener:
        listener.bind((KERNEL_IP, 6000))
        listener.listen(4)
        answer_holder: dict[str, Any] = {}

        def ask() -> None:
            answer_holder.update(node.request("connect", addr=KERNEL_IP, port=6000, send=5_000_000,
                                              recv="eof", shutdown=True, timeout=20))

        asker = threading.Thread(target=ask)
        asker.start()
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(20)
            digest, total = hashlib.sha256(), 0
            while chunk := conn.recv(1 << 20):
                digest.update(chunk)
                total += len(chunk)
            conn.sendall(b"thanks")
        asker.join(30)
    answer = answer_holder
    assert answer["ok"] and answer["error"] is None, answer
    assert total == answer["sent"] == 5_000_000 and digest.hexdigest() == answer["sent_sha256"]
    assert answer["received"] == 6 and answer["goodput_bps"] > 0
    assert [s for _, s in answer["states"]][:2] == ["SYN_SENT", "ESTABLISHED"]
    refused = node.request("connect", addr=KERNEL_IP, port=6001)
    assert refused["error"] == "ECONNREFUSED"
    ping = node.request("ping", addr=KERNEL_IP, count=2, timeout=1.0)
    assert all(r is not None for r in ping["replies"])
    assert any(n["ip"] == KERNEL_IP for n in node.request("arp")["neighbours"])
