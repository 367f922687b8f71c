"""CPU per keep-alive request of the stack's HTTP app alone, without TCP: `python benchmarks/bench_http.py`.

The app serves `GET /bytes/1000` (or --target) over in-memory streams: the reader hands out one request per
read, as a keep-alive client that waits for each answer would, and the writer takes every byte at once. The
figure is the process CPU time over the run divided by the requests answered: what the app costs the stack
process per request, the TCP/IP path excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterable

from stack.node.apps.http import HttpApp


class RequestReader:
    """A keep-alive client's side of the stream: `count` requests, one per read, then EOF."""

    def __init__(self, request: bytes, count: int) -> None:
        self.request = request
        self.left = count

    async def read(self, size: int = -1) -> bytes:
        if self.left == 0:
            return b""
        self.left -= 1
        return self.request


class SinkTransport:
    def abort(self) -> None:
        pass


class SinkWriter:
    """Takes every response byte at once and counts them."""

    def __init__(self) -> None:
        self.transport = SinkTransport()
        self.bytes = 0

    def writelines(self, parts: Iterable[bytes | bytearray | memoryview]) -> None:
        self.bytes += sum(len(part) for part in parts)

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


async def serve(request: bytes, count: int) -> int:
    writer = SinkWriter()
    await HttpApp()(RequestReader(request, count), writer)  # type: ignore[arg-type]
    return writer.bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="/bytes/1000")
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    request = f"GET {args.target} HTTP/1.1\r\nHost: 10.0.0.2\r\n\r\n".encode()
    figures = []
    for _ in range(args.rounds):
        start = time.process_time()
        sent = asyncio.run(serve(request, args.requests))
        figures.append((time.process_time() - start) / args.requests * 1e6)
    figures.sort()
    print(f"GET {args.target}: {figures[len(figures) // 2]:.1f} us CPU per keep-alive request "
          f"(median of {args.rounds} rounds of {args.requests}; {sent // args.requests} response bytes each)")


if __name__ == "__main__":
    main()
