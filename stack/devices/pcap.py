"""The classic libpcap file format, so captures open in tcpdump and Wireshark.

Microsecond timestamps, native byte order on write (readers detect it from the magic), and a
reader for both byte orders and the nanosecond variant, for tests and the lab's captures.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # bare IPv4/IPv6 packets, no link header
DEFAULT_SNAPLEN = 262144  # tcpdump's default; big enough for 64 KB TSO super-frames

MAGIC_MICROSECONDS = 0xA1B2C3D4
MAGIC_NANOSECONDS = 0xA1B23C4D

_GLOBAL_HEADER = struct.Struct("=IHHiIII")
_RECORD_HEADER = struct.Struct("=IIII")


class PcapWriter:
    """Append frames to a pcap stream; the global header is written on creation."""

    def __init__(self, fileobj: BinaryIO, linktype: int = LINKTYPE_ETHERNET,
                 snaplen: int = DEFAULT_SNAPLEN) -> None:
        self._file = fileobj
        self.snaplen = snaplen
        self.linktype = linktype
        self.frames = 0
        fileobj.write(_GLOBAL_HEADER.pack(MAGIC_MICROSECONDS, 2, 4, 0, 0, snaplen, linktype))

    def write(self, frame: BytesLike, timestamp: float) -> None:
        """One record; frames longer than the snap length are cut, keeping their real length."""
        seconds = int(timestamp)
        microseconds = round((timestamp - seconds) * 1_000_000)
        if microseconds >= 1_000_000:
            seconds, microseconds = seconds + 1, microseconds - 1_000_000
        captured = min(len(frame), self.snaplen)
        self._file.write(_RECORD_HEADER.pack(seconds, microseconds, captured, len(frame)))
        self._file.write(frame[:captured] if captured < len(frame) else frame)
        self.frames += 1

    def flush(self) -> None:
        self._file.flush()


def read_pcap(fileobj: BinaryIO) -> Iterator[tuple[float, bytes]]:
    """Yield (timestamp, captured bytes) per record; MalformedPacket on a broken file."""
    header = fileobj.read(_GLOBAL_HEADER.size)
    if len(header) < _GLOBAL_HEADER.size:
        raise MalformedPacket(f"pcap: file header {len(header)} bytes < {_GLOBAL_HEADER.size}")
    for order in ("<", ">"):
        magic = struct.unpack_from(order + "I", header)[0]
        if magic in (MAGIC_MICROSECONDS, MAGIC_NANOSECONDS):
            break
    else:
        raise MalformedPacket(f"pcap: bad magic 0x{struct.unpack_from('<I', header)[0]:08x}")
    scale = 1e-6 if magic == MAGIC_MICROSECONDS else 1e-9
    record = struct.Struct(order + "IIII")
    while True:
        raw = fileobj.read(record.size)
        if not raw:
            return
        if len(raw) < record.size:
            raise MalformedPacket(f"pcap: record header truncated ({len(raw)} bytes)")
        seconds, fraction, captured, _original = record.unpack(raw)
        data = fileobj.read(captured)
        if len(data) < captured:
            raise MalformedPacket(f"pcap: record of {captured} bytes truncated to {len(data)}")
        yield seconds + fraction * scale, data
