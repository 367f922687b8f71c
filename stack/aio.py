"""asyncio on the stack, in one import: the driver that pumps hosts from the running loop and the streams.

    async with AsyncioDriver([a, b], [MemoryWire(a, b)]):
        server = await start_server(handler, b, "10.0.0.2", 7)
        reader, writer = await open_connection(a, "10.0.0.2", 7)

The driver lives in `stack.loops.asyncio_driver`, the streams in `stack.api.streams`.
"""

from stack.api.streams import (
    DEFAULT_LIMIT,
    StackServer,
    StackTransport,
    create_server,
    open_connection,
    start_server,
)
from stack.loops.asyncio_driver import AsyncioDriver

__all__ = [
    "DEFAULT_LIMIT", "AsyncioDriver", "StackServer", "StackTransport", "create_server", "open_connection",
    "start_server",
]
