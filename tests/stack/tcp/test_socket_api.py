"""`TcpSocket`: the non-blocking socket surface and its Linux errno behaviour."""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import fields

import pytest

from stack.tcp.config import TcpConfig
from stack.tcp.sockopts import SocketOptions

from .segments import LOCAL, Tester, seg


def test_bind_conflicts_and_reuseaddr() -> None:
    t = Tester()
    a = t.layer.socket()
    a.bind((LOCAL, 8080))
    b = t.layer.socket()
    with pytest.raises(OSError) as info:
        b.bind(("0.0.0.0", 8080))  # the wildcard overlaps every address
    assert info.value.errno == errno.EADDRINUSE
    b.bind((LOCAL, 8081))
    with pytest.raises(OSError) as info:
        b.bind((LOCAL, 8082))
    assert info.value.errno == errno.EINVAL  # already bound
    # SO_REUSEADDR on both sockets lets them share a port as long as neither listens (Linux).
    c, d = t.layer.socket(), t.layer.socket()
    for s in (c, d):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind((LOCAL, 9000))
    d.bind((LOCAL, 9000))
    c.close(t.now)
    d.listen(5)
    e = t.layer.socket()
    e.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with pytest.raises(OSError) as info:
        e.bind((LOCAL, 9000))
    assert info.value.errno == errno.EADDRINUSE


def test_bind_port_zero_picks_an_ephemeral_port() -> None:
    t = Tester()
    s = t.layer.socket()
    s.bind((LOCAL, 0))
    ip, port = s.getsockname()
    assert ip == LOCAL and 32768 <= port <= 60999
    assert [entry.port for entry in t.layer.tables.snapshot().bound] == [port]


def test_bind_rejects_bad_addresses() -> None:
    t = Tester()
    s = t.layer.socket()
    with pytest.raises(OSError) as info:
        s.bind(("not-an-ip", 80))
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OverflowError):
        s.bind((LOCAL, 70000))


def test_connect_picks_an_ephemeral_port_from_linux_range() -> None:
    t = Tester()
    s = t.layer.socket()
    assert s.getsockname() == ("0.0.0.0", 0)
    assert s.connect_ex(("10.0.0.2", 80), t.now) == errno.EINPROGRESS
    ip, port = s.getsockname()
    assert ip == LOCAL and 32768 <= port <= 60999
    with pytest.raises(OSError) as info:
        s.getpeername()  # not connected yet
    assert info.value.errno == errno.ENOTCONN


def test_unreachable_destination_is_enetunreach() -> None:
    t = Tester()
    t.layer.route = lambda ip, now: None
    with pytest.raises(OSError) as info:
        t.layer.socket().connect(("10.9.9.9", 80), t.now)
    assert info.value.errno == errno.ENETUNREACH


def test_errors_on_unconnected_and_closed_sockets() -> None:
    t = Tester()
    s = t.layer.socket()
    with pytest.raises(OSError) as info:
        s.recv(1)
    assert info.value.errno == errno.ENOTCONN
    with pytest.raises(BrokenPipeError):
        s.send(b"x")  # Linux: EPIPE for a stream socket that never connected
    with pytest.raises(OSError) as info:
        s.accept()
    assert info.value.errno == errno.EINVAL
    s.close(t.now)
    s.close(t.now)  # idempotent
    with pytest.raises(OSError) as info:
        s.recv(1)
    assert info.value.errno == errno.EBADF


def test_recv_would_block_then_data_then_eof() -> None:
    t = Tester()
    s = t.open_client()
    assert not s.readable
    with pytest.raises(BlockingIOError):
        s.recv(10)
    t.send(seg("PA", seq=5001, ack=1001, sport=80, dport=50000, data=b"abcdef"))
    assert s.readable
    assert s.recv(4) == b"abcd" and s.recv(0) == b"" and s.recv(10) == b"ef"
    t.send(seg("FA", seq=5007, ack=1001, sport=80, dport=50000))
    assert s.readable and s.recv(10) == b""


