"""How fast the wire codecs are: checksums, TCP segment parse/build, and a plain TAP's software GRO/GSO.

Run: ``.venv/bin/python benchmarks/bench_wire.py``. Prints microseconds per operation and
MB/s of payload; the checksum is compared with zlib.crc32 over the same buffer, a C loop
that reads every byte once (a memory-bandwidth yardstick: a ratio near 1 means the checksum
costs about as much as touching the data from C). The alternatives rejected for the
checksum are timed too, so the choice in stack/wire/checksum.py stays justified.
"""

from __future__ import annotations

import argparse
import array
import os
import socket
import sys
import timeit
import zlib
from collections.abc import Callable

from stack.devices.contract import OutgoingFrame
from stack.devices.gro import coalesce
from stack.devices.gso import cut_ipv4_tcp
from stack.wire import (
    TcpFlags,
    TcpOptions,
    TcpSegment,
    build_tcp,
    build_tcp_frame,
    internet_checksum,
    parse_ethernet,
    parse_ipv4,
    parse_tcp,
)

SRC = socket.inet_aton("10.0.0.1")
DST = socket.inet_aton("10.0.0.2")
MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


def time_per_call(function: Callable[[], object], repeat: int) -> float:
    """Best-of-`repeat` seconds per call (the minimum is the least noisy estimate)."""
    timer = timeit.Timer(function)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


def checksum_array_sum(data: bytes) -> int:
    """Rejected alternative: array('H') in host order, summed, then byte-swapped."""
    if len(data) & 1:
        data += b"\x00"
    words = array.array("H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if sys.byteorder == "little":
        total = (total & 0xFF) << 8 | total >> 8
    return ~total & 0xFFFF


def checksum_memoryview_u64(data: bytes) -> int:
    """Rejected alternative: 64-bit little-endian words through memoryview.cast, folded at the end."""
    if len(data) & 1:
        data += b"\x00"
    view = memoryview(data)
    whole = len(view) & ~7
    total = sum(view[:whole].cast("Q")) + int.from_bytes(view[whole:], "little")
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFF) << 8 | total >> 8
    return ~total & 0xFFFF


def row(name: str, seconds: float, payload_bytes: int, extra: str = "") -> None:
    rate = f"{payload_bytes / seconds / 1e6:10.1f} MB/s" if payload_bytes else " " * 15
    print(f"  {name:<44} {seconds * 1e6:9.2f} µs/op {rate}  {extra}")


def bench_checksums(repeat: int) -> None:
    print("Internet checksum (RFC 1071) vs zlib.crc32 over the same buffer")
    for size in (40, 1500, 65536):
        data = os.urandom(size)
        ours = time_per_call(lambda data=data: internet_checksum(data), repeat)
        crc = time_per_call(lambda data=data: zlib.crc32(data), repeat)
        row(f"internet_checksum {size} B", ours, size, f"x{ours / crc:5.1f} crc32 ({crc * 1e6:.2f} µs)")
        for name, function in (("array('H') + sum", checksum_array_sum),
                               ("memoryview.cast('Q') + sum", checksum_memoryview_u64)):
            assert function(data) == internet_checksum(data)
            alternative = time_per_call(lambda data=data, f=function: f(data), repeat)
            row(f"  rejected: {name} {size} B", alternative, size, f"x{alternative / ours:5.1f} ours")


def bench_tcp(repeat: int) -> None:
    print("TCP segments with timestamps (the common NOP NOP TS layout)")
    for size in (1460, 65495 - 32):
        segment = TcpSegment(40000, 80, 123456789, 987654321, TcpFlags.ACK | TcpFlags.PSH, 501,
                             TcpOptions(timestamp=(1000, 2000)), os.urandom(size))
        raw = build_tcp(segment, SRC, DST)
        frame = build_tcp_frame(MAC_B, MAC_A, SRC, DST, segment)
        label = f"{size} B"
        cases = [
            ("build_tcp", "full checksum", lambda s=segment: build_tcp(s, SRC, DST)),
            ("build_tcp", "partial: offload", lambda s=segment: build_tcp(s, SRC, DST, checksum="partial")),
            ("parse_tcp", "verify checksum", lambda r=raw: parse_tcp(r, SRC, DST)),
            ("parse_tcp", "checksum offloaded", lambda r=raw: parse_tcp(r, SRC, DST, verify_checksum=False)),
        ]
        for name, how, function in cases:
            row(f"{name} {label} ({how})", time_per_call(function, repeat), size)

        def parse_frame(frame: bytes = frame) -> TcpSegment:
            ip = parse_ipv4(parse_ethernet(frame).payload)
            return parse_tcp(ip.payload, ip.src, ip.dst, verify_checksum=False)

        row(f"build_tcp_frame {label} (eth+ip+tcp, partial)",
            time_per_call(lambda s=segment: build_tcp_frame(MAC_B, MAC_A, SRC, DST, s, checksum="partial"),
                          repeat), size)
        row(f"parse eth+ipv4+tcp {label} (no TCP checksum)", time_per_call(parse_frame, repeat), size)
    empty = TcpSegment(40000, 80, 1, 2, TcpFlags.ACK, 501, TcpOptions(timestamp=(1, 2)))
    raw_ack = build_tcp(empty, SRC, DST)
    row("build_tcp pure ACK", time_per_call(lambda: build_tcp(empty, SRC, DST), repeat), 0)
    row("parse_tcp pure ACK (verify)", time_per_call(lambda: parse_tcp(raw_ack, SRC, DST), repeat), 0)


def bench_plain_tap(repeat: int) -> None:
    """Per wire frame: what a plain TAP's medium does instead of handing the host 44 frames (GRO) or
    building 44 TCP segments (GSO), next to parsing one frame the host's way."""
    print("Plain TAP: software GRO of a read batch, software GSO of a 64 KB super-segment (per wire frame)")
    mss, count = 1448, 44
    frames = [build_tcp_frame(MAC_B, MAC_A, SRC, DST, TcpSegment(
        40000, 80, (1 + i * mss) & 0xFFFFFFFF, 7, TcpFlags.ACK, 501, TcpOptions(timestamp=(1000, 2000)),
        os.urandom(mss))) for i in range(count)]
    row(f"coalesce {count} x {mss} B frames (checksums verified)",
        time_per_call(lambda: coalesce(frames), repeat) / count, mss)
    row(f"parse eth+ipv4+tcp {mss} B (verify checksum)", time_per_call(lambda f=frames[0]: parse_tcp(
        parse_ipv4(parse_ethernet(f).payload).payload, SRC, DST), repeat), mss)
    payload = os.urandom(mss * count)
    big = TcpSegment(40000, 80, 1, 7, TcpFlags.ACK | TcpFlags.PSH, 501, TcpOptions(timestamp=(1000, 2000)),
                     payload)
    head = build_tcp_frame(MAC_B, MAC_A, SRC, DST, big, checksum="partial")[:-len(payload)]
    outgoing = OutgoingFrame(head, memoryview(payload), gso_size=mss, partial_checksum=True)
    row(f"cut_ipv4_tcp {len(payload)} B into {count} packets",
        time_per_call(lambda: cut_ipv4_tcp(outgoing), repeat) / count, mss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timing repetitions; the best is reported")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]} on {os.uname().machine}, best of {args.repeat}")
    bench_checksums(args.repeat)
    bench_tcp(args.repeat)
    bench_plain_tap(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
