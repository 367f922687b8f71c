"""The `close` experiment: who ends in TIME_WAIT, half-close, RST on unread data.

Unit tests (no root) pin the verdict rules and the reading of trace events; a root test checks the
kernel-side observation (sock_diag sees the active closer's TIME_WAIT) on two kernel nodes; the
experiment itself runs on a pair lab with the stack's node process.
"""

from __future__ import annotations

import socket

import pytest

from lab.experiments.close import (
    Exchange,
    KernelServer,
    data_check,
    final_states_check,
    half_close_check,
    kernel_connection_state,
    path_check,
    reset_check,
    stack_connection_state,
    stack_states_by_ports,
)
from lab.experiments.running import RunningLab
from lab.kernel.sockets import KERNEL_TCP_STATES
from stack.tcp.state import TcpState


def _events(states: list[str], local: int = 7100, remote: int = 40000) -> list[dict]:
    events = [{"name": "inet_sock_set_state", "local_port": local, "remote_port": remote, "newstate": s}
              for s in states]
    events.insert(1, {"name": "inet_sock_set_state", "local_port": 7101, "remote_port": remote,
                      "newstate": "TIME_WAIT"})  # another connection: ignored
    return events


# --- verdict rules (no root) ----------------------------------------------------------------


def test_active_kernel_closer_in_time_wait_passes() -> None:
    exchange = Exchange("k", active="kernel", kernel_state="TIME_WAIT", stack_state=None,
                        stack_states=["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"])
    assert final_states_check(exchange).passed
    assert path_check(exchange, "stack").passed


