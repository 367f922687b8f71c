"""The apps a stack node serves, as asyncio stream handlers over `stack.aio` (or any asyncio streams).

Each handler is `async def handler(reader, writer)`; `handler_for(app, bytes=None)` picks one by the
name a topology or the control socket's `listen` uses: echo, discard, source, http, iperf3.
`protocol_for(app)` gives the protocol-shaped twin of the apps that have one (echo, discard): a node's
listener serves those with `create_server`, without a task or streams per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

from stack.api.streams import ProtocolFactory

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
APP_NAMES = ("echo", "discard", "source", "http", "iperf3")


def handler_for(app: str, size: int | None = None) -> Handler:
    """The stream handler of `app` (ValueError for an unknown name); `size` is what `source` sends."""
    if app == "echo":
        from stack.node.apps.echo import echo

        return echo
    if app == "discard":
        from stack.node.apps.discard import discard

        return discard
    if app == "source":
        from stack.node.apps.source import source

        return partial(source, size=size)
    if app == "http":
        from stack.node.apps.http import HttpApp

        return HttpApp()
    if app == "iperf3":
        from stack.node.apps.iperf3 import Iperf3App

        return Iperf3App()
    raise ValueError(f"unknown app {app!r}: choose one of {', '.join(APP_NAMES)}")


def protocol_for(app: str) -> ProtocolFactory | None:
    """The protocol factory of `app` when it has one (echo, discard), else None: use `handler_for`."""
    if app == "echo":
        from stack.node.apps.echo import EchoProtocol

        return EchoProtocol
    if app == "discard":
        from stack.node.apps.discard import DiscardProtocol

        return DiscardProtocol
    return None
