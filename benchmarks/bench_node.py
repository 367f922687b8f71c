"""Goodput of the stack node process on the pair topology, kernel sockets in h1 on the other side.

Root only. Brings up a pair lab per TAP mode (the lab starts `python -m stack.node` on s1), then for
`--seconds` each: kernel → stack (h1 streams into the node's discard app) and stack → kernel (h1 reads
the node's endless source app). The comparison with kernel-to-kernel goodput is `lab bench`'s job; this
is the node's own figure, quick to rerun while tuning the data path.

    .venv/bin/python benchmarks/bench_node.py [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.build import builder
from lab.topology import load_topology

STACK_IP = "10.0.0.2"
TOPOLOGY = """
name: {name}
nodes:
  h1: {{kind: kernel}}
  s1:
    kind: pystack
    offload: {offload}
    apps: [{{app: discard, port: 9}}, {{app: source, port: 19}}]
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
"""


def kernel_socket(namespace: str) -> socket.socket:
    from pyroute2 import netns

    sock = netns.create_socket(namespace, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    return sock


def to_stack(namespace: str, seconds: float) -> float:
    block = bytes(1 << 20)
    with kernel_socket(namespace) as sock:
        sock.connect((STACK_IP, 9))
        sent, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            sock.sendall(block)
            sent += len(block)
        elapsed = time.monotonic() - start
    return sent * 8 / elapsed / 1e9


def from_stack(namespace: str, seconds: float) -> float:
    with kernel_socket(namespace) as sock:
        sock.connect((STACK_IP, 19))
        received, start = 0, time.monotonic()
        buffer = bytearray(1 << 20)
        while time.monotonic() - start < seconds:
            received += sock.recv_into(buffer)
        elapsed = time.monotonic() - start
    return received * 8 / elapsed / 1e9


def measure(offload: bool, seconds: float, root: Path) -> dict[str, float | bool]:
    name = f"b{uuid.uuid4().hex[:7]}"
    topology = root / f"{name}.yaml"
    topology.write_text(TOPOLOGY.format(name=name, offload=str(offload).lower()))
    plan = load_topology(topology)
    builder.up(plan, root=root)
    try:
        namespace = plan.node("h1").namespace
        figures: dict[str, float | bool] = {"offload": offload}
        figures["kernel_to_stack_gbps"] = round(to_stack(namespace, seconds), 3)
        figures["stack_to_kernel_gbps"] = round(from_stack(namespace, seconds), 3)
        return figures
    finally:
        builder.down(name, root=root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nslab-bench-") as tmp:
        results = [measure(offload, args.seconds, Path(tmp)) for offload in (True, False)]
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            mode = "offload" if r["offload"] else "plain"
            print(f"{mode:8} kernel → stack {r['kernel_to_stack_gbps']:6.2f} Gbit/s   "
                  f"stack → kernel {r['stack_to_kernel_gbps']:6.2f} Gbit/s")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
