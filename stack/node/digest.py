"""SHA-256 of a transfer, computed beside the stack rather than on its thread.

Every bulk transfer the control socket runs is checked by its SHA-256, but hashing on the stack's one
thread would make the hash part of what a benchmark measures (about a quarter of the stack's busy time
receiving, half sending). hashlib releases the interpreter lock while it digests a large buffer, so a
worker thread hashes on another core while the stack goes on moving segments.

The pieces handed over must not change afterwards: received `bytes`, or views of the immutable pattern.
At most `MAX_BACKLOG_BYTES` wait for the worker; beyond that `update` waits, so a slow hash slows the
transfer instead of holding its data in memory.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque

MAX_BACKLOG_BYTES = 32 << 20


class BackgroundDigest:
    """`update` queues a piece for the worker thread; `hexdigest` waits for the worker and ends it."""

    def __init__(self, *, max_backlog: int = MAX_BACKLOG_BYTES) -> None:
        self._digest = hashlib.sha256()
        self._pieces: deque[bytes | memoryview | None] = deque()
        self._backlog = 0
        self._max_backlog = max_backlog
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None
        self._result: str | None = None

    def update(self, piece: bytes | memoryview) -> None:
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
            with self._changed:
                self._backlog -= len(piece)
                self._changed.notify_all()
