"""RST processing, RFC 5961 challenge ACKs and the ACK-range check, and aborts that send RST."""

from __future__ import annotations

import errno
import socket

import pytest

from stack.tcp import TcpConfig
from stack.tcp.state import TcpState

from .segments import PEER_PORT, Tester, seg


def us(flags: str, **fields: object) -> object:
    return seg(flags, sport=50000, dport=80, **fields)  # type: ignore[arg-type]


def peer(flags: str, **fields: object) -> object:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


def test_exact_reset_closes_with_econnreset_reported_once() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("R", seq=5001))
    t.expect_nothing()
    assert sock.state == "CLOSE" and sock.readable and sock.writable
    with pytest.raises(ConnectionResetError):
        sock.recv(10)
    assert sock.recv(10) == b""  # reported once, then EOF (Linux)
    with pytest.raises(BrokenPipeError):
        sock.send(b"x")
    counters = t.layer.counters()
    assert counters["EstabResets"] == 1 and counters["CurrEstab"] == 0
    assert "tcp_receive_reset" in t.trace_names()


def test_in_window_reset_gets_a_challenge_ack() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("R", seq=5100), at=1.0)
    t.expect(us("A", seq=1001, ack=5001))
    assert sock.state == "ESTABLISHED"
    assert t.layer.counters()["TCPChallengeACK"] == 1


def test_out_of_window_reset_is_dropped_silently() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("R", seq=5001 + 64000), at=1.0)
    t.send(peer("R", seq=4000), at=1.0)
    t.expect_nothing()
    assert sock.state == "ESTABLISHED"


def test_syn_in_established_gets_a_rate_limited_challenge_ack() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("S", seq=9999), at=1.0)
    t.expect(us("A", seq=1001, ack=5001))
    t.send(peer("S", seq=5001), at=1.2)  # within Linux's 500 ms limit: no second ACK
    t.expect_nothing()
    t.send(peer("S", seq=5001), at=1.6)
    t.expect(us("A", seq=1001, ack=5001))
    assert sock.state == "ESTABLISHED"


def test_ack_for_unsent_data_is_answered_and_dropped() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("PA", seq=5001, ack=3000, data=b"bogus"), at=1.0)
    t.expect(us("A", seq=1001, ack=5001))
    with pytest.raises(BlockingIOError):
        sock.recv(10)


def test_ack_too_old_for_the_ack_range_check_is_challenged() -> None:
    t = Tester()
    sock = t.open_client(win=1000)
    sock.send(b"a" * 500)
    t.poll(at=0.1)
    t.send(peer("A", seq=5001, ack=1501, win=1000), at=0.2)
    # SND.UNA is 1501 and MAX.SND.WND 1000: an ACK below 501 is outside [SND.UNA - MAX.SND.WND, SND.NXT].
    t.send(peer("PA", seq=5001, ack=400, win=1000, data=b"zz"), at=1.0)
    t.expect(us("A", seq=1501, ack=5001))
    with pytest.raises(BlockingIOError):
        sock.recv(10)
    # An old ACK inside the range is merely a duplicate: its data is accepted.
    t.send(peer("PA", seq=5001, ack=1001, data=b"ok"), at=2.0)
    assert sock.recv(10) == b"ok"


def test_out_of_window_segments_get_rate_limited_acks() -> None:
    t = Tester()
    t.open_client()
    t.send(peer("A", seq=1, ack=1001), at=1.0)
    t.expect(us("A", seq=1001, ack=5001))
    t.send(peer("A", seq=2, ack=1001), at=1.1)
    t.expect_nothing()
    t.send(peer("PA", seq=3, ack=1001, data=b"data"), at=1.2)  # data is never rate-limited (Linux)
    t.expect(us("A", seq=1001, ack=5001))


def test_reset_in_close_wait_reports_epipe_like_linux() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("FA", seq=5001, ack=1001))
    t.poll()
    t.send(peer("R", seq=5002))
    t.poll()
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.EPIPE
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # reading SO_ERROR clears it


def time_wait_client(**overrides: object) -> Tester:
    """A client that closed first and got the peer's FIN: TIME_WAIT with RCV.NXT 5002 from t = 0."""
    t = Tester(**overrides)
    t.open_client().close(t.now)
    t.poll()
    t.send(peer("FA", seq=5001, ack=1002))
    t.poll()
    assert t.connection().state is TcpState.TIME_WAIT
    return t


