"""The TCP header and its options (RFC 9293 section 3.1, RFC 7323, RFC 2018).

A `TcpSegment` is what the sans-IO TCP core consumes and produces; `parse_tcp` and
`build_tcp` turn it into bytes and back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Literal

from stack.compat import SLOTS
from stack.wire.buffer import BytesLike
from stack.wire.checksum import fold, pseudo_header_sum, sum_words
from stack.wire.errors import MalformedPacket
from stack.wire.tlv import walk_options


class TcpFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


@dataclass(frozen=True, **SLOTS)
class TcpOptions:
    """The options a segment carries; None/False/() means absent."""

    mss: int | None = None
    wscale: int | None = None  # window scale shift count (RFC 7323)
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()  # (left edge, right edge) pairs (RFC 2018)
    timestamp: tuple[int, int] | None = None  # (TSval, TSecr) (RFC 7323)


NO_OPTIONS = TcpOptions()


@dataclass(**SLOTS)
class TcpSegment:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: TcpFlags
    window: int  # the raw 16-bit field, before window scaling
    options: TcpOptions = field(default=NO_OPTIONS)
    payload: bytes | memoryview = b""
    urgent: int = 0
    # Not a header field: how TCP hands a TSO super-segment down (Linux keeps gso_size beside the skb).
    # Above 0, the device cuts the payload into segments of this many bytes; 0 means one packet.
    gso_size: int = field(default=0, compare=False)

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload octets plus one for SYN and one for FIN."""
        return (len(self.payload) + (1 if self.flags & TcpFlags.SYN else 0)
                + (1 if self.flags & TcpFlags.FIN else 0))


# --- Parsing and building -------------------------------------------------------------------------------
#
# Option handling follows Linux's tcp_parse_options: an option whose length byte is < 2 or runs past the
# header ends option parsing (the options read so far are kept and the segment is still accepted), and a
# known option with the wrong length is ignored. A malformed option area therefore never rejects a segment
# and never loops: each step advances by at least one byte. Values are reported as received (a window
# scale above 14, an MSS of 0): clamping them is the TCP core's policy, not the codec's.

PROTO_TCP = 6
HEADER_LEN = 20
MAX_OPTIONS_LEN = 40
MAX_HEADER_LEN = HEADER_LEN + MAX_OPTIONS_LEN

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8
MAX_SACK_BLOCKS = 4

ChecksumMode = Literal["full", "partial", "none"]
"""How `build_tcp` fills the checksum field.

full: the real checksum. partial: the folded pseudo-header sum, not complemented, for a device that
finishes the sum (virtio_net_hdr NEEDS_CSUM, csum_start at the TCP header, csum_offset 16). none: zero
(for tests, or when a later stage computes it)."""

_HEADER = struct.Struct("!HHIIBBHHH")
# The common data-segment layout Linux sends: header + NOP NOP TS(TSval, TSecr).
_HEADER_TS = struct.Struct("!HHIIBBHHHIII")
_NOP_NOP_TS = 0x0101080A
_NOP_NOP_TS_WORDS = 0x0101 + 0x080A
_OPTIONS_TS = struct.Struct("!II")
_MSS = struct.Struct("!BBH")
_TS_WITH_PREFIX = struct.Struct("!BBBBII")
_SACK_HEADER = struct.Struct("!BBBB")
_SACK_PERMITTED_ALONE = bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
_FLAGS = tuple(TcpFlags(value) for value in range(256))  # interned: TcpFlags(x) costs a lookup per call
_CHECKSUM_MODES = ("full", "partial", "none")


