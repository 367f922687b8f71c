"""Bulk TCP transfer between two Hosts in one process over the memory wire: the stack's raw speed.

No device, no kernel: every microsecond measured is the stack's own Python work (Ethernet, IPv4, TCP on
both sides, plus the wire and the runner). The cases:
  - mss1460: MSS 1460 (MTU 1500), what a plain Ethernet link carries;
  - seg64k: 64 KB segments (MTU 65535 on the memory wire), the size the TAP offload path will carry;
  - the same two with "-offload": no Python checksum over payload on either side (the sender leaves the
    TCP checksum partial, the wire vouches for it as a TAP with virtio_net_hdr offload does).

Usage: python benchmarks/bench_memory.py [--bytes N] [--json] [--profile] [--case CASE ...]
Prints goodput (MB/s), data segments per second and microseconds per segment for each case, and the
ratio to the kernel's TCP over loopback moving the same number of bytes in the same run (the kernel's
figure is the yardstick: both sides of a connection in one machine, no wire).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import pstats
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.runner import Runner
from stack.tcp.config import TcpConfig

CASES = {"mss1460": (1500, False), "seg64k": (65535, False),
         "mss1460-offload": (1500, True), "seg64k-offload": (65535, True)}
CHUNK = 1 << 20


@dataclass
class Result:
    case: str
    mtu: int
    mss: int
    bytes: int
    seconds: float
    goodput_mb_s: float
    data_segments: int
    segments_per_s: float
    us_per_segment: float
    frames: int
    sha256_ok: bool | None  # None: not checked (--no-verify)


def run_case(case: str, total: int, verify: bool = True) -> Result:
    mtu, offload = CASES[case]
    config = TcpConfig(sndbuf=4 << 20, rcvbuf=4 << 20, max_rcvbuf=16 << 20, time_wait=1.0)
    checksum = "partial" if offload else "full"
    sender = Host("10.0.0.1/24", "02:00:00:00:00:01", mtu=mtu, seed=1, secret=b"s" * 32, tcp=config,
                  tx_checksum=checksum)
    receiver = Host("10.0.0.2/24", "02:00:00:00:00:02", mtu=mtu, seed=2, secret=b"r" * 32, tcp=config,
                    tx_checksum=checksum)
    wire = MemoryWire(sender, receiver, checksum_offload=offload)
    runner = Runner([sender, receiver], [wire])
    listener = receiver.socket()
    listener.bind(("10.0.0.2", 5001))
    listener.listen()
    client = sender.socket()
    client.connect(("10.0.0.2", 5001))
    server, _ = listener.accept()
    client.setblocking(False)
    server.setblocking(False)
    mss = sender.snapshots()[0].mss

    block = bytes(range(256)) * (CHUNK // 256)  # deterministic content, hashed on both sides
    sent_hash, received_hash = hashlib.sha256(), hashlib.sha256()
    segments_before = sender.counters().get("TcpOutSegs", 0)
    remaining, received, pending = total, 0, memoryview(b"")
    start = time.perf_counter()
    while received < total:
        while remaining or pending:
            if not pending:
                size = min(CHUNK, remaining)
                pending = memoryview(block)[:size]
                remaining -= size
                if verify:
                    sent_hash.update(pending)
            try:
                pending = pending[client.send(pending):]
            except BlockingIOError:
                break
        while True:
            try:
                data = server.recv(CHUNK)
            except BlockingIOError:
                break
            received += len(data)
            if verify:
                received_hash.update(data)
        more_to_send = bool(pending) or remaining > 0
        runner.run_until(lambda more=more_to_send: server.readable or (more and client.writable),
                         timeout=60.0)
    seconds = time.perf_counter() - start
    segments = sender.counters().get("TcpOutSegs", 0) - segments_before
    frames = wire.stats()["a_to_b"].frames + wire.stats()["b_to_a"].frames
    client.close()
    server.close()
    listener.close()
    return Result(case, mtu, mss, total, seconds, total / seconds / 1e6, segments, segments / seconds,
                  seconds / max(segments, 1) * 1e6, frames,
                  sent_hash.digest() == received_hash.digest() if verify else None)


def kernel_loopback_mb_s(total: int) -> float:
    """The kernel's TCP goodput over 127.0.0.1 for `total` bytes: a sender thread and a receiver."""
    listener = socket.create_server(("127.0.0.1", 0))
    chunk = bytes(CHUNK)

    def send_all() -> None:
        with socket.create_connection(listener.getsockname()) as sender:
            left = total
            while left > 0:
                sender.sendall(chunk[: min(left, CHUNK)])
                left -= CHUNK

    thread = threading.Thread(target=send_all, daemon=True)
    start = time.perf_counter()
    thread.start()
    receiver, _ = listener.accept()
    buffer = memoryview(bytearray(CHUNK))
    received = 0
    with receiver, listener:
        while received < total:
            count = receiver.recv_into(buffer)
            if count == 0:
                break
            received += count
    seconds = time.perf_counter() - start
    thread.join()
    return received / seconds / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=1_000_000_000, help="bytes to transfer per case (1 GB)")
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="run only this case")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--profile", action="store_true", help="cProfile each case and print the top entries")
    parser.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of the data")
    args = parser.parse_args(argv)
    if args.bytes <= 0:
        print(f"bench_memory: --bytes {args.bytes}: must be positive", file=sys.stderr)
        return 2
    results, profiles = [], {}
    for case in args.case or list(CASES):
        if args.profile:
            profiler = cProfile.Profile()
            result = profiler.runcall(run_case, case, args.bytes, not args.no_verify)
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            profiles[case] = text.getvalue()
        else:
            result = run_case(case, args.bytes, not args.no_verify)
        results.append(result)
    kernel = kernel_loopback_mb_s(args.bytes)
    if args.json:
        print(json.dumps({"kernel_loopback_mb_s": kernel,
                          "results": [asdict(r) | {"ratio_to_kernel": r.goodput_mb_s / kernel}
                                      for r in results]}, indent=2))
    else:
        print(f"{'case':<15} {'MTU':>6} {'MSS':>6} {'MB':>8} {'s':>7} {'MB/s':>8} {'segments':>9} "
              f"{'seg/s':>9} {'us/seg':>7} {'x kernel':>8} sha256")
        for r in results:
            print(f"{r.case:<15} {r.mtu:>6} {r.mss:>6} {r.bytes / 1e6:>8.1f} {r.seconds:>7.2f} "
                  f"{r.goodput_mb_s:>8.1f} {r.data_segments:>9} {r.segments_per_s:>9.0f} "
                  f"{r.us_per_segment:>7.1f} {r.goodput_mb_s / kernel:>8.3f} {_verdict(r.sha256_ok)}")
        print(f"kernel TCP over loopback, same bytes, same run: {kernel:.1f} MB/s")
    for case, text in profiles.items():
        print(f"\n== profile: {case} (sorted by own time) ==\n{text}", file=sys.stderr)
    return 1 if any(r.sha256_ok is False for r in results) else 0


def _verdict(ok: bool | None) -> str:
    return "not checked" if ok is None else "ok" if ok else "MISMATCH"


if __name__ == "__main__":
    sys.exit(main())
