"""The stack's ``asyncio.StreamReader``: received bytes kept as the chunks the transport delivered.

asyncio's reader appends every chunk to one ``bytearray`` and slices what it hands out off its front:
each byte is copied in and copied out again. Under PyPy it costs far more than two copies: its
``bytearray`` grows by copying what it holds, so a receiving node spent 44 % of its time in
``feed_data`` and 13 % in ``read`` (vmprof, iperf3 into the stack). ``StackStreamReader`` keeps the
chunks in a ``ChunkQueue`` instead: ``read(n)`` hands over a whole chunk that fits without copying it,
and slices a larger one where it is read, never what stays behind.

The stack's streams use it under PyPy (``READER_CLASS``). CPython's ``bytearray`` deletes from its front in
constant time and its one buffer stays warm in the cache, which the chunks, each its own allocation, do
not: there asyncio's reader is the faster of the two (iperf3 into the stack's app, four runs each,
alternating: 5.9-8.2 Gbit/s with asyncio's, 5.0-5.9 with the queue; under PyPy 1.4 with asyncio's, 3.1
with the queue).

Its behaviour is asyncio's, method by method (the limit, pausing the transport above twice the limit,
``LimitOverrunError``, ``IncompleteReadError``, one waiting reader at a time): it is asyncio's class
with the buffer replaced, and uses the base class's waiter and transport bookkeeping as they are.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Union

from stack.compat import PYPY

Bytes = Union[bytes, bytearray, memoryview]


class ChunkQueue:
    """Bytes in arrival order, as a queue of ``bytes`` chunks and how far the first has been read."""

    __slots__ = ("_chunks", "_head_offset", "_size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._head_offset = 0  # bytes of the first chunk already taken
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def append(self, data: Bytes) -> None:
        chunk = data if type(data) is bytes else bytes(data)
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)

    def take(self, n: int) -> bytes:
        """The first ``n`` bytes (all of them if fewer are held), removed from the queue."""
        n = min(n, self._size)
        chunks = self._chunks
        if n <= 0:
            return b""
        head = chunks[0]
        offset = self._head_offset
        if offset == 0 and len(head) == n:  # the common case: one chunk, handed over as it is
            chunks.popleft()
            self._size -= n
            return head
        if offset + n < len(head):
            self._head_offset = offset + n
            self._size -= n
            return head[offset:offset + n]
        parts = []
        need = n
        while need:
            head = chunks[0]
            available = len(head) - offset
            if available <= need:
                parts.append(head[offset:] if offset else head)
                chunks.popleft()
                need -= available
                offset = 0
            else:
                parts.append(head[offset:offset + need])
                offset += need
                need = 0
        self._head_offset = offset
        self._size -= n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def take_all(self) -> bytes:
        return self.take(self._size)

    def clear(self) -> None:
        self._chunks.clear()
        self._head_offset = 0
        self._size = 0

    def contiguous(self) -> bytes:
        """Everything held, as one chunk (joined once; later calls find it joined)."""
        chunks = self._chunks
        if not chunks:
            return b""
        if len(chunks) > 1 or self._head_offset:
            parts = list(chunks)
            parts[0] = parts[0][self._head_offset:]
            joined = b"".join(parts)
            chunks.clear()
            chunks.append(joined)
            self._head_offset = 0
        return chunks[0]

    def find(self, separator: bytes, start: int = 0) -> int:
        return self.contiguous().find(separator, start)

    def startswith(self, prefix: bytes, start: int = 0) -> bool:
        return self.contiguous().startswith(prefix, start)


class StackStreamReader(asyncio.StreamReader):
    """``asyncio.StreamReader`` over a ``ChunkQueue`` (see the module docstring)."""

    def __init__(self, limit: int = 2**16, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(limit=limit, loop=loop)
        self._chunks = ChunkQueue()
        del self._buffer  # the base class's bytearray: a method that still reached for it would fail loudly

    def __repr__(self) -> str:
        held = f" {len(self._chunks)} bytes" if self._chunks else ""
        return f"<StackStreamReader{held}{' eof' if self._eof else ''} limit={self._limit}>"

    def _maybe_resume_transport(self) -> None:
        if self._paused and len(self._chunks) <= self._limit:
            self._paused = False
            self._transport.resume_reading()

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def feed_data(self, data: Bytes) -> None:
        assert not self._eof, "feed_data after feed_eof"
        if not data:
            return
        self._chunks.append(data)
        self._wakeup_waiter()
        if self._transport is not None and not self._paused and len(self._chunks) > 2 * self._limit:
            try:
                self._transport.pause_reading()
            except NotImplementedError:  # a transport that cannot pause: hold everything
                self._transport = None
            else:
                self._paused = True

    async def read(self, n: int = -1) -> bytes:
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return b""
        if n < 0:
            blocks = []
            while block := await self.read(self._limit):
                blocks.append(block)
            return b"".join(blocks)
        if not self._chunks and not self._eof:
            await self._wait_for_data("read")
        data = self._chunks.take(n)
        self._maybe_resume_transport()
        return data

    async def readexactly(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return b""
        while len(self._chunks) < n:
            if self._eof:
                raise asyncio.IncompleteReadError(self._chunks.take_all(), n)
            await self._wait_for_data("readexactly")
        data = self._chunks.take(n)
        self._maybe_resume_transport()
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        separator_length = len(separator)
        if separator_length == 0:
            raise ValueError("Separator should be at least one-byte string")
        if self._exception is not None:
            raise self._exception
        offset = 0
        while True:
            held = len(self._chunks)
            if held - offset >= separator_length:
                found = self._chunks.find(separator, offset)
                if found != -1:
                    break
                offset = held + 1 - separator_length
                if offset > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is not found, and chunk exceed the limit", offset)
            if self._eof:
                raise asyncio.IncompleteReadError(self._chunks.take_all(), None)
            await self._wait_for_data("readuntil")
        if found > self._limit:
            raise asyncio.LimitOverrunError("Separator is found, but chunk is longer than limit", found)
        data = self._chunks.take(found + separator_length)
        self._maybe_resume_transport()
        return data

    async def readline(self) -> bytes:
        separator = b"\n"
        try:
            return await self.readuntil(separator)
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            if self._chunks.startswith(separator, exc.consumed):
                self._chunks.take(exc.consumed + len(separator))
            else:
                self._chunks.clear()
            self._maybe_resume_transport()
            raise ValueError(exc.args[0])  # noqa: B904 (asyncio's readline raises it so)


READER_CLASS: type[asyncio.StreamReader] = StackStreamReader if PYPY else asyncio.StreamReader
