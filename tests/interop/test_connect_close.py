"""Connect and close in a tight loop from a kernel client against the stack's `discard` app: a clean
exchange costs no retransmission, and a listener whose client never has two connections at once never
overflows its accept queue (each overflow would cost the client a one-second SYN retransmission)."""

from __future__ import annotations

import threading
import time

import pytest

from lab.experiments.running import RunningLab
from lab.experiments.stack_answers import counter_value

pytestmark = pytest.mark.root

DISCARD_PORT = 9
CONNECTIONS = 600  # each takes well under a millisecond; an accept-queue overflow would take a second


def connect_and_close(lab: RunningLab, count: int, slow: list[float]) -> None:
    address = (lab.address("s1"), DISCARD_PORT)
    for _ in range(count):
        sock = lab.kernel_socket("h1")
        started = time.monotonic()
        sock.settimeout(10.0)
        sock.connect(address)
        elapsed = time.monotonic() - started
        if elapsed > 0.5:
            slow.append(elapsed)  # a dropped SYN, retransmitted after the kernel's 1 s RTO
        sock.close()


def test_sequential_connect_close_never_overflows_and_never_retransmits(pair_lab: RunningLab) -> None:
    stack = pair_lab.stack("s1")
    before = stack.stats()["counters"]
    slow: list[float] = []
    connect_and_close(pair_lab, CONNECTIONS, slow)
    time.sleep(0.3)  # the last FINs and ACKs cross
    after = stack.stats()["counters"]

    def moved(name: str) -> int:
        return counter_value(after, name) - counter_value(before, name)

    assert moved("TcpPassiveOpens") == CONNECTIONS
    assert (moved("TcpExtListenOverflows"), moved("TcpExtListenDrops"), slow) == (0, 0, [])
    assert moved("TcpRetransSegs") == 0


def test_parallel_clients_get_no_retransmission(pair_lab: RunningLab) -> None:
    """Four clients at once, as `lab bench` runs them: every connect+close still goes through clean."""
    stack = pair_lab.stack("s1")
    before = stack.stats()["counters"]
    slow: list[float] = []
    clients = [threading.Thread(target=connect_and_close, args=(pair_lab, CONNECTIONS // 4, slow))
               for _ in range(4)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    time.sleep(0.3)
    after = stack.stats()["counters"]
    assert counter_value(after, "TcpPassiveOpens") - counter_value(before, "TcpPassiveOpens") == CONNECTIONS
    assert counter_value(after, "TcpRetransSegs") - counter_value(before, "TcpRetransSegs") == 0
    assert counter_value(after, "TcpExtListenOverflows") == counter_value(before, "TcpExtListenOverflows")
    assert slow == []
