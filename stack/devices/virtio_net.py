"""The virtio_net_hdr a TAP opened with IFF_VNET_HDR puts before every frame, and what a stack does with it.

With `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)` the kernel treats the TAP like a NIC with checksum
offload and TSO: it hands the reader TCP "super-segments" of up to 64 KB whose checksum it never computed,
and it accepts such super-segments from the writer, cutting them into MSS-sized packets and checksumming them.
The 10-byte header (Linux `struct virtio_net_hdr`, little-endian once `TUNSETVNETLE` is set) says which:

    flags u8 · gso_type u8 · hdr_len u16 · gso_size u16 · csum_start u16 · csum_offset u16

Everything here is pure: bytes in, bytes or a header out. Three jobs:

* inbound: `tcp_checksum_trusted(hdr, frame)` tells the Host it may skip the TCP checksum (the kernel vouches
  for it; with NEEDS_CSUM the checksum field does not even hold a valid checksum yet);
* outbound: `tx_header_for_frame(frame, mss)` gives the header for a frame the stack sends, and
  `write_partial_tcp_checksum(frame)` puts into the TCP checksum field the value the kernel expects then (the
  folded pseudo-header sum, not complemented) for frames not built with the wire codec's partial mode;
* software fallback: `complete_checksum(frame, hdr)` finishes a NEEDS_CSUM checksum (for a reader that
  verifies checksums), and `segment_gso_frame(frame, hdr)` does in Python all the kernel does with such a
  frame (segments it and completes checksums). Plain mode never needs them -- there the kernel hands the
  TAP only MTU-sized, fully checksummed frames, and the stack must itself emit MSS-sized segments with full
  checksums -- but a userspace link impairment or a packet capture that wants to see the wire does.

Only IPv4 and IPv6 (without extension headers) over untagged Ethernet carry TCP offload here; any other frame
gets an all-zero header (no offload) and must be complete as written.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from stack.wire.checksum import fold, sum_words

VIRTIO_NET_HDR_LEN = 10
"""We always set TUNSETVNETHDRSZ to this: the legacy header without `num_buffers` (that field only matters
with mergeable receive buffers, which a TAP reader never uses)."""

VIRTIO_NET_HDR_F_NEEDS_CSUM = 0x01  # checksum over [csum_start, end) still to be done, stored at +csum_offset
VIRTIO_NET_HDR_F_DATA_VALID = 0x02  # checksum already verified by the kernel
VIRTIO_NET_HDR_F_RSC_INFO = 0x04  # receive-side coalescing info (never set by a TAP)

VIRTIO_NET_HDR_GSO_NONE = 0x00
VIRTIO_NET_HDR_GSO_TCPV4 = 0x01
VIRTIO_NET_HDR_GSO_UDP = 0x03
VIRTIO_NET_HDR_GSO_TCPV6 = 0x04
VIRTIO_NET_HDR_GSO_UDP_L4 = 0x05
VIRTIO_NET_HDR_GSO_ECN = 0x80  # bit OR-ed into gso_type: the first segment carries CWR

ETH_HEADER_LEN = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_TCP = 6
TCP_CHECKSUM_OFFSET = 16  # offset of the checksum field inside the TCP header
TCP_FLAG_FIN = 0x01
TCP_FLAG_PSH = 0x08
TCP_FLAG_CWR = 0x80

_HDR = struct.Struct("<BBHHHH")


class VirtioNetError(ValueError):
    """A frame or header that cannot be handled as asked (one line: what and which value)."""


class VirtioNetHdr(NamedTuple):
    """The header a TAP with IFF_VNET_HDR puts before each frame.  A tuple, not a frozen dataclass: one
    is built for every frame read or written, and a tuple costs a third as much to make."""

    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0  # length of the headers (Ethernet + IP + TCP) in a GSO frame; a hint only
    gso_size: int = 0  # payload bytes per segment (the MSS) when gso_type is not NONE
    csum_start: int = 0  # where the checksummed region starts (the TCP header)
    csum_offset: int = 0  # where, from csum_start, the checksum goes (16 for TCP)

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)

    @property
    def data_valid(self) -> bool:
        return bool(self.flags & VIRTIO_NET_HDR_F_DATA_VALID)

    @property
    def gso_protocol(self) -> int:
        """gso_type without the ECN bit."""
        return self.gso_type & ~VIRTIO_NET_HDR_GSO_ECN

    @property
    def is_gso(self) -> bool:
        return self.gso_protocol != VIRTIO_NET_HDR_GSO_NONE


NO_OFFLOAD = VirtioNetHdr()
"""The header for a frame that is complete as written (ARP, ICMP, fully checksummed TCP)."""


def parse_virtio_net_hdr(data: bytes | bytearray | memoryview) -> VirtioNetHdr:
    """Read the 10-byte header at the start of `data` (what a TAP read returns in offload mode)."""
    if len(data) < VIRTIO_NET_HDR_LEN:
        raise VirtioNetError(f"virtio_net_hdr: need {VIRTIO_NET_HDR_LEN} bytes, got {len(data)}")
    return VirtioNetHdr(*_HDR.unpack_from(data, 0))


def build_virtio_net_hdr(hdr: VirtioNetHdr) -> bytes:
    try:
        return _HDR.pack(hdr.flags, hdr.gso_type, hdr.hdr_len, hdr.gso_size, hdr.csum_start, hdr.csum_offset)
    except struct.error as exc:
        raise VirtioNetError(f"virtio_net_hdr: field out of range in {hdr}: {exc}") from None


# --- locating the TCP header -------------------------------------------------------------------------------


class TcpLayout(NamedTuple):
    """Where the layers of an Ethernet/IP/TCP frame sit; offsets from the start of the frame (a tuple, as
    `VirtioNetHdr`: one per frame)."""

    ip_version: int
    ip_offset: int
    tcp_offset: int
    payload_offset: int
    end: int  # end of the IP packet (Ethernet padding beyond it is not TCP data)

    @property
    def payload_len(self) -> int:
        return self.end - self.payload_offset

    @property
    def tcp_len(self) -> int:
        return self.end - self.tcp_offset


def locate_tcp(frame: bytes | bytearray | memoryview, length: int | None = None) -> TcpLayout | None:
    """Find the TCP header in an Ethernet frame, or None when the frame is not well-formed IPv4/IPv6 + TCP.

    `length`: the whole frame's length when `frame` holds only its headers (a frame sent in pieces).
    Never raises on bad input: the answer None means "treat as a frame without TCP offload".
    """
    have = len(frame)
    n = have if length is None else length
    if have < ETH_HEADER_LEN + 20 or n < have:
        return None
    ethertype = (frame[12] << 8) | frame[13]
    ip = ETH_HEADER_LEN
    if ethertype == ETHERTYPE_IPV4:
        if frame[ip] >> 4 != 4:
            return None
        ihl = (frame[ip] & 0x0F) * 4
        total = (frame[ip + 2] << 8) | frame[ip + 3]
        fragment = ((frame[ip + 6] & 0x3F) << 8) | frame[ip + 7]  # MF bit and offset
        if ihl < 20 or frame[ip + 9] != IPPROTO_TCP or fragment or total < ihl or ip + total > n:
            return None
        tcp, end, version = ip + ihl, ip + total, 4
    elif ethertype == ETHERTYPE_IPV6:
        if n < ip + 40 or frame[ip] >> 4 != 6 or frame[ip + 6] != IPPROTO_TCP:
            return None
        tcp = ip + 40
        end = tcp + ((frame[ip + 4] << 8) | frame[ip + 5])
        version = 6
        if end > n:
            return None
    else:
        return None
    if end - tcp < 20 or tcp + 20 > have:
        return None
    data_offset = (frame[tcp + 12] >> 4) * 4
    if data_offset < 20 or tcp + data_offset > end or tcp + data_offset > have:
        return None
    return TcpLayout(version, ip, tcp, tcp + data_offset, end)


# --- inbound ------------------------------------------------------------------------------------------------


def tcp_checksum_trusted(hdr: VirtioNetHdr | None, frame: bytes | bytearray | memoryview) -> bool:
    """Whether the Host may skip verifying this frame's TCP checksum because the kernel vouches for it.

    True for DATA_VALID (already checked), and for NEEDS_CSUM pointing at this frame's TCP checksum field (the
    frame came from a local kernel socket whose checksum was never computed: the field holds a partial sum and
    verifying it would wrongly fail). False in plain mode (hdr None) and for anything that does not match, so
    the Host then verifies as usual.
    """
    if hdr is None or not hdr.flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID):
        return False
    layout = locate_tcp(frame)
    if layout is None:
        return False
    if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return hdr.csum_start == layout.tcp_offset and hdr.csum_offset == TCP_CHECKSUM_OFFSET
    return True


# --- checksums (RFC 1071) -----------------------------------------------------------------------------------


def _ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The folded one's complement sum of `data` plus the unfolded partial sum `initial` (the wire's helpers,
    so offload and software checksums agree with the kernel's bit for bit)."""
    return fold(sum_words(data) + initial)


