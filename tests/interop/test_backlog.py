"""The `backlog` experiment: listeners that never accept, on the stack and on Linux.

Unit tests (no root) pin the verdict rules; root tests read a real kernel listener's queues through
sock_diag and run the whole experiment on a pair lab.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
from pyroute2.netlink.diag import MarshalDiag

from lab.experiments.backlog import TCP_SYNCNT, judge_listener_side, stack_listener_row, wait_for_connects
from lab.experiments.running import RunningLab
from lab.experiments.stack_answers import counter_value, retransmissions_by_local_port
from lab.kernel.sockdiag import kernel_listener, kernel_tcp_sockets, sockets_of_dump

# --- verdict rules (no root) ----------------------------------------------------------------


def test_backlog_two_admits_three_and_drops_the_rest() -> None:
    outcomes = ["connected"] * 3 + ["ETIMEDOUT"] * 2
    checks = judge_listener_side("stack", 2, 5, 3, outcomes, [0, 0, 0, 1, 1])
    assert [c.passed for c in checks] == [True, True, True]
    assert "accept queue 3 (expected 3)" in checks[0].detail


def test_an_accept_queue_of_backlog_only_fails() -> None:
    # A listener that stops at `backlog` (not backlog+1) is not Linux's behaviour.
    outcomes = ["connected"] * 2 + ["ETIMEDOUT"] * 3
    checks = judge_listener_side("stack", 2, 5, 2, outcomes, [0, 0, 1, 1, 1])
    assert not checks[0].passed and not checks[1].passed


def test_refused_clients_fail_the_check() -> None:
    # A full listener must drop SYNs silently; answering with RST (ECONNREFUSED) is wrong.
    outcomes = ["connected"] * 3 + ["ECONNREFUSED"] * 2
    checks = judge_listener_side("kernel", 2, 5, 3, outcomes, [0, 0, 0, 0, 0])
    assert not checks[1].passed and not checks[2].passed


def test_dropped_client_without_syn_retransmission_fails() -> None:
    outcomes = ["connected"] * 3 + ["ETIMEDOUT"] * 2
    checks = judge_listener_side("kernel", 2, 5, 3, outcomes, [0, 0, 0, 1, 0])
    assert not checks[2].passed


def test_control_socket_shapes_are_read() -> None:
    name = "TcpExtListenOverflows"
    assert counter_value({"tcp": {"ListenOverflows": 4}, "ip": {"InReceives": 9}}, name) == 4
    assert counter_value({"TcpExtListenOverflows": 2, "IpInReceives": 3}, name) == 2
    assert counter_value({"TcpRetransSegs": 5}, "TcpRetransSegs") == 5
    assert counter_value({"tcp": {}}, name) == 0
    tables = {"listening": [{"local": "10.0.0.2:7", "backlog": 128, "syn_queue": 0, "accept_queue": 0},
                            {"local": "10.0.0.2:5100", "backlog": 2, "syn_queue": 0, "accept_queue": 3}]}
    assert stack_listener_row(tables, 5100)["accept_queue"] == 3
    assert stack_listener_row(tables, 99) == {}
    events = [
        {"name": "tcp_retransmit_skb", "local_port": 40000, "remote_port": 5101},
        {"name": "tcp_retransmit_skb", "local_port": 40000, "remote_port": 5101},
        {"name": "tcp_retransmit_skb", "local": "10.0.0.2:40002", "remote": "10.0.0.1:5101"},
        {"name": "tcp_retransmit_skb", "local_port": 40003, "remote_port": 80},
        {"name": "inet_sock_set_state", "local_port": 40000, "remote_port": 5101},
    ]
    assert retransmissions_by_local_port(events, 5101) == {40000: 2, 40002: 1}


def test_sock_diag_dump_is_parsed() -> None:
    """One inet_diag_msg for a listener (state 10) on 10.0.0.1:5101 with 3 queued, backlog 2, then DONE."""
    message = (bytes([2, 10, 0, 0]) + struct.pack("!HH", 5101, 0) + bytes([10, 0, 0, 1]) + bytes(12)
               + bytes(16) + struct.pack("=I2I", 0, 0, 0) + struct.pack("=IIIII", 0, 3, 2, 0, 99))
    dump = (struct.pack("=IHHII", 16 + len(message), 20, 2, 1, 0) + message
            + struct.pack("=IHHII", 20, 3, 2, 1, 0) + bytes(4))

    (row,) = sockets_of_dump(MarshalDiag().parse(dump))
    assert (row.state, row.local_ip, row.local_port, row.recv_queue, row.send_queue) == (
        "LISTEN", "10.0.0.1", 5101, 3, 2)


def test_sock_diag_error_is_an_oserror() -> None:
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -13) + bytes(16)

    with pytest.raises(OSError, match="EACCES"):
        sockets_of_dump(MarshalDiag().parse(error))


# --- the kernel's queues through sock_diag (root, real namespaces) --------------------------


@pytest.mark.root
def test_sock_diag_reads_a_full_kernel_accept_queue(kernel_pair: RunningLab) -> None:
    lab = kernel_pair
    server_ns = lab.node("b").namespace
    listener = lab.kernel_socket("b")
    clients: list[socket.socket] = []
    try:
        listener.bind((lab.address("b"), 6000))
        listener.listen(1)
        for _ in range(4):
            client = lab.kernel_socket("a")
            clients.append(client)
            client.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, 1)
            client.setblocking(False)
            client.connect_ex((lab.address("b"), 6000))
            time.sleep(0.05)
        time.sleep(1.3)  # past the first SYN retransmission (1 s)
        row = kernel_listener(server_ns, 6000)
        assert row is not None
        assert (row.recv_queue, row.send_queue) == (2, 1)  # accept queue = backlog+1; Send-Q = backlog
        client_rows = [s for s in kernel_tcp_sockets(lab.node("a").namespace) if s.remote_port == 6000]
        states = sorted(s.state for s in client_rows)
        assert states == ["ESTABLISHED", "ESTABLISHED", "SYN_SENT", "SYN_SENT"]
        assert all(s.retransmits >= 1 for s in client_rows if s.state == "SYN_SENT")
        outcomes = wait_for_connects(clients, deadline=time.monotonic() + 3.0)
        assert sorted(outcomes) == ["ETIMEDOUT", "ETIMEDOUT", "connected", "connected"]
    finally:
        for client in clients:
            client.close()
        listener.close()


# --- the experiment on a pair lab (root) ----------------------------------------------------


@pytest.mark.root
def test_backlog_experiment_passes_on_the_pair_lab(pair_lab, run_in, assert_passed) -> None:
    result = run_in(pair_lab, "backlog")
    assert_passed(result)
    stack_side, kernel_side = result.metrics["stack_listener"], result.metrics["kernel_listener"]
    assert stack_side["accept_queue"] == kernel_side["accept_queue"] == 3
    assert stack_side["backlog_stored"] == kernel_side["backlog_stored"] == 2
    assert stack_side["syn_queue"] == 0  # a full accept queue drops the SYN before the SYN queue sees it
    assert sorted(stack_side["outcomes"]) == sorted(kernel_side["outcomes"])
    assert result.to_json()["experiment"] == "backlog"
