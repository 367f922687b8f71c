"""Urgent data, received in line (RFC 9293 3.8.5, the sixth step of 3.10.7.4, RFC 6093): the urgent pointer
marks the first non-urgent octet (MUST-62's meaning), urgent data may be any length and span segments
(MUST-31), the application is told when a mark arrives (MUST-32) and can ask how much urgent data is left
to read (MUST-33).  Our ISS 1000, the peer's 5000; we are 50000, the peer 80."""

from __future__ import annotations

from stack.wire.tcp import TcpSegment

from .segments import Tester, seg


def peer(flags: str, *, urgent: int = 0, **fields: object) -> TcpSegment:
    segment = seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]
    segment.urgent = urgent
    return segment


def test_urgent_bytes_arrive_in_line_and_the_mark_is_known() -> None:
    """MUST-30, MUST-33, MUST-62: the pointer names the first non-urgent octet (SEG.SEQ + SEG.UP); the
    bytes before it are urgent, all of them stay in the stream, and `urgent_pending` counts down as the
    application reads up to the mark."""
    t = Tester()
    sock = t.open_client()
    assert sock.urgent_pending == 0
    t.send(peer("PAU", seq=5001, ack=1001, data=b"abc!def", urgent=4), at=0.5)
    assert sock.urgent_pending == 4  # "abc!" is urgent, "def" is not
    assert sock.recv(2) == b"ab" and sock.urgent_pending == 2
    assert sock.recv(100) == b"c!def" and sock.urgent_pending == 0
    t.send(peer("PA", seq=5008, ack=1001, data=b"ghi"), at=0.6)
    assert sock.recv(100) == b"ghi" and sock.urgent_pending == 0


def test_the_application_is_told_when_urgent_data_arrives() -> None:
    """MUST-32: a `tcp_urgent` event (the trace callback) fires when a mark arrives ahead of what the
    application has read, carrying the mark and how much is pending; the counter TCPUrgentData counts them."""
    t = Tester()
    t.open_client()
    t.send(peer("PAU", seq=5001, ack=1001, data=b"!!", urgent=2), at=0.5)
    (event,) = [e for e in t.events if e.name == "tcp_urgent"]
    assert event.time == 0.5 and event.fields == {"mark": 5003, "pending": 2}
    assert t.layer.counters()["TCPUrgentData"] == 1


def test_urgent_data_of_any_length_spans_segments() -> None:
    """MUST-31: the pointer may lie beyond this segment (the urgent data goes on in later ones); a later,
    larger pointer extends the mark; an older, smaller one does not move it back."""
    t = Tester()
    sock = t.open_client()
    t.send(peer("AU", seq=5001, ack=1001, data=b"x" * 1000, urgent=2500), at=0.5)
    assert sock.urgent_pending == 2500  # 1500 urgent octets still to come
    t.send(peer("AU", seq=6001, ack=1001, data=b"y" * 1000, urgent=3000), at=0.51)
    assert sock.urgent_pending == 4000  # the mark moved to 5001 + 4000
    t.send(peer("PAU", seq=7001, ack=1001, data=b"z" * 10, urgent=1), at=0.52)  # behind the mark
    assert sock.urgent_pending == 4000
    assert len(sock.recv(5000)) == 2010 and sock.urgent_pending == 4000 - 2010


def test_urgent_pointer_after_the_peers_fin_is_ignored() -> None:
    """Sixth step: in CLOSE-WAIT (and CLOSING, LAST-ACK, TIME-WAIT) the urgent bit is ignored."""
    t = Tester()
    sock = t.open_client()
    t.send(peer("FA", seq=5001, ack=1001), at=0.5)
    assert sock.state == "CLOSE_WAIT"
    t.send(peer("AU", seq=5002, ack=1001, urgent=10), at=0.6)
    assert sock.urgent_pending == 0 and t.connection().rcv_up is None


def test_a_mark_that_was_read_past_is_forgotten() -> None:
    """After the application reads past the mark, RCV.UP is dropped, so a much later wrap of the sequence
    space can never make it look new."""
    t = Tester()
    sock = t.open_client()
    t.send(peer("PAU", seq=5001, ack=1001, data=b"ab", urgent=1), at=0.5)
    assert t.connection().rcv_up == 5002
    assert sock.recv(1) == b"a" and t.connection().rcv_up is None
    assert sock.recv(10) == b"b" and sock.urgent_pending == 0


def test_urgent_mark_across_the_sequence_wrap() -> None:
    """The mark is a sequence number, compared modulo 2^32: a mark just past the wrap is newer than one
    just before it."""
    t = Tester()
    peer_isn = 2**32 - 3
    sock = t.open_client(peer_isn=peer_isn)
    t.send(peer("PAU", seq=peer_isn + 1, ack=1001, data=b"1234", urgent=1), at=0.5)
    assert t.connection().rcv_up == 2**32 - 1 and sock.urgent_pending == 1
    t.send(peer("PAU", seq=2, ack=1001, data=b"5678", urgent=2), at=0.51)  # 2^32 - 2 + 4 wrapped to 2
    assert t.connection().rcv_up == 4 and sock.urgent_pending == 6
    assert sock.recv(5) == b"12345" and sock.urgent_pending == 1
    assert sock.recv(5) == b"678" and sock.urgent_pending == 0 and t.connection().rcv_up is None