def test_reset_in_time_wait_ends_it_like_linux() -> None:
    """Linux's default (net.ipv4.tcp_rfc1337 = 0, here `rfc1337=False`) and RFC 9293 3.10.7.4: a RST at
    RCV.NXT ends TIME_WAIT at once."""
    assert TcpConfig().rfc1337 is False
    t = time_wait_client()
    t.send(peer("R", seq=5002))
    t.expect_nothing()
    assert list(t.layer.tables.connections()) == []


def test_rfc1337_option_ignores_every_reset_in_time_wait() -> None:
    """RFC 1337's remedy for TIME_WAIT assassination (`rfc1337=True`, Linux's tcp_rfc1337 = 1): no RST ends
    TIME_WAIT or draws an answer, the exact one included; TIME_WAIT runs its full 2*MSL and still
    acknowledges a retransmitted FIN."""
    t = time_wait_client(rfc1337=True)
    t.send(peer("R", seq=5002), at=0.5)
    t.send(peer("R", seq=5100), at=1.0)  # in the window: no challenge ACK either
    t.expect_nothing()
    assert t.connection().state is TcpState.TIME_WAIT
    t.send(peer("FA", seq=5001, ack=1002), at=1.2)
    t.expect(us("A", seq=1002, ack=5002, win=63999))
    assert t.deadline() == pytest.approx(1.2 + 2.0)
    t.expect_nothing(at=3.2)
    assert list(t.layer.tables.connections()) == []


def test_close_with_unread_data_sends_rst() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("PA", seq=5001, ack=1001, data=b"unread"))
    t.poll()
    sock.close(t.now)
    t.expect(us("RA", seq=1001, ack=5007, win=0))
    assert list(t.layer.tables.connections()) == [] and t.layer.tables.snapshot().bound == ()
    assert "tcp_send_reset" in t.trace_names()


def test_linger_zero_close_sends_rst() -> None:
    t = Tester()
    sock = t.open_client()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1, 0))
    sock.close(t.now)
    t.expect(us("RA", seq=1001, ack=5001, win=0))


def test_data_for_a_closed_socket_is_answered_with_rst() -> None:
    """RFC 1122 4.2.2.13: new data for a socket the application closed (here in FIN_WAIT_2) draws a RST,
    in the form RFC 9293 3.10.7.1 gives a segment for no connection, <SEQ=SEG.ACK><CTL=RST>, as Linux
    sends it (its FIN_WAIT_2 timewait socket answers TCP_TW_RST)."""
    t = Tester()
    t.open_client().close(t.now)
    t.poll()
    t.send(peer("A", seq=5001, ack=1002))
    t.poll()
    t.send(peer("PA", seq=5001, ack=1002, data=b"too late"))
    t.expect(us("R", seq=1002, ack=0, win=0))
    assert list(t.layer.tables.connections()) == []
    assert t.layer.counters()["AbortOnData"] == 1


def test_data_for_a_closed_socket_before_our_fin_is_acked_takes_the_seq_from_its_ack() -> None:
    """The same in FIN_WAIT_1: the RST's sequence number is the segment's ACK (our FIN not yet
    acknowledged, so SND.NXT - 1), never a number the peer has not acknowledged."""
    t = Tester()
    t.open_client().close(t.now)
    t.poll()
    t.send(peer("PA", seq=5001, ack=1001, data=b"too late"), at=0.1)
    t.expect(us("R", seq=1001, ack=0, win=0))
    assert list(t.layer.tables.connections()) == []


def test_reset_of_a_syn_queue_entry_just_removes_it() -> None:
    t = Tester()
    listener = t.listen(80)
    t.send(seg("S", seq=5000, mss=1460))
    t.poll()
    t.send(seg("R", seq=5001))
    t.expect_nothing()
    assert t.layer.tables.snapshot().listening[0].syn_queue == 0
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_reset_after_accept_queue_reaches_the_accepted_socket() -> None:
    t = Tester()
    listener = t.listen(80)
    t.send(seg("S", seq=5000, mss=1460))
    t.poll()
    t.send(seg("A", seq=5001, ack=1001))
    t.send(seg("R", seq=5001))
    t.poll()
    child, _ = listener.accept()  # Linux keeps it in the accept queue
    with pytest.raises(ConnectionResetError):
        child.recv(1)
    assert child._conn.remote_port == PEER_PORT  # type: ignore[union-attr]
