"""Closing and the states after ESTABLISHED (RFC 9293 3.6, 3.10.7.4 eighth step), segment by segment.

After `open_client()` our ISS is 1000 (SND.NXT 1001) and the peer's is 5000 (RCV.NXT 5001); ports 50000 -> 80.
"""

from __future__ import annotations

import socket

import pytest

from stack.tcp.state import TRANSITIONS, InvalidTransition, TcpState, next_state

from .segments import Tester, seg


def us(flags: str, **fields: object) -> object:
    return seg(flags, sport=50000, dport=80, **fields)  # type: ignore[arg-type]


def peer(flags: str, **fields: object) -> object:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


def test_active_close_through_time_wait() -> None:
    t = Tester()
    sock = t.open_client()
    sock.close(t.now)
    assert t.connection().state is TcpState.FIN_WAIT1
    t.expect(us("FA", seq=1001, ack=5001), at=1.0)
    t.send(peer("A", seq=5001, ack=1002), at=1.01)
    t.expect_nothing()
    assert t.connection().state is TcpState.FIN_WAIT2
    t.send(peer("FA", seq=5001, ack=1002), at=1.02)
    t.expect(us("A", seq=1002, ack=5002, win=63999))
    assert t.connection().state is TcpState.TIME_WAIT
    assert t.layer.tables.snapshot().bound[0].state == "TIME_WAIT"  # the port stays taken
    assert t.deadline() == pytest.approx(3.02)  # time_wait=2.0 in the test config
    t.expect_nothing(at=3.02)
    assert list(t.layer.tables.connections()) == [] and t.layer.tables.snapshot().bound == ()
    assert t.deadline() is None


def test_passive_close() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("FA", seq=5001, ack=1001), at=0.5)
    t.expect_nothing()  # the ACK of a FIN waits for the app's answer, as Linux's pingpong mode does
    assert sock.state == "CLOSE_WAIT" and sock.readable and sock.recv(100) == b""
    assert sock.send(b"late") == 4  # CLOSE_WAIT still sends, and the data carries the ACK
    t.expect(us("PA", seq=1001, ack=5002, win=63999, data=b"late"))
    sock.close(t.now)
    t.expect(us("FA", seq=1005, ack=5002, win=63999))
    assert t.connection().state is TcpState.LAST_ACK
    t.send(peer("A", seq=5002, ack=1006))
    t.expect_nothing()
    assert sock.state == "CLOSE" and list(t.layer.tables.connections()) == []


def test_a_fin_nobody_answers_is_acknowledged_after_the_delayed_ack_time() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("FA", seq=5001, ack=1001), at=0.5)
    t.expect_nothing()
    assert t.deadline() == pytest.approx(0.5 + t.config.delayed_ack)
    t.expect(us("A", seq=1001, ack=5002, win=63999), at=0.5 + t.config.delayed_ack)
    assert sock.state == "CLOSE_WAIT"


def test_a_close_right_after_the_peers_fin_sends_one_fin_ack() -> None:
    """connect+close against a server that closes at once: the FIN carries the ACK of the peer's FIN,
    six frames in all, as between two Linux hosts."""
    t = Tester()
    sock = t.open_client()
    t.send(peer("FA", seq=5001, ack=1001), at=0.5)
    sock.close(t.now)
    t.expect(us("FA", seq=1001, ack=5002, win=63999))
    t.send(peer("A", seq=5002, ack=1002))
    t.expect_nothing()
    assert sock.state == "CLOSE"


def test_simultaneous_close_goes_through_closing() -> None:
    t = Tester()
    sock = t.open_client()
    sock.close(t.now)
    t.expect(us("FA", seq=1001, ack=5001))
    t.send(peer("FA", seq=5001, ack=1001))  # the peer's FIN crossed ours
    t.expect(us("A", seq=1002, ack=5002, win=63999))
    assert t.connection().state is TcpState.CLOSING
    t.send(peer("A", seq=5002, ack=1002))
    t.expect_nothing()
    assert t.connection().state is TcpState.TIME_WAIT


def test_retransmitted_fin_acknowledging_our_fin_moves_closing_to_time_wait() -> None:
    """Crossing FINs, then our ACK of the peer's FIN is lost: the peer retransmits its FIN, now
    acknowledging ours.  Its sequence number is RCV.NXT - 1 (the FIN we already have), but the segment ends
    at RCV.NXT, so its old part trims away and its ACK is processed (RFC 9293 3.10.7.4; Linux's
    tcp_sequence, FreeBSD's trim): CLOSING moves to TIME_WAIT.  As Linux (tcp_rcv_state_process: the
    segment is done once TIME_WAIT begins) nothing answers it; the peer's next retransmission is
    acknowledged from TIME_WAIT (FreeBSD would acknowledge the first already)."""
    t = Tester()
    sock = t.open_client()
    sock.close(t.now)
    t.expect(us("FA", seq=1001, ack=5001))
    t.send(peer("FA", seq=5001, ack=1001))  # the peer's FIN crossed ours
    t.expect(us("A", seq=1002, ack=5002, win=63999))  # lost on the way
    assert t.connection().state is TcpState.CLOSING
    t.send(peer("FA", seq=5001, ack=1002), at=0.5)
    assert t.connection().state is TcpState.TIME_WAIT
    t.expect_nothing()
    assert t.deadline() == pytest.approx(0.5 + 2.0)  # only the 2*MSL timer: our FIN is not resent
    t.send(peer("FA", seq=5001, ack=1002), at=1.5)
    t.expect(us("A", seq=1002, ack=5002, win=63999))
    assert t.connection().state is TcpState.TIME_WAIT


