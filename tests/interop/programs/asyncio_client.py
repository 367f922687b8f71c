"""An asyncio client (open_connection): sends N bytes, half-closes, reads to EOF; prints JSON figures."""

import asyncio
import hashlib
import json
import sys


async def main() -> None:
    host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    reader, writer = await asyncio.open_connection(host, port)
    payload = bytes(i % 251 for i in range(size))
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    digest = hashlib.sha256()
    received = 0
    while data := await reader.read(1 << 16):
        digest.update(data)
        received += len(data)
    writer.close()
    await writer.wait_closed()
    print(json.dumps({"sent_sha256": hashlib.sha256(payload).hexdigest(), "received": received,
                      "received_sha256": digest.hexdigest(), "local": writer.get_extra_info("sockname")}))


asyncio.run(main())
