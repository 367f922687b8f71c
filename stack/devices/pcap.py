"""The classic libpcap file format, so captures open in tcpdump and Wireshark.

Microsecond timestamps, native byte order on write (readers detect it from the magic), and a
reader for both byte orders and the nanosecond variant, for tests and the lab's captures.
`PcapRecorder` is a bounded capture a running node writes of what it sends and receives.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

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


class PcapRecorder:
    """A pcap file of the frames a node sends and receives, at most `max_bytes` long.

    Frames are recorded as the node hands them to its device and as the device hands them over: a
    TSO super-frame is one record of up to 64 KB whose TCP checksum the device was left to finish,
    as tcpdump on the TAP shows it. Once the next record would pass `max_bytes` the recorder is
    `full` and counts what it leaves out (`dropped`); the file stays valid. `wall_offset` turns the
    driver's clock into the wall-clock time a pcap carries.
    """

    def __init__(self, fileobj: BinaryIO, max_bytes: int, wall_offset: float, path: str = "") -> None:
        self._file = fileobj
        self._writer = PcapWriter(fileobj)
        self.path = path
        self.max_bytes = max_bytes
        self.wall_offset = wall_offset
        self.bytes = _GLOBAL_HEADER.size
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.full = False

    @classmethod
    def create(cls, path: str, max_bytes: int, wall_offset: float) -> PcapRecorder:
        """A new file at `path` (replaced if it is a regular file; never through a symbolic link)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        return cls(os.fdopen(fd, "wb"), max_bytes, wall_offset, path)

    def record(self, frame: BytesLike, now: float, *, received: bool) -> None:
        size = _RECORD_HEADER.size + min(len(frame), self._writer.snaplen)
        if self.full or self.bytes + size > self.max_bytes:
            self.full = True
            self.dropped += 1
            return
        self._writer.write(frame, now + self.wall_offset)
        self.bytes += size
        if received:
            self.frames_in += 1
        else:
            self.frames_out += 1

    def close(self) -> None:
        self._file.close()

    def status(self) -> dict[str, Any]:
        return {"path": self.path, "frames_in": self.frames_in, "frames_out": self.frames_out,
                "bytes": self.bytes, "max_bytes": self.max_bytes, "dropped": self.dropped, "full": self.full}


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
