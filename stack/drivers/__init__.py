"""Drivers: the edge where frames leave the sans-IO stack for a real device.

`tap` opens the lab's persistent TAP in plain or virtio_net_hdr offload mode (`TapDevice`) and joins it to a
Host (`TapMedium`); `virtio_net` is the pure codec for that header and the checksum/segmentation rules that
go with it.
"""

from stack.drivers.tap import TapCounters, TapDevice, TapError, TapMedium
from stack.drivers.virtio_net import (
    NO_OFFLOAD,
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_LEN,
    VirtioNetError,
    VirtioNetHdr,
    build_virtio_net_hdr,
    complete_checksum,
    parse_virtio_net_hdr,
    segment_gso_frame,
    tcp_checksum_trusted,
    tx_header_for_frame,
    write_partial_tcp_checksum,
)

__all__ = [
    "NO_OFFLOAD",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_GSO_ECN",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_LEN",
    "TapCounters",
    "TapDevice",
    "TapError",
    "TapMedium",
    "VirtioNetError",
    "VirtioNetHdr",
    "build_virtio_net_hdr",
    "complete_checksum",
    "parse_virtio_net_hdr",
    "segment_gso_frame",
    "tcp_checksum_trusted",
    "tx_header_for_frame",
    "write_partial_tcp_checksum",
]
