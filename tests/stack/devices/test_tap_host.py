"""A real Host on the TAP (through `TapMedium`) with kernel sockets on the other side, in both modes."""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from stack.devices.tap import TapDevice, TapMedium
from stack.host import Host
from stack.tcp.config import TcpConfig

from .tap_scratch import IPPROTO_ICMP, ScratchPair, icmp_echo, scratch_pair

pytestmark = pytest.mark.root


@pytest.fixture
def pair() -> Iterator[ScratchPair]:
    with scratch_pair() as created:
        yield created


def run_until(medium: TapMedium, host: Host, done: Callable[[], bool], timeout: float = 5.0) -> None:
    """The event loop in miniature: step, then sleep until a frame arrives or the host has a deadline."""
    deadline = time.monotonic() + timeout
    while not done():
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(f"not done within {timeout} s (host counters: {dict(host.counters())})")
        medium.step(now)
        wake = host.next_deadline()
        wait = 0.05 if wake is None else min(0.05, max(0.0, wake - time.monotonic()))
        select.select([medium], [], [], wait)


def make_host(pair: ScratchPair, offload: bool) -> tuple[Host, TapMedium]:
    tap = TapDevice.open_in_namespace(pair.netns_a, pair.tap_name, offload=offload)
    assert tap.offload == offload
    if offload:  # what a node does on an offload TAP: partial checksums and TSO super-segments
        host = Host(f"{pair.stack_ip}/24", pair.stack_mac.hex(":"), seed=1, tx_checksum="partial",
                    tcp=TcpConfig(tso_max_bytes=65000))
    else:
        host = Host(f"{pair.stack_ip}/24", pair.stack_mac.hex(":"), seed=1)
    return host, TapMedium(host, tap)


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_kernel_ping_gets_the_hosts_echo_reply(pair: ScratchPair, offload: bool) -> None:
    host, medium = make_host(pair, offload)
    with medium.tap, pair.kernel_socket(socket.SOCK_RAW, IPPROTO_ICMP) as icmp:
        icmp.setblocking(False)
        icmp.sendto(icmp_echo(8, 0x77, 3, b"to the python stack"), (pair.stack_ip, 0))
        replies: list[bytes] = []

        def got_reply() -> bool:
            try:
                packet = icmp.recv(2048)
            except BlockingIOError:
                return False
            if packet[(packet[0] & 0x0F) * 4] == 0:
                replies.append(packet)
            return bool(replies)

        run_until(medium, host, got_reply)
        ihl = (replies[0][0] & 0x0F) * 4
        assert replies[0][ihl + 8 :] == b"to the python stack"


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_kernel_client_and_host_exchange_a_megabyte_each_way(pair: ScratchPair, offload: bool) -> None:
    upload, download = os.urandom(1 << 20), os.urandom(1 << 20)
    host, medium = make_host(pair, offload)
    with medium.tap, pair.kernel_socket() as client:
        listener = host.socket()
        listener.setblocking(False)
        listener.bind((pair.stack_ip, 8080))
        listener.listen(8)
        kernel_received = bytearray()

        def kernel_side() -> None:
            client.settimeout(10)
            client.connect((pair.stack_ip, 8080))
            client.sendall(upload)
            while len(kernel_received) < len(download):
                chunk = client.recv(1 << 16)
                if not chunk:
                    break
                kernel_received.extend(chunk)

        thread = threading.Thread(target=kernel_side)
        thread.start()
        try:
            accepted: list = []

            def accepted_one() -> bool:
                try:
                    accepted.append(listener.accept()[0])
                except BlockingIOError:
                    return False
                return True

            run_until(medium, host, accepted_one)
            conn = accepted[0]
            conn.setblocking(False)
            received = bytearray()

            def read_upload() -> bool:
                try:
                    while chunk := conn.recv(1 << 16):
                        received.extend(chunk)
                except BlockingIOError:
                    pass
                return len(received) >= len(upload)

            run_until(medium, host, read_upload, timeout=10)
            sent = [0]

            def write_download() -> bool:
                try:
                    while sent[0] < len(download):
                        sent[0] += conn.send(download[sent[0] : sent[0] + (1 << 16)])
                except BlockingIOError:
                    pass
                return sent[0] == len(download) and len(kernel_received) == len(download)

            run_until(medium, host, write_download, timeout=10)
        finally:
            thread.join(10)
        assert hashlib.sha256(received).digest() == hashlib.sha256(upload).digest()
        assert hashlib.sha256(kernel_received).digest() == hashlib.sha256(download).digest()
        if offload:
            assert medium.checksums_trusted > 0  # the kernel's frames came with checksums left to do
            assert medium.gso_frames_sent > 0  # and ours went as super-segments the kernel cut
