"""A kernel server that answers every connection with a reset (SO_LINGER 0, then close)."""

import socket
import struct
import sys

listener = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("serving", listener.getsockname(), flush=True)
while True:
    conn, _ = listener.accept()
    conn.recv(1)  # wait for the client's first byte, so its connect has completed
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
