"""`PacketPort`: every frame that arrives on one kernel interface, and a way to put frames on it.

An AF_PACKET socket bound to the interface, with a virtio_net header on each frame (PACKET_VNET_HDR).
A veth hands over what its peer's kernel sent as it is: TCP super-segments of up to 64 KB (TSO/GSO)
with their checksums still to be done. The header says so (gso_type, gso_size, NEEDS_CSUM with
csum_start/csum_offset from the start of the frame), so a reader can pass a super-segment on whole
(writing it back with the same header: the kernel segments it later, as if the frame had crossed one
veth) or cut it into wire packets with `stack.devices.virtio_net.segment_gso_frame`. Handling large
frames this way, rather than switching offloads off on the interfaces, keeps the senders' kernels
on their fast path.

The socket is promiscuous (frames for the far node's MAC are read too) and ignores the frames it
sends itself (PACKET_IGNORE_OUTGOING), so forwarding between two ports never loops.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from stack.compat import SLOTS, interface_index
from stack.devices.tap import Buffer
from stack.devices.virtio_net import VIRTIO_NET_HDR_LEN

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23  # Linux 4.20
MAX_FRAME = VIRTIO_NET_HDR_LEN + 65535 + 18  # header + the largest IP packet + Ethernet with a VLAN tag
SOCKET_BUFFER_BYTES = 8 * 1024 * 1024  # a burst of super-segments waits here while the loop is busy
_MEMBERSHIP = struct.Struct("iHH8s")  # struct packet_mreq
NO_OFFLOAD_HEADER = bytes(VIRTIO_NET_HDR_LEN)


@dataclass(**SLOTS)
class PortCounters:
    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0  # the interface's queue was full (EAGAIN/ENOBUFS): the frame is lost, as on a wire


class PacketPort:
    """Frames in and out of interface `ifname` of the calling thread's namespace, each with its
    virtio_net header in front (10 bytes)."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.counters = PortCounters()
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            index = interface_index(ifname)
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                            _MEMBERSHIP.pack(index, PACKET_MR_PROMISC, 0, b""))
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._buffer = bytearray(MAX_FRAME)
        self._view = memoryview(self._buffer)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_batch(self, max_frames: int) -> list[bytes]:
        """Up to `max_frames` frames waiting now, each as virtio_net header + Ethernet frame."""
        frames: list[bytes] = []
        recv_into, view = self.sock.recv_into, self._view
        for _ in range(max_frames):
            try:
                size = recv_into(view)
            except BlockingIOError:
                break
            if size <= VIRTIO_NET_HDR_LEN:
                continue
            frames.append(bytes(view[:size]))
            self.counters.rx_bytes += size - VIRTIO_NET_HDR_LEN
        self.counters.rx_frames += len(frames)
        return frames

    def write(self, frame: Buffer) -> bool:
        """Send one header + frame; False (and counted) when the interface cannot take it now."""
        try:
            self.sock.send(frame)
        except (BlockingIOError, OSError) as error:
            if isinstance(error, BlockingIOError) or error.errno in (105, 11):  # ENOBUFS, EAGAIN
                self.counters.tx_dropped += 1
                return False
            raise
        self.counters.tx_frames += 1
        self.counters.tx_bytes += len(memoryview(frame)) - VIRTIO_NET_HDR_LEN
        return True

    def close(self) -> None:
        self.sock.close()
