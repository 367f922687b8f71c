"""Ethernet II frames (IEEE 802.3 with an EtherType) and MAC address helpers.

Frames arrive from the TAP without preamble or FCS. 802.1Q / 802.1ad VLAN tags are skipped
and reported in `vlan_ids`, so a host without VLAN support can see that a frame belongs to
another segment and drop it instead of mistaking it for its own traffic.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.compat import SLOTS
from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100  # 802.1Q customer tag
ETHERTYPE_QINQ = 0x88A8  # 802.1ad service tag
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_MIN = 0x0600  # smaller values are 802.3 length fields, not EtherTypes

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
HEADER_LEN = 14
MIN_FRAME_LEN = 60  # without FCS; shorter frames are padded by the sender
MAX_VLAN_TAGS = 2  # QinQ; more tags than that is not a frame a host should accept

_HEADER = struct.Struct("!6s6sH")
_TAG = struct.Struct("!HH")
_ETHERTYPE = struct.Struct("!H")
_VLAN_TYPES = (ETHERTYPE_VLAN, ETHERTYPE_QINQ)


@dataclass(**SLOTS)
class EthernetFrame:
    dst: bytes  # 6-byte MAC
    src: bytes  # 6-byte MAC
    ethertype: int  # values below 0x0600 are 802.3 lengths (e.g. STP's LLC frames)
    payload: BytesLike = b""
    vlan_ids: tuple[int, ...] = ()  # outermost first; empty for an untagged frame


def mac_from_str(text: str) -> bytes:
    """``"02:00:00:00:00:02"`` (or with ``-``) to 6 bytes; ValueError naming the text otherwise."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(part) <= 2 for part in parts):
        raise ValueError(f"bad MAC address {text!r}: want six hex octets like 02:00:00:00:00:01")
    try:
        return bytes(int(part, 16) for part in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r}: want six hex octets like 02:00:00:00:00:01") from None


def mac_to_str(mac: BytesLike) -> str:
    """6 bytes to the lower-case colon form Linux prints (``02:00:00:00:00:02``)."""
    if len(mac) != 6:
        raise ValueError(f"bad MAC address: {len(mac)} bytes, want 6")
    return ":".join(f"{octet:02x}" for octet in bytes(mac))


def is_multicast_mac(mac: BytesLike) -> bool:
    """True for group addresses (broadcast included): the I/G bit of the first octet."""
    return bool(mac[0] & 1)


def parse_ethernet(data: BytesLike) -> EthernetFrame:
    """Split a frame into its header fields and a memoryview of the payload (no copy)."""
    if len(data) < HEADER_LEN:
        raise MalformedPacket(f"ethernet: frame {len(data)} bytes < {HEADER_LEN}-byte header")
    dst, src, ethertype = _HEADER.unpack_from(data)
    offset = HEADER_LEN
    vlan_ids: tuple[int, ...] = ()
    while ethertype in _VLAN_TYPES:
        if len(vlan_ids) == MAX_VLAN_TAGS:
            raise MalformedPacket(f"ethernet: more than {MAX_VLAN_TAGS} VLAN tags")
        if len(data) < offset + _TAG.size:
            raise MalformedPacket(f"ethernet: VLAN tag truncated at byte {offset} of {len(data)}")
        tci, ethertype = _TAG.unpack_from(data, offset)
        vlan_ids = (*vlan_ids, tci & 0x0FFF)
        offset += _TAG.size
    return EthernetFrame(dst, src, ethertype, memoryview(data)[offset:], vlan_ids)


def ethernet_header(dst: bytes, src: bytes, ethertype: int, vlan_ids: tuple[int, ...] = ()) -> bytes:
    """The header alone, for callers that join it with the other layers in one go."""
    if len(dst) != 6 or len(src) != 6:
        raise ValueError(f"ethernet: MAC addresses must be 6 bytes (dst {len(dst)}, src {len(src)})")
    if not vlan_ids:
        return _HEADER.pack(dst, src, ethertype)
    parts = [dst, src]
    for index, vid in enumerate(vlan_ids):
        if not 0 <= vid <= 0x0FFF:
            raise ValueError(f"ethernet: VLAN id {vid} outside 0..4095")
        # The outer tag of a QinQ pair is an 802.1ad S-tag, the inner one an 802.1Q C-tag.
        tpid = ETHERTYPE_QINQ if index < len(vlan_ids) - 1 else ETHERTYPE_VLAN
        parts.append(_TAG.pack(tpid, vid))
    parts.append(_ETHERTYPE.pack(ethertype))
    return b"".join(parts)


def build_ethernet(frame: EthernetFrame, pad: bool = False) -> bytes:
    """Header plus payload in one concatenation; `pad` fills short frames to 60 bytes like a NIC."""
    header = ethernet_header(frame.dst, frame.src, frame.ethertype, frame.vlan_ids)
    short = MIN_FRAME_LEN - len(header) - len(frame.payload)
    if pad and short > 0:
        return b"".join((header, frame.payload, bytes(short)))
    return b"".join((header, frame.payload))
