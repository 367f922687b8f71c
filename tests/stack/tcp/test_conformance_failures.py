"""RFC 9293 3.8.3 connection failures: the R2 threshold closes the connection for data and for SYNs alike
(MUST-20, MUST-22), the application can set it (MUST-21), and how the SYN threshold compares with the
RFC's three minutes (MUST-23) in the "linux" and "rfc9293" profiles, whose TIME_WAIT lengths (MUST-13)
are checked here too.  Our ISS 1000; we are 50000, the peer 80."""

from __future__ import annotations

import errno
import socket

import pytest

from stack.tcp.config import TcpConfig

from .segments import Tester, seg

SYN = seg("S", seq=1000, ack=0, sport=50000, dport=80, win=64000, mss=1460)


def give_up_time(t: Tester) -> float:
    """Run a connect() to a silent peer until it fails; the time it failed at."""
    sock = t.connect(80)
    t.poll(at=0.0)
    for _ in range(20):
        deadline = t.deadline()
        assert deadline is not None
        t.poll(at=deadline)
        if sock.state == "CLOSE":
            assert sock.error == errno.ETIMEDOUT
            return deadline
    raise AssertionError("the connect never gave up")


#: The segment-level tests' plain options (no timestamps, SACK or scaling), laid over a profile.
PLAIN = {"timestamps": False, "sack": False, "window_scaling": False, "rcvbuf": 64000}


def test_syn_give_up_time_in_the_linux_and_rfc9293_profiles() -> None:
    """MUST-23 asks R2 for a SYN to be at least 3 minutes.  The default configuration is the "linux"
    profile: Linux's tcp_syn_retries = 6 from a 1 s RTO gives up after 127 s, short of it.  The "rfc9293"
    profile's syn_retries = 7 gives up after 247 s (the eighth backoff is capped at max_rto = 120 s)."""
    assert TcpConfig() == TcpConfig.profile("linux")
    assert give_up_time(Tester(TcpConfig.profile("linux", **PLAIN))) == pytest.approx(127.0)
    rfc9293 = give_up_time(Tester(TcpConfig.profile("rfc9293", **PLAIN)))
    assert rfc9293 == pytest.approx(247.0) and rfc9293 >= 180


def test_rfc9293_profile_keeps_time_wait_for_two_msl() -> None:
    """MUST-13 with the RFC's 2-minute MSL: the "rfc9293" profile holds TIME_WAIT 240 s, the "linux" one
    Linux's 60 s (TCP_TIMEWAIT_LEN); either way the 4-tuple is released when it ends."""
    for name, length in (("linux", 60.0), ("rfc9293", 240.0)):
        t = Tester(TcpConfig.profile(name, **PLAIN))
        t.open_client().close(t.now)
        t.poll()
        t.send(seg("FA", seq=5001, ack=1002, sport=80, dport=50000), at=1.0)
        t.poll()
        assert t.connection().state.value == "TIME_WAIT"
        assert t.deadline() == pytest.approx(1.0 + length), name
        t.poll(at=1.0 + length)
        assert list(t.layer.tables.connections()) == [], name


def test_profiles_are_named_and_take_overrides() -> None:
    """A profile is a starting point: fields given beside it win, and an unknown name is refused."""
    config = TcpConfig.profile("rfc9293", syn_retries=9)
    assert (config.syn_retries, config.time_wait) == (9, 240.0)
    with pytest.raises(ValueError, match=r"profile='bsd': choose one of linux, rfc9293"):
        TcpConfig.profile("bsd")


def test_user_timeout_bounds_a_connect() -> None:
    """MUST-21 and MUST-22: TCP_USER_TIMEOUT (the application's R2, in time) also ends a connect() to a
    silent peer, checked when the SYN timer fires, as Linux does."""
    t = Tester()
    sock = t.layer.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 3000)
    sock.bind(("10.0.0.1", 50000))
    assert sock.connect_ex(("10.0.0.2", 80), t.now) == errno.EINPROGRESS
    t.expect(SYN, at=0.0)
    t.expect(SYN, at=1.0)  # 1 s after the first SYN: within the user timeout, so retransmit
    assert t.deadline() == pytest.approx(3.0)
    t.expect_nothing(at=3.0)  # 3 s: the user timeout is over
    assert sock.state == "CLOSE" and sock.error == errno.ETIMEDOUT


