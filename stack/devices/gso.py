"""Software GSO for a plain TAP: an IPv4 TCP frame of the node, cut into wire packets with complete checksums.

A TAP without virtio_net_hdr cannot take a TSO super-segment, so the medium cuts it as Linux's
`tcp_gso_segment` does for a device without TSO: payload chunks of `gso_size` bytes, the sequence number
advancing, FIN and PSH on the last packet only, CWR on the first only, the IPv4 ID incrementing, both
lengths and both checksums recomputed. The node's TCP core then handles one large segment where the wire
carries dozens, which is where the plain path's time went.

This is the fast path for the common frame (Ethernet + IPv4 + TCP, the node's own headers). Each packet
leaves as (header, payload view): the payload is never copied into a joined packet in Python. Anything
else goes through `stack.devices.virtio_net.segment_gso_frame`, the general version.
"""

from __future__ import annotations

from stack.devices.contract import OutgoingFrame
from stack.wire.checksum import fold, pseudo_header_sum, sum_words

_ETH_IPV4 = b"\x08\x00"
_IP = 14
_FIN_PSH = 0x09
_CWR = 0x80


def cut_ipv4_tcp(frame: OutgoingFrame) -> list[tuple[bytes, memoryview]] | None:
    """The packets of `frame` as (headers, payload) pairs, or None when it is not Ethernet + IPv4 + TCP
    with its whole header in `head` (the caller then takes the general path)."""
    head = frame.head
    if len(head) < _IP + 40 or head[12:14] != _ETH_IPV4 or head[_IP + 9] != 6:
        return None
    tcp = _IP + (head[_IP] & 0x0F) * 4
    header_end = tcp + (head[tcp + 12] >> 4) * 4
    if head[_IP] >> 4 != 4 or header_end != len(head):
        return None
    payload = memoryview(frame.payload)
    size = frame.gso_size or len(payload) or 1
    seq = int.from_bytes(head[tcp + 4:tcp + 8], "big")
    ip_id = int.from_bytes(head[_IP + 4:_IP + 6], "big")
    flags = head[tcp + 13]
    addresses_sum = pseudo_header_sum(head[_IP + 12:_IP + 16], head[_IP + 16:_IP + 20], 6, 0)
    template = bytearray(head)
    template[_IP + 10:_IP + 12] = b"\x00\x00"
    template[tcp + 16:tcp + 18] = b"\x00\x00"
    starts = range(0, max(len(payload), 1), size)
    last = len(starts) - 1
    packets = []
    for index, start in enumerate(starts):
        chunk = payload[start:start + size]
        out = bytearray(template)
        packet_flags = flags
        if index != last:
            packet_flags &= ~_FIN_PSH
        if index:
            packet_flags &= ~_CWR
        out[tcp + 13] = packet_flags
        out[tcp + 4:tcp + 8] = ((seq + start) & 0xFFFFFFFF).to_bytes(4, "big")
        ip_length = header_end - _IP + len(chunk)
        out[_IP + 2:_IP + 6] = (ip_length << 16 | (ip_id + index) & 0xFFFF).to_bytes(4, "big")
        out[_IP + 10:_IP + 12] = (~fold(sum_words(out[_IP:tcp])) & 0xFFFF).to_bytes(2, "big")
        tcp_length = header_end - tcp + len(chunk)
        total = sum_words(out[tcp:]) + sum_words(chunk) + addresses_sum + tcp_length
        out[tcp + 16:tcp + 18] = (~fold(total) & 0xFFFF).to_bytes(2, "big")
        packets.append((bytes(out), chunk))
    return packets