def test_each_retransmitted_fin_in_close_wait_is_acknowledged() -> None:
    """A retransmitted FIN ends at RCV.NXT: it is a duplicate to acknowledge at once every time (Linux's
    tcp_data_queue), not an out-of-window segment whose ACKs are limited to one per 500 ms."""
    t = Tester()
    t.open_client()
    t.send(peer("FA", seq=5001, ack=1001), at=1.0)
    t.expect_nothing()  # the first FIN's ACK is delayed, waiting for the app's answer
    t.expect(us("A", seq=1001, ack=5002, win=63999), at=1.0 + t.config.delayed_ack)
    assert t.connection().state is TcpState.CLOSE_WAIT
    t.send(peer("FA", seq=5001, ack=1001), at=1.2)
    t.expect(us("A", seq=1001, ack=5002, win=63999))
    t.send(peer("FA", seq=5001, ack=1001), at=1.4)
    t.expect(us("A", seq=1001, ack=5002, win=63999))


def test_fin_acking_our_fin_goes_straight_to_time_wait() -> None:
    t = Tester()
    t.open_client().close(t.now)
    t.expect(us("FA", seq=1001, ack=5001))
    t.send(peer("FA", seq=5001, ack=1002))
    t.expect(us("A", seq=1002, ack=5002, win=63999))
    assert t.connection().state is TcpState.TIME_WAIT


def test_half_close_keeps_receiving() -> None:
    t = Tester()
    sock = t.open_client()
    sock.shutdown(socket.SHUT_WR, t.now)
    t.expect(us("FA", seq=1001, ack=5001))
    with pytest.raises(BrokenPipeError):
        sock.send(b"x")
    t.send(peer("A", seq=5001, ack=1002))
    t.send(peer("PA", seq=5001, ack=1002, data=b"still talking"), at=0.1)
    t.expect(us("A", seq=1002, ack=5014, win=63987), at=0.14)
    assert sock.recv(100) == b"still talking"
    assert t.connection().state is TcpState.FIN_WAIT2
    t.send(peer("FA", seq=5014, ack=1002), at=0.2)
    t.expect(us("A", seq=1002, ack=5015, win=63986))
    assert sock.recv(100) == b""


def test_time_wait_acknowledges_a_retransmitted_fin_and_restarts() -> None:
    t = Tester()
    t.open_client().close(t.now)
    t.poll()
    t.send(peer("FA", seq=5001, ack=1002), at=0.1)
    t.expect(us("A", seq=1002, ack=5002, win=63999))
    t.send(peer("FA", seq=5001, ack=1002), at=1.5)  # our ACK was lost
    t.expect(us("A", seq=1002, ack=5002, win=63999))
    assert t.deadline() == pytest.approx(3.5)
    t.expect_nothing(at=3.4)
    assert t.connection().state is TcpState.TIME_WAIT
    t.expect_nothing(at=3.5)
    assert list(t.layer.tables.connections()) == []


def test_orphaned_fin_wait_2_times_out() -> None:
    t = Tester(fin_timeout=5.0)
    t.open_client().close(t.now)
    t.poll()
    t.send(peer("A", seq=5001, ack=1002), at=0.1)
    t.poll()
    assert t.connection().state is TcpState.FIN_WAIT2
    t.expect_nothing(at=5.1)
    assert list(t.layer.tables.connections()) == []


def test_half_closed_fin_wait_2_waits_for_the_peer() -> None:
    t = Tester(fin_timeout=5.0)
    sock = t.open_client()
    sock.shutdown(socket.SHUT_WR, t.now)
    t.poll()
    t.send(peer("A", seq=5001, ack=1002), at=0.1)
    t.expect_nothing(at=100.0)
    assert sock.state == "FIN_WAIT2"


def test_fin_after_data_in_order_and_out_of_order() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("FA", seq=5004, ack=1001))  # FIN beyond a hole: held until the hole fills
    t.expect(us("A", seq=1001, ack=5001))
    assert sock.state == "ESTABLISHED"
    t.send(peer("PA", seq=5001, ack=1001, data=b"abc"))
    t.expect(us("A", seq=1001, ack=5005, win=63996))
    assert sock.state == "CLOSE_WAIT"
    assert sock.recv(10) == b"abc" and sock.recv(10) == b""


def test_close_in_syn_sent_just_forgets() -> None:
    t = Tester()
    sock = t.connect(80)
    t.poll()
    sock.close(t.now)
    t.expect_nothing()
    assert list(t.layer.tables.connections()) == [] and t.layer.tables.snapshot().bound == ()


def test_transition_table_rejects_impossible_moves() -> None:
    assert next_state(TcpState.FIN_WAIT2, "rcv_fin") is TcpState.TIME_WAIT
    with pytest.raises(InvalidTransition):
        next_state(TcpState.LISTEN, "rcv_fin")
    # Every state but CLOSED and LISTEN can be reset or aborted.
    for state in TcpState:
        if state not in (TcpState.CLOSE, TcpState.LISTEN):
            assert TRANSITIONS[(state, "abort")] is TcpState.CLOSE
