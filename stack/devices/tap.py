"""The TAP device: where the Python stack's frames meet the kernel.

`TapDevice` opens an existing persistent TAP (the lab creates `tap0` in each pystack node's namespace) with
python-pytun, in one of two modes:

* plain: frames as they are on the wire. The driver switches the device's offloads off (TUNSETOFFLOAD 0), so
  the kernel segments and checksums everything before handing it over, and expects the same from the stack.
* offload: IFF_VNET_HDR + TUNSETOFFLOAD(CSUM | TSO4 | TSO6). Every frame, both ways, is preceded by a 10-byte
  virtio_net_hdr (see `virtio_net`); the kernel hands over 64 KB TCP super-segments with checksums left to do
  and accepts the same back. This is what lets a Python stack move gigabits: few large segments, no checksums
  over payload in Python.

Offload is asked for, not assumed: if the kernel refuses TUNSETOFFLOAD or the header size, the device is
reopened in plain mode and `offload_refused_reason` says why.

The file descriptor is non-blocking: `read()` returns None when nothing is ready, and the event loop waits on
`fileno()` with selectors/asyncio. Only this module and the event loop touch the descriptor.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

from stack.compat import SLOTS, interface_index, writev
from stack.devices.contract import FrameNode, OutgoingFrame
from stack.devices.gro import GroCounters, coalesce
from stack.devices.gso import cut_ipv4_tcp
from stack.devices.namespace import entered, namespace_path
from stack.devices.pcap import PcapRecorder
from stack.devices.virtio_net import (
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

# <linux/if_tun.h>
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_PERSIST = 0x0800
IFF_MULTI_QUEUE = 0x0100  # the device was created multi-queue: each descriptor opened on it is one queue
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUNSETVNETLE = 0x400454DC
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
OFFLOAD_FEATURES = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6

ETH_MAX_HEADER = 18  # Ethernet header with one VLAN tag
MAX_GSO_FRAME = 65535 + ETH_MAX_HEADER  # an IP packet is at most 65535 bytes (the TAP's gso_max_size: 64 KB)
PLAIN_READ_SIZE = 65535 + ETH_MAX_HEADER  # the MTU may be raised up to 64 KB; a bigger buffer costs nothing
_IFREQ = struct.Struct("16sH")
Buffer = Union[bytes, bytearray, memoryview]


class TapError(OSError):
    """Opening or configuring the TAP failed; the message is one line naming the device and the cause."""


@dataclass(**SLOTS)
class TapCounters:
    """What passed through the descriptor; `tx_rejected` counts frames the kernel refused (EINVAL/EIO...)."""

    rx_frames: int = 0
    rx_bytes: int = 0
    rx_bad_header: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    tx_rejected: int = 0
    rx_empty_reads: int = 0  # reads that found nothing waiting (EAGAIN): what polling an idle TAP costs


class TapDevice:
    """A persistent TAP opened in plain or offload mode; non-blocking reads and writes of whole frames."""

    def __init__(self, name: str, offload: bool = True, multi_queue: bool = False) -> None:
        """Open the TAP `name` in the calling thread's namespace; offload=True asks for virtio_net_hdr.

        `multi_queue`: the device was created with IFF_MULTI_QUEUE and this descriptor becomes one more of
        its queues (one per worker process of a node); the kernel spreads the frames it sends over them."""
        self.name = name
        self.multi_queue = multi_queue
        self.counters = TapCounters()
        self.offload = False
        self.offload_refused_reason: str | None = None
        self._device: object | None = None  # the pytun.TunTapDevice holding the descriptor
        self._fd = -1
        self._read_size = PLAIN_READ_SIZE
        try:
            interface_index(name)
        except OSError:
            raise TapError(errno.ENODEV, f"no network device named {name!r} in this namespace") from None
        if offload:
            try:
                self._open(vnet_hdr=True)
                return
            except _OffloadRefused as refused:
                self.offload_refused_reason = str(refused)
        self._open(vnet_hdr=False)

    @classmethod
    def open_in_namespace(cls, netns: str, name: str, offload: bool = True,
                          multi_queue: bool = False) -> TapDevice:
        """Open the TAP `name` living in network namespace `netns`; the process itself stays where it is."""
        path = namespace_path(netns)
        if not os.path.exists(path):
            raise TapError(errno.ENOENT, f"network namespace {netns!r} does not exist (no {path})")
        try:
            with entered(path):
                return cls(name, offload, multi_queue)
        except TapError:
            raise
        except OSError as exc:
            raise TapError(exc.errno or errno.EIO, f"TAP {name!r} in namespace {netns!r}: {exc}") from None

    # --- opening ------------------------------------------------------------------------------------------

    def _open(self, vnet_hdr: bool) -> None:
        import pytun  # imported here: pure users of the stack (tests, the memory driver) do not need it

        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        if self.multi_queue:
            flags |= IFF_MULTI_QUEUE
        try:
            device = pytun.TunTapDevice(name=self.name, flags=flags)
        except pytun.Error as exc:
            raise TapError(*_explain_open_error(self.name, exc)) from None
        fd = device.fileno()
        try:
            _require_persistent(self.name, fd)
            if vnet_hdr:
                _configure_offload(self.name, fd)
            else:
                fcntl.ioctl(fd, TUNSETOFFLOAD, 0)  # else a TSO setting left by an offload reader sticks
            os.set_blocking(fd, False)
        except BaseException:
            device.close()
            raise
        self._device = device
        self._fd = fd
        self.offload = vnet_hdr
        self._read_size = VIRTIO_NET_HDR_LEN + MAX_GSO_FRAME if vnet_hdr else PLAIN_READ_SIZE

    # --- I/O ----------------------------------------------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def read(self) -> tuple[VirtioNetHdr | None, memoryview] | None:
        """The next frame and its header (None in plain mode), or None when nothing is waiting.

        The frame is a memoryview over a fresh immutable bytes object (no 64 KB copy to drop the header);
        it stays valid after later reads. A frame too short for its header is counted and skipped.
        """
        while True:
            try:
                data = os.read(self._fd, self._read_size)
            except BlockingIOError:
                self.counters.rx_empty_reads += 1
                return None
            view = memoryview(data)
            if not self.offload:
                self.counters.rx_frames += 1
                self.counters.rx_bytes += len(data)
                return None, view
            try:
                hdr = parse_virtio_net_hdr(view)
            except VirtioNetError:
                self.counters.rx_bad_header += 1
                continue
            self.counters.rx_frames += 1
            self.counters.rx_bytes += len(data) - VIRTIO_NET_HDR_LEN
            return hdr, view[VIRTIO_NET_HDR_LEN:]

    def read_batch(self, max_frames: int = 64) -> list[tuple[VirtioNetHdr | None, memoryview]]:
        """Up to `max_frames` frames that are ready now (bounded, so one busy TAP cannot starve the loop)."""
        frames = []
        for _ in range(max_frames):
            item = self.read()
            if item is None:
                break
            frames.append(item)
        return frames

    def write(self, frame: Buffer, hdr: VirtioNetHdr | None = None) -> bool:
        """Send one frame; in offload mode with its header (None means "complete as written").

        Returns False, counting it in `tx_rejected`, when the kernel refuses the frame (a malformed header or
        frame: EINVAL, EIO...), so one bad frame never stops the stack. A TAP write never blocks and is never
        partial. Other errors (a closed descriptor) raise.
        """
        return self.write_parts((frame,), hdr)

    def write_parts(self, parts: Sequence[Buffer], hdr: VirtioNetHdr | None = None) -> bool:
        """Send one frame given in pieces, e.g. (headers, payload view): one writev, no joining in Python.

        Same contract as `write`; this is how a 64 KB segment goes out without copying its payload.
        """
        try:
            if self.offload:
                header = _NO_OFFLOAD_BYTES if hdr is None else build_virtio_net_hdr(hdr)
                writev(self._fd, (header, *parts))
            elif hdr is not None and (hdr.flags or hdr.gso_type):
                raise VirtioNetError(f"{self.name}: plain mode cannot send a frame needing offload ({hdr})")
            else:
                writev(self._fd, parts)
        except VirtioNetError:
            self.counters.tx_rejected += 1
            return False
        except OSError as exc:
            if exc.errno in _FRAME_REFUSED_ERRNOS:
                self.counters.tx_rejected += 1
                return False
            raise
        self.counters.tx_frames += 1
        self.counters.tx_bytes += sum(len(part) for part in parts)
        return True

    def close(self) -> None:
        """Release the descriptor (the persistent device stays). Idempotent."""
        if self._device is not None:
            self._device.close()
            self._device = None
            self._fd = -1

    def __enter__(self) -> TapDevice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "offload" if self.offload else "plain"
        return f"TapDevice({self.name!r}, {mode}, fd={self._fd})"


_NO_OFFLOAD_BYTES = bytes(VIRTIO_NET_HDR_LEN)
_FRAME_REFUSED_ERRNOS = frozenset(
    (errno.EINVAL, errno.EIO, errno.EFAULT, errno.ENOMEM, errno.ENOBUFS, errno.EMSGSIZE)
)


class _OffloadRefused(Exception):
    """The kernel would not do virtio_net_hdr offload on this device; the message says which step failed."""


def _configure_offload(name: str, fd: int) -> None:
    """Header size, byte order, then the offloads themselves (TUNSETOFFLOAD takes its flags by value)."""
    steps = (
        ("TUNSETVNETHDRSZ", TUNSETVNETHDRSZ, struct.pack("i", VIRTIO_NET_HDR_LEN)),
        ("TUNSETVNETLE", TUNSETVNETLE, struct.pack("i", 1)),
        ("TUNSETOFFLOAD", TUNSETOFFLOAD, OFFLOAD_FEATURES),
    )
    for label, request, argument in steps:
        try:
            fcntl.ioctl(fd, request, argument)
        except OSError as exc:
            if label == "TUNSETVNETLE" and exc.errno == errno.EINVAL and _native_little_endian():
                continue  # kernels without cross-endian support refuse it; little-endian is native anyway
            raise _OffloadRefused(f"{name}: {label} refused by the kernel: {exc.strerror}") from None


def _native_little_endian() -> bool:
    return struct.pack("=H", 1) == b"\x01\x00"


def _require_persistent(name: str, fd: int) -> None:
    """TUNSETIFF creates a device when none exists; make sure we attached to the lab's persistent one."""
    raw = fcntl.ioctl(fd, TUNGETIFF, _IFREQ.pack(b"", 0))
    flags = _IFREQ.unpack(raw)[1]
    if not flags & IFF_PERSIST:
        raise TapError(errno.ENODEV, f"{name!r} is not a persistent TAP (it vanished before it was opened)")


