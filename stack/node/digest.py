"""SHA-256 of a transfer, or of the pattern an app sends, computed beside the stack rather than on its thread.

Every bulk transfer the control socket runs is checked by its SHA-256, but hashing on the stack's one
thread would make the hash part of what a benchmark measures (about a quarter of the stack's busy time
receiving, half sending). hashlib releases the interpreter lock while it digests a large buffer, so a
worker thread hashes on another core while the stack goes on moving segments.

The pieces handed over must not change afterwards: received `bytes`, or views of the immutable pattern.
At most `MAX_BACKLOG_BYTES` wait for the worker; beyond that `update` waits, so a slow hash slows the
transfer instead of holding its data in memory. A coroutine awaits `room()` first instead, so the loop
never blocks: that is how a body written to a slow file (a pipe to a slow reader) slows its transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections import deque
from typing import Any, BinaryIO

from stack.node.apps.content import pattern_sha256

MAX_BACKLOG_BYTES = 32 << 20


class BackgroundDigest:
    """`update` queues a piece for the worker thread; `hexdigest` waits for the worker and ends it.

    With `output`, the worker also writes every piece there, after hashing it; the first write error is
    kept in `error` (nothing more is written) and raised by the next `update`.
    """

    def __init__(self, *, max_backlog: int = MAX_BACKLOG_BYTES, output: BinaryIO | None = None) -> None:
        self._digest = hashlib.sha256()
        self._output = output
        self.error: OSError | None = None
        self._pieces: deque[bytes | memoryview | None] = deque()
        self._backlog = 0
        self._max_backlog = max_backlog
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None
        self._result: str | None = None
        self._room: asyncio.Future[None] | None = None

    def update(self, piece: bytes | memoryview) -> None:
        if self.error is not None:
            raise self.error
        if not len(piece):
            return
        if self._worker is None:
            self._worker = threading.Thread(target=self._hash_pieces, name="transfer-digest", daemon=True)
            self._worker.start()
        with self._changed:
            while self._backlog >= self._max_backlog:
                self._changed.wait()
            self._pieces.append(piece)
            self._backlog += len(piece)
            self._changed.notify_all()

    async def room(self) -> None:
        """Return once `update` would not wait (the backlog is under its bound), without blocking the loop."""
        while True:
            with self._changed:
                if self._backlog < self._max_backlog:
                    return
                if self._room is None:  # one future for every awaiter: the worker resolves it once
                    self._room = asyncio.get_running_loop().create_future()
                room = self._room
            await room

    def hexdigest(self) -> str:
        """The digest of every piece given so far; no `update` may follow."""
        if self._result is None:
            if self._worker is not None:
                with self._changed:
                    self._pieces.append(None)
                    self._changed.notify_all()
                self._worker.join()
            self._result = self._digest.hexdigest()
        return self._result

    def _hash_pieces(self) -> None:
        while True:
            with self._changed:
                while not self._pieces:
                    self._changed.wait()
                piece = self._pieces.popleft()
            if piece is None:
                return
            self._digest.update(piece)  # without the lock: the stack's thread queues the next piece meanwhile
            if self._output is not None and self.error is None:
                try:
                    self._output.write(piece)
                except OSError as error:
                    self.error = error
            with self._changed:
                self._backlog -= len(piece)
                self._changed.notify_all()
                room, self._room = self._room, None
            if room is not None:
                with contextlib.suppress(RuntimeError):  # a loop that closed meanwhile
                    room.get_loop().call_soon_threadsafe(_resolve, room, None)


class PatternDigests:
    """SHA-256 of `pattern(n)` for the http app's `X-Content-SHA256`, computed on one worker thread and
    remembered for the last `keep` sizes, so that no digest ever runs on the stack's event loop.

    Digesting N bytes takes N / (about 1.8 GB/s) of a core: 20 GB would hold a loop for 11 s. Here a
    request awaits its digest while the loop serves everything else. Sizes are digested one at a time, in
    the order asked; a size whose every asker gave up (`wait` ran out) is skipped, so the work done is
    bounded by what is still awaited.
    """

    def __init__(self, keep: int = 256) -> None:
        self._keep = keep
        self._known: dict[int, str] = {}  # insertion order: the oldest is forgotten first
        self._waiting: dict[int, list[asyncio.Future[str]]] = {}
        self._queue: deque[int] = deque()
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None

    def known(self, size: int) -> str | None:
        # No lock: one dict lookup is atomic (the worker changes the dict only under the lock, one
        # operation at a time), and this runs for every GET /bytes/N.
        return self._known.get(size)

    def remember(self, size: int, digest: str) -> None:
        with self._lock:
            self._known[size] = digest
            while len(self._known) > self._keep:
                del self._known[next(iter(self._known))]

    async def sha256(self, size: int, wait: float) -> str | None:
        """The digest of `pattern(size)`, or None when it is not ready within `wait` seconds (it is then
        still computed for the next asker, unless nobody waits for it any more)."""
        digest = self.known(size)
        if digest is not None:
            return digest
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        with self._lock:
            waiters = self._waiting.setdefault(size, [])
            if not waiters:
                self._queue.append(size)
            waiters.append(future)
            if self._worker is None:
                self._worker = threading.Thread(target=self._digest_sizes, name="pattern-digest", daemon=True)
                self._worker.start()
            self._lock.notify_all()
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait)
        except asyncio.TimeoutError:
            return None
        finally:
            with self._lock:
                waiters = self._waiting.get(size, [])
                if future in waiters:
                    waiters.remove(future)

    def _digest_sizes(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._lock.wait()
                size = self._queue.popleft()
                if not self._waiting.get(size):
                    self._waiting.pop(size, None)
                    continue
            digest = pattern_sha256(size)  # without the lock; hashlib releases the interpreter lock
            self.remember(size, digest)
            with self._lock:
                waiters = self._waiting.pop(size, [])
            for future in waiters:
                with contextlib.suppress(RuntimeError):  # a loop that closed meanwhile
                    future.get_loop().call_soon_threadsafe(_resolve, future, digest)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
