"""RACK-TLP (RFC 8985) and D-SACK (RFC 2883), segment in, segment out on a virtual clock.

Our ISS 1000, the peer's 5000; the handshake's RTT is 100 ms (SRTT 0.1 s, RTO 0.3 s), ten full segments
leave at t=1.0 and the peer's ACKs are written by hand.
"""

from __future__ import annotations

import socket

import pytest

from stack.tcp.rack import SentSegment
from stack.wire.tcp import TcpSegment

from .segments import Tester, seg

FULL = 1460
S = [1001 + i * FULL for i in range(11)]  # S[i]: first sequence number of segment i


def peer(flags: str, **fields: object) -> TcpSegment:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


def sack_client(**config: object) -> tuple[Tester, socket.socket]:
    """A client with SACK negotiated whose SYN-ACK came back after 100 ms."""
    t = Tester(sack=True, **config)
    sock = t.connect(80)
    t.poll(at=0.0)
    t.send(peer("SA", seq=5000, ack=1001, mss=1460, sack_perm=True), at=0.1)
    t.poll()
    return t, sock  # type: ignore[return-value]


def ten_segments(t: Tester, sock: socket.socket) -> None:
    sock.send(bytes(10 * FULL))
    assert len(t.poll(at=1.0)) == 10


class Counts(dict[str, int]):
    """nstat's view: a counter never incremented reads 0."""

    def __missing__(self, name: str) -> int:
        return 0


def data_seqs(out: list[TcpSegment]) -> list[int]:
    return [s.seq for s in out if len(s.payload)]


# ------------------------------------------------------------------ D-SACK generation (RFC 2883)


def sack_server() -> Tester:
    t = Tester(sack=True)
    t.listen(80)
    t.send(seg("S", seq=5000, mss=1460, sack_perm=True), at=0.0)
    synack = t.poll()[0]
    t.send(seg("A", seq=5001, ack=synack.seq + 1), at=0.01)
    t.poll()
    return t


def test_a_duplicate_segment_is_reported_as_the_first_sack_block() -> None:
    t = sack_server()
    data = seg("PA", seq=5001, ack=1001, data=b"x" * 100)
    t.send(data, at=0.02)
    t.poll(at=0.1)  # the delayed ACK of the first copy
    t.send(data, at=0.2)  # the same segment again: its ACK was lost, or it was retransmitted for nothing
    (answer,) = t.poll()
    assert answer.ack == 5101
    assert answer.options.sack_blocks == ((5001, 5101),)  # RFC 2883 4.1.1: the D-SACK block alone
    assert Counts(t.layer.counters())["TCPDSACKOldSent"] == 1
    t.send(seg("PA", seq=5101, ack=1001, data=b"y" * 100), at=0.3)
    later = t.poll(at=0.5)
    assert later and all(not s.options.sack_blocks for s in later)  # reported once


def test_a_duplicate_of_out_of_order_data_names_its_block_after_the_dsack() -> None:
    t = sack_server()
    above = seg("PA", seq=5201, ack=1001, data=b"z" * 100)
    t.send(above, at=0.02)
    assert t.poll()[0].options.sack_blocks == ((5201, 5301),)
    t.send(above, at=0.03)
    (answer,) = t.poll()
    assert answer.options.sack_blocks == ((5201, 5301), (5201, 5301))  # RFC 2883 4.1.2
    assert Counts(t.layer.counters())["TCPDSACKOfoSent"] == 1


# ------------------------------------------------------------------ RACK loss detection


def test_reordered_segment_inside_the_window_is_not_retransmitted() -> None:
    t, sock = sack_client()
    ten_segments(t, sock)
    # Segment 1 arrives after segment 2: the peer SACKs 2 first, 10 ms later the hole fills.
    t.send(peer("A", seq=5001, ack=S[0], sack=((S[1], S[2]),)), at=1.1)
    assert data_seqs(t.poll()) == [S[10]] or data_seqs(t.poll()) == []  # new data at most, no resend
    conn = t.connection()
    # RACK.rtt 0.1 s + reo_wnd (min_RTT/4 = 25 ms): the reorder timer, not a retransmission, waits.
    assert conn.recovery.rack.reorder_deadline == pytest.approx(1.125)
    t.send(peer("A", seq=5001, ack=S[2]), at=1.11)
    out = t.poll()
    assert S[0] not in data_seqs(out)
    assert conn.recovery.rack.reorder_deadline is None
    for when in (1.125, 1.2, 1.25):
        assert S[0] not in data_seqs(t.poll(at=when))
    counters = Counts(t.layer.counters())
    assert counters["RetransSegs"] == 0 and counters["TCPTimeouts"] == 0
    assert counters["TCPSACKReorder"] >= 1
    assert not conn.recovery.in_recovery


