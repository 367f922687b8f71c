"""32-bit modular sequence-number arithmetic (RFC 9293 section 3.4, RFC 1982).

TCP sequence numbers live in a circle of 2**32 values, so "a < b" means "a comes before b within half the
circle". Every comparison of two sequence numbers in `stack.tcp` goes through these functions; a plain `<`
would break the moment a connection's sequence space crosses 2**32 - 1 -> 0.
"""

from __future__ import annotations

SEQ_MODULUS = 1 << 32
SEQ_MASK = SEQ_MODULUS - 1
_HALF = 1 << 31


def seq_add(a: int, n: int) -> int:
    """a + n, wrapped into 0..2**32-1 (n may be negative)."""
    return (a + n) & SEQ_MASK


def seq_sub(a: int, b: int) -> int:
    """The signed distance a - b in -2**31..2**31-1: positive when a is after b."""
    d = (a - b) & SEQ_MASK
    return d - SEQ_MODULUS if d >= _HALF else d


# The comparisons below are seq_sub's sign, written out: they run several times per segment, and the
# saved call is a measurable part of the per-segment cost.  d = (a - b) mod 2**32; a is before b when
# d >= 2**31 (seq_sub negative).


def seq_lt(a: int, b: int) -> bool:
    """a comes before b."""
    return ((a - b) & SEQ_MASK) >= _HALF


def seq_le(a: int, b: int) -> bool:
    """a comes before b or equals it."""
    d = (a - b) & SEQ_MASK
    return d == 0 or d >= _HALF


def seq_gt(a: int, b: int) -> bool:
    """a comes after b."""
    return 0 < ((a - b) & SEQ_MASK) < _HALF


def seq_ge(a: int, b: int) -> bool:
    """a comes after b or equals it."""
    return ((a - b) & SEQ_MASK) < _HALF


def seq_between(low: int, x: int, high: int) -> bool:
    """low <= x < high on the circle: the half-open window starting at low and ending before high.

    Measured as offsets from low, so it is right for any window shorter than 2**32 (an empty window,
    low == high, holds nothing).
    """
    return ((x - low) & SEQ_MASK) < ((high - low) & SEQ_MASK)


def seq_max(a: int, b: int) -> int:
    """Whichever of a and b comes later."""
    return a if seq_sub(a, b) >= 0 else b


def seq_min(a: int, b: int) -> int:
    """Whichever of a and b comes earlier."""
    return a if seq_sub(a, b) <= 0 else b