def _pseudo_header_sum(frame: bytes | bytearray | memoryview, layout: TcpLayout, tcp_len: int) -> int:
    ip = layout.ip_offset
    addresses = frame[ip + 12 : ip + 20] if layout.ip_version == 4 else frame[ip + 8 : ip + 40]
    return _ones_complement_sum(addresses, IPPROTO_TCP + tcp_len)


def _ipv4_header_checksum(header: bytes | bytearray | memoryview) -> int:
    """Checksum for an IPv4 header whose checksum field is zero."""
    return ~_ones_complement_sum(header) & 0xFFFF


def write_partial_tcp_checksum(frame: bytearray | memoryview) -> TcpLayout:
    """Store the folded pseudo-header sum (not complemented) in the TCP checksum field of `frame`, in place.

    This is what NEEDS_CSUM requires: the kernel (after segmentation: for each segment) adds the sum over
    the TCP header and payload and complements. The sum covers source and destination address, protocol 6
    and the TCP length of the whole frame (header + payload, also for a GSO frame); the kernel adjusts the
    length per segment. Costs a few microseconds regardless of payload size.
    """
    layout = locate_tcp(frame)
    if layout is None:
        raise VirtioNetError("partial checksum: frame is not Ethernet + IPv4/IPv6 + TCP")
    partial = _pseudo_header_sum(frame, layout, layout.tcp_len)
    struct.pack_into("!H", frame, layout.tcp_offset + TCP_CHECKSUM_OFFSET, partial)
    return layout


