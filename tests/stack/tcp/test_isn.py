"""RFC 6528 ISNs: keyed per 4-tuple, advancing with a 4 µs clock, deterministic for the same inputs."""

from __future__ import annotations

import pytest

from stack.tcp.isn import ISN_CLOCK_HZ, initial_sequence_number, keyed_hash, timestamp_offset
from stack.tcp.seq import SEQ_MASK, seq_sub

SECRET = b"k" * 16
TUPLE = ("10.0.0.2", 5000, "10.0.0.1", 80)


def test_same_inputs_same_output() -> None:
    assert initial_sequence_number(SECRET, *TUPLE, 12.5) == initial_sequence_number(SECRET, *TUPLE, 12.5)


def test_each_part_of_the_4_tuple_and_the_secret_changes_the_isn() -> None:
    base = initial_sequence_number(SECRET, *TUPLE, 1.0)
    variants = [
        ("10.0.0.3", 5000, "10.0.0.1", 80),
        ("10.0.0.2", 5001, "10.0.0.1", 80),
        ("10.0.0.2", 5000, "10.0.0.9", 80),
        ("10.0.0.2", 5000, "10.0.0.1", 81),
        ("10.0.0.1", 80, "10.0.0.2", 5000),  # the reverse direction
    ]
    isns = {initial_sequence_number(SECRET, *t, 1.0) for t in variants}
    isns.add(initial_sequence_number(b"another secret", *TUPLE, 1.0))
    assert base not in isns
    assert len(isns) == len(variants) + 1


@pytest.mark.parametrize(("dt", "ticks"), [(4e-6, 1), (1.0, 250_000), (0.001, 250), (60.0, 15_000_000)])
def test_advances_with_a_4_microsecond_clock(dt: float, ticks: int) -> None:
    t0 = 1000.0
    first = initial_sequence_number(SECRET, *TUPLE, t0)
    later = initial_sequence_number(SECRET, *TUPLE, t0 + dt)
    assert seq_sub(later, first) == pytest.approx(ticks, abs=1)


def test_wraps_modulo_2_32() -> None:
    # 2**32 ticks is 4.77 hours: the ISN comes back around
    period = (SEQ_MASK + 1) / ISN_CLOCK_HZ
    later = initial_sequence_number(SECRET, *TUPLE, 5.0 + period)
    assert later == initial_sequence_number(SECRET, *TUPLE, 5.0)
    for now in (0.0, 1e6, 1e9):
        assert 0 <= initial_sequence_number(SECRET, *TUPLE, now) <= SEQ_MASK


def test_isns_spread_over_the_space() -> None:
    isns = [initial_sequence_number(SECRET, "10.0.0.2", port, "10.0.0.1", 80, 0.0) for port in range(2000)]
    assert len(set(isns)) == 2000
    top_bits = {isn >> 28 for isn in isns}
    assert top_bits == set(range(16))  # all 16 top-nibble buckets used


def test_long_secrets_and_ipv6_addresses_work() -> None:
    long_secret = bytes(range(64))
    assert initial_sequence_number(long_secret, "fd00::1", 1, "fd00::2", 2, 0.0) != initial_sequence_number(
        long_secret, "fd00::1", 1, "fd00::3", 2, 0.0
    )


def test_bad_inputs_raise_value_error() -> None:
    with pytest.raises(ValueError, match="secret"):
        initial_sequence_number(b"", *TUPLE, 0.0)
    with pytest.raises(ValueError):
        initial_sequence_number(SECRET, "10.0.0.300", 1, "10.0.0.1", 2, 0.0)


def test_purposes_separate_hashes_and_timestamp_offsets_differ_per_peer() -> None:
    assert keyed_hash(SECRET, b"a", 1, 2) != keyed_hash(SECRET, b"b", 1, 2)
    assert keyed_hash(SECRET, b"a", 1, 2, size=8) < 2**64
    to_peer_1 = timestamp_offset(SECRET, "10.0.0.2", "10.0.0.1")
    assert to_peer_1 != timestamp_offset(SECRET, "10.0.0.2", "10.0.0.3")
    assert to_peer_1 == timestamp_offset(SECRET, "10.0.0.2", "10.0.0.1")
