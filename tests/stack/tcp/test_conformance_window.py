"""RFC 9293 window rules the other tests do not pin down: the window is unsigned (MUST-1), a shrinking window
is survived (MUST-34, SHLD-14..17), a zero window may last forever (MUST-37) and RST/ACK are processed in a
zero receive window (MUST-66).  Our ISS 1000, the peer's 5000; we are 50000, the peer 80."""

from __future__ import annotations

import errno
import socket

import pytest

from stack.tcp import TcpSocket
from stack.tcp.seq import seq_add, seq_le, seq_sub
from stack.wire.tcp import TcpSegment

from .segments import Tester, seg

FULL = 1460


def us(flags: str, **fields: object) -> TcpSegment:
    return seg(flags, sport=50000, dport=80, **fields)  # type: ignore[arg-type]


def peer(flags: str, **fields: object) -> TcpSegment:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


def test_window_field_is_an_unsigned_16_bit_number() -> None:
    """MUST-1: 65535 is the largest window, not -1; the sender fills it (whole segments only: SWS)."""
    t = Tester(initial_window=60)  # a congestion window larger than the peer's window
    sock = t.open_client(win=0xFFFF)
    assert t.connection().snd_wnd == 0xFFFF
    sock.send(bytes(70000))
    out = t.poll(at=0.1)
    sent = sum(len(s.payload) for s in out)
    assert sent == (0xFFFF // FULL) * FULL  # 44 full segments; the 1295-byte tail would be a silly segment
    assert all(seq_le(seq_add(s.seq, len(s.payload)), 1001 + 0xFFFF) for s in out)


def test_window_with_the_top_bit_set_is_not_negative() -> None:
    """MUST-1: 0x8000 and above are large windows (a signed reading would stall the sender)."""
    t = Tester(initial_window=60)
    sock = t.open_client(win=0x8001)
    sock.send(bytes(40000))
    out = t.poll(at=0.1)
    assert sum(len(s.payload) for s in out) == (0x8001 // FULL) * FULL


def test_shrinking_window_is_survived_and_old_data_retransmitted() -> None:
    """MUST-34 (with SHLD-15/16/17): the peer moves its right edge left of data we already sent.  We send no
    new data past the new edge, keep the connection, retransmit from SND.UNA on timeout, and deliver
    everything once the window opens again."""
    t = Tester()
    sock = t.open_client(win=20000)
    data = bytes(range(256)) * 60  # 15360 bytes
    sock.send(data)
    first = t.poll(at=0.1)
    assert [len(s.payload) for s in first] == [FULL] * 10
    # ACK two segments but offer only 1000 bytes: right edge 1001 + 2920 + 1000, below SND.NXT (15601).
    t.send(peer("A", seq=5001, ack=1001 + 2 * FULL, win=1000), at=0.15)
    t.expect_nothing()  # nothing new beyond the shrunken edge (SHLD-15)
    conn = t.connection()
    assert conn.snd_nxt == 1001 + 10 * FULL and conn.snd_una == 1001 + 2 * FULL
    # The retransmission timer (RTO from the handshake's sample) resends the oldest unacknowledged data.
    deadline = t.deadline()
    assert deadline is not None
    resent = t.poll(at=deadline)
    assert resent and resent[0].seq == 1001 + 2 * FULL  # SHLD-16: old data, from SND.UNA
    assert len(resent[0].payload) == FULL  # MAY-7: a whole segment, past SND.UNA + SND.WND
    assert sock.state == "ESTABLISHED"  # SHLD-17: no timeout for data past the right edge
    # The peer catches up and reopens: everything arrives, in order, exactly once.
    received = bytearray(data[: 2 * FULL])
    acked = 1001 + 2 * FULL
    now = deadline
    for _ in range(50):
        for s in resent:
            offset = seq_sub(s.seq, 1001)
            if offset == len(received):
                received += bytes(s.payload)
        acked = 1001 + len(received)
        now += 0.05
        t.send(peer("A", seq=5001, ack=acked, win=20000), at=now)
        resent = t.poll()
        if len(received) == len(data):
            break
    assert bytes(received) == data
    assert t.connection().snd_una == 1001 + len(data)


def test_zero_window_may_stay_closed_indefinitely() -> None:
    """MUST-37: probes the peer answers (with a zero window) never end the connection, however long, even
    well past tcp_retries2 probes; the data goes out when the window opens."""
    t = Tester()
    sock = t.open_client(win=0)
    sock.send(b"patience")
    t.expect_nothing()  # nothing fits a zero window: the persist timer is armed instead
    probe = us("A", seq=1000, ack=5001)
    probes = 0
    while probes < 40:  # retries2 is 15: an unanswered series would have ended the connection
        deadline = t.deadline()
        assert deadline is not None
        t.expect(probe, at=deadline)
        probes += 1
        t.send(peer("A", seq=5001, ack=1001, win=0), at=deadline + 0.01)
        t.expect_nothing()  # still zero: the probe timer backs off again
    assert t.now > 3600  # more than an hour of zero window (probes back off to max_rto = 120 s)
    assert sock.state == "ESTABLISHED" and sock.error == 0
    t.send(peer("A", seq=5001, ack=1001, win=64000), at=t.now + 1)
    t.expect(us("PA", seq=1001, ack=5001, data=b"patience"))


def test_unanswered_zero_window_probes_end_the_connection_like_linux() -> None:
    """The other side of MUST-37: a peer that stops answering is not a zero window (Linux: tcp_retries2)."""
    t = Tester(retries2=3)
    sock = t.open_client(win=0)
    sock.send(b"x")
    t.expect_nothing()
    for _ in range(3):
        deadline = t.deadline()
        assert deadline is not None
        t.expect(us("A", seq=1000, ack=5001), at=deadline)
    deadline = t.deadline()
    assert deadline is not None
    t.poll(at=deadline)
    assert sock.state == "CLOSE" and sock.error == errno.ETIMEDOUT


def fill_our_window(t: Tester) -> TcpSocket:
    """An ESTABLISHED client whose 4000-byte receive buffer the peer has filled: our window is zero."""
    sock = t.open_client()
    t.send(peer("A", seq=5001, ack=1001, data=b"a" * 4000), at=1.0)
    t.expect(us("A", seq=1001, ack=9001, win=0), at=1.05)
    return sock


def test_rst_is_processed_with_a_zero_receive_window() -> None:
    """MUST-66: a RST at RCV.NXT is acceptable although the window is zero."""
    t = Tester(rcvbuf=4000)
    sock = fill_our_window(t)
    t.send(peer("R", seq=9001), at=1.1)
    assert sock.state == "CLOSE" and sock.error == errno.ECONNRESET


def test_ack_is_processed_with_a_zero_receive_window_and_the_text_dropped() -> None:
    """MUST-66 (the ACK part, RFC 9293 3.10.7.4): with RCV.WND = 0 a segment at RCV.NXT still carries
    its ACK and window; its data (and an urgent pointer) cannot be taken and is answered with an ACK."""
    t = Tester(rcvbuf=4000)
    sock = fill_our_window(t)
    sock.send(b"hello")
    t.expect(us("PA", seq=1001, ack=9001, win=0, data=b"hello"), at=1.1)
    urgent = peer("PAU", seq=9001, ack=1006, data=b"more")
    urgent.urgent = 4
    t.send(urgent, at=1.2)
    assert t.connection().snd_una == 1006  # the ACK was taken
    # The urgent pointer was taken too: the mark lies after the 4000 unread bytes and 4 urgent octets.
    assert sock.urgent_pending == 4000 + 4
    t.expect(us("A", seq=1006, ack=9001, win=0))  # the text was not
    assert sock.recv(10000) == b"a" * 4000


@pytest.mark.parametrize("offset", [1, 100, 64000])
def test_segments_beyond_a_zero_window_are_not_acceptable(offset: int) -> None:
    """RFC 9293 3.10.7.4, the acceptability table with RCV.WND = 0: only SEG.SEQ = RCV.NXT is acceptable;
    anything else is answered with an ACK and dropped, a RST there is dropped silently."""
    t = Tester(rcvbuf=4000)
    sock = fill_our_window(t)
    t.send(peer("R", seq=9001 + offset), at=1.6)
    t.expect_nothing()
    assert sock.state == "ESTABLISHED"
    t.send(peer("PA", seq=9001 + offset, ack=1001, data=b"z"), at=2.2)
    t.expect(us("A", seq=1001, ack=9001, win=0))


#: The receive windows a connection can have, each beside the clamp of the 16-bit window field
#: (0xFFFF << our shift): (window scaling, TcpConfig.rcvbuf, SO_RCVBUF set before connect or None,
#: the window we must advertise).  With scaling, `max_rcvbuf` is the configured buffer, so our shift is 1.
CLAMP_CASES = {
    "unscaled-below-clamp": (False, 64000, None, 64000),
    "unscaled-above-clamp": (False, 131072, None, 0xFFFF),
    "scaled-below-clamp": (True, 100000, None, 100000),
    "scaled-above-clamp": (True, 100000, 262144, 0xFFFF << 1),
}


def open_with_window(case: str) -> tuple[Tester, TcpSocket, int, int]:
    """An ESTABLISHED client for one of CLAMP_CASES: (tester, socket, our shift, the window our ACK of the
    SYN-ACK advertised in bytes).  The peer is 80 with ISS 5000 and offers window scaling (shift 0)."""
    scaling, rcvbuf, so_rcvbuf, _ = CLAMP_CASES[case]
    t = Tester(window_scaling=scaling, rcvbuf=rcvbuf, max_rcvbuf=rcvbuf)
    sock = t.layer.socket()
    if so_rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, so_rcvbuf)
    sock.bind(("10.0.0.1", 50000))
    sock.connect_ex(("10.0.0.2", 80), t.now)
    (syn,) = t.poll()
    shift = syn.options.wscale or 0
    t.send(peer("SA", seq=5000, ack=1001, mss=1460, wscale=0 if scaling else None))
    (ack,) = t.poll()
    assert sock.state == "ESTABLISHED" and ack.ack == 5001
    return t, sock, shift, ack.window << shift


@pytest.mark.parametrize("case", list(CLAMP_CASES))
def test_the_window_segments_are_checked_against_is_the_window_advertised(case: str) -> None:
    """RFC 9293 3.10.7.4: acceptability is judged against RCV.WND, the window we advertised.  When the free
    buffer is larger than the 16-bit field can say (no scaling, or above 0xFFFF << shift), RCV.WND is the
    clamped field, not the buffer: a RST just past the advertised edge is dropped silently (RFC 5961 3.2)
    and data there is not queued, while the last octet inside the window still counts."""
    t, sock, shift, advertised = open_with_window(case)
    assert advertised == CLAMP_CASES[case][3]
    assert t.connection().rcv_wnd == advertised
    edge = 5001 + advertised
    t.send(peer("R", seq=edge), at=1.0)
    t.expect_nothing()  # beyond the window: no challenge ACK
    assert sock.state == "ESTABLISHED"
    t.send(peer("R", seq=edge - 1), at=2.0)
    t.expect(us("A", seq=1001, ack=5001, win=advertised >> shift))  # in the window: challenged
    t.send(peer("PA", seq=edge, ack=1001, data=b"z"), at=3.0)
    t.expect(us("A", seq=1001, ack=5001, win=advertised >> shift))  # unacceptable: ACK and drop
    assert t.layer.counters().get("TCPOFOQueue", 0) == 0
    t.send(peer("PA", seq=edge - 1, ack=1001, data=b"z"), at=4.0)  # its last octet is in the window
    t.expect(us("A", seq=1001, ack=5001, win=advertised >> shift))  # queued out of order: duplicate ACK
    assert t.layer.counters()["TCPOFOQueue"] == 1


@pytest.mark.parametrize("case", list(CLAMP_CASES))
def test_the_advertised_right_edge_never_moves_left(case: str) -> None:
    """RFC 9293 3.8.6.2.2 (SHLD-14), as Linux's tcp_select_window: whatever the reader does, every segment's
    ACK + window lies at or beyond the previous one, and the edge we check segments against is the last
    one we advertised."""
    t, sock, shift, advertised = open_with_window(case)
    conn = t.connection()
    edges = [5001 + advertised]
    rcv_nxt = 5001
    now = 0.0
    for step in range(120):
        now += 0.01
        room = seq_sub(edges[-1], rcv_nxt)
        if room > 0:
            size = min(FULL, room)
            t.send(peer("PA", seq=rcv_nxt, ack=1001, data=bytes(size)), at=now)
            rcv_nxt += size
        if step % 7 == 3:
            sock.recv(3 * FULL if step % 2 else 200)  # reads large and small, so the window reopens unevenly
        for out in t.poll(at=now + 0.005):
            edge = seq_add(out.ack, out.window << shift)
            assert seq_le(edges[-1], edge), f"right edge moved left: {edges[-1]} -> {edge}"
            edges.append(edge)
        now += 0.005
        assert conn.rcv_adv == edges[-1] and conn.rcv_wnd == seq_sub(edges[-1], conn.rcv_nxt)
    assert len(edges) > 20  # the loop did exchange segments


def test_reading_does_not_announce_a_window_the_field_cannot_carry() -> None:
    """Linux's tcp_cleanup_rbuf rule (announce a reopened window if it at least doubled) measures what the
    field can carry: with 131072 free bytes and no scaling the window is already 65535 when the reader
    drains the buffer, so no window update follows."""
    t, sock, _shift, advertised = open_with_window("unscaled-above-clamp")
    t.send(peer("PA", seq=5001, ack=1001, data=bytes(FULL)), at=1.0)
    t.expect(us("A", seq=1001, ack=5001 + FULL, win=advertised), at=1.05)  # the delayed ACK
    assert len(sock.recv(FULL)) == FULL
    t.expect_nothing(at=1.06)
