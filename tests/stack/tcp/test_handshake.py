"""Opening connections: RFC 9293 3.5 / 3.10.7.2-3, segment in, exact segments out."""

from __future__ import annotations

import errno

import pytest

from .segments import PEER_PORT, Tester, seg

CLIENT = 50000


def syn_from_us(seq: int = 1000) -> object:
    return seg("S", seq=seq, win=64000, sport=CLIENT, dport=80, mss=1460)


def test_active_open_sends_syn_and_completes_on_syn_ack() -> None:
    t = Tester()
    sock = t.connect(80)
    assert sock.state == "SYN_SENT" and not sock.writable
    t.expect(syn_from_us(), at=0.0)
    t.send(seg("SA", seq=5000, ack=1001, sport=80, dport=CLIENT, mss=1400), at=0.05)
    t.expect(seg("A", seq=1001, ack=5001, sport=CLIENT, dport=80))
    assert sock.state == "ESTABLISHED" and sock.writable
    assert sock.connect_ex(("10.0.0.2", 80), t.now) == 0  # Linux: the first call after completion succeeds
    assert sock.connect_ex(("10.0.0.2", 80), t.now) == errno.EISCONN
    snap = t.layer.snapshots()[0]
    assert snap.mss == 1400 and snap.srtt == pytest.approx(0.05)
    assert t.layer.counters()["ActiveOpens"] == 1


def test_second_connect_while_in_progress_is_ealready() -> None:
    t = Tester()
    sock = t.connect(80)
    assert sock.connect_ex(("10.0.0.2", 80), t.now) == errno.EALREADY


def test_passive_open_syn_queue_then_accept_queue() -> None:
    t = Tester()
    listener = t.listen(80)
    t.send(seg("S", seq=5000, win=30000, mss=1300), at=0.0)
    t.expect(seg("SA", seq=1000, ack=5001, sport=80, dport=PEER_PORT, mss=1460))
    tables = t.layer.tables.snapshot()
    assert (tables.listening[0].syn_queue, tables.listening[0].accept_queue) == (1, 0)
    with pytest.raises(BlockingIOError):
        listener.accept()
    assert not listener.readable
    t.send(seg("A", seq=5001, ack=1001, win=30000), at=0.01)
    t.expect_nothing()
    tables = t.layer.tables.snapshot()
    assert (tables.listening[0].syn_queue, tables.listening[0].accept_queue) == (0, 1)
    assert listener.readable
    child, address = listener.accept()
    assert address == ("10.0.0.2", PEER_PORT)
    assert child.state == "ESTABLISHED" and child.getpeername() == address
    assert child.getsockopt(6, 2) == 1300  # TCP_MAXSEG: the peer's MSS
    assert t.layer.counters()["PassiveOpens"] == 1


def test_isn_just_below_wrap() -> None:
    t = Tester(isn=2**32 - 1)
    sock = t.connect(80)
    t.expect(syn_from_us(seq=2**32 - 1))
    t.send(seg("SA", seq=2**32 - 2, ack=0, sport=80, dport=CLIENT, mss=1460))
    t.expect(seg("A", seq=0, ack=2**32 - 1, sport=CLIENT, dport=80))
    assert sock.send(b"abc") == 3
    t.expect(seg("PA", seq=0, ack=2**32 - 1, sport=CLIENT, dport=80, data=b"abc"))
    t.send(seg("PA", seq=2**32 - 1, ack=3, sport=80, dport=CLIENT, data=b"xy"))
    # The delayed ACK; the 2 unread bytes leave the right edge where it was.
    t.expect(seg("A", seq=3, ack=1, sport=CLIENT, dport=80, win=63998), at=0.04)
    assert sock.recv(10) == b"xy"


def test_syn_ack_acknowledging_wrong_sequence_gets_reset() -> None:
    t = Tester()
    sock = t.connect(80)
    t.poll()
    t.send(seg("SA", seq=5000, ack=999, sport=80, dport=CLIENT))
    t.expect(seg("R", seq=999, ack=0, win=0, sport=CLIENT, dport=80))
    assert sock.state == "SYN_SENT"


def test_reset_in_syn_sent_refuses_only_with_acceptable_ack() -> None:
    t = Tester()
    sock = t.connect(80)
    t.poll()
    t.send(seg("R", seq=0, sport=80, dport=CLIENT))  # no ACK: ignored (RFC 9293 3.10.7.3)
    t.expect_nothing()
    assert sock.state == "SYN_SENT"
    t.send(seg("RA", seq=0, ack=1001, sport=80, dport=CLIENT))
    t.expect_nothing()
    assert sock.state == "CLOSE" and sock.error == errno.ECONNREFUSED and sock.writable
    with pytest.raises(ConnectionRefusedError):
        sock.connect(("10.0.0.2", 80), t.now)
    assert t.layer.counters()["AttemptFails"] == 1
    assert "tcp_receive_reset" in t.trace_names()


