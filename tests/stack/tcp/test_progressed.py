"""`TcpLayer.take_progressed`: the connections a round visited, and only those -- what lets a driver wake
the owners of changed sockets instead of every open one (stack.loops.asyncio_driver)."""

from __future__ import annotations

from stack.api.socket import Socket
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.runner import Runner
from stack.tcp.config import TcpConfig


def connected_pairs(count: int) -> tuple[Host, Runner, list[tuple[Socket, Socket]]]:
    """The server host, the runner, and `count` established (client socket, accepted socket) pairs."""
    config = TcpConfig(time_wait=0.5)
    client = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tcp=config)
    server = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2, tcp=config)
    runner = Runner([client, server], [MemoryWire(client, server)])
    listener = server.socket()
    listener.bind(("10.0.0.2", 7))
    listener.listen(count)
    pairs = []
    for _ in range(count):
        near = client.socket()
        near.connect(("10.0.0.2", 7))
        far, _ = listener.accept()
        pairs.append((near, far))
    runner.run_until(lambda: False, timeout=0.5)  # every handshake's last ACK and timer settled
    return server, runner, pairs


def test_a_layer_that_was_never_asked_records_nothing() -> None:
    server, _, _ = connected_pairs(3)  # three handshakes: every connection was visited
    assert server.take_progressed() == {}  # the Runner never asked before: nothing was kept


def test_data_on_one_connection_reports_that_connection_only() -> None:
    server, runner, pairs = connected_pairs(5)
    server.take_progressed()  # recording starts
    near, far = pairs[2]
    near.send(b"hello")
    runner.run_until(lambda: far.tcp.readable, timeout=1.0)
    assert list(server.take_progressed()) == [far.tcp.connection]
    assert server.take_progressed() == {}  # taken: the next call reports only what came after


def test_a_timer_and_a_close_report_their_connection() -> None:
    server, runner, pairs = connected_pairs(3)
    server.take_progressed()
    near, far = pairs[0]
    near.send(b"x")  # one small segment: the server's ACK waits for the delayed-ACK timer
    runner.run_until(lambda: False, timeout=0.2)
    assert list(server.take_progressed()) == [far.tcp.connection]
    _, other = pairs[1]
    other.close()  # a user call on another connection
    runner.run_until(lambda: False, timeout=0.05)
    assert other.tcp.connection in server.take_progressed()
