"""RFC 6056 algorithm 4 ephemeral ports: spread, skip ports in use, EADDRNOTAVAIL when exhausted."""

from __future__ import annotations

import errno
import itertools
import random
import statistics

import pytest

from stack.tcp.ports import EphemeralPortAllocator

SECRET = b"port secret"


def never_in_use(port: int) -> bool:
    return False


def test_linux_default_range() -> None:
    allocator = EphemeralPortAllocator(SECRET)
    assert (allocator.low, allocator.high, allocator.size) == (32768, 60999, 28232)


def test_deterministic_for_same_secret_and_rng_seed() -> None:
    def run() -> list[int]:
        allocator, rng = EphemeralPortAllocator(SECRET), random.Random(7)
        return [allocator.allocate("10.0.0.2", "10.0.0.1", 80 + i % 3, never_in_use, rng) for i in range(20)]

    assert run() == run()


def test_ports_toward_many_destinations_spread_over_the_range() -> None:
    allocator, rng = EphemeralPortAllocator(SECRET), random.Random(1)
    ports = [allocator.allocate("10.0.0.2", "10.0.1.1", 1000 + i, never_in_use, rng) for i in range(500)]
    assert all(32768 <= p <= 60999 for p in ports)
    assert len(set(ports)) >= 480  # birthday collisions expected ~4.4 for 500 uniform draws in 28232
    # roughly uniform: each tenth of the range gets some
    buckets = {(p - 32768) * 10 // 28232 for p in ports}
    assert buckets == set(range(10))
    assert statistics.pstdev(ports) == pytest.approx(28232 / 12**0.5, rel=0.15)


def test_successive_ports_to_one_destination_do_not_repeat_and_are_not_a_simple_count() -> None:
    allocator, rng = EphemeralPortAllocator(SECRET), random.Random(2)
    ports = [allocator.allocate("10.0.0.2", "10.0.0.1", 80, never_in_use, rng) for _ in range(200)]
    assert len(set(ports)) == 200
    steps = {(b - a) % 28232 for a, b in itertools.pairwise(ports)}
    assert steps <= set(range(1, 9))  # counter moves by 1..8
    assert len(steps) > 1  # randomised, not +1 each time


def test_different_secrets_give_different_offsets() -> None:
    a = EphemeralPortAllocator(b"one").allocate("10.0.0.2", "10.0.0.1", 80, never_in_use, random.Random(0))
    b = EphemeralPortAllocator(b"two").allocate("10.0.0.2", "10.0.0.1", 80, never_in_use, random.Random(0))
    assert a != b


def test_ports_in_use_are_skipped() -> None:
    allocator, rng = EphemeralPortAllocator(SECRET, low=40000, high=40009), random.Random(3)
    taken: set[int] = set()
    for _ in range(10):
        port = allocator.allocate("10.0.0.2", "10.0.0.1", 80, taken.__contains__, rng)
        assert port not in taken
        taken.add(port)
    assert taken == set(range(40000, 40010))


def test_exhaustion_raises_eaddrnotavail_after_trying_each_port_once() -> None:
    allocator, rng = EphemeralPortAllocator(SECRET, low=50000, high=50099), random.Random(4)
    tried: list[int] = []

    def all_in_use(port: int) -> bool:
        tried.append(port)
        return True

    with pytest.raises(OSError) as excinfo:
        allocator.allocate("10.0.0.2", "10.0.0.1", 443, all_in_use, rng)
    assert excinfo.value.errno == errno.EADDRNOTAVAIL
    assert "50000-50099" in str(excinfo.value)
    assert sorted(tried) == list(range(50000, 50100))


def test_only_free_port_is_found() -> None:
    allocator, rng = EphemeralPortAllocator(SECRET), random.Random(5)
    port = allocator.allocate("10.0.0.2", "10.0.0.1", 22, lambda p: p != 45678, rng)
    assert port == 45678


def test_bind_to_port_zero() -> None:
    allocator, rng = EphemeralPortAllocator(SECRET, low=60000, high=60004), random.Random(6)
    taken: set[int] = set()
    for _ in range(5):
        taken.add(allocator.allocate_for_bind(taken.__contains__, rng))
    assert taken == set(range(60000, 60005))
    with pytest.raises(OSError) as excinfo:
        allocator.allocate_for_bind(taken.__contains__, rng)
    assert excinfo.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize(("low", "high"), [(0, 10), (10, 5), (1, 65536)])
def test_bad_ranges_rejected(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="range"):
        EphemeralPortAllocator(SECRET, low=low, high=high)
    with pytest.raises(ValueError, match="secret"):
        EphemeralPortAllocator(b"")
