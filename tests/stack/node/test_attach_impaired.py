"""A script's Host attached to a `process: false` node, over an impaired link (userspace, on the TAP path).

h1 → s1 loses 3 % and reorders 2 % of the wire packets, s1 → h1 loses 2 % and corrupts 1 %: transfers
both ways still arrive exact, the impairment counters show the losses, and the kernel's frames were cut
into wire packets before impairing (offload mode).
"""

from __future__ import annotations

import hashlib
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.attach import AttachedHost, attach
from stack.node.apps.content import pattern, pattern_sha256

pytestmark = pytest.mark.root
STACK_IP, KERNEL_IP = "10.0.0.2", "10.0.0.1"
TOPOLOGY = """
name: {name}
nodes:
  h1: {{kind: kernel}}
  s1: {{kind: pystack, process: false}}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
    impair:
      h1->s1: {{delay: 1ms, loss: 3%, reorder: 2%}}
      s1->h1: {{loss: 2%, corrupt: 1%}}
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    from lab.build import builder
    from lab.topology import load_topology

    name = f"a{uuid.uuid4().hex[:7]}"
    topology = tmp_path / "lossy.yaml"
    topology.write_text(TOPOLOGY.format(name=name))
    root = tmp_path / "state"
    plan = load_topology(topology)
    builder.up(plan, root=root)
    try:
        yield name, root, plan.node("h1").namespace
    finally:
        builder.down(name, root=root)


def kernel_socket(namespace: str) -> socket.socket:
    from pyroute2 import netns

    sock = netns.create_socket(namespace, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(30)
    return sock


def receive_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(1 << 20):
        data += chunk
    return bytes(data)


def test_attached_host_moves_exact_data_both_ways_over_a_lossy_link(lab: tuple[str, Path, str]) -> None:
    name, root, kernel_namespace = lab
    size = 1_500_000
    with attach(name, "s1", state_root=root) as node:
        assert isinstance(node, AttachedHost) and node.host.ip == STACK_IP
        listener = node.socket()
        listener.bind((STACK_IP, 7000))
        listener.listen(4)
        with kernel_socket(kernel_namespace) as client:
            sender = threading.Thread(target=lambda: (client.connect((STACK_IP, 7000)),
                                                      client.sendall(pattern(size)),
                                                      client.shutdown(socket.SHUT_WR)))
            sender.start()
            listener.settimeout(10)
            conn, _ = listener.accept()
            conn.settimeout(30)
            upload = receive_all(conn)
            sender.join(30)
            conn.close()
        assert hashlib.sha256(upload).hexdigest() == pattern_sha256(size)

        with kernel_socket(kernel_namespace) as server:
            server.bind((KERNEL_IP, 7001))
            server.listen(1)
            outgoing = node.socket()
            outgoing.settimeout(30)
            outgoing.connect((KERNEL_IP, 7001))
            peer, _ = server.accept()
            peer.settimeout(30)
            outgoing.sendall(pattern(size))
            outgoing.shutdown(socket.SHUT_WR)
            download = receive_all(peer)
            peer.close()
            outgoing.close()
        assert hashlib.sha256(download).hexdigest() == pattern_sha256(size)
        counters = node.medium.impairment_counters()  # type: ignore[attr-defined]
    assert counters["ImpairIngressLost"] > 0 and counters["ImpairIngressReordered"] > 0
    assert counters["ImpairEgressLost"] > 0 and counters["ImpairEgressCorrupted"] > 0
    # Losses are counted in wire packets: far more packets than the kernel's super-segments.
    assert counters["ImpairIngressOffered"] > size // 1500
