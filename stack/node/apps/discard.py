"""discard (RFC 863 in spirit): read and drop until the peer's EOF, then close."""

from __future__ import annotations

import asyncio
import contextlib

from stack.node.apps.common import PEER_GONE, READ_SIZE, close_writer


async def discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(*PEER_GONE):
        while await reader.read(READ_SIZE):
            pass
    await close_writer(writer)
