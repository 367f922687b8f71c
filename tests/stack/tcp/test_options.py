"""Option negotiation (RFC 9293 3.7.1, RFC 7323, RFC 2018): MSS clamping, window scale only when both
offer it, timestamps with PAWS and RTT measurement, SACK-permitted and SACK blocks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stack.tcp import TcpConfig, TcpSocket
from stack.wire.tcp import TcpFlags, TcpSegment

from .segments import PEER_PORT, Tester, seg


def us(flags: str, **fields: object) -> TcpSegment:
    return seg(flags, sport=50000, dport=80, **fields)  # type: ignore[arg-type]


def peer(flags: str, **fields: object) -> TcpSegment:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


def full_tester(**overrides: object) -> Tester:
    fields: dict[str, object] = {"time_wait": 2.0}
    fields.update(overrides)
    return Tester(TcpConfig(**fields))  # type: ignore[arg-type]


def test_default_syn_offers_everything_linux_does() -> None:
    t = full_tester()
    t.poll(at=1.0)  # the layer's clock: user calls happen at the last `now` it saw
    t.connect(80)
    (syn,) = t.poll()
    conn = t.connection()
    assert syn.window == 65535  # never scaled in a SYN
    o = syn.options
    assert (o.mss, o.wscale, o.sack_permitted) == (1460, 7, True)  # 6 MB tcp_rmem[2] -> shift 7
    assert o.timestamp == (conn.tsval(1.0), 0)


def test_syn_ack_echoes_only_what_the_syn_offered() -> None:
    t = full_tester()
    t.listen(80)
    t.send(seg("S", seq=5000, mss=1460))
    t.expect(seg("SA", seq=1000, ack=5001, win=65535, sport=80, dport=PEER_PORT, mss=1460))
    conn = t.connection()
    n = conn.negotiated
    assert (n.window_scaling, n.sack, n.timestamps) == (False, False, False)


def test_syn_ack_with_all_options() -> None:
    t = full_tester()
    t.listen(80)
    t.send(seg("S", seq=5000, mss=1400, wscale=3, sack_perm=True, ts=(777, 0)), at=2.0)
    (synack,) = t.poll()
    conn = t.connection()
    o = synack.options
    assert (o.mss, o.wscale, o.sack_permitted, o.timestamp) == (1460, 7, True, (conn.tsval(2.0), 777))
    assert conn.negotiated.snd_wscale == 3 and conn.negotiated.rcv_wscale == 7
    assert conn.send_mss == 1400 - 12  # the timestamp option's 12 bytes come off each segment


def test_window_scale_not_used_when_only_one_side_offers() -> None:
    t = full_tester(window_scaling=False)
    t.listen(80)
    t.send(seg("S", seq=5000, mss=1460, wscale=7))
    (synack,) = t.poll()
    assert synack.options.wscale is None
    t.send(seg("A", seq=5001, ack=1001, win=100))
    t.poll()
    assert t.connection().snd_wnd == 100  # not shifted


def test_window_scale_above_14_is_treated_as_14() -> None:
    t = full_tester()
    t.listen(80)
    t.send(seg("S", seq=5000, mss=1460, wscale=15))
    t.poll()
    assert t.connection().negotiated.snd_wscale == 14


def test_mss_is_clamped_to_the_route_mtu_and_defaults_to_536() -> None:
    t = Tester(mtu=1400)
    t.listen(80)
    t.send(seg("S", seq=5000, mss=1460))
    (synack,) = t.poll()
    assert synack.options.mss == 1360
    assert t.connection().send_mss == 1360
    t2 = Tester()
    t2.listen(80)
    t2.send(seg("S", seq=5000))  # no MSS option
    t2.poll()
    assert t2.connection().send_mss == 536


def test_tcp_maxseg_clamps_the_segment_size() -> None:
    import socket

    t = Tester()
    sock = t.layer.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1000)
    sock.connect_ex(("10.0.0.2", 80), t.now)
    syn = t.poll()[0]
    t.send(seg("SA", seq=5000, ack=syn.seq + 1, sport=80, dport=syn.src_port, mss=1460))
    t.poll()
    sock.send(bytes(3000))
    assert [len(s.payload) for s in t.poll()] == [1000, 1000, 1000]


def test_tcp_maxseg_on_a_listener_lowers_the_mss_its_syn_acks_announce() -> None:
    """TCP_MAXSEG set before listen() caps the MSS each SYN-ACK announces (Linux's tcp_mss_clamp), as it
    caps the SYN's on a client, and the segments we send; a larger value than the route's MSS changes
    nothing."""
    import socket

    for maxseg, announced in ((1000, 1000), (9000, 1460)):
        t = Tester()
        listener = t.layer.socket()
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, maxseg)
        listener.bind(("10.0.0.1", 80))
        listener.listen(1)
        t.send(seg("S", seq=5000, mss=1460))
        (synack,) = t.poll()
        assert synack.options.mss == announced
        t.send(seg("A", seq=5001, ack=synack.seq + 1))
        t.poll()
        child, _ = listener.accept()
        child.send(bytes(3000))
        assert max(len(s.payload) for s in t.poll()) == announced


def timestamped_client(win: int = 64000) -> tuple[Tester, TcpSocket]:
    t = full_tester(window_scaling=False)
    sock = t.connect(80)
    t.poll(at=0.0)
    t.send(peer("SA", seq=5000, ack=1001, win=win, mss=1460, ts=(100, t.connection().tsval(0.0))), at=0.05)
    t.poll()
    return t, sock


def test_timestamps_on_every_segment_and_rtt_from_the_echo() -> None:
    t, sock = timestamped_client()
    conn = t.connection()
    assert conn.rtt.srtt == pytest.approx(0.05)
    sock.send(b"hello")
    (data,) = t.poll(at=1.0)
    assert data.options.timestamp == (conn.tsval(1.0), 100)
    t.send(peer("A", seq=5001, ack=1006, ts=(130, conn.tsval(1.0))), at=1.08)
    t.poll()
    assert conn.ts_recent == 130
    assert conn.rtt.srtt == pytest.approx(0.05 * 7 / 8 + 0.08 / 8, abs=1e-3)


def test_paws_drops_an_old_timestamp_and_acknowledges() -> None:
    t, sock = timestamped_client()
    conn = t.connection()
    t.send(peer("PA", seq=5001, ack=1001, data=b"new", ts=(200, 0)), at=1.0)
    t.poll(at=1.1)
    assert sock.recv(10) == b"new"
    t.send(peer("PA", seq=5004, ack=1001, data=b"old", ts=(150, 0)), at=2.0)  # TSval went back: a duplicate
    (ack,) = t.poll()
    assert ack.ack == 5004 and ack.options.timestamp == (conn.tsval(2.0), 200)
    with pytest.raises(BlockingIOError):
        sock.recv(10)
    assert t.layer.counters()["PAWSEstabRejected"] == 1


def test_sack_blocks_describe_out_of_order_data() -> None:
    t = full_tester(window_scaling=False, timestamps=False)
    sock = t.connect(80)
    t.poll()
    t.send(peer("SA", seq=5000, ack=1001, mss=1460, sack_perm=True))
    t.poll()
    t.send(peer("A", seq=5101, ack=1001, data=b"b" * 100), at=0.1)
    (dup,) = t.poll()
    assert dup.ack == 5001 and dup.options.sack_blocks == ((5101, 5201),)
    t.send(peer("A", seq=5301, ack=1001, data=b"d" * 100), at=0.2)
    (dup,) = t.poll()
    assert dup.options.sack_blocks == ((5301, 5401), (5101, 5201))  # most recent first (RFC 2018 4)
    t.send(peer("A", seq=5001, ack=1001, data=b"a" * 100), at=0.3)
    (ack,) = t.poll()
    assert ack.ack == 5201 and ack.options.sack_blocks == ((5301, 5401),)
    assert sock.recv(1000) == b"a" * 100 + b"b" * 100


def test_segments_carrying_sack_blocks_shrink_to_fit_the_mtu() -> None:
    t = full_tester(window_scaling=False, timestamps=False)
    sock = t.connect(80)
    t.poll()
    t.send(peer("SA", seq=5000, ack=1001, mss=1460, sack_perm=True))
    t.poll()
    t.send(peer("A", seq=5101, ack=1001, data=b"b" * 100), at=0.1)  # a hole: our segments carry a block
    t.poll()
    sock.send(bytes(3000))
    out = t.poll()
    # 1460 - (NOP, NOP, SACK kind, length, one 8-byte block) = 1448 bytes of payload per segment.
    assert [len(s.payload) for s in out] == [1448, 1448, 104]
    assert all(s.options.sack_blocks == ((5101, 5201),) for s in out)


def test_tcp_maxseg_before_connect_lowers_the_announced_mss() -> None:
    import socket

    t = Tester()
    sock = t.layer.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1200)
    sock.connect_ex(("10.0.0.2", 80), t.now)
    (syn,) = t.poll()
    assert syn.options.mss == 1200


def test_rtt_from_the_timestamp_echo_after_a_retransmitted_syn() -> None:
    t = full_tester(window_scaling=False)
    t.connect(80)
    t.poll(at=0.0)
    t.poll(at=1.0)  # the SYN is retransmitted: Karn forbids timing it from the first transmission
    conn = t.connection()
    t.send(peer("SA", seq=5000, ack=1001, mss=1460, ts=(100, conn.tsval(1.0))), at=1.03)
    t.poll()
    assert conn.rtt.srtt == pytest.approx(0.03, abs=0.002)


BOGUS_TSVAL = 10_000  # far ahead of the peer's clock (100 at the handshake): taking it breaks PAWS


def dropped_segments() -> dict[str, tuple[Callable[[Tester, TcpSocket], TcpSegment], bool]]:
    """Segments the synchronized states drop whole, each carrying BOGUS_TSVAL: name -> (a builder that
    sets the case up on a fresh `timestamped_client` and returns the segment, whether an ACK answers it)."""

    def future_ack(t: Tester, sock: TcpSocket) -> TcpSegment:
        return peer("A", seq=5001, ack=9999, ts=(BOGUS_TSVAL, 0))  # acknowledges data never sent

    def too_old_ack(t: Tester, sock: TcpSocket) -> TcpSegment:
        # SND.UNA 1501 and MAX.SND.WND 1000 put an ACK below 501 outside RFC 5961 5.2's range.
        sock.send(b"a" * 500)
        t.poll(at=0.2)
        t.send(peer("A", seq=5001, ack=1501, win=1000, ts=(120, 0)), at=0.3)
        t.poll()
        return peer("A", seq=5001, ack=400, win=1000, ts=(BOGUS_TSVAL, 0))

    def out_of_window_data(t: Tester, sock: TcpSocket) -> TcpSegment:
        return peer("PA", seq=5001 + 200_000, ack=1001, data=b"x", ts=(BOGUS_TSVAL, 0))

    def in_window_reset(t: Tester, sock: TcpSocket) -> TcpSegment:
        return peer("R", seq=5100, ts=(BOGUS_TSVAL, 0))  # challenged, not taken

    def syn(t: Tester, sock: TcpSocket) -> TcpSegment:
        return peer("S", seq=5100, ts=(BOGUS_TSVAL, 0))  # challenged, not taken

    def without_ack(t: Tester, sock: TcpSocket) -> TcpSegment:
        return peer("P", seq=5001, data=b"x", ts=(BOGUS_TSVAL, 0))

    return {"future-ack": (future_ack, True), "too-old-ack": (too_old_ack, True),
            "out-of-window": (out_of_window_data, True), "in-window-rst": (in_window_reset, True),
            "syn": (syn, True), "no-ack-bit": (without_ack, False)}


@pytest.mark.parametrize("case", list(dropped_segments()))
def test_ts_recent_is_not_taken_from_a_dropped_segment(case: str) -> None:
    """RFC 7323 4.3 records TSval only from a segment that is processed: one dropped by the ACK checks
    (SEG.ACK > SND.NXT, or too old for RFC 5961 5.2), the sequence check, a challenge ACK or the missing
    ACK bit leaves TS.Recent alone (Linux updates ts_recent in tcp_ack, after its checks).  Its answer
    echoes the old TS.Recent, and the peer's next real segment is not mistaken for an old duplicate."""
    build, answered = dropped_segments()[case]
    t, sock = timestamped_client(win=1000)
    conn = t.connection()
    bogus = build(t, sock)
    before = conn.ts_recent
    t.send(bogus, at=1.0)
    replies = t.poll()
    assert [r.options.timestamp for r in replies] == ([(conn.tsval(1.0), before)] if answered else [])
    assert conn.ts_recent == before
    t.send(peer("PA", seq=5001, ack=conn.snd_nxt, win=1000, data=b"ok", ts=(300, 0)), at=2.0)
    assert sock.recv(10) == b"ok"
    assert t.layer.counters().get("PAWSEstabRejected", 0) == 0


def test_ts_recent_is_not_taken_from_a_final_ack_that_is_reset() -> None:
    """The same in SYN_RECV: a handshake ACK with a wrong SEG.ACK draws a RST and leaves TS.Recent as the
    SYN set it, so the retransmitted SYN-ACK still echoes the SYN's TSval."""
    t = full_tester(window_scaling=False)
    t.listen(80)
    t.send(seg("S", seq=5000, mss=1460, ts=(100, 0)), at=0.0)
    (synack,) = t.poll()
    assert synack.options.timestamp is not None and synack.options.timestamp[1] == 100
    t.send(seg("A", seq=5001, ack=synack.seq + 7, ts=(BOGUS_TSVAL, 0)), at=0.1)
    (rst,) = t.poll()
    assert rst.flags & TcpFlags.RST
    deadline = t.deadline()
    assert deadline is not None
    (again,) = t.poll(at=deadline)
    assert again.flags == synack.flags and again.options.timestamp is not None
    assert again.options.timestamp[1] == 100
