"""Retransmission: RFC 6298 timer and backoff, Karn's rule, retries2 / TCP_USER_TIMEOUT, fast retransmit
with NewReno partial ACKs (RFC 5681, RFC 6582), SACK-based recovery (RFC 6675) and go-back-N after a
timeout.  Our ISS 1000, the peer's 5000."""

from __future__ import annotations

import errno
import socket

import pytest

from .segments import Tester, seg

FULL = 1460


def us(flags: str, **fields: object) -> object:
    return seg(flags, sport=50000, dport=80, **fields)  # type: ignore[arg-type]


def peer(flags: str, **fields: object) -> object:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


def open_with_rtt(t: Tester, rtt: float = 0.1, **syn_ack: object) -> socket.socket:
    """Handshake whose SYN-ACK arrives after `rtt`: SRTT=rtt, RTTVAR=rtt/2, RTO=rtt+4*rtt/2 (min 200 ms)."""
    sock = t.connect(80)
    t.poll(at=0.0)
    t.send(peer("SA", seq=5000, ack=1001, mss=1460, **syn_ack), at=rtt)  # type: ignore[arg-type]
    t.poll()
    return sock  # type: ignore[return-value]


def test_rto_doubles_until_retries2_then_etimedout() -> None:
    t = Tester(retries2=3)
    sock = open_with_rtt(t)  # RTO 0.3 s
    sock.send(b"d" * 100)
    data = us("PA", seq=1001, ack=5001, data=b"d" * 100)
    t.expect(data, at=1.0)
    for expected_time in (1.3, 1.9, 3.1):
        assert t.deadline() == pytest.approx(expected_time)
        t.expect(data, at=t.deadline())
    assert t.deadline() == pytest.approx(5.5)
    t.expect_nothing(at=t.deadline())
    assert sock.state == "CLOSE" and sock.error == errno.ETIMEDOUT
    counters = t.layer.counters()
    assert counters["RetransSegs"] == 3 and counters["TCPTimeouts"] == 3
    names = t.trace_names()
    assert names.count("tcp_rto_fire") == 4 and names.count("tcp_retransmit_skb") == 3


def test_karn_rule_keeps_the_backoff_until_a_fresh_sample() -> None:
    t = Tester()
    sock = open_with_rtt(t)
    conn = t.connection()
    sock.send(b"a" * 10)
    t.poll(at=1.0)
    t.poll(at=1.3)  # timeout: retransmitted, RTO backed off to 0.6
    t.send(peer("A", seq=5001, ack=1011), at=1.35)
    t.poll()
    assert conn.rtt.srtt == pytest.approx(0.1)  # the ambiguous ACK gave no sample
    assert conn.rtt.rto == pytest.approx(0.6)
    sock.send(b"b" * 10)
    t.poll(at=2.0)
    t.send(peer("A", seq=5001, ack=1021), at=2.1)
    t.poll()
    # Linux's RTO: 0.1 + max(min_rto 0.2, 4 * 0.0375)
    assert conn.rtt.backoff_count == 0 and conn.rtt.rto == pytest.approx(0.3)


def test_user_timeout_ends_the_connection_by_time() -> None:
    t = Tester()
    sock = open_with_rtt(t)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1000)
    sock.send(b"u")
    t.poll(at=1.0)
    t.poll(at=1.3)
    t.poll(at=1.9)
    assert sock.state == "ESTABLISHED"
    t.poll(at=3.1)  # first timeout more than 1 s after the flight began
    assert sock.state == "CLOSE" and sock.error == errno.ETIMEDOUT


def test_timeout_resends_go_back_n_in_slow_start() -> None:
    t = Tester(congestion="newreno")
    sock = open_with_rtt(t)
    sock.send(bytes(10 * FULL))
    assert len(t.poll(at=1.0)) == 10
    t.expect(us("A", seq=1001, ack=5001, data=bytes(FULL)), at=1.3)  # cwnd = 1 MSS after a timeout
    assert t.connection().cc.cwnd == FULL
    t.send(peer("A", seq=5001, ack=1001 + FULL), at=1.4)
    out = t.poll()
    assert [s.seq for s in out] == [1001 + FULL, 1001 + 2 * FULL]  # slow start: 2 MSS now


