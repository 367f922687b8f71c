"""Send and receive buffers built from chunks, so the data path never loops over bytes.

The send buffer holds everything from SND.UNA on: acknowledged bytes are dropped from the front, a segment's
payload is a memoryview of one chunk when it fits inside it (the common case) and a single join otherwise.
The receive buffer is a queue of in-order chunks waiting for the application.
"""

from __future__ import annotations

from collections import deque

from stack.compat import join_views


class ChunkQueue:
    """Bytes as a queue of chunks (views only over immutable bytes), with their total length."""

    __slots__ = ("_chunks", "_length")

    def __init__(self) -> None:
        self._chunks: deque[bytes | memoryview] = deque()
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, data: bytes | memoryview) -> None:
        if data:
            self._chunks.append(data)
            self._length += len(data)


class SendBuffer(ChunkQueue):
    """Bytes from SND.UNA onwards: sent-but-unacknowledged, then not yet sent."""

    __slots__ = ("_head_offset",)

    def __init__(self) -> None:
        super().__init__()
        self._head_offset = 0  # bytes of _chunks[0] already acknowledged

    def drop(self, count: int) -> None:
        """Forget `count` acknowledged bytes from the front."""
        count = min(count, self._length)
        self._length -= count
        chunks = self._chunks
        while count:
            head_left = len(chunks[0]) - self._head_offset
            if count < head_left:
                self._head_offset += count
                return
            count -= head_left
            chunks.popleft()
            self._head_offset = 0

    def peek(self, offset: int, length: int) -> bytes | memoryview:
        """`length` bytes starting `offset` bytes after SND.UNA (fewer at the end of the buffer)."""
        length = min(length, self._length - offset)
        if length <= 0:
            return b""
        position = offset + self._head_offset
        chunks = self._chunks
        index = 0
        # Walk to the chunk holding `position`; segments are sent in order so this is a short walk in
        # practice (the unacknowledged window is a handful of chunks).
        while position >= len(chunks[index]):
            position -= len(chunks[index])
            index += 1
        first = chunks[index]
        if position + length <= len(first):
            if position == 0 and length == len(first):
                return first
            return as_view(first)[position : position + length]
        parts = [as_view(first)[position:]]
        remaining = length - (len(first) - position)
        while remaining > 0:
            index += 1
            chunk = chunks[index]
            parts.append(as_view(chunk)[:remaining] if len(chunk) > remaining else chunk)
            remaining -= len(chunk)
        return join_views(parts)


class ReceiveBuffer(ChunkQueue):
    """In-order bytes the application has not read yet."""

    __slots__ = ()

    def read(self, limit: int) -> bytes:
        """Up to `limit` bytes from the front, joined once."""
        chunks = self._chunks
        if not chunks or limit <= 0:
            return b""
        first = chunks[0]
        if len(first) == limit or (len(chunks) == 1 and len(first) <= limit):
            chunks.popleft()
            self._length -= len(first)
            return bytes(first)
        parts: list[bytes | memoryview] = []
        taken = 0
        while chunks and taken < limit:
            chunk = chunks[0]
            want = limit - taken
            if len(chunk) <= want:
                parts.append(chunks.popleft())
                taken += len(chunk)
            else:
                view = as_view(chunk)
                parts.append(view[:want])
                chunks[0] = view[want:]
                taken += want
        self._length -= taken
        return join_views(parts)

    def joined(self) -> bytes:
        """Everything held, as one chunk that stays held (joined once; later calls find it joined): what a
        search for a separator reads."""
        chunks = self._chunks
        if len(chunks) != 1 or type(chunks[0]) is not bytes:
            whole = join_views(list(chunks))
            chunks.clear()
            if whole:
                chunks.append(whole)
        return chunks[0] if chunks else b""

    def clear(self) -> None:
        self._chunks.clear()
        self._length = 0


def as_view(chunk: bytes | memoryview) -> memoryview:
    """A view to slice `chunk` without copying: the chunk itself when it is a view (a view of a view
    costs a wrapper on CPython and a slower copy later on PyPy)."""
    return chunk if type(chunk) is memoryview else memoryview(chunk)
