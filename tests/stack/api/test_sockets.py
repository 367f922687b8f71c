"""The blocking socket API between two Hosts on the deterministic Runner: single-threaded test code
connects on one host while the other host's listener completes the handshake by itself."""

from __future__ import annotations

import errno
import hashlib
import random
import socket as pysocket
import struct

import pytest

import stack
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.network import NoDriverError
from stack.loops.runner import Runner
from stack.tcp.config import TcpConfig

from ..nodes import ArpOnlyPeer

A_MAC, B_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
SERVER = ("10.0.0.2", 8080)


def network(**tcp: object) -> tuple[Host, Host, Runner]:
    config = TcpConfig(time_wait=2.0, **tcp)  # type: ignore[arg-type]
    a = Host("10.0.0.1/24", A_MAC, seed=1, secret=b"a" * 32, tcp=config)
    b = Host("10.0.0.2/24", B_MAC, seed=2, secret=b"b" * 32, tcp=config)
    return a, b, Runner([a, b], [MemoryWire(a, b)])


def listening(host: Host, backlog: int = 8) -> stack.Socket:
    listener = host.socket()
    listener.bind(SERVER)
    listener.listen(backlog)
    return listener


def test_connect_accept_send_recv_half_close_and_close() -> None:
    a, b, runner = network()
    listener = listening(b)
    client = a.socket()
    client.connect(SERVER)
    assert client.getpeername() == SERVER
    local_ip, local_port = client.getsockname()
    assert local_ip == "10.0.0.1" and 32768 <= local_port <= 60999  # an ephemeral port
    server, peer = listener.accept()
    assert peer == (local_ip, local_port)
    assert server.getsockname() == SERVER and server.getpeername() == peer

    client.sendall(b"hello")
    assert server.recv(100) == b"hello"
    payload = random.Random(1).randbytes(300_000)  # fits in the buffers: nobody reads while sendall runs
    server.sendall(payload)
    assert hashlib.sha256(client.recv_exactly(len(payload))).digest() == hashlib.sha256(payload).digest()

    client.shutdown(stack.SHUT_WR)  # half-close: the server sees EOF and may still send
    assert server.recv(10) == b""
    server.sendall(b"after your FIN")
    assert client.recv(100) == b"after your FIN"
    server.close()
    assert client.recv(10) == b""
    client.close()
    listener.close()
    assert runner.run_until_idle(timeout=300.0)  # TIME_WAIT passes; no timer is left anywhere
    for host in (a, b):
        tables = host.tables()
        assert tables.bound == () and tables.listening == () and tables.established == ()


def test_tables_show_the_syn_queue_and_accept_queue() -> None:
    a, b, _runner = network()
    listener = listening(b, backlog=4)
    clients = [a.socket() for _ in range(3)]
    for client in clients:
        client.connect(SERVER)
    [entry] = b.tables().listening
    assert (entry.port, entry.backlog, entry.accept_queue, entry.syn_queue) == (8080, 4, 3, 0)
    assert len(a.tables().established) == 3
    for _ in clients:
        listener.accept()
    assert b.tables().listening[0].accept_queue == 0
    assert len(b.tables().established) == 3


def test_connection_refused() -> None:
    a, _b, runner = network()
    with pytest.raises(ConnectionRefusedError) as caught:
        a.socket().connect(("10.0.0.2", 9))
    assert caught.value.errno == errno.ECONNREFUSED
    assert a.socket().connect_ex(("10.0.0.2", 9)) == errno.ECONNREFUSED
    assert runner.now == 0.0  # the RST came back at once


def test_syn_backoff_then_etimedout_in_virtual_time() -> None:
    host = Host("10.0.0.1/24", A_MAC, seed=1, tcp=TcpConfig())
    hole = ArpOnlyPeer("10.0.0.9")
    runner = Runner([host, hole], [MemoryWire(host, hole)])
    with pytest.raises(TimeoutError) as caught:
        host.socket().connect(("10.0.0.9", 80))
    assert caught.value.errno == errno.ETIMEDOUT
    syn_times = [t for t, _ in hole.tcp_segments()]
    assert syn_times == pytest.approx([0, 1, 3, 7, 15, 31, 63])  # Linux: 6 retries, RTO doubling from 1 s
    assert runner.now == pytest.approx(127.0)


