"""discard (RFC 863 in spirit): read and drop until the peer's EOF, then close.

Two shapes, one behaviour: `discard` is the stream handler (any asyncio streams), `DiscardProtocol` the
protocol a node's listener uses, so a connection costs no task, no streams and no close timeout.
"""

from __future__ import annotations

import asyncio
import contextlib

from stack.node.apps.common import PEER_GONE, READ_SIZE, close_writer


async def discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(*PEER_GONE):
        while await reader.read(READ_SIZE):
            pass
    await close_writer(writer)


class DiscardProtocol(asyncio.Protocol):
    """Drops every byte; the peer's EOF closes the connection (returning False from `eof_received`); a
    reset only ends it (`connection_lost` has nothing to report)."""

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False
