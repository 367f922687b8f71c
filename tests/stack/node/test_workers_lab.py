"""A pystack node with `workers: 2` on a real lab: one multi-queue TAP, two worker processes (root).

Many connections from the kernel node land on both workers without a RST or a retransmission, the
control socket shows all of them, a connection the stack opens works, and teardown leaves nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from lab.build import builder
from lab.build.state import LabError
from lab.experiments.running import lab_for_experiment
from lab.kernel.sockets import listening_socket, namespace_socket
from lab.topology import plan_from_text

pytestmark = pytest.mark.root
CONNECTIONS = 40
TOPOLOGY = """
name: {name}
nodes:
  h1: {{kind: kernel}}
  s1:
    kind: pystack
    workers: 2
    apps:
      - {{app: discard, port: 9}}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def test_connections_spread_over_two_workers_and_teardown_leaves_nothing() -> None:
    name = f"wk17{uuid.uuid4().hex[:6]}"
    plan = plan_from_text(TOPOLOGY.format(name=name), f"{name}.yaml")
    pids: list[int] = []
    try:
        with lab_for_experiment(plan, None) as lab:
            namespace = lab.node("h1").namespace
            with lab.stack("s1") as control:
                hello = control.hello()
                assert hello["workers"] == 2 and len(hello["pids"]) == 2
                pids += [*hello["pids"], hello["node_pid"]]
                held = []
                for _ in range(CONNECTIONS):
                    sock = namespace_socket(namespace)
                    sock.settimeout(5)
                    sock.connect(("10.0.0.2", 9))
                    sock.sendall(b"x" * 1000)
                    held.append(sock)
                deadline = time.monotonic() + 5
                while control.ss(state="established", port=9)["matched"] < CONNECTIONS:
                    assert time.monotonic() < deadline, "not every connection shows in ss"
                    time.sleep(0.05)
                for sock in held:
                    sock.close()
                stats = control.stats()
                per_worker = [w["counters"]["TcpPassiveOpens"] for w in stats["workers"]]
                assert sum(per_worker) == CONNECTIONS and min(per_worker) > 0, per_worker
                assert stats["counters"]["TcpOutRsts"] == 0
                assert stats["counters"]["TcpRetransSegs"] == 0
                with listening_socket(namespace, ("10.0.0.1", 5001), timeout=10) as listener:
                    answer = control.connect("10.0.0.1", 5001, send=100_000, shutdown=True, timeout=10)
                    conn, _ = listener.accept()
                    with conn:
                        conn.settimeout(10)
                        received = 0
                        while data := conn.recv(65536):
                            received += len(data)
                assert answer["error"] is None and answer["sent"] == 100_000
                assert received == 100_000
                assert int(answer["local"].rsplit(":", 1)[1]) % 2 == 0  # worker 0 opens connections
    finally:
        with contextlib.suppress(LabError):
            builder.down(name)  # lab_for_experiment took it down already, unless it failed half-way
    deadline = time.monotonic() + 2
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "a worker outlived its lab"
    assert not any(namespace.startswith(f"{name}-") for namespace in os.listdir("/run/netns"))


@pytest.mark.parametrize("victim", ["worker", "node"])
def test_a_dead_worker_ends_the_node_and_a_dead_node_ends_its_workers(victim: str) -> None:
    name = f"wk17{uuid.uuid4().hex[:6]}"
    plan = plan_from_text(TOPOLOGY.format(name=name), f"{name}.yaml")
    try:
        with lab_for_experiment(plan, None) as lab:
            with lab.stack("s1") as control:
                hello = control.hello()
            workers, node = hello["pids"], hello["node_pid"]
            os.kill(workers[1] if victim == "worker" else node, signal.SIGKILL)
            deadline = time.monotonic() + 3
            while any(_alive(pid) for pid in (*workers, node)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not any(_alive(pid) for pid in (*workers, node)), "a process of the node outlived it"
    finally:
        with contextlib.suppress(LabError):
            builder.down(name)
    assert not any(namespace.startswith(f"{name}-") for namespace in os.listdir("/run/netns"))