def test_shutdown_read_returns_eof_when_empty_but_keeps_data_like_linux() -> None:
    t = Tester()
    s = t.open_client()
    s.shutdown(socket.SHUT_RD, t.now)
    assert s.readable and s.recv(10) == b""  # no EAGAIN after SHUT_RD
    t.send(seg("PA", seq=5001, ack=1001, sport=80, dport=50000, data=b"still here"))
    (ack,) = t.poll(at=0.1)
    assert ack.ack == 5011
    assert s.recv(100) == b"still here" and s.recv(10) == b""
    with pytest.raises(OSError) as info:
        t.layer.socket().shutdown(socket.SHUT_WR, t.now)
    assert info.value.errno == errno.ENOTCONN


def test_socket_options_round_trip() -> None:
    t = Tester()
    s = t.layer.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 10000)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 20000  # Linux doubles it
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 4608  # and enforces a minimum
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER) == (1, 5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    for option, value in ((socket.TCP_KEEPIDLE, 30), (socket.TCP_KEEPINTVL, 5), (socket.TCP_KEEPCNT, 3),
                          (socket.TCP_USER_TIMEOUT, 1500), (socket.TCP_NODELAY, 1)):
        s.setsockopt(socket.IPPROTO_TCP, option, value)
        assert s.getsockopt(socket.IPPROTO_TCP, option) == value
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"newreno")
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION) == "newreno"
    with pytest.raises(OSError) as info:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"bbr")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(OSError) as info:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 0)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
    assert info.value.errno == errno.ENOPROTOOPT


def test_receive_buffer_option_sets_the_advertised_window() -> None:
    t = Tester()
    s = t.layer.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 10000)
    s.connect_ex(("10.0.0.2", 80), t.now)
    (syn,) = t.poll()
    assert syn.window == 10000


def test_accepted_socket_inherits_listener_options() -> None:
    t = Tester()
    listener = t.listen(80)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    child = t.accept_one(listener)
    assert child.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert child.options.nodelay and child.options.keepalive
    assert child.options is child._conn.options  # one options object for the socket and its connection
    assert child.getsockname() == (LOCAL, 80)


def test_listen_twice_and_two_listeners_on_one_port() -> None:
    t = Tester()
    a = t.listen(80, backlog=5)
    a.listen(10)  # only changes the backlog
    assert t.layer.tables.snapshot().listening[0].backlog == 10
    b = t.layer.socket()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with pytest.raises(OSError):
        b.bind((LOCAL, 80))


def test_writable_reflects_connect_outcome() -> None:
    t = Tester()
    s = t.connect(80)
    assert not s.writable and not s.readable
    t.poll()
    t.send(seg("RA", seq=0, ack=1001, sport=80, dport=50000))
    assert s.writable and s.readable
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    assert s.error == 0


def test_state_names_match_linux() -> None:
    t = Tester()
    s = t.layer.socket()
    assert s.state == "CLOSE"
    listener = t.listen(80)
    assert listener.state == "LISTEN"
    assert t.open_client().state == "ESTABLISHED"


def test_tcp_keepidle_set_after_so_keepalive_reschedules_the_first_probe() -> None:
    """Setting TCP_KEEPIDLE on an idle connection that already has SO_KEEPALIVE moves its first probe to
    the new idle time after the last segment received (Linux's TCP_KEEPIDLE restarts the timer), instead
    of the 2 hours SO_KEEPALIVE armed it with."""
    t = Tester()
    sock = t.open_client()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    t.expect_nothing(at=0.5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    t.expect_nothing(at=0.5)
    assert t.deadline() == pytest.approx(1.0)
    (probe,) = t.poll(at=1.0)
    assert probe.seq == 1000 and not probe.payload  # SEG.SEQ = SND.NXT - 1


def test_a_listeners_options_are_copied_field_by_field_and_independent() -> None:
    options = SocketOptions.defaults(TcpConfig())
    for number, item in enumerate(fields(SocketOptions)):  # a value unlike the default in every field
        current = getattr(options, item.name)
        changed = (not current if isinstance(current, bool) else (7, number) if isinstance(current, tuple)
                   else f"cc{number}" if isinstance(current, str) else 1000 + number)
        setattr(options, item.name, changed)
    clone = options.copy()
    assert clone == options and clone is not options
    clone.rcvbuf += 1
    assert options.rcvbuf != clone.rcvbuf