def test_connect_timeout_from_settimeout() -> None:
    host = Host("10.0.0.1/24", A_MAC, seed=1)
    hole = ArpOnlyPeer("10.0.0.9")
    runner = Runner([host, hole], [MemoryWire(host, hole)])
    client = host.socket()
    client.settimeout(5.0)
    with pytest.raises(TimeoutError, match="timed out"):
        client.connect(("10.0.0.9", 80))
    assert runner.now == pytest.approx(5.0)
    other = host.socket()
    other.settimeout(1.0)
    assert other.connect_ex(("10.0.0.9", 81)) == errno.EAGAIN  # CPython's connect_ex on a timeout


def test_no_such_neighbour_is_ehostunreach() -> None:
    a, _b, runner = network()
    with pytest.raises(OSError) as caught:
        a.socket().connect(("10.0.0.77", 80))
    assert caught.value.errno == errno.EHOSTUNREACH
    assert runner.now == pytest.approx(3.0)  # three ARP requests one second apart


def test_eaddrinuse() -> None:
    _a, b, _runner = network()
    listening(b)
    other = b.socket()
    with pytest.raises(OSError) as caught:
        other.bind(SERVER)
    assert caught.value.errno == errno.EADDRINUSE


def test_epipe_after_shutdown_wr() -> None:
    a, b, _runner = network()
    listener = listening(b)
    client = a.socket()
    client.connect(SERVER)
    listener.accept()
    client.shutdown(stack.SHUT_WR)
    with pytest.raises(BrokenPipeError) as caught:
        client.send(b"x")
    assert caught.value.errno == errno.EPIPE


def test_close_with_unread_data_resets_the_peer() -> None:
    a, b, runner = network()
    listener = listening(b)
    client = a.socket()
    client.connect(SERVER)
    server, _ = listener.accept()
    server.sendall(b"unread data")
    runner.run_for(0.5)
    client.close()  # closing with unread data sends RST (RFC 2525, Linux)
    with pytest.raises(ConnectionResetError) as caught:
        server.recv(10)
    assert caught.value.errno == errno.ECONNRESET
    assert b.counters()["TcpEstabResets"] == 1
    with pytest.raises(OSError) as caught:
        server.send(b"more")
    assert caught.value.errno in (errno.EPIPE, errno.ECONNRESET)


