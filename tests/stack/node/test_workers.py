"""Two workers of one node on memory: frames of one worker's flow that reach the other are handed over,
never answered with a RST; ARP reaches both (no root)."""

from __future__ import annotations

import socket

from stack.host import Host
from stack.node.workers import (
    WorkerGate,
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