def test_time_wait_on_the_wrong_side_fails() -> None:
    exchange = Exchange("k", active="kernel", kernel_state=None, stack_state="TIME_WAIT",
                        stack_states=["SYN_RECV", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"])
    assert not final_states_check(exchange).passed
    assert not path_check(exchange, "stack").passed
    assert "kernel gone, stack TIME_WAIT" in final_states_check(exchange).detail


def test_active_stack_closer_path() -> None:
    exchange = Exchange("s", active="stack", kernel_state=None, stack_state="TIME_WAIT",
                        stack_states=["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"])
    assert final_states_check(exchange).passed and path_check(exchange, "stack").passed
    # Simultaneous close (CLOSING) is a legal TCP path but not what this exchange sets up.
    exchange.stack_states = ["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "CLOSING", "TIME_WAIT"]
    assert not path_check(exchange, "stack").passed


def test_kernel_paths_as_its_tracepoints_show_them() -> None:
    # The kernel's full socket ends in CLOSE; its TIME_WAIT lives on in a mini-socket (sock_diag sees it).
    active = Exchange("k", active="kernel", kernel_states=["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1",
                                                          "FIN_WAIT2", "CLOSE"])
    assert path_check(active, "kernel").passed
    passive = Exchange("s", active="stack", kernel_states=["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT",
                                                          "LAST_ACK", "CLOSE"])
    assert path_check(passive, "kernel").passed
    assert not path_check(Exchange("s", active="stack", kernel_states=active.kernel_states), "kernel").passed


def test_nothing_traced_fails() -> None:
    exchange = Exchange("s", active="stack", kernel_state=None, stack_state="TIME_WAIT")
    assert not path_check(exchange, "stack").passed


def test_reset_rules() -> None:
    kernel_reset = Exchange("r", active="kernel", stack_resets={"tcp_receive_reset": 1},
                            figures={"unread_bytes": 65536})
    assert reset_check(kernel_reset, kernel_error=None).passed  # kernel not traced: the stack's view decides
    kernel_reset.kernel_states = []
    assert not reset_check(kernel_reset, kernel_error=None).passed  # traced, but no kernel RST seen
    kernel_reset.kernel_resets = {"tcp_send_reset": "TCP_ABORT_ON_CLOSE"}
    assert reset_check(kernel_reset, kernel_error=None).passed
    assert not reset_check(Exchange("r", active="kernel"), kernel_error=None).passed
    stack_reset = Exchange("r", active="stack", stack_resets={"tcp_send_reset": 1})
    assert reset_check(stack_reset, kernel_error="ECONNRESET").passed
    assert not reset_check(stack_reset, kernel_error="EOF").passed  # a FIN instead of a RST


def test_data_rule() -> None:
    good = {"received": 9, "sha256_equal": True}
    assert data_check(Exchange("d", active="stack", figures=good)).passed
    assert not data_check(Exchange("d", active="stack", figures={**good, "sha256_equal": False})).passed
    assert not data_check(Exchange("d", active="stack")).passed


def test_half_close_rules() -> None:
    figures = {"sent": 10, "sent_sha256": "a", "peer_received_sha256": "a", "reply_sha256": "b",
               "received_sha256": "b", "received_after_shutdown": 5}
    assert half_close_check(Exchange("h", active="kernel", figures=figures)).passed
    wrong_reply = {**figures, "received_sha256": "c"}
    assert not half_close_check(Exchange("h", active="kernel", figures=wrong_reply)).passed
    assert not half_close_check(Exchange("h", active="kernel",
                                         figures={**figures, "received_after_shutdown": 0})).passed


def test_reading_states_from_trace_and_ss() -> None:
    events = _events(["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"])
    assert stack_states_by_ports(events, 7100, 40000) == ["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT",
                                                         "LAST_ACK", "CLOSE"]
    rows = [{"state": "FIN_WAIT2", "local": "10.0.0.2:7100", "remote": "10.0.0.1:40000"},
            {"state": "TIME_WAIT", "local": "10.0.0.2:7101", "remote": "10.0.0.1:40001"}]
    assert stack_connection_state(rows, 7100, 40000) == "FIN_WAIT2"
    assert stack_connection_state(rows, 7100, 40001) is None


def test_stack_and_kernel_share_one_state_vocabulary() -> None:
    """Every state the stack reports is spelled as the kernel's sock_diag and tracepoints spell it."""
    assert {state.value for state in TcpState} <= set(KERNEL_TCP_STATES.values())
    assert all(state.name == state.value for state in TcpState)


# --- kernel-side observation (root, two kernel nodes) ---------------------------------------


@pytest.mark.root
def test_sock_diag_sees_time_wait_on_the_kernel_active_closer(kernel_pair: RunningLab) -> None:
    lab = kernel_pair

    def serve(conn: socket.socket) -> dict:
        assert conn.recv(100) == b"bye"
        assert conn.recv(100) == b""  # the client's FIN
        conn.close()
        return {}

    with KernelServer(lab, "b", 6001, serve) as server:
        client = lab.kernel_socket("a")
        client.settimeout(5)
        client.connect((lab.address("b"), 6001))
        port = client.getsockname()[1]
        client.sendall(b"bye")
        client.shutdown(socket.SHUT_WR)  # the client sends the first FIN: it is the active closer
        assert client.recv(100) == b""
        client.close()
        server.result()
    assert kernel_connection_state(lab.node("a").namespace, port, 6001) == "TIME_WAIT"
    assert kernel_connection_state(lab.node("b").namespace, 6001, port) is None


# --- the experiment on a pair lab (root) ----------------------------------------------------


@pytest.mark.root
def test_close_experiment_passes_on_the_pair_lab(pair_lab, run_in, assert_passed) -> None:
    result = run_in(pair_lab, "close", bytes=131072)
    assert_passed(result)
    metrics = result.metrics
    assert metrics["kernel client closes first"]["kernel_state"] == "TIME_WAIT"
    assert metrics["stack client closes first"]["stack_state"] == "TIME_WAIT"
    assert metrics["stack closes with unread data"]["kernel_error"] == "ECONNRESET"
    traced = "kernel_trace" not in metrics  # tracefs usable: the kernel's own state paths are checked too
    assert len(result.checks) == (18 if traced else 14)
    if traced:
        kernel_resets = metrics["kernel closes with unread data"]["kernel_resets"]
        assert kernel_resets["tcp_send_reset"] == "TCP_ABORT_ON_CLOSE"
