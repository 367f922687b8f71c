"""The stack's ``asyncio.StreamReader``: received bytes kept as the chunks the transport delivered.

asyncio's reader appends every chunk to one ``bytearray`` and slices what it hands out off its front:
each byte is copied in and copied out again. Under PyPy it costs far more than two copies: its
``bytearray`` grows by copying what it holds, so a receiving node spent 44 % of its time in
``feed_data`` and 13 % in ``read`` (vmprof, iperf3 into the stack). ``StackStreamReader`` keeps the
chunks in the TCP core's ``ReceiveBuffer`` instead, as a connection holds them for ``recv``: ``read(n)``
hands over a whole chunk that fits without copying it, and slices a larger one where it is read, never
what stays behind.

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
from typing import Union

from stack.compat import PYPY
from stack.tcp.buffers import ReceiveBuffer

Bytes = Union[bytes, bytearray, memoryview]


class StackStreamReader(asyncio.StreamReader):
    """``asyncio.StreamReader`` over a ``ReceiveBuffer`` (see the module docstring)."""

    def __init__(self, limit: int = 2**16, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(limit=limit, loop=loop)
        self._received = ReceiveBuffer()
        del self._buffer  # the base class's bytearray: a method that still reached for it would fail loudly

    def __repr__(self) -> str:
        held = f" {len(self._received)} bytes" if len(self._received) else ""
        return f"<StackStreamReader{held}{' eof' if self._eof else ''} limit={self._limit}>"

    def _maybe_resume_transport(self) -> None:
        if self._paused and len(self._received) <= self._limit:
            self._paused = False
            self._transport.resume_reading()

    def at_eof(self) -> bool:
        return self._eof and not len(self._received)

    def feed_data(self, data: Bytes) -> None:
        assert not self._eof, "feed_data after feed_eof"
        if not data:
            return
        self._received.append(data if type(data) is bytes else bytes(data))  # held: it must not change
        self._wakeup_waiter()
        if self._transport is not None and not self._paused and len(self._received) > 2 * self._limit:
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
        if not len(self._received) and not self._eof:
            await self._wait_for_data("read")
        data = self._received.read(n)
        self._maybe_resume_transport()
        return data

    async def readexactly(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return b""
        while len(self._received) < n:
            if self._eof:
                raise asyncio.IncompleteReadError(self._received.read(len(self._received)), n)
            await self._wait_for_data("readexactly")
        data = self._received.read(n)
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
            held = len(self._received)
            if held - offset >= separator_length:
                found = self._received.joined().find(separator, offset)
                if found != -1:
                    break
                offset = held + 1 - separator_length
                if offset > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is not found, and chunk exceed the limit", offset)
            if self._eof:
                raise asyncio.IncompleteReadError(self._received.read(len(self._received)), None)
            await self._wait_for_data("readuntil")
        if found > self._limit:
            raise asyncio.LimitOverrunError("Separator is found, but chunk is longer than limit", found)
        data = self._received.read(found + separator_length)
        self._maybe_resume_transport()
        return data

    async def readline(self) -> bytes:
        separator = b"\n"
        try:
            return await self.readuntil(separator)
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            if self._received.joined().startswith(separator, exc.consumed):
                self._received.read(exc.consumed + len(separator))
            else:
                self._received.clear()
            self._maybe_resume_transport()
            raise ValueError(exc.args[0])  # noqa: B904 (asyncio's readline raises it so)


READER_CLASS: type[asyncio.StreamReader] = StackStreamReader if PYPY else asyncio.StreamReader
