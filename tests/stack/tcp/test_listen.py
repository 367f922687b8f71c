"""The listener's SYN queue and accept queue: Linux's sizing and overflow behaviour, SYN cookies, and a new
SYN ending TIME_WAIT early."""

from __future__ import annotations

import pytest

from stack.tcp.listener import effective_backlog

from .segments import PEER_PORT, Tester, seg


def syn_from(port: int, isn: int = 5000) -> object:
    return seg("S", seq=isn, sport=port, mss=1460)


def complete(t: Tester, port: int, isn: int = 5000) -> None:
    t.send(syn_from(port, isn))
    (synack,) = t.poll()
    t.send(seg("A", seq=isn + 1, ack=synack.seq + 1, sport=port))
    assert t.poll() == []


def queues(t: Tester) -> tuple[int, int]:
    entry = t.layer.tables.snapshot().listening[0]
    return entry.syn_queue, entry.accept_queue


def test_backlog_is_capped_by_somaxconn_and_negative_means_somaxconn() -> None:
    assert effective_backlog(128, 4096) == 128
    assert effective_backlog(10_000, 4096) == 4096
    assert effective_backlog(-1, 4096) == 4096
    t = Tester(somaxconn=16)
    t.listen(80, backlog=100)
    assert t.layer.tables.snapshot().listening[0].backlog == 16


def test_accept_queue_full_drops_new_syns_silently() -> None:
    t = Tester(syncookies=0)
    t.listen(80, backlog=1)
    complete(t, 40000)
    complete(t, 40001)  # Linux's test is len > backlog: backlog 1 admits two
    assert queues(t) == (0, 2)
    t.send(syn_from(40002))
    t.expect_nothing()
    counters = t.layer.counters()
    assert counters["ListenOverflows"] == 1 and counters["ListenDrops"] == 1


def test_handshake_ack_dropped_while_accept_queue_full_completes_later() -> None:
    t = Tester(syncookies=0)
    listener = t.listen(80, backlog=2)
    complete(t, 40000)
    complete(t, 40001)
    t.send(syn_from(40002), syn_from(40003))
    synacks = t.poll()
    assert len(synacks) == 2 and queues(t) == (2, 2)
    t.send(seg("A", seq=5001, ack=synacks[0].seq + 1, sport=40002))
    assert queues(t) == (1, 3)
    t.send(seg("A", seq=5001, ack=synacks[1].seq + 1, sport=40003))  # the queue is full: ignored
    t.expect_nothing()
    assert queues(t) == (1, 3) and t.layer.counters()["ListenOverflows"] == 1
    listener.accept()
    # The SYN-ACK is retransmitted on its timer; the client answers again and now fits.
    (again,) = t.poll(at=1.0)
    assert again.dst_port == 40003 and again.flags == synacks[1].flags
    t.send(seg("A", seq=5001, ack=synacks[1].seq + 1, sport=40003))
    assert queues(t) == (0, 3)


def test_syn_queue_overflow_answers_with_a_cookie_and_keeps_no_state() -> None:
    t = Tester(syncookies=1)
    listener = t.listen(80, backlog=2)
    t.send(syn_from(40000), syn_from(40001))
    assert len(t.poll()) == 2 and queues(t) == (2, 0)
    t.send(syn_from(40002, isn=7000), at=0.5)
    (cookie_synack,) = t.poll()
    assert cookie_synack.flags == seg("SA").flags and cookie_synack.ack == 7001
    assert cookie_synack.options.mss == 1460 and queues(t) == (2, 0)
    assert t.layer.counters()["SyncookiesSent"] == 1
    # The client's ACK returns the cookie: the connection is created straight into the accept queue.
    t.send(seg("PA", seq=7001, ack=cookie_synack.seq + 1, sport=40002, data=b"hi"), at=0.6)
    assert queues(t) == (2, 1)
    child, address = listener.accept()
    assert address == ("10.0.0.2", 40002) and child.state == "ESTABLISHED"
    assert child.recv(10) == b"hi"
    assert child.getsockopt(6, 2) == 1460  # TCP_MAXSEG from the cookie's MSS table