def test_simultaneous_open() -> None:
    t = Tester()
    sock = t.connect(80)
    t.expect(syn_from_us())
    t.send(seg("S", seq=7000, sport=80, dport=CLIENT, mss=1460))
    t.expect(seg("SA", seq=1000, ack=7001, sport=CLIENT, dport=80, mss=1460))
    assert sock.state == "SYN_RECV"
    t.send(seg("SA", seq=7000, ack=1001, sport=80, dport=CLIENT, mss=1460))  # the peer's SYN-ACK
    # Its SYN is old now (seq < RCV.NXT): answered with an ACK; its ACK completes our side.
    t.expect(seg("A", seq=1001, ack=7001, sport=CLIENT, dport=80))
    t.send(seg("A", seq=7001, ack=1001, sport=80, dport=CLIENT))
    t.poll()
    assert sock.state == "ESTABLISHED"


def test_syn_retransmission_backoff_then_etimedout() -> None:
    """Linux's schedule with tcp_syn_retries=6: SYNs at 0, 1, 3, 7, 15, 31, 63 s; ETIMEDOUT at 127 s."""
    t = Tester()
    sock = t.connect(80)
    t.expect(syn_from_us(), at=0.0)
    for when in (1.0, 3.0, 7.0, 15.0, 31.0, 63.0):
        t.expect_nothing(at=when - 0.001)
        assert t.deadline() == pytest.approx(when)
        t.expect(syn_from_us(), at=when)
    t.expect_nothing(at=126.9)
    t.expect_nothing(at=127.0)
    assert sock.state == "CLOSE" and sock.error == errno.ETIMEDOUT
    with pytest.raises(TimeoutError):
        sock.recv(1)
    assert t.layer.counters()["RetransSegs"] == 6
    assert t.deadline() is None


def test_syn_ack_retransmission_then_silent_drop() -> None:
    """tcp_synack_retries=5: SYN-ACKs at 0, 1, 3, 7, 15, 31 s; the entry is dropped at 63 s without RST."""
    t = Tester()
    t.listen(80)
    synack = seg("SA", seq=1000, ack=5001, sport=80, dport=PEER_PORT, mss=1460)
    t.send(seg("S", seq=5000, mss=1460), at=0.0)
    t.expect(synack)
    for when in (1.0, 3.0, 7.0, 15.0, 31.0):
        t.expect(synack, at=when)
    t.expect_nothing(at=63.0)
    assert t.layer.tables.snapshot().listening[0].syn_queue == 0
    assert "tcp_retransmit_synack" in t.trace_names()


def test_retransmitted_syn_gets_the_syn_ack_again() -> None:
    t = Tester()
    t.listen(80)
    synack = seg("SA", seq=1000, ack=5001, sport=80, dport=PEER_PORT, mss=1460)
    t.send(seg("S", seq=5000, mss=1460))
    t.expect(synack)
    t.send(seg("S", seq=5000, mss=1460), at=0.5)
    t.expect(synack)


def test_closed_port_resets_per_rfc9293() -> None:
    t = Tester()
    t.send(seg("S", seq=5000, dport=81))
    t.expect(seg("RA", seq=0, ack=5001, win=0, sport=81, dport=PEER_PORT))
    t.send(seg("A", seq=5000, ack=777, dport=81))
    t.expect(seg("R", seq=777, ack=0, win=0, sport=81, dport=PEER_PORT))
    t.send(seg("PA", seq=5000, ack=777, dport=81, data=b"hello"))
    t.expect(seg("R", seq=777, ack=0, win=0, sport=81, dport=PEER_PORT))
    t.send(seg("FA", seq=9, ack=0, dport=81, data=b"ab"))
    t.expect(seg("R", seq=0, ack=0, win=0, sport=81, dport=PEER_PORT))
    t.send(seg("F", seq=9, dport=81, data=b"ab"))
    t.expect(seg("RA", seq=0, ack=12, win=0, sport=81, dport=PEER_PORT))
    t.send(seg("R", seq=1, dport=81))  # never a RST for a RST
    t.send(seg("RA", seq=1, ack=2, dport=81))
    t.expect_nothing()
    assert t.layer.counters()["OutRsts"] == 5


def test_listener_resets_ack_and_ignores_rst() -> None:
    t = Tester()
    t.listen(80)
    t.send(seg("A", seq=5000, ack=4242))
    t.expect(seg("R", seq=4242, ack=0, win=0, sport=80, dport=PEER_PORT))
    t.send(seg("R", seq=5000))
    t.send(seg("SF", seq=5000))  # Linux discards SYN+FIN at a listener
    t.send(seg("", seq=5000))  # neither SYN nor ACK
    t.expect_nothing()


def test_final_ack_with_bad_ack_number_is_reset() -> None:
    t = Tester()
    t.listen(80)
    t.send(seg("S", seq=5000, mss=1460))
    t.poll()
    t.send(seg("A", seq=5001, ack=1234))
    t.expect(seg("R", seq=1234, ack=0, win=0, sport=80, dport=PEER_PORT))
    assert t.layer.tables.snapshot().listening[0].syn_queue == 1


def test_data_on_the_third_handshake_segment_is_delivered() -> None:
    t = Tester()
    listener = t.listen(80)
    t.send(seg("S", seq=5000, mss=1460))
    t.poll()
    t.send(seg("PA", seq=5001, ack=1001, data=b"GET /"))
    t.expect(seg("A", seq=1001, ack=5006, sport=80, dport=PEER_PORT, win=63995), at=0.04)
    child, _ = listener.accept()
    assert child.recv(100) == b"GET /"
