"""Closing helpers shared by the apps: a peer that resets must end the handler quietly, never the node."""

from __future__ import annotations

import asyncio
import contextlib

from stack.api.streams import StackTransport
from stack.compat import within

READ_SIZE = 256 * 1024
# What a reset or vanished peer raises inside a handler: the connection is over, nothing to report.
PEER_GONE = (ConnectionError, OSError, asyncio.IncompleteReadError)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close and wait until the transport let go (bounded: a dead peer must not pin the handler)."""
    writer.close()
    transport = writer.transport
    with contextlib.suppress(*PEER_GONE, asyncio.TimeoutError):
        if isinstance(transport, StackTransport) and transport.socket_closed:
            await writer.wait_closed()  # the transport already let go: no timer to arm
            return
        await within(30.0, writer.wait_closed())  # a dead peer must not pin the handler
