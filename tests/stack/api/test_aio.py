"""asyncio streams over the stack: open_connection/start_server driven by the running loop."""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

from stack.aio import AsyncioDriver, create_server, open_connection, start_server
from stack.devices.impairment import Impairment
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.tcp.config import TcpConfig


def hosts() -> tuple[Host, Host, MemoryWire]:
    config = TcpConfig(time_wait=0.5)
    a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tcp=config)
    b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2, tcp=config)
    return a, b, MemoryWire(a, b, Impairment(delay=0.0005), Impairment(delay=0.0005))


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_stream_echo_both_ways() -> None:
    payload = random.Random(3).randbytes(400_000)

    async def main() -> bytes:
        a, b, wire = hosts()
        async with AsyncioDriver([a, b], [wire]):
            server = await start_server(echo, b, "10.0.0.2", 7, backlog=16)
            reader, writer = await open_connection(a, "10.0.0.2", 7)
            assert writer.get_extra_info("peername") == ("10.0.0.2", 7)

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            received = await reader.read()  # until EOF
            await sender
            writer.close()
            await writer.wait_closed()
            async with server:
                assert server.accepted == 1
            return received

    received = asyncio.run(asyncio.wait_for(main(), 20.0))
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_refused_and_readexactly() -> None:
    async def main() -> None:
        a, b, wire = hosts()
        async with AsyncioDriver([a, b], [wire]):
            with pytest.raises(ConnectionRefusedError):
                await open_connection(a, "10.0.0.2", 9)

            async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                name = await reader.readline()
                writer.write(b"hello " + name)
                await writer.drain()
                writer.close()

            server = await start_server(greet, b, "10.0.0.2", 8000)
            reader, writer = await open_connection(a, "10.0.0.2", 8000)
            writer.write(b"stack\n")
            assert await reader.readexactly(12) == b"hello stack\n"
            assert await reader.read() == b""
            writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 10.0))


def test_open_connection_needs_an_asyncio_driver() -> None:
    a, _b, _wire = hosts()
    with pytest.raises(RuntimeError, match="AsyncioDriver"):
        asyncio.run(open_connection(a, "10.0.0.2", 7))


def test_flow_control_a_reader_that_does_not_read_stops_the_writer() -> None:
    async def main() -> None:
        a, b, wire = hosts()
        accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

        async def park(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accepted.put((reader, writer))

        async with AsyncioDriver([a, b], [wire]):
            server = await start_server(park, b, "10.0.0.2", 9000)
            _reader, writer = await open_connection(a, "10.0.0.2", 9000)
            server_reader, server_writer = await accepted.get()
            payload = bytes(4_000_000)  # far more than both TCP buffers and the stream buffers hold
            writer.write(payload)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(writer.drain(), 0.3)
            [snapshot] = [s for s in b.snapshots() if s.local_port == 9000]
            assert snapshot.rcv_wnd < 65536  # the receive window closed behind the paused reader
            received = await server_reader.readexactly(len(payload))  # reading reopens the window
            await writer.drain()
            assert received == payload
            writer.close()
            server_writer.close()
            server.close()

    asyncio.run(asyncio.wait_for(main(), 20.0))


def test_echo_over_a_zero_delay_wire() -> None:
    async def main() -> bytes:
        a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
        b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
        async with AsyncioDriver([a, b], [MemoryWire(a, b)]):
            server = await start_server(echo, b, "10.0.0.2", 7)
            reader, writer = await open_connection(a, "10.0.0.2", 7)
            answers = []
            for line in (b"one\n", b"two\n", b"three\n"):
                writer.write(line)
                answers.append(await asyncio.wait_for(reader.readline(), 1.0))
            writer.close()
            server.close()
            return b"".join(answers)

    assert asyncio.run(asyncio.wait_for(main(), 10.0)) == b"one\ntwo\nthree\n"


class Recorder(asyncio.Protocol):
    """Records the transport's calls; answers "bye" after the peer's EOF and then closes itself (True from
    `eof_received` keeps the half-open connection for that write)."""

    def __init__(self, calls: list[object]) -> None:
        self.calls = calls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.calls.append(("made", transport.get_extra_info("peername")[0]))

    def data_received(self, data: bytes) -> None:
        self.calls.append(("data", len(data)))

    def eof_received(self) -> bool:
        self.calls.append("eof")
        self.transport.write(b"bye")
        self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("lost", exc))


def test_create_server_drives_a_protocol_without_streams() -> None:
    async def main() -> tuple[list[object], bytes, int]:
        a, b, wire = hosts()
        calls: list[object] = []
        async with AsyncioDriver([a, b], [wire]):
            server = await create_server(lambda: Recorder(calls), b, "10.0.0.2", 7000)
            reader, writer = await open_connection(a, "10.0.0.2", 7000)
            writer.write(b"x" * 1000)
            await writer.drain()
            writer.write_eof()
            answer = await reader.read()  # "bye", then the server's FIN
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
            async with server:
                return calls, answer, server.accepted

    calls, answer, accepted = asyncio.run(asyncio.wait_for(main(), 10.0))
    assert answer == b"bye" and accepted == 1
    received = sum(call[1] for call in calls if isinstance(call, tuple) and call[0] == "data")
    assert calls[0] == ("made", "10.0.0.1") and received == 1000
    assert calls[-2:] == ["eof", ("lost", None)]


def test_create_server_reads_what_came_with_the_handshake_in_the_accepting_pump() -> None:
    """Data and FIN right behind the handshake reach the protocol in the pump that accepted it."""

    async def main() -> tuple[list[object], list[int]]:
        a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
        b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
        calls: list[object] = []
        pumps: list[int] = []
        async with AsyncioDriver([a, b], [MemoryWire(a, b)]) as driver:

            class Stamped(Recorder):
                def connection_made(self, transport: asyncio.BaseTransport) -> None:
                    super().connection_made(transport)
                    pumps.append(driver.pumps)

                def eof_received(self) -> bool:
                    pumps.append(driver.pumps)
                    return super().eof_received()

            server = await create_server(lambda: Stamped(calls), b, "10.0.0.2", 7001)
            sock = a.tcp.socket()
            with pytest.raises(BlockingIOError):
                sock.connect(("10.0.0.2", 7001), driver.clock())
            driver.wakeup()
            await driver.wait_for(lambda: sock.writable)
            sock.send(b"hello")
            sock.shutdown(1, driver.clock())  # SHUT_WR: the FIN follows the data at once
            driver.wakeup()
            await driver.wait_for(lambda: sock.readable)
            assert sock.recv(10) == b"bye"
            sock.close(driver.clock())
            await asyncio.sleep(0.05)
            server.close()
        return calls, pumps

    calls, pumps = asyncio.run(asyncio.wait_for(main(), 10.0))
    assert calls[:3] == [("made", "10.0.0.1"), ("data", 5), "eof"]
    assert len(pumps) == 2 and pumps[0] == pumps[1]
