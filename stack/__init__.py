"""nslab's userspace TCP/IP stack.

``Host`` is one sans-IO host (Ethernet, ARP, IPv4, ICMP, TCP); ``host.socket()`` gives a BSD-style
socket. Drive hosts with the deterministic ``Runner`` over ``MemoryWire``s (virtual time), a
``ThreadedDriver`` (real time, blocking calls from other threads) or ``stack.aio`` (asyncio streams).
A ``Router`` joins subnets in a simulation (gateways, TTL, path MTU discovery).
The socket constants (``SHUT_WR``, ``SO_LINGER``, ``TCP_NODELAY``, ...) are re-exported here.

Two hosts back to back on a virtual clock (blocking calls run the simulated network until they can
complete, so one thread plays both sides):

>>> from stack import Host, MemoryWire, Runner
>>> a = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
>>> b = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
>>> runner = Runner([a, b], [MemoryWire(a, b)])
>>> listener = b.socket(); listener.bind(("10.0.0.2", 7)); listener.listen()
>>> client = a.socket(); client.connect(("10.0.0.2", 7))
>>> server, peer = listener.accept()
>>> client.sendall(b"hello"); server.recv(100)
b'hello'
>>> [(entry.port, entry.accept_queue) for entry in b.tables().listening]
[(7, 0)]

Names are imported lazily, so ``import stack.wire`` stays light and free of import cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

_CLASSES = {
    "Host": "stack.host",
    "Socket": "stack.api.socket",
    "Router": "stack.net.router",
    "Runner": "stack.loops.runner",
    "MemoryWire": "stack.devices.memory",
    "Impairment": "stack.devices.impairment",
    "ImpairedLink": "stack.devices.impairment",
    "ThreadedDriver": "stack.loops.threaded",
    "AsyncioDriver": "stack.loops.asyncio_driver",
    "Driver": "stack.loops.network",
    "NoDriverError": "stack.loops.network",
    "SimulationStalled": "stack.loops.network",
    "TcpConfig": "stack.tcp.config",
}
_SOCKET_CONSTANTS = (
    "AF_INET", "SOCK_STREAM", "SOL_SOCKET", "IPPROTO_TCP", "SHUT_RD", "SHUT_WR", "SHUT_RDWR",
    "SO_REUSEADDR", "SO_KEEPALIVE", "SO_RCVBUF", "SO_SNDBUF", "SO_LINGER", "SO_ERROR",
    "TCP_NODELAY", "TCP_MAXSEG", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT",
    "TCP_CONGESTION",
)
_EXPORTS = {**_CLASSES, **dict.fromkeys(_SOCKET_CONSTANTS, "stack.api.socket")}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stack' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
