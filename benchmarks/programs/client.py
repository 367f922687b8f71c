"""The benchmark's client (on a kernel node): upload MB/s, echo RTT, connect+request+close latency.

argv: ADDRESS HTTP_PORT ECHO_PORT SINK_PORT UPLOAD_BYTES RTT_ROUNDS CRR_ROUNDS (0: that part is
skipped); prints one JSON object.
"""

import http.client
import json
import socket
import statistics
import sys
import time

address = sys.argv[1]
http_port, echo_port, sink_port = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
upload_bytes, rtt_rounds, crr_rounds = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])

figures: dict[str, float] = {}
block = bytes(1 << 20)
if upload_bytes:
    start = time.perf_counter()
    with socket.create_connection((address, sink_port)) as sock:
        left = upload_bytes
        while left:
            left -= sock.send(memoryview(block)[:min(left, len(block))])
        sock.shutdown(socket.SHUT_WR)
        answer = sock.makefile().readline()
    figures["upload_mb_s"] = upload_bytes / (time.perf_counter() - start) / 1e6
    assert int(answer) == upload_bytes, answer

rtts = []
with socket.create_connection((address, echo_port)) as sock:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(rtt_rounds):
        t = time.perf_counter()
        sock.sendall(b"x")
        sock.recv(1)
        rtts.append(time.perf_counter() - t)
figures["rtt_us"] = statistics.median(rtts) * 1e6

crrs = []
for _ in range(crr_rounds):
    t = time.perf_counter()
    connection = http.client.HTTPConnection(address, http_port)
    connection.request("GET", "/small")
    connection.getresponse().read()
    connection.close()
    crrs.append(time.perf_counter() - t)
if crrs:
    figures["crr_ms"] = statistics.median(crrs) * 1e3
print(json.dumps(figures))