def test_so_linger_zero_resets() -> None:
    a, b, _runner = network()
    listener = listening(b)
    client = a.socket()
    client.connect(SERVER)
    server, _ = listener.accept()
    client.setsockopt(stack.SOL_SOCKET, stack.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    with pytest.raises(ConnectionResetError):
        server.recv(10)
    assert a.tables().established == ()  # no TIME_WAIT after an abortive close


def test_non_blocking_eagain_and_einprogress() -> None:
    a, b, runner = network()
    listener = listening(b)
    listener.setblocking(False)
    with pytest.raises(BlockingIOError) as caught:
        listener.accept()
    assert caught.value.errno == errno.EAGAIN
    client = a.socket()
    client.setblocking(False)
    assert client.connect_ex(SERVER) == errno.EINPROGRESS
    with pytest.raises(BlockingIOError):
        client.connect(SERVER)  # EALREADY while the handshake runs
    assert runner.run_until(lambda: client.writable, timeout=1.0)
    assert client.getsockopt(stack.SOL_SOCKET, stack.SO_ERROR) == 0
    assert client.connect_ex(SERVER) == 0  # Linux: the first connect() after completion reports success
    assert client.connect_ex(SERVER) == errno.EISCONN
    server, _ = listener.accept()
    with pytest.raises(BlockingIOError) as caught:
        client.recv(10)
    assert caught.value.errno == errno.EAGAIN
    assert client.send(b"x" * 10) == 10
    runner.run_until(lambda: server.readable, timeout=1.0)
    assert server.recv(100) == b"x" * 10


def test_send_buffer_fills_then_eagain() -> None:
    a, b, runner = network(sndbuf=65536, rcvbuf=65536)
    listener = listening(b)
    client = a.socket()
    client.connect(SERVER)
    server, _ = listener.accept()
    client.setblocking(False)
    sent = 0
    with pytest.raises(BlockingIOError):
        for _ in range(1000):
            sent += client.send(bytes(16384))
            runner.run_for(0.01)  # the unread receive buffer and then our send buffer fill up
    assert 65536 <= sent < 1000 * 16384
    assert len(server.recv_exactly(sent)) == sent


def test_recv_timeout_and_options() -> None:
    a, b, runner = network()
    listener = listening(b)
    client = a.socket()
    client.connect(SERVER)
    listener.accept()
    client.settimeout(2.0)
    start = runner.now
    with pytest.raises(TimeoutError):
        client.recv(10)
    assert runner.now == pytest.approx(start + 2.0)
    client.setsockopt(stack.IPPROTO_TCP, stack.TCP_NODELAY, 1)
    assert client.getsockopt(stack.IPPROTO_TCP, stack.TCP_NODELAY)
    client.setsockopt(stack.SOL_SOCKET, stack.SO_KEEPALIVE, 1)
    assert client.getsockopt(stack.SOL_SOCKET, stack.SO_KEEPALIVE)
    client.setsockopt(stack.SOL_SOCKET, stack.SO_REUSEADDR, 1)
    assert client.getsockopt(stack.SOL_SOCKET, stack.SO_REUSEADDR)
    client.setsockopt(stack.SOL_SOCKET, stack.SO_RCVBUF, 100_000)
    assert client.getsockopt(stack.SOL_SOCKET, stack.SO_RCVBUF) > 0
    assert client.getsockopt(stack.SOL_SOCKET, stack.SO_SNDBUF) > 0


def test_context_manager_closes_and_closed_socket_is_ebadf() -> None:
    a, _b, _runner = network()
    with a.socket() as sock:
        sock.bind(("10.0.0.1", 5000))
    with pytest.raises(OSError) as caught:
        sock.getsockname()
    assert caught.value.errno == errno.EBADF
    assert a.tables().bound == ()


def test_blocking_without_a_driver_is_a_clear_error() -> None:
    lonely = Host("10.0.0.1/24", A_MAC, seed=1)
    sock = lonely.socket()
    sock.bind(("10.0.0.1", 5000))
    sock.listen()
    with pytest.raises(NoDriverError, match="no driver"):
        sock.accept()
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.accept()  # non-blocking calls need no driver


def test_address_validation_like_socket_module() -> None:
    a, _b, _runner = network()
    with pytest.raises(OverflowError):
        a.socket().bind(("10.0.0.1", 70000))
    with pytest.raises(pysocket.gaierror):
        a.socket().connect(("example.invalid", 80))


def test_no_route_is_enetunreach() -> None:
    a, _b, _runner = network()
    with pytest.raises(OSError) as caught:
        a.socket().connect(("192.0.2.1", 80))
    assert caught.value.errno == errno.ENETUNREACH


def test_connect_to_our_own_address_goes_through_loopback() -> None:
    host = Host("10.0.0.1/24", A_MAC, seed=1, tcp=TcpConfig(time_wait=1.0))
    runner = Runner([host])
    listener = host.socket()
    listener.bind(("10.0.0.1", 80))
    listener.listen()
    client = host.socket()
    client.connect(("10.0.0.1", 80))
    server, peer = listener.accept()
    assert peer == client.getsockname()
    client.sendall(b"to myself" * 10_000)
    assert server.recv_exactly(90_000) == b"to myself" * 10_000
    assert host.counters()["LoopbackPackets"] > 0
    assert host.counters().get("EthInFrames", 0) == 0  # nothing went on the wire
    assert host.ping("10.0.0.1") == 0.0
    client.close()
    server.close()
    assert runner.run_until_idle(timeout=600.0)


def test_route_mtu_clamps_the_mss_and_segments_fit() -> None:
    a, b, _runner = network()
    a.add_route("10.0.0.2/32", mtu=600)
    listener = listening(b)
    client = a.socket()
    client.connect(SERVER)
    server, _ = listener.accept()
    client.sendall(bytes(50_000))
    assert len(server.recv_exactly(50_000)) == 50_000
    [snapshot] = a.snapshots()
    assert snapshot.mss <= 600 - 40
    assert a.counters().get("IpFragFails", 0) == 0 and a.counters().get("IpFragOKs", 0) == 0


def test_recv_into_and_enotconn() -> None:
    a, b, _runner = network()
    with pytest.raises(OSError) as caught:
        a.socket().getpeername()
    assert caught.value.errno == errno.ENOTCONN
    listener = listening(b)
    client = a.socket()
    client.connect(SERVER)
    server, _ = listener.accept()
    client.sendall(b"0123456789")
    buffer = bytearray(4)
    assert server.recv_into(buffer) == 4 and buffer == b"0123"
    view = memoryview(bytearray(16))
    assert server.recv_into(view, 3) == 3 and bytes(view[:3]) == b"456"


def test_trace_events_carry_linux_tracepoint_names() -> None:
    events: list[object] = []
    config = TcpConfig(time_wait=1.0)
    a = Host("10.0.0.1/24", A_MAC, seed=1, tcp=config, trace=events.append)
    b = Host("10.0.0.2/24", B_MAC, seed=2, tcp=config)
    Runner([a, b], [MemoryWire(a, b)])
    listening(b)
    a.socket().connect(SERVER)
    states = [e.fields["newstate"] for e in events if e.name == "inet_sock_set_state"]  # type: ignore[attr-defined]
    assert states[:2] == ["SYN_SENT", "ESTABLISHED"]


def test_same_seeds_give_the_same_frames() -> None:
    def capture() -> bytes:
        import io

        pcap = io.BytesIO()
        config = TcpConfig(time_wait=1.0)
        a = Host("10.0.0.1/24", A_MAC, seed=7, secret=b"x" * 32, tcp=config)
        b = Host("10.0.0.2/24", B_MAC, seed=8, secret=b"y" * 32, tcp=config)
        runner = Runner([a, b], [MemoryWire(a, b, pcap=pcap)])
        listener = listening(b)
        client = a.socket()
        client.connect(SERVER)
        server, _ = listener.accept()
        client.sendall(bytes(100_000))
        server.recv_exactly(100_000)
        client.close()
        server.close()
        runner.run_until_idle()
        return pcap.getvalue()

    first = capture()
    assert len(first) > 100_000
    assert capture() == first


@pytest.mark.parametrize("offload", [True, False])
def test_partial_checksums_need_a_wire_that_vouches(offload: bool) -> None:
    config = TcpConfig(time_wait=1.0)
    a = Host("10.0.0.1/24", A_MAC, seed=1, tcp=config, tx_checksum="partial")
    b = Host("10.0.0.2/24", B_MAC, seed=2, tcp=config, tx_checksum="partial")
    Runner([a, b], [MemoryWire(a, b, checksum_offload=offload)])
    listener = listening(b)
    client = a.socket()
    client.settimeout(5.0)
    if offload:
        client.connect(SERVER)
        server, _ = listener.accept()
        client.sendall(b"x" * 10_000)
        assert server.recv_exactly(10_000) == b"x" * 10_000
    else:  # without offload every partial checksum fails: the handshake never completes
        with pytest.raises(TimeoutError):
            client.connect(SERVER)
        # The first SYN waited for ARP and so left complete; its retransmissions and b's SYN-ACKs did not.
        assert b.counters()["TcpInErrs"] >= 2 and a.counters()["TcpInErrs"] >= 2


def test_a_corrupting_direction_never_vouches_for_checksums() -> None:
    from stack.devices.impairment import Impairment

    a = Host("10.0.0.1/24", A_MAC, seed=1)
    b = Host("10.0.0.2/24", B_MAC, seed=2)
    wire = MemoryWire(a, b, Impairment(corrupt=0.5), None, checksum_offload=True)
    runner = Runner([a, b], [wire])
    listener = listening(b)
    client = a.socket()
    client.connect(SERVER)
    server, _ = listener.accept()
    payload = random.Random(9).randbytes(50_000)
    client.sendall(payload)
    assert server.recv_exactly(len(payload)) == payload  # corrupted segments were caught and resent
    assert b.counters()["TcpInErrs"] > 0
    # Resent: RACK finds the losses by time, so on this wire without latency no timer may have to run.
    assert a.counters()["TcpRetransSegs"] > 0 and runner.now >= 0