def test_lost_segment_is_retransmitted_by_the_rack_timer_not_the_rto() -> None:
    t, sock = sack_client()
    ten_segments(t, sock)
    t.send(peer("A", seq=5001, ack=S[0], sack=((S[1], S[2]),)), at=1.1)
    assert S[0] not in data_seqs(t.poll())
    conn = t.connection()
    rto = conn.timers.rto
    assert t.deadline() == pytest.approx(1.125) and rto is not None and rto > 1.125
    out = t.poll(at=t.deadline())
    assert data_seqs(out)[0] == S[0]  # the reorder window ran out: segment 0 is lost, resent at once
    assert conn.recovery.in_recovery
    t.send(peer("A", seq=5001, ack=S[10]), at=1.23)
    t.poll()
    counters = Counts(t.layer.counters())
    assert counters["TCPTimeouts"] == 0 and counters["RetransSegs"] == 1
    assert not conn.recovery.in_recovery


def test_without_rack_the_same_loss_waits_for_the_timeout() -> None:
    t, sock = sack_client(rack=False)
    ten_segments(t, sock)
    t.send(peer("A", seq=5001, ack=S[0], sack=((S[1], S[2]),)), at=1.1)
    t.poll()
    assert S[0] not in data_seqs(t.poll(at=1.125))
    deadline = t.deadline()
    assert deadline is not None and deadline >= 1.3
    assert data_seqs(t.poll(at=deadline))[0] == S[0]
    assert Counts(t.layer.counters())["TCPTimeouts"] == 1


def test_a_lost_retransmission_is_detected_again_by_time() -> None:
    t, sock = sack_client()
    sock.send(bytes(12 * FULL))
    assert len(t.poll(at=1.0)) == 10  # the initial window
    t.send(peer("A", seq=5001, ack=S[0], sack=((S[1], S[4]),)), at=1.1)
    out = t.poll()
    assert data_seqs(out) == [S[0]]  # three segments SACKed, no reordering seen: lost at once
    # Five SACKed: the pipe lets the last two segments go, sent after the retransmission.
    t.send(peer("A", seq=5001, ack=S[0], sack=((S[1], S[6]),)), at=1.2)
    assert data_seqs(t.poll()) == [S[10], 1001 + 11 * FULL]
    # Those arrive, the retransmission does not: it was sent before them, so it is lost again.
    t.send(peer("A", seq=5001, ack=S[0], sack=((S[1], 1001 + 12 * FULL),)), at=1.3)
    out = t.poll()
    assert data_seqs(out) == [S[0]]
    assert Counts(t.layer.counters())["TCPLostRetransmit"] == 1
    assert Counts(t.layer.counters())["TCPTimeouts"] == 0


# ------------------------------------------------------------------ tail loss probe


def test_tail_loss_is_recovered_by_a_probe_not_a_timeout() -> None:
    t, sock = sack_client()
    ten_segments(t, sock)
    t.send(peer("A", seq=5001, ack=S[7]), at=1.1)  # segments 7, 8 and 9 (the tail) are lost
    t.poll()
    conn = t.connection()
    probe = conn.recovery.rack.probe_deadline
    rto = conn.timers.rto
    assert probe == pytest.approx(1.1 + 2 * conn.rtt.srtt) and rto is not None and probe < rto
    assert t.deadline() == pytest.approx(probe)
    (tlp,) = t.poll(at=probe)
    assert tlp.seq == S[9] and len(tlp.payload) == FULL  # the last segment, resent as the probe
    # The probe's SACK shows 7 and 8 missing: RACK marks them lost and fast recovery resends them.
    t.send(peer("A", seq=5001, ack=S[7], sack=((S[9], S[10]),)), at=probe + 0.1)
    assert data_seqs(t.poll()) == [S[7], S[8]]
    t.send(peer("A", seq=5001, ack=S[10]), at=probe + 0.2)
    t.poll()
    counters = Counts(t.layer.counters())
    assert counters["TCPLossProbes"] == 1 and counters["TCPTimeouts"] == 0
    assert conn.snd_una == S[10] and t.deadline() is None


