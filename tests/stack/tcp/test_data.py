"""Data transfer: delayed ACKs, Nagle, windows from real buffers, SWS avoidance, out-of-order data,
zero-window probing and window updates.  Our ISS 1000, the peer's 5000; we are 50000, the peer 80."""

from __future__ import annotations

import socket

import pytest

from .segments import Tester, seg


def us(flags: str, **fields: object) -> object:
    return seg(flags, sport=50000, dport=80, **fields)  # type: ignore[arg-type]


def peer(flags: str, **fields: object) -> object:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


FULL = 1460


def test_one_segment_is_acked_after_the_delayed_ack_timer() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("PA", seq=5001, ack=1001, data=b"x" * FULL), at=1.0)
    t.expect_nothing()
    assert t.deadline() == pytest.approx(1.04)
    t.expect(us("A", seq=1001, ack=5001 + FULL, win=64000 - FULL), at=1.04)
    assert sock.recv(FULL) == b"x" * FULL


def test_every_second_full_segment_is_acked_at_once() -> None:
    t = Tester()
    t.open_client()
    t.send(peer("A", seq=5001, ack=1001, data=b"x" * FULL), at=1.0)
    t.expect_nothing()
    t.send(peer("A", seq=5001 + FULL, ack=1001, data=b"y" * FULL), at=1.001)
    t.expect(us("A", seq=1001, ack=5001 + 2 * FULL, win=64000 - 2 * FULL))


def test_data_piggybacks_the_pending_ack() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("PA", seq=5001, ack=1001, data=b"ping"), at=1.0)
    t.expect_nothing()
    sock.send(b"pong")
    t.expect(us("PA", seq=1001, ack=5005, win=63996, data=b"pong"), at=1.01)
    t.expect_nothing(at=1.05)  # the delayed ACK was satisfied by the data segment


def test_nagle_holds_a_second_small_segment_until_the_ack() -> None:
    t = Tester()
    sock = t.open_client()
    sock.send(b"a")
    t.expect(us("PA", seq=1001, ack=5001, data=b"a"), at=1.0)
    sock.send(b"b")
    sock.send(b"c")
    t.expect_nothing(at=1.01)
    t.send(peer("A", seq=5001, ack=1002), at=1.02)
    t.expect(us("PA", seq=1002, ack=5001, data=b"bc"))


def test_tcp_nodelay_sends_small_segments_at_once() -> None:
    t = Tester()
    sock = t.open_client()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.send(b"a")
    t.expect(us("PA", seq=1001, ack=5001, data=b"a"))
    sock.send(b"b")
    t.expect(us("PA", seq=1002, ack=5001, data=b"b"))


def test_bulk_write_fills_the_initial_window_in_mss_segments() -> None:
    t = Tester()
    sock = t.open_client()
    data = bytes(range(256)) * 100  # 25600 bytes
    assert sock.send(data) == len(data)
    out = t.poll(at=1.0)
    assert [len(s.payload) for s in out] == [FULL] * 10  # RFC 6928: 10 segments
    assert b"".join(bytes(s.payload) for s in out) == data[: 10 * FULL]
    assert [s.seq for s in out] == [1001 + i * FULL for i in range(10)]
    assert all(s.flags == seg("A").flags for s in out)  # PSH only on the segment that empties the buffer
    # ACKing everything opens the window further (slow start): 20 more segments' worth is allowed.
    t.send(peer("A", seq=5001, ack=1001 + 10 * FULL), at=1.05)
    out = t.poll()
    assert sum(len(s.payload) for s in out) == len(data) - 10 * FULL
    assert out[-1].flags == seg("PA").flags


def test_send_buffer_limits_what_send_takes() -> None:
    t = Tester(sndbuf=5000)
    sock = t.open_client()
    assert sock.send(b"z" * 8000) == 5000
    with pytest.raises(BlockingIOError):
        sock.send(b"z")
    assert not sock.writable
    t.poll(at=0.5)
    t.send(peer("A", seq=5001, ack=1001 + 5000), at=0.6)
    assert sock.writable and sock.send(b"z" * 8000) == 5000


