"""Sequence arithmetic across the 2**32 wrap: exact cases plus algebraic laws."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.tcp.seq import (
    SEQ_MASK,
    seq_add,
    seq_between,
    seq_ge,
    seq_gt,
    seq_le,
    seq_lt,
    seq_max,
    seq_min,
    seq_sub,
)

TOP = SEQ_MASK  # 2**32 - 1

seqs = st.integers(min_value=0, max_value=SEQ_MASK)
# distances that keep two numbers within half the circle of each other
distances = st.integers(min_value=-(2**31) + 1, max_value=2**31 - 1)


@pytest.mark.parametrize(
    ("a", "n", "expected"),
    [
        (0, 1, 1),
        (TOP, 1, 0),
        (TOP - 9, 20, 10),
        (5, -10, TOP - 4),
        (0, 2**32, 0),
        (123, -(2**32), 123),
    ],
)
def test_seq_add(a: int, n: int, expected: int) -> None:
    assert seq_add(a, n) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (10, 3, 7),
        (3, 10, -7),
        (5, TOP - 4, 10),  # 5 is 10 after 2**32-5
        (TOP - 4, 5, -10),
        (0, 2**31, -(2**31)),  # exactly half the circle apart: the signed range ends at -2**31
        (2**31 - 1, 0, 2**31 - 1),
        (7, 7, 0),
    ],
)
def test_seq_sub(a: int, b: int, expected: int) -> None:
    assert seq_sub(a, b) == expected


@pytest.mark.parametrize(
    ("a", "b", "lt", "le", "gt", "ge"),
    [
        (1, 2, True, True, False, False),
        (2, 1, False, False, True, True),
        (4, 4, False, True, False, True),
        (TOP, 0, True, True, False, False),  # 2**32-1 is just before 0
        (0, TOP, False, False, True, True),
        (TOP - 100, 100, True, True, False, False),
        (100, TOP - 100, False, False, True, True),
    ],
)
def test_comparisons(a: int, b: int, lt: bool, le: bool, gt: bool, ge: bool) -> None:
    assert (seq_lt(a, b), seq_le(a, b), seq_gt(a, b), seq_ge(a, b)) == (lt, le, gt, ge)


@pytest.mark.parametrize(
    ("low", "x", "high", "expected"),
    [
        (10, 10, 20, True),
        (10, 19, 20, True),
        (10, 20, 20, False),  # high is exclusive
        (10, 9, 20, False),
        (TOP - 5, TOP, 10, True),  # window straddles the wrap
        (TOP - 5, 0, 10, True),
        (TOP - 5, 9, 10, True),
        (TOP - 5, 10, 10, False),
        (TOP - 5, TOP - 6, 10, False),
        (7, 7, 7, False),  # empty window
    ],
)
def test_seq_between(low: int, x: int, high: int, expected: bool) -> None:
    assert seq_between(low, x, high) is expected


def test_max_min_across_wrap() -> None:
    assert seq_max(TOP, 3) == 3
    assert seq_min(TOP, 3) == TOP
    assert seq_max(8, 8) == 8


@given(seqs, distances)
def test_add_then_sub_is_identity(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert seq_sub(b, a) == n
    assert seq_add(b, -n) == a


@given(seqs, distances)
def test_order_follows_distance(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert seq_lt(a, b) == (n > 0)
    assert seq_gt(a, b) == (n < 0)
    assert seq_le(a, b) == (n >= 0)
    assert seq_lt(a, b) != seq_ge(a, b)
    assert seq_gt(a, b) == seq_lt(b, a)


@given(seqs, st.integers(min_value=0, max_value=2**31), st.integers(min_value=0, max_value=2**31))
def test_between_matches_offsets(low: int, size: int, offset: int) -> None:
    high = seq_add(low, size)
    x = seq_add(low, offset)
    assert seq_between(low, x, high) == (offset < size)


@given(seqs, distances)
def test_max_min_pick_each_side(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert {seq_max(a, b), seq_min(a, b)} == {a, b}
    assert seq_le(seq_min(a, b), seq_max(a, b))


@given(seqs, seqs)
def test_comparisons_are_the_sign_of_seq_sub(a: int, b: int) -> None:
    """The comparisons are written out for speed; they must stay exactly seq_sub's sign, the half-circle
    point (distance 2**31) included."""
    for x, y in ((a, b), (a, seq_add(a, 2**31)), (a, a), (a, seq_add(a, 1)), (a, seq_add(a, -1))):
        d = seq_sub(x, y)
        assert (seq_lt(x, y), seq_le(x, y), seq_gt(x, y), seq_ge(x, y)) == (d < 0, d <= 0, d > 0, d >= 0)
