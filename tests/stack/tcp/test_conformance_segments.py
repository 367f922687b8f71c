"""SEGMENT ARRIVES steps of RFC 9293 3.10.7 that no other test pins down: a RST may carry data (SHLD-2),
a segment without ACK is dropped (fifth step), the send window is updated only from newer segments
(SND.WL1/SND.WL2), a new SYN resets an embryonic connection, and text on a SYN-ACK is delivered.
Our ISS 1000, the peer's 5000; we are 50000, the peer 80."""

from __future__ import annotations

import errno

from stack.wire.tcp import TcpSegment

from .segments import Tester, seg


def us(flags: str, **fields: object) -> TcpSegment:
    return seg(flags, sport=50000, dport=80, **fields)  # type: ignore[arg-type]


def peer(flags: str, **fields: object) -> TcpSegment:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


def test_reset_carrying_data_is_processed() -> None:
    """SHLD-2: a RST with data (a diagnostic, RFC 9293 3.5.3) resets the connection like any exact RST;
    the data is not delivered."""
    t = Tester()
    sock = t.open_client()
    t.send(peer("R", seq=5001, data=b"connection refused by policy"), at=0.5)
    assert sock.state == "CLOSE" and sock.error == errno.ECONNRESET
    t.expect_nothing()


def test_segment_without_ack_is_dropped_in_a_synchronized_state() -> None:
    """Fifth step: "if the ACK bit is off, drop the segment and return" (its text is not delivered)."""
    t = Tester()
    sock = t.open_client()
    t.send(peer("P", seq=5001, data=b"no ack"), at=0.5)
    t.expect_nothing(at=1.0)
    assert t.connection().rcv_nxt == 5001
    try:
        data = sock.recv(100)
    except BlockingIOError:
        data = b""
    assert data == b""


def test_send_window_is_updated_only_by_newer_segments() -> None:
    """Fifth step, window update: SND.WND changes only if SND.WL1 < SEG.SEQ, or SND.WL1 = SEG.SEQ and
    SND.WL2 =< SEG.ACK, so an old reordered (but still acceptable) segment cannot reinstate a stale window."""
    t = Tester()
    sock = t.open_client(win=10000)
    conn = t.connection()
    sock.send(b"xyz")
    t.poll(at=0.4)
    t.send(peer("PA", seq=5001, ack=1001, win=3000, data=b"abc"), at=0.5)
    assert conn.snd_wnd == 3000 and (conn.snd_wl1, conn.snd_wl2) == (5001, 1001)
    t.send(peer("A", seq=5004, ack=1004, win=50000), at=0.51)  # newer SEQ: taken
    assert conn.snd_wnd == 50000 and (conn.snd_wl1, conn.snd_wl2) == (5004, 1004)
    t.send(peer("A", seq=5004, ack=1001, win=1), at=0.52)  # same SEQ, older ACK (reordered): ignored
    assert conn.snd_wnd == 50000
    t.send(peer("PA", seq=5002, ack=1004, win=2, data=b"bcdef"), at=0.53)  # older SEQ, new text: ignored
    assert conn.snd_wnd == 50000 and sock.recv(100) == b"abcdef"
    t.send(peer("A", seq=5007, ack=1004, win=4000), at=0.54)
    assert conn.snd_wnd == 4000 and (conn.snd_wl1, conn.snd_wl2) == (5007, 1004)


def test_new_syn_for_a_syn_queue_entry_resets_it() -> None:
    """Fourth step in SYN_RECV after a passive OPEN: the entry leaves the SYN queue (RFC 9293: "return
    to LISTEN"); like Linux (tcp_check_req) a RST tells the peer.  The listener keeps listening."""
    t = Tester()
    listener = t.listen(80)
    t.send(seg("S", seq=5000, mss=1460))
    (synack,) = t.poll()
    t.send(seg("S", seq=7777, mss=1460), at=0.1)  # a different SYN for the same 4-tuple
    (reset,) = t.poll()
    assert reset.flags == seg("RA").flags and reset.seq == synack.seq + 1
    assert t.layer.tables.snapshot().listening[0].syn_queue == 0 and listener.state == "LISTEN"
    t.send(seg("S", seq=9000, mss=1460), at=0.2)
    (fresh,) = t.poll()
    assert fresh.flags == seg("SA").flags and fresh.ack == 9001


def test_data_and_fin_on_a_syn_ack_are_delivered() -> None:
    """SYN_SENT, fourth step: "if there are other controls or text in the segment, continue processing at
    the sixth step": text on the SYN-ACK is delivered and a FIN on it moves us to CLOSE_WAIT."""
    t = Tester()
    sock = t.connect(80)
    t.poll()
    t.send(peer("SAF", seq=5000, ack=1001, mss=1460, data=b"hello"), at=0.1)
    # The window's right edge stays where the SYN put it (5001 + 64000): the FIN used sequence space.
    t.expect(us("A", seq=1001, ack=5007, win=5001 + 64000 - 5007))
    assert sock.state == "CLOSE_WAIT"
    assert sock.recv(100) == b"hello" and sock.recv(100) == b""


def test_listener_drops_segments_that_are_neither_syn_nor_ack() -> None:
    """LISTEN, fourth: other text or control (no SYN, no ACK) is dropped; so is SYN+FIN (Linux).  Nothing is
    sent and no SYN queue entry is made."""
    t = Tester()
    t.listen(80)
    t.send(seg("P", seq=5000, data=b"hello?"), at=0.1)
    t.send(seg("F", seq=5000), at=0.1)
    t.send(seg("SF", seq=5000, mss=1460), at=0.1)
    t.expect_nothing()
    assert t.layer.tables.snapshot().listening[0].syn_queue == 0


def test_ack_on_a_duplicate_that_ends_at_rcv_nxt_is_processed() -> None:
    """RFC 9293 3.10.7.4 trims the old part of a segment: a retransmission of the last segment received
    (it ends exactly at RCV.NXT) trims down to its ACK, which is processed like any acceptable ACK, and
    the duplicate is acknowledged at once.  Linux's tcp_sequence accepts it too (its end is not before
    rcv_wup); an older segment that ends before RCV.NXT stays unacceptable."""
    t = Tester()
    sock = t.open_client()
    sock.send(b"hello")
    t.expect(us("PA", seq=1001, ack=5001, data=b"hello"), at=1.0)
    t.send(peer("PA", seq=5001, ack=1001, data=b"abc"), at=1.01)
    t.send(peer("PA", seq=5004, ack=1001, data=b"def"))
    t.expect(us("A", seq=1006, ack=5007, win=63994), at=1.05)  # the delayed ACK
    t.send(peer("PA", seq=5001, ack=1006, data=b"abc"), at=1.06)  # ends before RCV.NXT: unacceptable
    t.expect(us("A", seq=1006, ack=5007, win=63994))
    assert t.connection().snd_una == 1001
    t.send(peer("PA", seq=5004, ack=1006, data=b"def"), at=1.1)  # ends at RCV.NXT: its ACK counts
    t.expect(us("A", seq=1006, ack=5007, win=63994))
    assert t.connection().snd_una == 1006
    assert sock.recv(100) == b"abcdef"
