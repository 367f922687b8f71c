"""Every synchronized state of RFC 9293 3.10.7.4 against the events that matter there: an exact RST, new
data, and the user calls.  States are reached by real segment exchanges from `open_client()` (our ISS 1000,
the peer's 5000)."""

from __future__ import annotations

import errno
import socket

import pytest

from stack.tcp import TcpSocket

from .segments import Tester, seg


def peer(flags: str, **fields: object) -> object:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


def reach(state: str) -> tuple[Tester, TcpSocket, int]:
    """A connection in `state`; returns the tester, the socket and the peer's next sequence number."""
    t = Tester()
    sock = t.open_client()
    peer_next = 5001
    if state in ("FIN_WAIT1", "FIN_WAIT2", "CLOSING", "TIME_WAIT"):
        sock.shutdown(socket.SHUT_WR, t.now)
        t.poll()
        if state in ("FIN_WAIT2", "TIME_WAIT"):
            t.send(peer("A", seq=5001, ack=1002))
        if state in ("CLOSING", "TIME_WAIT"):
            t.send(peer("FA", seq=5001, ack=1001 if state == "CLOSING" else 1002))
            peer_next = 5002
    elif state in ("CLOSE_WAIT", "LAST_ACK"):
        t.send(peer("FA", seq=5001, ack=1001))
        peer_next = 5002
        if state == "LAST_ACK":
            sock.shutdown(socket.SHUT_WR, t.now)
    t.poll()
    assert sock.state == state
    return t, sock, peer_next


RESET_ERRNO = {
    "ESTABLISHED": errno.ECONNRESET,
    "FIN_WAIT1": errno.ECONNRESET,
    "FIN_WAIT2": errno.ECONNRESET,
    "CLOSE_WAIT": errno.EPIPE,  # Linux's tcp_reset()
    "CLOSING": 0,
    "LAST_ACK": 0,
    "TIME_WAIT": 0,
}


@pytest.mark.parametrize("state", sorted(RESET_ERRNO))
def test_exact_reset_in_every_synchronized_state(state: str) -> None:
    t, sock, peer_next = reach(state)
    t.send(peer("R", seq=peer_next), at=0.5)
    t.expect_nothing()
    assert sock.state == "CLOSE" and sock.error == RESET_ERRNO[state]
    assert list(t.layer.tables.connections()) == []


@pytest.mark.parametrize("state", ["CLOSE_WAIT", "LAST_ACK", "CLOSING", "TIME_WAIT"])
def test_data_after_the_peers_fin_is_not_delivered(state: str) -> None:
    t, sock, peer_next = reach(state)
    t.send(peer("PA", seq=peer_next, ack=1002 if state != "CLOSE_WAIT" else 1001, data=b"ghost"), at=0.5)
    t.poll(at=1.0)
    assert sock.recv(10) == b""  # EOF: nothing can follow a FIN


@pytest.mark.parametrize("state", sorted(RESET_ERRNO))
def test_send_after_shutdown_is_epipe_except_in_established_and_close_wait(state: str) -> None:
    _, sock, _ = reach(state)
    if state in ("ESTABLISHED", "CLOSE_WAIT"):
        assert sock.send(b"ok") == 2
    else:
        with pytest.raises(BrokenPipeError):
            sock.send(b"no")


def test_send_while_connecting_would_block() -> None:
    t = Tester()
    sock = t.connect(80)
    with pytest.raises(BlockingIOError):
        sock.send(b"early")


def test_close_in_syn_received_sends_the_fin_once_established() -> None:
    t = Tester()
    sock = t.connect(80)
    t.poll()
    t.send(peer("S", seq=7000, mss=1460))  # simultaneous open: we are in SYN_RECV
    t.poll()
    sock.close(t.now)
    t.expect_nothing()
    t.send(peer("A", seq=7001, ack=1001))
    (fin,) = t.poll()
    assert fin.flags == seg("FA").flags and fin.seq == 1001 and fin.ack == 7001
    assert t.connection().state.name == "FIN_WAIT1"


def test_abort_in_syn_sent_sends_nothing() -> None:
    t = Tester()
    sock = t.connect(80)
    t.poll()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1, 0))
    sock.close(t.now)
    t.expect_nothing()
    assert list(t.layer.tables.connections()) == []
