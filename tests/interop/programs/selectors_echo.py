"""A selectors echo server: non-blocking sockets, one thread, the standard library's DefaultSelector."""

import selectors
import socket
import sys

selector = selectors.DefaultSelector()
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((sys.argv[1], int(sys.argv[2])))
listener.listen()
listener.setblocking(False)
selector.register(listener, selectors.EVENT_READ)
pending: dict[socket.socket, bytes] = {}
finished: set[socket.socket] = set()  # the client sent EOF: close once what it sent went back
print("serving", listener.getsockname(), flush=True)
while True:
    for key, events in selector.select():
        sock = key.fileobj
        if sock is listener:
            conn, _ = listener.accept()
            conn.setblocking(False)
            pending[conn] = b""
            selector.register(conn, selectors.EVENT_READ)
            continue
        if events & selectors.EVENT_READ:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                finished.add(sock)
            pending[sock] += data
        if pending.get(sock):
            try:
                sent = sock.send(pending[sock])
            except BlockingIOError:
                sent = 0
            pending[sock] = pending[sock][sent:]
        if sock in finished and not pending[sock]:
            selector.unregister(sock)
            sock.close()
            finished.discard(sock)
            del pending[sock]
            continue
        reading = 0 if sock in finished else selectors.EVENT_READ
        selector.modify(sock, reading | (selectors.EVENT_WRITE if pending[sock] else 0))