def write_full_tcp_checksum(frame: bytearray | memoryview) -> TcpLayout:
    """Compute the complete TCP checksum of `frame` in software and store it (NEEDS_CSUM's job, done here)."""
    layout = locate_tcp(frame)
    if layout is None:
        raise VirtioNetError("TCP checksum: frame is not Ethernet + IPv4/IPv6 + TCP")
    field = layout.tcp_offset + TCP_CHECKSUM_OFFSET
    frame[field : field + 2] = b"\x00\x00"
    total = _ones_complement_sum(
        memoryview(frame)[layout.tcp_offset : layout.end], _pseudo_header_sum(frame, layout, layout.tcp_len)
    )
    struct.pack_into("!H", frame, field, ~total & 0xFFFF)
    return layout


def tcp_checksum_valid(frame: bytes | bytearray | memoryview) -> bool:
    """Whether the TCP checksum of a complete (non-offloaded) frame is right; False if it is not TCP."""
    layout = locate_tcp(frame)
    if layout is None:
        return False
    total = _ones_complement_sum(
        memoryview(frame)[layout.tcp_offset : layout.end], _pseudo_header_sum(frame, layout, layout.tcp_len)
    )
    return total == 0xFFFF  # one's complement zero, as Linux checks it


# --- outbound -----------------------------------------------------------------------------------------------


def tx_header_for_frame(frame: bytes | bytearray | memoryview, mss: int,
                        length: int | None = None) -> VirtioNetHdr:
    """The virtio_net_hdr for a frame the stack writes to a TAP in offload mode.

    * TCP over IPv4/IPv6: NEEDS_CSUM at the TCP checksum field, so Python never sums payload. The frame's TCP
      checksum field must hold the partial pseudo-header sum (`build_tcp(..., checksum="partial")` or
      `write_partial_tcp_checksum`), and the IPv4 header checksum must be complete (20 bytes: cheap; the
      kernel redoes it per segment only for GSO frames). When the payload is larger than `mss`, also GSO
      (TCPV4 or TCPV6, ECN bit when CWR is set) with gso_size=mss: the kernel cuts it into mss-sized
      segments, advancing the sequence number, IPv4 ID and lengths, keeping FIN/PSH for the last and CWR
      for the first.
    * anything else (ARP, ICMP, ...): `NO_OFFLOAD`; the frame must be complete.

    `length`: as for `locate_tcp`, when `frame` holds the headers of a frame sent in pieces.
    """
    if mss <= 0:
        raise VirtioNetError(f"tx header: mss must be positive, got {mss}")
    layout = locate_tcp(frame, length)
    if layout is None:
        return NO_OFFLOAD
    if layout.payload_len <= mss:
        return VirtioNetHdr(
            flags=VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start=layout.tcp_offset,
            csum_offset=TCP_CHECKSUM_OFFSET,
        )
    gso_type = VIRTIO_NET_HDR_GSO_TCPV4 if layout.ip_version == 4 else VIRTIO_NET_HDR_GSO_TCPV6
    if frame[layout.tcp_offset + 13] & TCP_FLAG_CWR:
        gso_type |= VIRTIO_NET_HDR_GSO_ECN
    return VirtioNetHdr(
        flags=VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type=gso_type,
        hdr_len=layout.payload_offset,
        gso_size=mss,
        csum_start=layout.tcp_offset,
        csum_offset=TCP_CHECKSUM_OFFSET,
    )


