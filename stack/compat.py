"""What the stack needs from the interpreter it runs on: CPython 3.11 or PyPy 3.9.

A pystack node may run under PyPy (`python: pypy` in a topology, docs/performance.md), whose JIT runs the
stack's per-segment code several times faster than CPython. Debian's PyPy implements Python 3.9, so the
stack's own code keeps to 3.9's language (ruff checks `stack/` against py39), and the few 3.10+
conveniences it uses are named here, once.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import sys
from collections.abc import Awaitable, Iterable, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

T = TypeVar("T")
SIOCGIFINDEX = 0x8933  # linux/sockios.h

# `@dataclass(**SLOTS)`: slotted records (smaller, and faster to read on CPython) where dataclasses can
# make them (3.10+); PyPy's objects are compact without slots.
SLOTS = MappingProxyType({"slots": True} if sys.version_info >= (3, 10) else {})


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, or asyncio.TimeoutError after `seconds`. On 3.11 `asyncio.timeout` bounds it
    in the calling task; 3.9 has only `wait_for`, which runs the wait as a task of its own."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def cancelling(task: asyncio.Task[Any]) -> int:
    """The task's pending cancellation requests (3.11). Before 3.11 a task keeps no count: a cancellation
    that its coroutine caught leaves nothing behind, so the answer is 0."""
    count = getattr(task, "cancelling", None)
    return count() if count is not None else 0


def uncancel(task: asyncio.Task[Any]) -> int:
    """Take back one cancellation request, as `Task.uncancel` (3.11) does; before 3.11 there is none to
    take back (see `cancelling`)."""
    take_back = getattr(task, "uncancel", None)
    return take_back() if take_back is not None else 0


def interface_index(name: str) -> int:
    """The index of network device `name` in this namespace (OSError if there is none):
    `socket.if_nametoindex`, which PyPy's socket module lacks, else the SIOCGIFINDEX ioctl it wraps."""
    if hasattr(socket, "if_nametoindex"):
        return socket.if_nametoindex(name)
    request = struct.pack("16si", name.encode(), 0)  # struct ifreq: the name, then ifr_ifindex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        answer = fcntl.ioctl(probe.fileno(), SIOCGIFINDEX, request)
    return int(struct.unpack("16si", answer)[1])



def _join_copied(parts: Iterable[bytes | bytearray | memoryview]) -> bytes:
    """PyPy's `bytes.join` reads memoryview parts slowly (tens of microseconds for 64 KB); copying each
    view out first (`bytes(view)`, a memcpy) makes the join a plain concatenation."""
    return b"".join([part if type(part) is bytes else bytes(part) for part in parts])


def _write_joined(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> int:
    """`os.writev` where the os module lacks it (PyPy): the parts joined and written at once, as one
    datagram (a TAP takes one frame per write)."""
    return os.write(fd, _join_copied(parts))


PYPY = sys.implementation.name == "pypy"
join_views = _join_copied if PYPY else b"".join  # bytes from parts that may be memoryviews
writev = getattr(os, "writev", _write_joined)
