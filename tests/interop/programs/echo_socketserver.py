"""A socketserver echo server (threads): what it reads it writes back, until the client's EOF."""

import socketserver
import sys


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


with Server((sys.argv[1], int(sys.argv[2])), Echo) as server:
    print("serving", server.server_address, flush=True)
    server.serve_forever()
