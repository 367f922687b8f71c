"""The option area IPv4 and TCP share: type-length-value options with two one-byte kinds (RFC 791 3.1,
RFC 9293 3.1).

Kind 0 ends the list and kind 1 (NOP) pads it; every other option is kind, length (counting these two
bytes) and data.  Like Linux's option parsers, a length below 2 or one that runs past the area ends the
walk: the options read so far stand, and a malformed area can never make the walk loop.
"""

from __future__ import annotations

from collections.abc import Iterator

from stack.wire.buffer import BytesLike

END_OF_OPTIONS = 0
NO_OPERATION = 1


def walk_options(area: BytesLike) -> Iterator[tuple[int, int, int]]:
    """(kind, offset, length) of each option in `area`, in order; padding and the end are skipped."""
    index = 0
    end = len(area)
    while index < end:
        kind = area[index]
        if kind == END_OF_OPTIONS:
            return
        if kind == NO_OPERATION:
            index += 1
            continue
        if index + 1 >= end:
            return
        size = area[index + 1]
        if size < 2 or index + size > end:
            return
        yield kind, index, size
        index += size