def test_a_probe_that_repairs_the_only_loss_counts_as_probe_recovery() -> None:
    t, sock = sack_client()
    ten_segments(t, sock)
    t.send(peer("A", seq=5001, ack=S[9]), at=1.1)  # only the last segment is lost
    t.poll()
    conn = t.connection()
    cwnd = conn.cc.cwnd
    probe = t.deadline()
    assert probe is not None and probe <= conn.timers.rto  # type: ignore[operator]
    (tlp,) = t.poll(at=probe)
    assert tlp.seq == S[9]
    t.send(peer("A", seq=5001, ack=S[10]), at=probe + 0.1)
    t.poll()
    counters = Counts(t.layer.counters())
    assert counters["TCPLossProbes"] == 1 and counters["TCPLossProbeRecovery"] == 1
    assert counters["TCPTimeouts"] == 0 and conn.cc.cwnd < cwnd  # the loss was real: cwnd reduced


def test_no_probe_without_tlp() -> None:
    t, sock = sack_client(tlp=False)
    ten_segments(t, sock)
    t.send(peer("A", seq=5001, ack=S[7]), at=1.1)
    t.poll()
    conn = t.connection()
    assert conn.recovery.rack.probe_deadline is None and t.deadline() == conn.timers.rto


# ------------------------------------------------------------------ undo by D-SACK


def test_dsack_for_every_retransmission_undoes_the_reduction() -> None:
    t, sock = sack_client()
    ten_segments(t, sock)
    conn = t.connection()
    cwnd = conn.cc.cwnd
    t.send(peer("A", seq=5001, ack=S[0], sack=((S[1], S[4]),)), at=1.1)
    assert data_seqs(t.poll())[0] == S[0]
    assert conn.cc.cwnd < cwnd
    # Segment 0 was only late: both copies arrive, the second one comes back as a D-SACK.
    t.send(peer("A", seq=5001, ack=S[4]), at=1.105)
    t.send(peer("A", seq=5001, ack=S[4], sack=((S[0], S[1]),)), at=1.2)
    t.poll()
    counters = Counts(t.layer.counters())
    assert counters["TCPDSACKRecv"] == 1 and counters["TCPDSACKUndo"] == 1
    assert conn.cc.cwnd >= cwnd
    assert conn.recovery.rack.reo_wnd_mult == 2  # the reordering window widens after a D-SACK


def test_sent_segment_repr_names_its_marks() -> None:
    s = SentSegment(1, 11, 0.5, retransmitted=True)
    s.sacked = True
    assert repr(s) == "SentSegment(1-11 at 0.500000 SR)"


# ------------------------------------------------------------------ a whole transfer on a bad link


def transfer(rack: bool, size: int = 1_000_000) -> dict[str, int]:
    """`size` bytes from a to b over the issue's link (5 % loss, 5 % reorder, 2 % duplicate, 2 % corrupt,
    1 ms delay; clean ACKs delayed 1 ms) on the virtual clock; a's counters, with the time taken in ms."""
    import random

    from stack import Host, MemoryWire, Runner
    from stack.devices.impairment import Impairment
    from stack.tcp import TcpConfig

    bad = Impairment(delay=0.001, loss=0.05, reorder=0.05, duplicate=0.02, corrupt=0.02)
    a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tcp=TcpConfig(rack=rack, tlp=rack),
             trace_segments=False)
    b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2, trace_segments=False)
    runner = Runner([a, b], [MemoryWire(a, b, bad, Impairment(delay=0.001), seed=3)])
    listener = b.socket()
    listener.bind(("10.0.0.2", 9))
    listener.listen(8)
    client = a.socket()
    client.connect(("10.0.0.2", 9))
    server, _ = listener.accept()
    payload = random.Random(9).randbytes(size)
    start = runner.now
    sent, got = 0, bytearray()
    while len(got) < size:
        if sent < size:
            sent += client.send(payload[sent:sent + 65536])
        while len(got) < sent - 100_000 or (sent == size and len(got) < size):
            got += server.recv(1 << 20)
    assert bytes(got) == payload
    counters = Counts(a.counters())
    counters["elapsed_ms"] = round((runner.now - start) * 1000)
    return counters


def test_a_bad_link_is_crossed_by_rack_without_waiting_for_timeouts() -> None:
    before, after = transfer(rack=False), transfer(rack=True)
    assert after["TcpExtTCPTimeouts"] * 4 <= before["TcpExtTCPTimeouts"]
    assert after["elapsed_ms"] * 3 <= before["elapsed_ms"]
    assert after["TcpExtTCPDSACKRecv"] > 0  # the peer (this stack too) reports the duplicates