def test_receive_window_tracks_the_buffer_and_reopens_when_read() -> None:
    t = Tester(rcvbuf=4000)
    sock = t.open_client()
    t.send(peer("A", seq=5001, ack=1001, data=b"a" * FULL), at=1.0)
    t.send(peer("A", seq=5001 + FULL, ack=1001, data=b"b" * FULL))
    t.expect(us("A", seq=1001, ack=5001 + 2 * FULL, win=4000 - 2 * FULL))
    t.send(peer("PA", seq=5001 + 2 * FULL, ack=1001, data=b"c" * 1080), at=1.01)
    t.expect(us("A", seq=1001, ack=9001, win=0), at=1.05)
    # Beyond the window: trimmed and acknowledged, nothing stored.
    t.send(peer("PA", seq=9001, ack=1001, data=b"overflow"), at=1.06)
    t.expect(us("A", seq=1001, ack=9001, win=0))
    # Receiver SWS avoidance: reading 100 bytes does not announce a 100-byte window...
    assert len(sock.recv(100)) == 100
    t.expect_nothing(at=1.07)
    # ...reading enough for a full segment does.
    assert len(sock.recv(1500)) == 1500
    t.expect(us("A", seq=1001, ack=9001, win=1600), at=1.08)


def test_zero_window_probes_back_off_then_data_flows() -> None:
    t = Tester()
    sock = t.open_client(win=0)
    sock.send(b"q" * 100)
    t.expect_nothing(at=0.0)
    probe = us("A", seq=1000, ack=5001)  # Linux's probe: SND.UNA - 1, no data
    assert t.deadline() == pytest.approx(0.2)  # RTO (200 ms min)
    t.expect(probe, at=0.2)
    t.send(peer("A", seq=5001, ack=1001, win=0), at=0.21)
    t.expect_nothing()
    assert t.deadline() == pytest.approx(0.6)  # backed off: 0.4 s
    t.expect(probe, at=t.deadline())
    t.expect_nothing(at=1.39)
    assert t.deadline() == pytest.approx(1.4)  # 0.8 s
    t.expect(probe, at=t.deadline())
    t.send(peer("A", seq=5001, ack=1001, win=64000), at=1.5)
    t.expect(us("PA", seq=1001, ack=5001, data=b"q" * 100))
    assert t.layer.counters()["TCPWinProbe"] == 3


def test_sender_sws_waits_for_a_useful_window_then_persist_sends_what_fits() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("A", seq=5001, ack=1001, win=100), at=0.1)  # the peer's window shrank to 100 bytes
    sock.send(b"w" * 3000)
    t.expect_nothing(at=0.1)  # 100 < half the largest window seen: wait (RFC 9293 3.8.6.2.1)
    assert t.deadline() == pytest.approx(0.3)  # the persist timer (one RTO)
    t.expect(us("PA", seq=1001, ack=5001, data=b"w" * 100), at=t.deadline())


def test_out_of_order_data_gets_immediate_duplicate_acks_and_the_gap_fill_an_immediate_ack() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("A", seq=5001 + FULL, ack=1001, data=b"2" * FULL), at=1.0)
    t.expect(us("A", seq=1001, ack=5001))
    t.send(peer("A", seq=5001 + 2 * FULL, ack=1001, data=b"3" * FULL), at=1.001)
    t.expect(us("A", seq=1001, ack=5001))
    t.send(peer("A", seq=5001, ack=1001, data=b"1" * FULL), at=1.002)
    t.expect(us("A", seq=1001, ack=5001 + 3 * FULL, win=64000 - 3 * FULL))
    assert sock.recv(10000) == b"1" * FULL + b"2" * FULL + b"3" * FULL


def test_overlapping_retransmission_is_trimmed() -> None:
    t = Tester()
    sock = t.open_client()
    t.send(peer("PA", seq=5001, ack=1001, data=b"abcdef"), at=1.0)
    t.send(peer("PA", seq=5004, ack=1001, data=b"defghi"), at=1.001)
    assert sock.recv(100) == b"abcdefghi"
    t.send(peer("PA", seq=5001, ack=1001, data=b"abc"), at=1.1)  # a pure duplicate: ACK at once
    t.expect(us("A", seq=1001, ack=5010, win=64000 - 9))


def test_window_scaling_applies_to_both_directions() -> None:
    t = Tester(window_scaling=True, rcvbuf=1 << 20, max_rcvbuf=1 << 20)
    sock = t.connect(80)
    syn = t.poll()[0]
    assert syn.options.wscale == 5 and syn.window == 65535  # 1 MB needs shift 5; a SYN is never scaled
    t.send(peer("SA", seq=5000, ack=1001, mss=1460, wscale=2, win=1000))
    t.expect(us("A", seq=1001, ack=5001, win=(1 << 20) >> 5))
    t.send(peer("A", seq=5001, ack=1001, win=1000), at=0.1)  # 1000 << 2 = 4000 bytes
    sock.send(b"s" * 5000)
    out = t.poll(at=0.2)
    # Two full segments fit in 4000 bytes; the 1080-byte rest waits (sender SWS avoidance).
    assert [len(s.payload) for s in out] == [1460, 1460]