def test_user_timeout_does_not_shorten_a_connect_that_answers() -> None:
    """The user timeout counts only while the SYN is unanswered."""
    t = Tester()
    sock = t.layer.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1500)
    sock.bind(("10.0.0.1", 50000))
    sock.connect_ex(("10.0.0.2", 80), t.now)
    t.expect(SYN, at=0.0)
    t.expect(SYN, at=1.0)
    t.send(seg("SA", seq=5000, ack=1001, sport=80, dport=50000, mss=1460), at=1.2)
    t.poll()
    t.expect_nothing(at=10.0)
    assert sock.state == "ESTABLISHED"


def test_r1_retransmissions_give_ip_negative_advice_once() -> None:
    """MUST-20 (R1): after three unanswered timeouts of one segment (Linux's tcp_retries1) the layer calls
    its `negative_advice` hook with the peer's address, once, so the host can re-check the route; the
    connection itself goes on until R2."""
    t = Tester(retries2=6)
    advised: list[str] = []
    t.layer.negative_advice = lambda ip, now: advised.append(ip)
    sock = t.open_client()
    sock.send(b"anyone there?")
    t.poll(at=1.0)
    timeouts = 0
    while sock.state == "ESTABLISHED":
        deadline = t.deadline()
        assert deadline is not None
        t.poll(at=deadline)
        timeouts += 1
        assert advised == ([] if timeouts < 3 else ["10.0.0.2"]), timeouts
    assert timeouts == 7 and sock.error == errno.ETIMEDOUT  # R2: retries2 = 6 retransmissions, then over
    assert t.layer.counters()["TCPNegativeAdvice"] == 1


def test_r1_applies_to_syns_too() -> None:
    """MUST-22: the same R1 advice for a SYN that goes unanswered."""
    t = Tester()
    advised: list[str] = []
    t.layer.negative_advice = lambda ip, now: advised.append(ip)
    t.connect(80)
    t.expect(SYN, at=0.0)
    for when, expected in ((1.0, []), (3.0, []), (7.0, ["10.0.0.2"]), (15.0, ["10.0.0.2"])):
        t.expect(SYN, at=when)
        assert advised == expected, when


def test_r1_is_a_setting() -> None:
    """SHLD-10: R1 is `TcpConfig.retries1` (Linux's net.ipv4.tcp_retries1, 3 by default): with 1 the advice
    comes with the first SYN timeout; a value below 1 is refused."""
    t = Tester(retries1=1)
    advised: list[str] = []
    t.layer.negative_advice = lambda ip, now: advised.append(ip)
    t.connect(80)
    t.expect(SYN, at=0.0)
    t.expect(SYN, at=1.0)
    assert advised == ["10.0.0.2"]
    t.expect(SYN, at=3.0)
    assert advised == ["10.0.0.2"]  # once per segment, not at every timeout
    with pytest.raises(ValueError, match=r"retries1=0: must be at least 1"):
        TcpConfig(retries1=0)


@pytest.mark.parametrize("delay", [0.5, 0.75, 2.0])
def test_a_delayed_ack_of_half_a_second_or_more_is_refused(delay: float) -> None:
    """MUST-40: an ACK must not be delayed 0.5 s or more, so such a setting is an error, not a surprise."""
    with pytest.raises(ValueError, match=rf"delayed_ack={delay}: must be below 0.5 s \(RFC 9293 MUST-40\)"):
        TcpConfig(delayed_ack=delay)
    assert TcpConfig(delayed_ack=0.499).delayed_ack == 0.499
