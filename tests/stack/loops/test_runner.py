"""The runner and the memory wire with minimal frame nodes (no protocol stack involved)."""

from __future__ import annotations

import io
import struct

import pytest

from stack.devices.contract import OutgoingFrame
from stack.devices.impairment import Impairment
from stack.devices.memory import MemoryWire
from stack.loops.network import FrameNetwork, LivelockError, SimulationStalled
from stack.loops.runner import Runner


class Ticker:
    """Sends frame N at time N * period, ``count`` times; records what it receives with the time."""

    def __init__(self, period: float, count: int) -> None:
        self.period, self.count, self.sent = period, count, 0
        self.received: list[tuple[float, bytes]] = []
        self.driver = None

    def receive_frame(self, frame: bytes, now: float, checksum_verified: bool = False) -> None:
        self.received.append((now, frame))

    def poll(self, now: float) -> list[OutgoingFrame]:
        out = []
        while self.sent < self.count and self.sent * self.period <= now:
            out.append(OutgoingFrame(struct.pack("!I", self.sent) + bytes(60)))
            self.sent += 1
        return out

    def next_deadline(self) -> float | None:
        return self.sent * self.period if self.sent < self.count else None


class Echo(Ticker):
    """Echoes each frame back at once."""

    def __init__(self) -> None:
        super().__init__(1.0, 0)
        self.outbox: list[bytes] = []

    def receive_frame(self, frame: bytes, now: float, checksum_verified: bool = False) -> None:
        super().receive_frame(frame, now)
        self.outbox.append(frame)

    def poll(self, now: float) -> list[OutgoingFrame]:
        out, self.outbox = self.outbox, []
        return [OutgoingFrame(frame) for frame in out]


def test_virtual_time_jumps_between_deadlines_and_frames_cross_at_once() -> None:
    ticker, echo = Ticker(period=10.0, count=3), Echo()
    runner = Runner([ticker, echo], [MemoryWire(ticker, echo)])
    assert runner.run_until(lambda: len(ticker.received) == 3, timeout=100.0)
    assert [t for t, _ in ticker.received] == [0.0, 10.0, 20.0]
    assert runner.now == 20.0
    assert ticker.driver is runner  # attached as the hosts' driver


def test_delay_on_the_wire_and_run_for() -> None:
    ticker, echo = Ticker(period=1.0, count=2), Echo()
    wire = MemoryWire(ticker, echo, Impairment(delay=0.25), Impairment(delay=0.5))
    runner = Runner([ticker, echo], [wire])
    runner.run_for(5.0)
    assert [t for t, _ in echo.received] == [0.25, 1.25]
    assert [t for t, _ in ticker.received] == [0.75, 1.75]
    assert runner.now == 5.0
    assert wire.stats()["a_to_b"].frames == 2


def test_timeout_returns_false_at_the_limit() -> None:
    ticker, echo = Ticker(period=1.0, count=100), Echo()
    runner = Runner([ticker, echo], [MemoryWire(ticker, echo)])
    assert not runner.run_until(lambda: False, timeout=3.5)
    assert runner.now == 3.5 and len(echo.received) == 4


def test_waiting_forever_on_an_idle_network_is_an_error_not_a_hang() -> None:
    ticker, echo = Ticker(period=1.0, count=1), Echo()
    runner = Runner([ticker, echo], [MemoryWire(ticker, echo)])
    with pytest.raises(SimulationStalled, match="no deadlines left"):
        runner.run_until(lambda: False)
    assert runner.run_until_idle()


def test_lossy_wire_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[tuple[float, bytes]]:
        ticker, echo = Ticker(period=0.01, count=500), Echo()
        profile = Impairment(delay=0.01, jitter=0.005, loss=0.1, duplicate=0.05)
        runner = Runner([ticker, echo], [MemoryWire(ticker, echo, profile, profile, seed=seed)])
        runner.run_until_idle()
        return ticker.received

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_a_forwarding_loop_is_reported() -> None:
    left, right = Echo(), Echo()
    left.outbox.append(b"x" * 60)
    with pytest.raises(LivelockError):
        FrameNetwork([left, right], [MemoryWire(left, right)], max_rounds=1000).settle(0.0)


def test_pcap_capture_when_available() -> None:
    pcap_module = pytest.importorskip("stack.devices.pcap", reason="stack.devices.pcap not written yet")
    assert pcap_module
    ticker, echo = Ticker(period=1.0, count=2), Echo()
    capture = io.BytesIO()
    Runner([ticker, echo], [MemoryWire(ticker, echo, pcap=capture)]).run_until_idle()
    data = capture.getvalue()
    assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")
    assert len(data) == 24 + 4 * (16 + 64)  # header + 4 frames (2 each way)


def test_waiting_without_timeout_is_bounded_even_while_timers_keep_running() -> None:
    ticker, echo = Ticker(period=3600.0, count=10**9), Echo()  # an endless hourly timer
    runner = Runner([ticker, echo], [MemoryWire(ticker, echo)], max_wait=86400.0)
    with pytest.raises(SimulationStalled, match="86400 virtual seconds"):
        runner.run_until(lambda: False)
    assert runner.now <= 86400.0


def test_the_package_docstring_example_runs() -> None:
    import doctest

    import stack

    failures, tried = doctest.testmod(stack, verbose=False)
    assert tried >= 8 and failures == 0
