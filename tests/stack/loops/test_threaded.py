"""The same blocking API in real time: the network runs in a ThreadedDriver's background thread while
test threads block in accept/recv/sendall."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time

import pytest

import stack
from stack.devices.contract import OutgoingFrame
from stack.devices.impairment import Impairment
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.threaded import ThreadedDriver
from stack.tcp.config import TcpConfig

SERVER = ("10.0.0.2", 7)


def hosts() -> tuple[Host, Host, MemoryWire]:
    config = TcpConfig(time_wait=0.5)
    a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tcp=config)
    b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2, tcp=config)
    return a, b, MemoryWire(a, b, Impairment(delay=0.0005), Impairment(delay=0.0005))


def echo_server(listener: stack.Socket, errors: list[BaseException]) -> None:
    try:
        connection, _ = listener.accept()
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)
    except BaseException as exc:  # reported to the test thread
        errors.append(exc)


def test_echo_with_blocking_calls_from_threads() -> None:
    a, b, wire = hosts()
    payload = random.Random(2).randbytes(300_000)
    errors: list[BaseException] = []
    with ThreadedDriver([a, b], [wire]) as driver:
        assert a.driver is driver
        listener = b.socket()
        listener.bind(SERVER)
        listener.listen()
        server = threading.Thread(target=echo_server, args=(listener, errors))
        server.start()
        client = a.socket()
        client.settimeout(10.0)
        client.connect(SERVER)
        writer = threading.Thread(target=lambda: (client.sendall(payload), client.shutdown(stack.SHUT_WR)))
        writer.start()
        received = bytearray()
        while chunk := client.recv(65536):
            received += chunk
        writer.join(10.0)
        server.join(10.0)
        client.close()
        listener.close()
    assert not errors
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert a.driver is None  # detached when the driver stopped


def test_real_time_timeouts_and_refusal() -> None:
    a, b, wire = hosts()
    with ThreadedDriver([a, b], [wire]):
        with pytest.raises(ConnectionRefusedError):
            a.socket().connect(SERVER)
        listener = b.socket()
        listener.bind(SERVER)
        listener.listen()
        listener.settimeout(0.2)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            listener.accept()
        assert 0.19 <= time.monotonic() - start < 2.0
        assert a.ping("10.0.0.2", timeout=2.0) is not None


def test_real_time_connect_timeout_to_a_black_hole() -> None:
    from ..nodes import ArpOnlyPeer

    host = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
    hole = ArpOnlyPeer("10.0.0.9")
    with ThreadedDriver([host, hole], [MemoryWire(host, hole)]):
        client = host.socket()
        client.settimeout(0.3)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.connect(("10.0.0.9", 80))
        assert 0.29 <= time.monotonic() - start < 3.0
        client.close()
    assert len(hole.tcp_segments()) >= 1  # the SYN left


class DatagramMedium:
    """A medium on a file descriptor (as a TAP is): one host on a SOCK_DGRAM socketpair end."""

    def __init__(self, host: Host, sock: socket.socket) -> None:
        self.nodes = (host,)
        self.host = host
        self.sock = sock
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def step(self, now: float) -> int:
        moved = 0
        while True:
            try:
                frame = self.sock.recv(65536)
            except BlockingIOError:
                break
            self.host.receive_frame(frame, now)
            moved += 1
        for frame in self.host.poll(now):
            self.sock.send(frame.joined())
            moved += 1
        return moved

    def next_deadline(self) -> float | None:
        return None


def test_a_readable_file_descriptor_wakes_the_idle_loop() -> None:
    from stack.wire.arp import ARP_REPLY, arp_request, build_arp, parse_arp
    from stack.wire.ethernet import BROADCAST_MAC, ETHERTYPE_ARP, ethernet_header, parse_ethernet

    host = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=1, gratuitous_arp=False)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs, ThreadedDriver([host], [DatagramMedium(host, ours)]) as driver:
        deadline = time.monotonic() + 2.0
        while driver.steps == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host.next_deadline() is None  # idle: the loop sleeps in select() without a timeout
        my_mac = bytes.fromhex("0200000000aa")
        request = arp_request(my_mac, bytes([10, 0, 0, 9]), bytes([10, 0, 0, 2]))
        theirs.settimeout(2.0)
        start = time.monotonic()
        theirs.send(ethernet_header(BROADCAST_MAC, my_mac, ETHERTYPE_ARP) + build_arp(request))
        reply = parse_ethernet(theirs.recv(65536))
        assert time.monotonic() - start < 1.0
        assert reply.ethertype == ETHERTYPE_ARP and parse_arp(reply.payload).op == ARP_REPLY


def test_a_failing_node_fails_the_waiters_instead_of_hanging_them() -> None:
    class Broken:
        driver = None

        def receive_frame(self, frame: bytes, now: float, checksum_verified: bool = False) -> None:
            raise ValueError("node bug")

        def poll(self, now: float) -> list[OutgoingFrame]:
            return []

        def next_deadline(self) -> float | None:
            return None

    host = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
    broken = Broken()
    with ThreadedDriver([host, broken], [MemoryWire(host, broken)]) as driver:
        with pytest.raises(RuntimeError, match="node bug"):
            host.ping("10.0.0.2", timeout=5.0)
        assert isinstance(driver.failure, ValueError)
