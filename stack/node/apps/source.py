"""source (chargen in spirit): send `size` bytes of the deterministic pattern, then close.

Without a size it sends without end, until the peer closes or resets (the writes then fail). What the peer
sends is read and dropped meanwhile, so its data never fills our window and stalls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from stack.node.apps.common import PEER_GONE, READ_SIZE, close_writer
from stack.node.apps.content import CHUNK, PERIOD, chunks, pattern_slice


async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 size: int | None = None) -> None:
    drainer = asyncio.ensure_future(_drop_input(reader))
    try:
        with contextlib.suppress(*PEER_GONE):
            if size is None:
                # The stream repeats every PERIOD bytes: cycle whole periods, never building a body.
                for offset in itertools.count(0, CHUNK):
                    writer.write(pattern_slice(offset % PERIOD, CHUNK))
                    await writer.drain()
                    if writer.is_closing():
                        break
            else:
                for piece in chunks(size):
                    writer.write(piece)
                    await writer.drain()
                    if writer.is_closing():
                        break
    finally:
        drainer.cancel()
    await close_writer(writer)


async def _drop_input(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(*PEER_GONE):
        while await reader.read(READ_SIZE):
            pass
