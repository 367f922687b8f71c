"""Whole Ethernet/IPv4/TCP frames built in one concatenation.

Building layer by layer (`build_tcp`, then `build_ipv4`, then `build_ethernet`) copies the
payload three times; the host's send path instead asks each layer for its header and joins
headers and payload once here. An optional `prefix` (a virtio_net_hdr for a TAP opened with
IFF_VNET_HDR) rides in the same join. A device that takes a frame in pieces (a TAP's writev) needs no
join at all: `tcp_frame_headers` gives the headers alone, and the payload goes out as it is.
"""

from __future__ import annotations

from stack.wire.ethernet import ETHERTYPE_IPV4, ethernet_header
from stack.wire.ipv4 import DEFAULT_TTL, PROTO_TCP, datagram_header
from stack.wire.tcp import ChecksumMode, TcpSegment, tcp_header


def tcp_frame_headers(dst_mac: bytes, src_mac: bytes, src_ip: bytes, dst_ip: bytes, segment: TcpSegment, *,
                      ttl: int = DEFAULT_TTL, ident: int = 0, dont_fragment: bool = True, tos: int = 0,
                      checksum: ChecksumMode = "full", prefix: bytes = b"") -> bytes:
    """``prefix + Ethernet + IPv4 + TCP headers`` of the frame carrying `segment`, without its payload.

    With ``checksum="partial"`` the TCP checksum is left for the device (NEEDS_CSUM); the IPv4
    header checksum is always complete, as virtio expects.
    """
    tcp = tcp_header(segment, src_ip, dst_ip, checksum)
    ip = datagram_header(src_ip, dst_ip, PROTO_TCP, len(tcp) + len(segment.payload), ttl, ident,
                         dont_fragment, tos)
    return b"".join((prefix, ethernet_header(dst_mac, src_mac, ETHERTYPE_IPV4), ip, tcp))


def build_tcp_frame(dst_mac: bytes, src_mac: bytes, src_ip: bytes, dst_ip: bytes, segment: TcpSegment, *,
                    ttl: int = DEFAULT_TTL, ident: int = 0, dont_fragment: bool = True, tos: int = 0,
                    checksum: ChecksumMode = "full", prefix: bytes = b"") -> bytes:
    """``prefix + Ethernet + IPv4 + TCP headers + payload`` as one bytes object (see `tcp_frame_headers`)."""
    headers = tcp_frame_headers(dst_mac, src_mac, src_ip, dst_ip, segment, ttl=ttl, ident=ident,
                                dont_fragment=dont_fragment, tos=tos, checksum=checksum, prefix=prefix)
    payload = segment.payload
    return headers + payload if len(payload) else headers
