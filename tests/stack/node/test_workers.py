"""Two workers of one node on memory: frames of one worker's flow that reach the other are handed over,
never answered with a RST; ARP reaches both (no root)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from stack.host import Host
from stack.node.workers import (
    Worker,
    WorkerGate,
    WorkerPeers,
    make_handover_sockets,
    merge_ss,
    merge_stats,
    shared_with_every_worker,
)
from stack.tcp.config import TcpConfig
from stack.tcp.ownership import FlowShare

NODE_IP, PEER_IP, MAC = "10.0.0.2", "10.0.0.1", "02:00:00:00:00:02"
SECRET = b"s" * 32


def _workers() -> tuple[Host, list[Host], list[WorkerGate], list[tuple[socket.socket, socket.socket]]]:
    config = TcpConfig()
    peer = Host(f"{PEER_IP}/24", "02:00:00:00:00:01", seed=9)
    sockets = make_handover_sockets(2)
    hosts, gates = [], []
    for index in range(2):
        share = FlowShare(index, 2, config.ephemeral_low, config.ephemeral_high)
        host = Host(f"{NODE_IP}/24", MAC, seed=index, secret=SECRET, flow_share=share)
        hosts.append(host)
        gates.append(WorkerGate(host, share, sockets[index][0], [pair[1] for pair in sockets]))
    return peer, hosts, gates, sockets


def _run(peer: Host, hosts: list[Host], gates: list[WorkerGate], queue: int, rounds: int = 200) -> None:
    """Every frame the peer sends lands on worker `queue`'s gate (the kernel's choice of queue)."""
    now = 0.0
    for _ in range(rounds):
        now += 0.001
        for host in hosts:
            for frame in host.poll(now):
                peer.receive_frame(frame.joined(), now)
        for frame in peer.poll(now):
            gates[queue].receive_frame(frame.joined(), now)
        for gate in gates:
            gate.take_handed_frames(now)


def test_a_flow_of_worker_1_reaching_worker_0_is_handed_over_not_reset() -> None:
    peer, hosts, gates, sockets = _workers()
    try:
        listener = peer.tcp.socket()
        listener.bind((PEER_IP, 5001))
        listener.listen(8)
        sock = hosts[1].tcp.socket()
        try:
            sock.connect((PEER_IP, 5001), 0.0)
        except BlockingIOError:
            pass
        assert sock.getsockname()[1] % 2 == 1  # worker 1's share of the ports
        _run(peer, hosts, gates, queue=0)
        states = [s.state for s in hosts[1].snapshots()]
        assert states == ["ESTABLISHED"]
        assert hosts[0].snapshots() == []
        assert hosts[0].tcp.counter["OutRsts"] == 0
        assert gates[0].handed_over >= 1  # the SYN-ACK and what followed went through worker 0
        assert gates[0].copied >= 1  # the peer's ARP reply reached worker 1 too
        assert gates[1].received >= 2
    finally:
        for pair in sockets:
            for end in pair:
                end.close()


def test_a_segment_for_no_flow_on_a_workers_own_port_is_still_reset() -> None:
    peer, hosts, gates, sockets = _workers()
    try:
        sock = peer.tcp.socket()
        try:
            sock.connect((NODE_IP, 5999), 0.0)  # no listener: worker 0 answers the SYN itself
        except BlockingIOError:
            pass
        _run(peer, hosts, gates, queue=0, rounds=50)
        assert hosts[0].tcp.counter["OutRsts"] == 1
        assert gates[0].handed_over == 0
    finally:
        for pair in sockets:
            for end in pair:
                end.close()


def test_arp_and_icmp_errors_go_to_every_worker_echo_requests_do_not() -> None:
    ethernet = bytes(12)
    assert shared_with_every_worker(ethernet + b"\x08\x06" + bytes(28))
    ip_header = bytes([0x45]) + bytes(8) + bytes([1]) + bytes(10)
    assert shared_with_every_worker(ethernet + b"\x08\x00" + ip_header + bytes([3]) + bytes(7))
    assert not shared_with_every_worker(ethernet + b"\x08\x00" + ip_header + bytes([8]) + bytes(7))
    tcp_header = bytes([0x45]) + bytes(8) + bytes([6]) + bytes(10)
    assert not shared_with_every_worker(ethernet + b"\x08\x00" + tcp_header + bytes(20))


def test_the_answers_of_every_worker_merge_into_one() -> None:
    ss = merge_ss([{"connections": [{"n": 1}, {"n": 2}], "matched": 2, "total": 3},
                   {"connections": [{"n": 3}], "matched": 1, "total": 1}], limit=2)
    assert ss == {"connections": [{"n": 1}, {"n": 2}], "matched": 3, "total": 4}
    stats = merge_stats([{"counters": {"TcpPassiveOpens": 2}}, {"counters": {"TcpPassiveOpens": 5}}])
    assert stats["counters"] == {"TcpPassiveOpens": 7}
    assert [w["counters"]["TcpPassiveOpens"] for w in stats["workers"]] == [2, 5]


def _worker_0(peer_socket: Path) -> WorkerPeers:
    """Worker 0's line to one other worker (the parts of `Worker` that line does not use left empty)."""
    worker = Worker(index=0, count=2, tap=None, secret=SECRET, inbox=None, outboxes=(),  # type: ignore[arg-type]
                    node_pid=0, peer_sockets=(peer_socket,), peer_pids=(0,))
    return WorkerPeers(worker)


def test_worker_0_waits_until_the_other_workers_answer_before_it_serves(tmp_path: Path) -> None:
    """The node's control socket opens only once every worker answers: a `hello` right after `lab up`
    then reaches a worker that is serving, not one still starting."""
    path = tmp_path / "s1.worker1.sock"
    asked: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readline())
        writer.write(b'{"ok": true}\n')
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[float, float]:
        async def late_worker() -> asyncio.AbstractServer:
            await asyncio.sleep(0.3)  # the other worker is still starting
            return await asyncio.start_unix_server(answer, str(path))

        loop = asyncio.get_running_loop()
        began = loop.time()
        starting = asyncio.create_task(late_worker())
        await _worker_0(path).wait_until_serving(timeout=5.0)
        waited = loop.time() - began
        server = await starting
        server.close()
        began = loop.time()
        await _worker_0(tmp_path / "never.sock").wait_until_serving(timeout=0.2)
        return waited, loop.time() - began

    waited, gave_up = asyncio.run(scenario())
    assert waited >= 0.3 and asked and b'"hello"' in asked[-1]
    assert 0.2 <= gave_up < 2.0  # a worker that never serves holds worker 0 up for the timeout only
