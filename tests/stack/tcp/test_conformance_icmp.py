"""RFC 9293 3.9.2.2 (from RFC 1122 4.2.3.9): ICMP errors about an established connection are soft.
Destination unreachable codes 0, 1 and 5, time exceeded and parameter problem MUST NOT abort it (MUST-56);
the error reaches the application if the connection later fails (SHLD-25); source quench is ignored
(MUST-55).  Linux's one exception, kept here: a connect() still in SYN_SENT is aborted."""

from __future__ import annotations

import errno

import pytest

from stack.tcp import IcmpError

from .segments import LOCAL, REMOTE, Tester, seg

SOFT_ERRORS = [
    ("unreachable", 0, errno.ENETUNREACH),  # net unreachable
    ("unreachable", 1, errno.EHOSTUNREACH),  # host unreachable
    ("unreachable", 5, errno.EOPNOTSUPP),  # source route failed
    ("time_exceeded", 0, errno.EHOSTUNREACH),
    ("parameter_problem", 0, errno.EPROTO),
]


def icmp(kind: str, code: int, seq: int) -> IcmpError:
    return IcmpError(kind, code, LOCAL, REMOTE, 50000, 80, seq)


@pytest.mark.parametrize(("kind", "code", "reported"), SOFT_ERRORS)
def test_soft_errors_do_not_abort_an_established_connection(kind: str, code: int, reported: int) -> None:
    """MUST-56: the connection survives the error and keeps moving data once the path recovers."""
    t = Tester()
    sock = t.open_client()
    sock.send(b"one")
    t.expect(seg("PA", seq=1001, ack=5001, sport=50000, dport=80, data=b"one"), at=1.0)
    t.layer.icmp_error(icmp(kind, code, seq=1001), now=1.01)
    assert sock.state == "ESTABLISHED" and sock.error == 0
    t.send(seg("A", seq=5001, ack=1004, sport=80, dport=50000), at=1.02)
    sock.send(b"two")
    t.expect(seg("PA", seq=1004, ack=5001, sport=50000, dport=80, data=b"two"))
    assert sock.state == "ESTABLISHED"


@pytest.mark.parametrize(("kind", "code", "reported"), SOFT_ERRORS)
def test_a_soft_error_explains_a_later_timeout(kind: str, code: int, reported: int) -> None:
    """SHLD-25 (marked MUST in the table): the application learns of the error, as the reason the
    connection failed when it times out (Linux's sk_err_soft), instead of a bare ETIMEDOUT."""
    t = Tester(retries2=1)
    sock = t.open_client()
    sock.send(b"x")
    t.poll(at=1.0)
    t.layer.icmp_error(icmp(kind, code, seq=1001), now=1.05)
    for when in (1.2, 1.6, 2.5):
        t.poll(at=when)
    assert sock.state == "CLOSE" and sock.error == reported


def test_source_quench_is_ignored() -> None:
    """MUST-55 (RFC 6633): a source quench changes nothing, in any state."""
    t = Tester()
    connecting = t.connect(80)
    t.poll()
    t.layer.icmp_error(icmp("source_quench", 0, seq=1000), now=0.01)
    assert connecting.state == "SYN_SENT" and connecting.error == 0
    t.send(seg("SA", seq=5000, ack=1001, sport=80, dport=50000, mss=1460), at=0.02)
    t.poll()
    connecting.send(b"data")
    t.poll(at=0.1)
    t.layer.icmp_error(icmp("source_quench", 0, seq=1001), now=0.11)
    conn = t.connection()
    assert connecting.state == "ESTABLISHED" and conn.soft_error == 0
    assert conn.cc.cwnd == 10 * 1460  # no congestion response either


def test_connect_in_syn_sent_is_aborted_like_linux() -> None:
    """Where this stack departs from MUST-56: Linux (tcp_v4_err) aborts a connect() still in SYN_SENT on any
    destination unreachable, so a refused or unreachable peer fails fast (RFC 5461 discusses the trade)."""
    t = Tester()
    sock = t.connect(80)
    t.poll()
    t.layer.icmp_error(icmp("unreachable", 1, seq=1000), now=0.01)
    assert sock.state == "CLOSE" and sock.error == errno.EHOSTUNREACH
