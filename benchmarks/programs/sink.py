"""An upload sink (socketserver, threads): reads to EOF, answers the byte count, closes."""

import socketserver
import sys


class Sink(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        received = 0
        while data := self.request.recv(1 << 18):
            received += len(data)
        self.request.sendall(f"{received}\n".encode())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


with Server((sys.argv[1], int(sys.argv[2])), Sink) as server:
    print("serving", server.server_address, flush=True)
    server.serve_forever()
