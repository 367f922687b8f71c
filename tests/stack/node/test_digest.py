"""The transfer digest hashes on a worker thread: same digest as hashlib, in order, with a bounded backlog."""

from __future__ import annotations

import hashlib
import threading

from stack.node.apps.content import chunks, pattern_sha256
from stack.node.digest import BackgroundDigest


def test_digest_of_pieces_equals_hashlib_in_order() -> None:
    digest = BackgroundDigest()
    pieces = [bytes([i]) * (i * 997 + 1) for i in range(200)]
    for piece in pieces:
        digest.update(piece)
    assert digest.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_pattern_views_hash_like_the_pattern() -> None:
    digest = BackgroundDigest()
    for view in chunks(5_000_003):
        digest.update(view)
    assert digest.hexdigest() == pattern_sha256(5_000_003)


def test_nothing_given_is_the_empty_digest_and_starts_no_thread() -> None:
    before = threading.active_count()
    digest = BackgroundDigest()
    digest.update(b"")
    assert threading.active_count() == before
    assert digest.hexdigest() == hashlib.sha256().hexdigest()


def test_backlog_is_bounded_and_the_hash_runs_off_the_callers_thread() -> None:
    digest = BackgroundDigest(max_backlog=1 << 16)
    seen: list[int] = []
    original = digest._hash_pieces

    def observed() -> None:
        seen.append(threading.get_ident())
        original()

    digest._hash_pieces = observed  # type: ignore[method-assign]
    for _ in range(64):
        digest.update(b"x" * 60_000)
        assert digest._backlog <= (1 << 16) + 60_000
    assert digest.hexdigest() == hashlib.sha256(b"x" * 60_000 * 64).hexdigest()
    assert seen and seen[0] != threading.get_ident()


def test_every_coroutine_waiting_for_room_is_woken() -> None:
    import asyncio

    release = threading.Event()

    class SlowOutput:
        def write(self, piece: bytes) -> int:
            release.wait(5)
            return len(piece)

    async def scenario() -> list[str]:
        digest = BackgroundDigest(max_backlog=10, output=SlowOutput())  # type: ignore[arg-type]
        digest.update(b"x" * 10)  # the backlog is full until the output takes the piece
        woken: list[str] = []

        async def wait(name: str) -> None:
            await digest.room()
            woken.append(name)

        waiters = [asyncio.create_task(wait(name)) for name in ("first", "second")]
        await asyncio.sleep(0.05)
        assert woken == []
        release.set()
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        digest.hexdigest()
        return sorted(woken)

    assert asyncio.run(scenario()) == ["first", "second"]
