"""echo (RFC 862 in spirit): every byte back, in order, until the peer's EOF; then close."""

from __future__ import annotations

import asyncio
import contextlib

from stack.node.apps.common import PEER_GONE, READ_SIZE, close_writer


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(*PEER_GONE):
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()  # flow control: stop reading while the peer does not read our echo
    await close_writer(writer)
