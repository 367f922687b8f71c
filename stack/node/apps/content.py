"""Deterministic content: the bytes every app, the control socket's `connect` and `GET /bytes/N` send.

`pattern(n)` is the first n bytes of one fixed, endless stream, so a receiver anywhere (a kernel socket, curl,
a lab experiment) can check a transfer by length and SHA-256 alone. The stream repeats a block of 65521
bytes (a prime: a chunk dropped, doubled or shifted anywhere changes the digest, and no power-of-two
read size lines up with the period) built from SHA-256 counter output, so it does not compress and looks
like no protocol.

Large transfers never hold the whole body: `chunks(n)` yields memoryviews into a cached double block, and
`pattern_sha256(n)` digests the stream in the same pieces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import lru_cache

PERIOD = 65521  # the largest prime below 2**16
CHUNK = 3 * PERIOD  # the longest piece one slice of the cached block gives (192 KB)


@lru_cache(maxsize=1)
def _block() -> bytes:
    """Four periods back to back: any window of up to 3 periods starting inside the first is one slice."""
    digests = b"".join(hashlib.sha256(b"nslab pattern %d" % i).digest() for i in range(PERIOD // 32 + 1))
    period = digests[:PERIOD]
    return period * 4


def pattern_slice(offset: int, length: int) -> memoryview:
    """Bytes [offset, offset + length) of the stream, without copying (length at most 3 periods)."""
    if offset < 0 or length < 0:
        raise ValueError(f"pattern: offset {offset} and length {length} must not be negative")
    if length > 3 * PERIOD:
        raise ValueError(f"pattern_slice: length {length} exceeds {3 * PERIOD}; use chunks()")
    start = offset % PERIOD
    return memoryview(_block())[start : start + length]


def chunks(n: int, size: int = CHUNK, offset: int = 0) -> Iterator[memoryview]:
    """The stream's bytes [offset, offset + n) as views of at most `size` bytes (at most 3 periods)."""
    if n < 0:
        raise ValueError(f"pattern: length {n} must not be negative")
    size = max(1, min(size, 3 * PERIOD))
    end = offset + n
    while offset < end:
        piece = min(size, end - offset)
        yield pattern_slice(offset, piece)
        offset += piece


def pattern(n: int, offset: int = 0) -> bytes:
    """The first `n` bytes of the stream (from `offset`), as one bytes object: for tests and small bodies."""
    if 0 <= n <= CHUNK and offset >= 0:  # one slice of the cached block: a small body costs one copy
        start = offset % PERIOD
        return _block()[start : start + n]
    return b"".join(chunks(n, offset=offset))


def pattern_sha256(n: int) -> str:
    """Hex SHA-256 of `pattern(n)`, computed in pieces."""
    digest = hashlib.sha256()
    for piece in chunks(n):
        digest.update(piece)
    return digest.hexdigest()


class PatternChecker:
    """Checks a received stream against the pattern as it arrives (for receivers that must not store it)."""

    def __init__(self) -> None:
        self.received = 0
        self.mismatch_at: int | None = None
        self._digest = hashlib.sha256()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._digest.update(data)
        if self.mismatch_at is None:
            view = memoryview(data)
            for index, expected in enumerate(chunks(len(view), offset=self.received)):
                start = index * CHUNK
                if view[start : start + len(expected)] != expected:
                    self.mismatch_at = self.received + start
                    break
        self.received += len(data)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()
