"""RFC 9293 3.8.4 keep-alives (MUST-24..29, SHLD-12): off by default, on request, only after an idle
interval of at least two hours by default, configurable per socket, and tolerant of a lost ACK.
Our ISS 1000, the peer's 5000; we are 50000, the peer 80."""

from __future__ import annotations

import errno
import socket

import pytest

from stack.tcp import TcpConfig
from stack.wire.tcp import TcpSegment

from .segments import Tester, seg

PROBE = seg("A", seq=1000, ack=5001, sport=50000, dport=80)  # SEG.SEQ = SND.NXT - 1, no data (SHLD-12)
TWO_HOURS = 7200.0


def peer(flags: str, **fields: object) -> TcpSegment:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


def test_keepalive_is_off_by_default() -> None:
    """MUST-25: a socket that did not ask sends nothing, however long the connection idles."""
    assert TcpConfig().keepalive_time >= TWO_HOURS
    t = Tester()
    sock = t.open_client()
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    t.expect_nothing()
    assert t.deadline() is None  # no timer at all
    t.expect_nothing(at=10 * TWO_HOURS)
    assert sock.state == "ESTABLISHED"


def test_default_idle_interval_is_two_hours() -> None:
    """MUST-28: with the defaults (Linux tcp_keepalive_time = 7200 s) the first probe waits two hours of
    silence, and the socket reports that interval."""
    t = Tester()  # plain options, the default keepalive settings
    sock = t.open_client()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # MUST-24: the application asks
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7200
    t.expect_nothing()
    assert t.deadline() == pytest.approx(TWO_HOURS)
    t.expect_nothing(at=TWO_HOURS - 1)
    t.expect(PROBE, at=TWO_HOURS)


def test_probes_only_after_an_idle_interval() -> None:
    """MUST-26: every segment from the peer restarts the idle interval; sending data (awaiting its ACK)
    is not idle either."""
    t = Tester(keepalive_time=10.0, keepalive_intvl=2.0)
    sock = t.open_client()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    t.expect_nothing()
    t.send(peer("PA", seq=5001, ack=1001, data=b"hi"), at=6.0)
    t.expect(seg("A", seq=1001, ack=5003, win=63998, sport=50000, dport=80), at=6.04)  # delayed ACK
    t.expect_nothing(at=10.0)  # idle only 4 s: no probe
    assert t.deadline() == pytest.approx(16.0)
    sock.send(b"busy")
    t.expect(seg("PA", seq=1001, ack=5003, win=63998, sport=50000, dport=80, data=b"busy"), at=15.0)
    t.poll(at=16.0)  # data in flight: the retransmission timer watches the peer, not keepalive
    assert all(s.seq != 1000 for s in t.poll(at=16.0))
    t.send(peer("A", seq=5003, ack=1005), at=16.5)
    t.expect_nothing()
    t.expect_nothing(at=26.4)
    t.expect(seg("A", seq=1004, ack=5003, win=63998, sport=50000, dport=80), at=26.5)


def test_interval_and_count_are_configurable_per_socket() -> None:
    """MUST-27: TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT set the idle time, the probe spacing and how
    many unanswered probes end the connection."""
    t = Tester()
    sock = t.open_client()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
    t.expect_nothing()
    assert t.deadline() == pytest.approx(30.0)
    t.expect(PROBE, at=30.0)
    t.expect(PROBE, at=35.0)
    t.expect(seg("RA", seq=1001, ack=5001, win=0, sport=50000, dport=80), at=40.0)
    assert sock.state == "CLOSE" and sock.error == errno.ETIMEDOUT


def test_a_lost_probe_or_ack_is_tolerated() -> None:
    """MUST-29: one unanswered probe is not a dead peer; an answer to a later probe keeps the connection
    and starts a fresh idle interval."""
    t = Tester(keepalive_time=10.0, keepalive_intvl=2.0, keepalive_probes=3)
    sock = t.open_client()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    t.expect_nothing()
    t.expect(PROBE, at=10.0)  # lost, or its ACK is
    t.expect(PROBE, at=12.0)
    t.send(peer("A", seq=5001, ack=1001), at=12.01)  # this one is answered
    t.expect_nothing()
    t.expect_nothing(at=14.0)
    t.expect_nothing(at=16.0)  # would have been the third probe and the reset
    assert sock.state == "ESTABLISHED"
    assert t.deadline() == pytest.approx(22.01)
    t.expect(PROBE, at=22.01)