def parse_options(options: BytesLike) -> TcpOptions:
    """Decode an option area (the bytes between the 20-byte header and the data)."""
    mss = wscale = timestamp = None
    sack_permitted = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    for kind, index, size in walk_options(options):
        if kind == OPT_MSS:
            if size == 4:
                mss = options[index + 2] << 8 | options[index + 3]
        elif kind == OPT_WSCALE:
            if size == 3:
                wscale = options[index + 2]
        elif kind == OPT_SACK_PERMITTED:
            if size == 2:
                sack_permitted = True
        elif kind == OPT_SACK:
            if size >= 10 and (size - 2) % 8 == 0:
                edges = struct.unpack_from(f"!{(size - 2) // 4}I", options, index + 2)
                sack_blocks = tuple(zip(edges[::2], edges[1::2]))
        elif kind == OPT_TIMESTAMP and size == 10:
            timestamp = _OPTIONS_TS.unpack_from(options, index + 2)
    if mss is None and wscale is None and timestamp is None and not sack_permitted and not sack_blocks:
        return NO_OPTIONS
    return TcpOptions(mss, wscale, sack_permitted, sack_blocks, timestamp)


def _checksum_ok(data: BytesLike, src_ip: bytes, dst_ip: bytes, length: int) -> bool:
    return fold(sum_words(data) + pseudo_header_sum(src_ip, dst_ip, PROTO_TCP, length)) == 0xFFFF


def parse_tcp(data: BytesLike, src_ip: bytes, dst_ip: bytes, verify_checksum: bool = True) -> TcpSegment:
    """Parse a TCP segment (header, options, data); the payload is a memoryview slice of `data`.

    `src_ip`/`dst_ip` (4 bytes each) feed the pseudo-header checksum. Pass
    `verify_checksum=False` for segments a device marked as checksummed or still partial
    (virtio_net_hdr DATA_VALID / NEEDS_CSUM). Reserved header bits are ignored (RFC 9293).
    """
    length = len(data)
    if length < HEADER_LEN:
        raise MalformedPacket(f"tcp: segment {length} bytes < {HEADER_LEN}-byte header")
    offset_byte = data[12]
    header_length = (offset_byte >> 4) * 4
    if header_length < HEADER_LEN:
        raise MalformedPacket(f"tcp: data offset {offset_byte >> 4} < 5")
    if header_length > length:
        raise MalformedPacket(
            f"tcp: data offset {offset_byte >> 4} ({header_length} bytes) > {length} bytes received")
    if verify_checksum and not _checksum_ok(data, src_ip, dst_ip, length):
        stored = data[16] << 8 | data[17]
        raise MalformedPacket(f"tcp: bad checksum 0x{stored:04x}")
    view = memoryview(data)
    if header_length == 32:
        src_port, dst_port, seq, ack, _offset, flags, window, _checksum, urgent, prefix, tsval, tsecr = (
            _HEADER_TS.unpack_from(data))
        if prefix == _NOP_NOP_TS:
            return TcpSegment(src_port, dst_port, seq, ack, _FLAGS[flags], window,
                              TcpOptions(timestamp=(tsval, tsecr)), view[32:], urgent)
    else:
        src_port, dst_port, seq, ack, _offset, flags, window, _checksum, urgent = _HEADER.unpack_from(data)
        if header_length == HEADER_LEN:
            return TcpSegment(src_port, dst_port, seq, ack, _FLAGS[flags], window, NO_OPTIONS,
                              view[HEADER_LEN:], urgent)
    options = parse_options(view[HEADER_LEN:header_length])
    return TcpSegment(src_port, dst_port, seq, ack, _FLAGS[flags], window, options,
                      view[header_length:], urgent)


def build_options(options: TcpOptions) -> bytes:
    """Lay options out as Linux's tcp_options_write does, so captures look familiar.

    SYN: ``MSS, SACK_PERM TS`` (or ``NOP NOP TS`` / ``NOP NOP SACK_PERM``), ``NOP WS``;
    data: ``NOP NOP TS``, then ``NOP NOP SACK``. Every piece is 4-byte aligned, so no padding is
    needed; SACK blocks that do not fit in the 40-byte option space are dropped (the first ones,
    the most recent per RFC 2018, are kept).
    """
    try:
        return _build_options(options)
    except struct.error as error:
        raise ValueError(f"tcp: option value out of range ({error}): {options!r}"[:300]) from None