# --- software fallback --------------------------------------------------------------------------------------


def segment_gso_frame(frame: bytes | bytearray | memoryview, hdr: VirtioNetHdr | None) -> list[bytes]:
    """What the kernel would put on the wire for `frame` + `hdr`: MSS-sized frames with complete checksums.

    A frame without GSO comes back alone, its checksum completed when NEEDS_CSUM says so. A TCP GSO frame is
    cut into `hdr.gso_size` payload chunks as Linux's tcp_gso_segment does: sequence numbers advance, FIN
    and PSH stay on the last segment only, CWR on the first only, the IPv4 ID increments per segment,
    lengths and both checksums are recomputed. Raises VirtioNetError for GSO on something that is not TCP
    or a gso_size of 0.
    """
    if hdr is None or not hdr.is_gso:
        out = bytearray(frame)
        if hdr is not None and hdr.needs_csum:
            _complete_checksum(out, hdr)
        return [bytes(out)]
    if hdr.gso_protocol not in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        raise VirtioNetError(f"software GSO: only TCP is supported, gso_type={hdr.gso_type:#x}")
    if hdr.gso_size <= 0:
        raise VirtioNetError(f"software GSO: gso_size must be positive, got {hdr.gso_size}")
    layout = locate_tcp(frame)
    if layout is None:
        raise VirtioNetError("software GSO: frame is not Ethernet + IPv4/IPv6 + TCP")
    view = memoryview(frame)
    headers = view[: layout.payload_offset]
    payload = view[layout.payload_offset : layout.end]
    tcp = layout.tcp_offset
    ip = layout.ip_offset
    seq = int.from_bytes(headers[tcp + 4 : tcp + 8], "big")
    tcp_flags = headers[tcp + 13]
    ip_id = int.from_bytes(headers[ip + 4 : ip + 6], "big") if layout.ip_version == 4 else 0
    chunks = range(0, max(len(payload), 1), hdr.gso_size)
    segments: list[bytes] = []
    for index, start in enumerate(chunks):
        chunk = payload[start : start + hdr.gso_size]
        out = bytearray(headers)
        out += chunk
        last = index == len(chunks) - 1
        flags = tcp_flags
        if not last:
            flags &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH)
        if index:
            flags &= ~TCP_FLAG_CWR
        out[tcp + 13] = flags
        struct.pack_into("!I", out, tcp + 4, (seq + start) & 0xFFFFFFFF)
        if layout.ip_version == 4:
            ihl = layout.tcp_offset - ip
            struct.pack_into("!HH", out, ip + 2, len(out) - ip, (ip_id + index) & 0xFFFF)
            struct.pack_into("!H", out, ip + 10, 0)
            struct.pack_into("!H", out, ip + 10, _ipv4_header_checksum(out[ip : ip + ihl]))
        else:
            struct.pack_into("!H", out, ip + 4, len(out) - tcp)
        write_full_tcp_checksum(out)
        segments.append(bytes(out))
    return segments


def complete_checksum(frame: bytes | bytearray | memoryview, hdr: VirtioNetHdr) -> bytes:
    """`frame` with the checksum NEEDS_CSUM leaves to do computed in software, GSO or not (a GSO frame stays
    one large frame: for a reader that verifies checksums but handles segments of any size)."""
    out = bytearray(frame)
    if hdr.needs_csum:
        _complete_checksum(out, hdr)
    return bytes(out)


def _complete_checksum(frame: bytearray, hdr: VirtioNetHdr) -> None:
    """Finish a NEEDS_CSUM checksum the generic way: sum from csum_start (field holds the partial sum)."""
    field = hdr.csum_start + hdr.csum_offset
    if field + 2 > len(frame):
        raise VirtioNetError(
            f"NEEDS_CSUM: csum_start {hdr.csum_start} + csum_offset {hdr.csum_offset}"
            f" beyond a frame of {len(frame)} bytes"
        )
    layout = locate_tcp(frame)
    end = layout.end if layout is not None and layout.tcp_offset == hdr.csum_start else len(frame)
    total = _ones_complement_sum(memoryview(frame)[hdr.csum_start : end])
    struct.pack_into("!H", frame, field, ~total & 0xFFFF)
