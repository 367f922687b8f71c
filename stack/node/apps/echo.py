"""echo (RFC 862 in spirit): every byte back, in order, until the peer's EOF; then close.

Two shapes, one behaviour: `echo` is the stream handler (any asyncio streams), `EchoProtocol` the protocol
a node's listener uses, so a connection costs no task, no streams and no close timeout.
"""

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


class EchoProtocol(asyncio.Protocol):
    """Writes back what arrives. Flow control: while the transport's write buffer is above its high-water
    mark (a peer that does not read its echo) reading pauses, so the receive window closes; after the
    peer's EOF the transport closes once the echo is out."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()