def _build_options(options: TcpOptions) -> bytes:
    parts = []
    used = 0
    if options.mss is not None:
        parts.append(_MSS.pack(OPT_MSS, 4, options.mss))
        used += 4
    if options.timestamp is not None:
        tsval, tsecr = options.timestamp
        if options.sack_permitted:
            parts.append(_TS_WITH_PREFIX.pack(OPT_SACK_PERMITTED, 2, OPT_TIMESTAMP, 10, tsval, tsecr))
        else:
            parts.append(_TS_WITH_PREFIX.pack(OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, tsval, tsecr))
        used += 12
    elif options.sack_permitted:
        parts.append(_SACK_PERMITTED_ALONE)
        used += 4
    if options.wscale is not None:
        parts.append(_SACK_HEADER.pack(OPT_NOP, OPT_WSCALE, 3, options.wscale))
        used += 4
    if options.sack_blocks:
        blocks = options.sack_blocks[:min(MAX_SACK_BLOCKS, (MAX_OPTIONS_LEN - used - 4) // 8)]
        if blocks:
            parts.append(_SACK_HEADER.pack(OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks)))
            parts.append(struct.pack(f"!{2 * len(blocks)}I", *(edge for block in blocks for edge in block)))
    return b"".join(parts)


def _finish_checksum(mode: str, header_sum: int, payload_sum: int, pseudo: int) -> int:
    if mode == "full":
        return ~fold(header_sum + payload_sum + pseudo) & 0xFFFF
    if mode == "partial":
        return fold(pseudo)
    if mode == "none":
        return 0
    raise ValueError(f"tcp: checksum mode {mode!r}, want one of {', '.join(_CHECKSUM_MODES)}")


def tcp_header(segment: TcpSegment, src_ip: bytes, dst_ip: bytes, checksum: ChecksumMode = "full") -> bytes:
    """The header and options alone; the checksum covers `segment.payload` too.

    For callers that join every layer's header and the payload in one concatenation.
    """
    payload = segment.payload
    opts = segment.options
    fast_ts = (opts.timestamp is not None and opts.mss is None and opts.wscale is None
               and not opts.sack_permitted and not opts.sack_blocks)
    option_bytes = b"" if opts is NO_OPTIONS or fast_ts else build_options(opts)
    header_length = 32 if fast_ts else HEADER_LEN + len(option_bytes)
    flags = int(segment.flags)
    # Word sum from the fields (32-bit values count as the sum of their halves modulo 0xFFFF).
    header_sum = (segment.src_port + segment.dst_port + segment.seq + segment.ack
                  + (header_length << 10 | flags) + segment.window + segment.urgent)
    if fast_ts:
        tsval, tsecr = opts.timestamp  # type: ignore[misc]
        header_sum += _NOP_NOP_TS_WORDS + tsval + tsecr
    elif option_bytes:
        header_sum += sum_words(option_bytes)
    payload_sum = sum_words(payload) if checksum == "full" and payload else 0
    pseudo = pseudo_header_sum(src_ip, dst_ip, PROTO_TCP, header_length + len(payload))
    value = _finish_checksum(checksum, header_sum, payload_sum, pseudo)
    try:
        if fast_ts:
            return _HEADER_TS.pack(segment.src_port, segment.dst_port, segment.seq, segment.ack, 0x80, flags,
                                   segment.window, value, segment.urgent, _NOP_NOP_TS, tsval, tsecr)
        header = _HEADER.pack(segment.src_port, segment.dst_port, segment.seq, segment.ack,
                              header_length << 2, flags, segment.window, value, segment.urgent)
    except struct.error as error:
        raise ValueError(f"tcp: header field out of range ({error}): {segment!r}"[:300]) from None
    return header + option_bytes if option_bytes else header


def build_tcp(segment: TcpSegment, src_ip: bytes, dst_ip: bytes, checksum: ChecksumMode = "full") -> bytes:
    """Header, options and payload, concatenated once. See `ChecksumMode` for `checksum`."""
    return b"".join((tcp_header(segment, src_ip, dst_ip, checksum), segment.payload))
