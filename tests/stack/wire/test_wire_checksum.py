"""The Internet checksum against RFC 1071's worked example and a slow word-by-word reference."""

from __future__ import annotations

import socket

from hypothesis import given
from hypothesis import strategies as st

from stack.wire import (
    fold,
    internet_checksum,
    ones_complement_sum,
    pseudo_header_checksum,
    pseudo_header_sum,
    sum_words,
    verify_checksum,
)


def slow_ones_complement_sum(data: bytes) -> int:
    """The reference: RFC 1071 word by word, end-around carry after every addition."""
    total = 0
    for index in range(0, len(data), 2):
        word = data[index] << 8 | (data[index + 1] if index + 1 < len(data) else 0)
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def slow_checksum(data: bytes) -> int:
    return ~slow_ones_complement_sum(data) & 0xFFFF


SRC = socket.inet_aton("10.0.0.1")
DST = socket.inet_aton("10.0.0.2")


def test_rfc1071_worked_example() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_complement_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_all_zero_data_sums_to_zero_and_checksums_to_ffff() -> None:
    assert ones_complement_sum(bytes(40)) == 0
    assert internet_checksum(bytes(40)) == 0xFFFF
    assert not verify_checksum(bytes(40))


def test_nonzero_sum_that_is_a_multiple_of_ffff_folds_to_ffff_like_linux() -> None:
    # 0xFFFF + 0xFFFF: end-around carry gives 0xFFFF (never the +0 that a bare modulo would give).
    assert ones_complement_sum(b"\xff\xff\xff\xff") == 0xFFFF
    assert internet_checksum(b"\xff\xff\xff\xff") == 0x0000
    assert fold(0xFFFF * 7) == 0xFFFF
    assert fold(0) == 0


@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=2**40))
def test_matches_slow_reference_for_any_length(data: bytes, initial: int) -> None:
    reference = slow_ones_complement_sum(data + b"\x00" if len(data) & 1 else data)
    folded_initial = fold(initial)
    expected = slow_ones_complement_sum(
        (data + (b"\x00" if len(data) & 1 else b"")) + folded_initial.to_bytes(2, "big"))
    assert ones_complement_sum(data) == reference
    assert internet_checksum(data) == slow_checksum(data)
    assert ones_complement_sum(data, initial) == expected


@given(st.binary(max_size=2000))
def test_inserting_the_checksum_verifies(data: bytes) -> None:
    padded = data + b"\x00" if len(data) & 1 else data
    checksum = internet_checksum(padded)
    assert verify_checksum(padded + checksum.to_bytes(2, "big"))
    # and a single flipped bit is always detected
    if padded:
        corrupted = bytes([padded[0] ^ 0x10]) + padded[1:]
        assert not verify_checksum(corrupted + checksum.to_bytes(2, "big"))


@given(st.binary(max_size=500), st.binary(max_size=500))
def test_partial_sums_of_even_pieces_add_up(first: bytes, second: bytes) -> None:
    first = first + b"\x00" if len(first) & 1 else first
    assert fold(sum_words(first) + sum_words(second)) == ones_complement_sum(first + second)


def test_memoryview_input_is_accepted_without_copy_semantics_changing_the_result() -> None:
    data = bytes(range(256)) * 6
    assert internet_checksum(memoryview(data)[3:1001]) == slow_checksum(data[3:1001])


def test_pseudo_header_sum_equals_the_explicit_pseudo_header() -> None:
    explicit = SRC + DST + bytes([0, 6]) + (1480).to_bytes(2, "big")
    assert fold(pseudo_header_sum(SRC, DST, 6, 1480)) == slow_ones_complement_sum(explicit)
    assert pseudo_header_checksum(SRC, DST, 6, 1480) == slow_ones_complement_sum(explicit)