def test_forged_cookie_ack_is_reset() -> None:
    t = Tester(syncookies=1)
    t.listen(80)
    t.send(seg("A", seq=7001, ack=123456, sport=40002))
    t.expect(seg("R", seq=123456, ack=0, win=0, sport=80, dport=40002))
    assert t.layer.counters()["SyncookiesFailed"] == 1


def test_syncookies_two_always_uses_cookies() -> None:
    t = Tester(syncookies=2)
    t.listen(80)
    t.send(syn_from(40000))
    (synack,) = t.poll()
    assert queues(t) == (0, 0) and synack.seq != 1000


def test_a_cookie_syn_ack_announces_the_listeners_tcp_maxseg() -> None:
    """TCP_MAXSEG lowers the MSS a listener announces with a SYN cookie too, as on its SYN queue path."""
    import socket

    t = Tester(syncookies=2)
    listener = t.listen(80)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    t.send(syn_from(40000))
    (synack,) = t.poll()
    assert synack.options.mss == 536


def test_syn_queue_overflow_without_cookies_drops() -> None:
    t = Tester(syncookies=0)
    t.listen(80, backlog=1)
    t.send(syn_from(40000))
    t.poll()
    t.send(syn_from(40001))
    t.expect_nothing()
    assert t.layer.counters()["TCPReqQFullDrop"] == 1


def test_timestamped_cookie_keeps_window_scale_and_sack() -> None:
    from stack.tcp import TcpConfig

    t = Tester(TcpConfig(syncookies=2, time_wait=2.0))
    listener = t.listen(80)
    t.send(seg("S", seq=7000, mss=1460, wscale=4, sack_perm=True, ts=(50, 0)), at=3.0)
    (synack,) = t.poll()
    tsval = synack.options.timestamp[0]
    assert synack.options.wscale == 7 and synack.options.sack_permitted
    t.send(seg("A", seq=7001, ack=synack.seq + 1, win=100, ts=(60, tsval)), at=3.01)
    child, _ = listener.accept()
    conn = child._conn  # type: ignore[attr-defined]
    n = conn.negotiated
    assert (n.snd_wscale, n.sack, n.timestamps) == (4, True, True)
    assert conn.snd_wnd == 100 << 4


def test_new_syn_ends_time_wait_early() -> None:
    t = Tester()
    listener = t.listen(80)
    complete(t, PEER_PORT)
    child, _ = listener.accept()
    child.close(t.now)  # the server closes first: it will hold TIME_WAIT
    t.poll()
    t.send(seg("A", seq=5001, ack=1002))
    t.send(seg("FA", seq=5001, ack=1002))
    t.poll()
    assert child.state == "TIME_WAIT"
    t.send(seg("S", seq=5000, mss=1460), at=0.5)  # not newer than RCV.NXT: TIME_WAIT answers with an ACK
    (ack,) = t.poll()
    assert ack.flags == seg("A").flags
    t.send(seg("S", seq=90000, mss=1460), at=0.6)  # newer: a new incarnation
    (synack,) = t.poll()
    assert synack.flags == seg("SA").flags and synack.ack == 90001
    assert queues(t) == (1, 0)


def test_closing_a_listener_resets_unaccepted_connections() -> None:
    t = Tester()
    listener = t.listen(80)
    complete(t, 40000)
    t.send(syn_from(40001))
    t.poll()
    listener.close(t.now)
    (rst,) = t.poll()
    assert rst.dst_port == 40000 and rst.flags == seg("RA").flags
    assert list(t.layer.tables.connections()) == [] and t.layer.tables.snapshot().listening == ()
    with pytest.raises(OSError):
        listener.accept()
