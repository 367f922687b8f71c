"""An asyncio echo server (start_server on the default event loop)."""

import asyncio
import sys


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main() -> None:
    server = await asyncio.start_server(echo, sys.argv[1], int(sys.argv[2]))
    print("serving", server.sockets[0].getsockname(), flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
