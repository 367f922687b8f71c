"""Stack sockets are selectable: fileno() is a real descriptor that follows the socket's readiness, so
select, selectors and asyncio's default event loop wait on them with nothing else to set up.

Two hosts on a memory wire run in a ThreadedDriver (real time, the stack's own thread); the test's thread
and its asyncio loop use the sockets as they would kernel ones.
"""

from __future__ import annotations

import asyncio
import select
import selectors
from collections.abc import Iterator

import pytest

from stack.api.readiness import Readiness
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.threaded import ThreadedDriver


def _ready(fd: int) -> tuple[bool, bool]:
    readable, writable, _ = select.select([fd], [fd], [], 0)
    return bool(readable), bool(writable)


def test_the_descriptor_says_what_update_says() -> None:
    readiness = Readiness()
    try:
        assert _ready(readiness.fileno()) == (False, True)
        for state in ((True, True), (True, False), (False, False), (False, True), (True, False)):
            readiness.update(*state)
            assert _ready(readiness.fileno()) == state
    finally:
        readiness.close()


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
    b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
    with ThreadedDriver([a, b], [MemoryWire(a, b)]):
        yield a, b


def test_select_waits_for_accept_and_data(hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    listener = b.socket()
    listener.bind(("10.0.0.2", 7))
    listener.listen()
    assert _ready(listener.fileno())[0] is False
    client = a.socket()
    client.connect(("10.0.0.2", 7))
    assert select.select([listener], [], [], 5)[0] == [listener]
    server, _ = listener.accept()
    assert _ready(listener.fileno())[0] is False  # the accept queue is empty again
    with selectors.DefaultSelector() as selector:
        selector.register(server, selectors.EVENT_READ)
        assert selector.select(0) == []
        client.sendall(b"hello")
        assert [key.fileobj for key, _ in selector.select(5)] == [server]
    assert server.recv(100) == b"hello"
    assert _ready(server.fileno()) == (False, True)
    for sock in (client, server, listener):
        sock.close()
        assert sock.fileno() == -1
    assert len(a.readiness) == 0 and len(b.readiness) == 0


def test_asyncio_streams_over_stack_sockets_on_the_default_loop(hosts: tuple[Host, Host]) -> None:
    a, b = hosts

    async def main() -> bytes:
        listener = b.socket()
        listener.bind(("10.0.0.2", 8))
        listener.listen()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, sock=listener)
        client = a.socket()
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, ("10.0.0.2", 8))
        reader, writer = await asyncio.open_connection(sock=client)
        payload = bytes(range(256)) * 2000
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        echoed = await reader.read(-1)
        writer.close()
        server.close()
        await server.wait_closed()
        return echoed if echoed == payload else b"differs"

    assert asyncio.run(main()) == bytes(range(256)) * 2000