def _explain_open_error(name: str, exc: Exception) -> tuple[int, str]:
    text = str(exc)
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    if code == errno.EBUSY or "busy" in text.lower():
        return errno.EBUSY, f"TAP {name!r} is already open elsewhere (one descriptor per device)"
    if code == errno.EINVAL or "invalid argument" in text.lower():
        return errno.EINVAL, f"{name!r} exists but is not a TAP device (or is a multi-queue one)"
    if code == errno.EPERM or "not permitted" in text.lower():
        return errno.EPERM, f"not allowed to open TAP {name!r}: needs CAP_NET_ADMIN or the device's owner"
    if code == errno.ENOENT or "no such file" in text.lower():
        return errno.ENOENT, f"cannot open TAP {name!r}: /dev/net/tun is missing (tun module not loaded?)"
    return code or errno.EIO, f"cannot open TAP {name!r}: {text}"


class TapMedium:
    """Joins one sans-IO node (a Host) to a `TapDevice`: a `Medium` (`stack.devices.contract`) for a device.

    `step(now)` hands the node's outgoing frames to the TAP and the frames ready on the TAP to the node. The
    medium has no timers of its own (`next_deadline()` is None): frames arrive when the kernel sends them, so
    whoever runs the loop also waits on `fileno()` (select/poll, or asyncio's add_reader).

    Offload mode, receiving: the kernel hands over TCP super-segments of up to 64 KB whose checksum it
    never computed (NEEDS_CSUM) or already verified (DATA_VALID). The kernel vouches for those, so the
    medium tells the node `checksum_verified=True` (`tcp_checksum_trusted`) and Python never sums the
    payload. Anything else marked NEEDS_CSUM has its checksum completed in software, so a node that verifies
    still accepts it.

    Sending: each `OutgoingFrame` says what is left to do.  A frame with a partial TCP checksum goes out
    with NEEDS_CSUM, and a TSO super-segment with GSO (gso_size = the connection's MSS); a wire-ready frame
    goes out as written.  Frames come in two pieces (headers, payload) and leave with one writev, so a 64 KB
    payload is never copied into a joined frame in Python.  In plain mode, frames that need the device are
    finished in software (`stack.devices.gso` for IPv4 TCP, `segment_gso_frame` otherwise), so a node need
    not know the device's mode, and a read batch's adjacent in-order data frames of one connection are
    merged before the node sees them (`stack.devices.gro`), as Linux's GRO does.
    """

    def __init__(self, node: FrameNode, tap: TapDevice, batch: int = 64,
                 clock: Callable[[], float] | None = None) -> None:
        self.nodes: tuple[FrameNode, ...] = (node,)
        # The driver's clock, read again for the writing half of a step (None: `now` throughout).
        self.clock = clock
        self.node = node
        self.tap = tap
        self.batch = batch
        self.checksums_trusted = 0  # received frames whose TCP checksum the kernel vouched for
        self.checksums_completed = 0  # received frames whose checksum Python had to finish
        self.gso_frames_sent = 0  # super-segments the kernel cut into MSS-sized packets for us
        self.segmented_in_software = 0  # frames finished by Python because the device is in plain mode
        self.recorder: PcapRecorder | None = None  # the node's own capture, while one is asked for
        self.gro = GroCounters()  # plain mode: received frames merged before the node saw them

    def fileno(self) -> int:
        return self.tap.fileno()

    def step(self, now: float) -> int:
        """Frames moved: read for the node (at most `batch`), then written from it.

        Reading comes first so that `now`, read by the loop just before, is the time the frames were
        found, and what the node writes in answer leaves in the same turn. Writing first would stamp a
        segment and the ACK the kernel sends back during its very write (veth answers inside the write
        call) with the same `now`: a round trip of 0. With a `clock`, the
        writing half runs at a fresh reading (`sending_time`): handling a batch of 256 frames takes
        milliseconds, and segments stamped at the batch's start would lengthen every RTT sample by that.
        """
        moved = 0
        batch = self.tap.read_batch(self.batch)
        if self.tap.offload:
            for hdr, frame in batch:
                if self._receive(hdr, frame, now):
                    moved += 1
        elif batch:
            moved += self._receive_plain([frame for _, frame in batch], now)
        now = self.sending_time(now)
        for frame in self.node.poll(now):
            if self.recorder is not None:
                self.recorder.record(frame.joined(), now, received=False)
            self._send(frame)
            moved += 1
        return moved

    def sending_time(self, now: float) -> float:
        """When the node's frames of this step leave: the clock read again, never before `now`."""
        return now if self.clock is None else max(now, self.clock())

    def _receive_plain(self, frames: list[memoryview], now: float) -> int:
        """Hand a plain-mode batch to the node, adjacent in-order data frames merged (`stack.devices.gro`)."""
        if self.recorder is not None:
            for frame in frames:
                self.recorder.record(frame, now, received=True)
        node = self.node
        whole = [frame.obj if frame.nbytes == len(frame.obj) else bytes(frame) for frame in frames]
        for data, verified in coalesce(whole, self.gro):
            node.receive_frame(data, now, verified)
        return len(frames)

    def _receive(self, hdr: VirtioNetHdr | None, frame: memoryview, now: float) -> bool:
        """Hand one frame read from the TAP to the node; False when it was dropped (a broken header)."""
        node = self.node
        if self.recorder is not None:
            self.recorder.record(frame, now, received=True)
        if hdr is None:
            node.receive_frame(frame.obj if frame.nbytes == len(frame.obj) else bytes(frame), now)
        elif tcp_checksum_trusted(hdr, frame):
            self.checksums_trusted += 1
            node.receive_frame(frame, now, True)
        elif hdr.needs_csum:
            try:
                data = complete_checksum(frame, hdr)
            except VirtioNetError:
                self.tap.counters.rx_bad_header += 1
                return False
            self.checksums_completed += 1
            node.receive_frame(data, now)
        else:
            node.receive_frame(frame, now)
        return True

    def _send(self, frame: OutgoingFrame) -> None:
        if not frame.needs_device:
            self.tap.write_parts(frame.parts())  # complete as built
            return
        if self.tap.offload:
            hdr = tx_header_for_frame(frame.head, frame.gso_size or len(frame), len(frame))
            if hdr.is_gso:
                self.gso_frames_sent += 1
            self.tap.write_parts(frame.parts(), hdr if hdr.flags else None)
            return
        self.segmented_in_software += 1
        packets = cut_ipv4_tcp(frame)
        if packets is None:
            for packet in wire_packets(frame):
                self.tap.write(packet)
            return
        for packet in packets:
            self.tap.write_parts(packet)

    def next_deadline(self) -> float | None:
        return None


def wire_packets(frame: OutgoingFrame, hdr: VirtioNetHdr | None = None) -> list[bytes]:
    """The packets `frame` becomes on the wire, checksums complete (what a device with offload would do)."""
    if not frame.needs_device:
        return [frame.joined()]
    if hdr is None:
        hdr = tx_header_for_frame(frame.head, frame.gso_size or len(frame), len(frame))
    data = bytearray(frame.joined())
    if not frame.partial_checksum:
        write_partial_tcp_checksum(data)  # NEEDS_CSUM wants the pseudo-header sum in the field
    return segment_gso_frame(data, hdr)