def ten_segments_out(t: Tester, extra: int = 0) -> socket.socket:
    sock = open_with_rtt(t)
    sock.send(bytes(range(256)) * ((10 * FULL + extra) // 256 + 1))
    out = t.poll(at=1.0)
    assert len(out) == 10
    return sock


def test_three_duplicate_acks_fast_retransmit_and_newreno_partial_ack() -> None:
    t = Tester(congestion="newreno")
    ten_segments_out(t, extra=5000)
    seg_start = [1001 + i * FULL for i in range(11)]
    # Segment 2 (index 1) and segment 5 (index 4) are lost.  Segment 1 is ACKed, 3 and 4 bring dupACKs.
    t.send(peer("A", seq=5001, ack=seg_start[1]), at=1.1)
    t.poll()
    t.send(peer("A", seq=5001, ack=seg_start[1]), peer("A", seq=5001, ack=seg_start[1]), at=1.101)
    t.expect_nothing()
    conn = t.connection()
    flight = conn.snd_nxt - conn.snd_una  # 11 segments: the ACK of segment 1 grew cwnd by one (slow start)
    assert flight == 11 * FULL
    t.send(peer("A", seq=5001, ack=seg_start[1]), at=1.102)  # third duplicate
    out = t.expect(_data_at(t, seg_start[1]))  # the first unacknowledged segment, resent at once
    assert conn.recovery.in_recovery and conn.cc.ssthresh == max(flight // 2, 2 * FULL)
    assert conn.cc.cwnd == conn.cc.ssthresh and conn.recovery.inflation == 3 * FULL
    # More duplicates inflate the window (RFC 6582) until new data may go out.
    highest = conn.snd_nxt
    for i in range(4):
        t.send(peer("A", seq=5001, ack=seg_start[1]), at=1.103 + i * 0.001)
    sent = t.poll()
    assert sent and sent[0].seq == highest and conn.recovery.inflation == 7 * FULL
    # The retransmission fills the first hole: the ACK stops at the second one (a partial ACK)...
    t.send(peer("A", seq=5001, ack=seg_start[4]), at=1.2)
    out = t.poll()
    assert out[0].seq == seg_start[4] and len(out[0].payload) == FULL  # ...which is resent at once
    assert conn.recovery.in_recovery
    # A full ACK (covering what was outstanding at the loss) ends recovery: cwnd = ssthresh.
    t.send(peer("A", seq=5001, ack=conn.recovery.recover), at=1.3)
    t.poll()
    assert not conn.recovery.in_recovery and conn.cc.cwnd == conn.cc.ssthresh
    assert t.layer.counters()["TCPFastRetrans"] == 1


def _data_at(t: Tester, seq: int) -> object:
    conn = t.connection()
    offset = (seq - conn.snd_una) & 0xFFFFFFFF
    return us("A", seq=seq, ack=5001, data=bytes(conn.send_buffer.peek(offset, FULL)))


def test_sack_recovery_resends_only_the_holes() -> None:
    t = Tester(congestion="newreno", sack=True)
    ten_segments_out(t)
    conn = t.connection()
    assert conn.negotiated.sack is False  # the peer did not offer SACK in this handshake
    t2 = Tester(congestion="newreno", sack=True)
    sock = open_with_rtt(t2, sack_perm=True)
    sock.send(bytes(10 * FULL))
    assert len(t2.poll(at=1.0)) == 10
    conn = t2.connection()
    s = [1001 + i * FULL for i in range(11)]
    # Segments 1 and 4 (indexes 0 and 3) are lost; 2, 3, 5, 6 arrive and are SACKed.
    t2.send(peer("A", seq=5001, ack=s[0], sack=((s[1], s[2]),)), at=1.1)
    t2.send(peer("A", seq=5001, ack=s[0], sack=((s[1], s[3]),)), at=1.101)
    t2.expect_nothing()
    t2.send(peer("A", seq=5001, ack=s[0], sack=((s[4], s[5]), (s[1], s[3]))), at=1.102)
    out = t2.poll()
    # IsLost(s[0]) holds (three SACKed segments above it): the first hole is resent.
    assert out[0].seq == s[0]
    assert conn.recovery.in_recovery
    assert conn.snapshot().sack_holes[0] == (s[0], s[1])
    t2.send(peer("A", seq=5001, ack=s[0], sack=((s[4], s[6]), (s[1], s[3]))), at=1.103)
    out = t2.poll()
    # Now s[3] has three SACKed segments above... only two (s[4], s[5]): resent once enough are SACKed.
    t2.send(peer("A", seq=5001, ack=s[0], sack=((s[4], s[7]), (s[1], s[3]))), at=1.104)
    out += t2.poll()
    assert s[3] in [x.seq for x in out]
    assert s[1] not in [x.seq for x in out] and s[2] not in [x.seq for x in out]  # SACKed: never resent


def test_retransmission_of_the_fin() -> None:
    t = Tester()
    sock = open_with_rtt(t)
    sock.send(b"bye")
    sock.close(t.now)
    t.expect(us("FPA", seq=1001, ack=5001, data=b"bye"), at=1.0)
    t.expect(us("FPA", seq=1001, ack=5001, data=b"bye"), at=1.3)
    t.send(peer("A", seq=5001, ack=1004), at=1.4)  # data ACKed, FIN not
    t.expect_nothing()
    assert t.deadline() == pytest.approx(1.4 + 0.6)
    t.expect(us("FA", seq=1004, ack=5001), at=t.deadline())


def test_idle_connection_restarts_from_the_initial_window() -> None:
    t = Tester(congestion="newreno")
    sock = open_with_rtt(t)
    conn = t.connection()
    sock.send(bytes(30 * FULL))
    t.poll(at=1.0)
    when = 1.0
    while conn.snd_una != conn.snd_nxt:  # ACK each flight as a whole until the 30 segments are through
        when += 0.1
        t.send(peer("A", seq=5001, ack=conn.snd_nxt), at=when)
        t.poll()
    assert conn.cc.cwnd > 10 * FULL  # slow start grew the window
    sock.send(bytes(30 * FULL))
    out = t.poll(at=5.0)  # idle for longer than the RTO
    assert len(out) == 10 and conn.cc.cwnd == 10 * FULL


def test_retransmission_never_reaches_past_snd_nxt() -> None:
    """A regression: resending after a timeout must not carry queued, never-sent bytes."""
    t = Tester()
    sock = open_with_rtt(t, win=100)
    sock.send(b"a" * 100)
    t.expect(us("PA", seq=1001, ack=5001, data=b"a" * 100), at=1.0)
    sock.send(b"b" * 3000)  # waits: the peer's window is full
    t.expect_nothing(at=1.1)
    t.expect(us("A", seq=1001, ack=5001, data=b"a" * 100), at=1.3)  # the timeout resends only what was sent
    assert t.connection().snd_nxt == 1101
