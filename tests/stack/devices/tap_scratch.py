"""Scratch wiring for the TAP driver's root tests and benchmark, plus hand-built frames.

`ScratchPair` builds, with pyroute2 only, the wiring a pystack node gets from the lab:

    namespace A:  tap0 (persistent, vnet_hdr) ── br0 ── eth0  (no kernel IP: the test owns the stack IP/MAC)
                                                         │ veth
    namespace B:                                        eth0 10.77.x.1/24, static neighbour stack IP → MAC

and removes both namespaces (and with them every device) on exit, also after a failure. Frames are built with
struct here on purpose: the driver's tests must not depend on the wire codecs they will later carry.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2 import IPRoute, netns

from stack.devices.namespace import entered, namespace_path
from stack.devices.tap import IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TapDevice
from stack.devices.virtio_net import (
    VirtioNetHdr,
    tx_header_for_frame,
    write_full_tcp_checksum,
    write_partial_tcp_checksum,
)

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
STACK_MAC = bytes.fromhex("020000000a02")
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
ETHERTYPE_IPV4 = 0x0800


@dataclass(frozen=True)
class ScratchPair:
    netns_a: str  # the "stack" side: TAP + bridge + veth end, no kernel address
    netns_b: str  # the kernel side: veth peer with an address
    tap_name: str
    kernel_ip: str
    kernel_mac: bytes
    stack_ip: str
    stack_mac: bytes
    mtu: int

    @property
    def kernel_ip_bytes(self) -> bytes:
        return socket.inet_aton(self.kernel_ip)

    @property
    def stack_ip_bytes(self) -> bytes:
        return socket.inet_aton(self.stack_ip)

    def kernel_socket(self, kind: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
        """A kernel socket living in namespace B (created there by pyroute2, no subprocess)."""
        return netns.create_socket(self.netns_b, socket.AF_INET, kind, proto, flags=0)


def _disable_ipv6() -> None:
    """Keep router solicitations and MLD reports off the TAP: the tests speak IPv4 only."""
    for key in ("default", "all"):
        path = f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6"
        if os.path.exists(path):
            with open(path, "w") as handle:
                handle.write("1")


def _create_persistent_tap(name: str) -> None:
    """What the lab does for a pystack node: a TAP that outlives the descriptor that created it."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


@contextlib.contextmanager
def scratch_pair(mtu: int = 1500) -> Iterator[ScratchPair]:
    """Build the wiring under fresh names `nslabtest-<random>-a/b`; remove both namespaces on exit."""
    tag = f"{random.getrandbits(32):08x}"
    subnet = random.randrange(1, 250)
    name_a, name_b = f"nslabtest-{tag}-a", f"nslabtest-{tag}-b"
    created: list[str] = []
    try:
        for name in (name_a, name_b):
            netns.create(name)
            created.append(name)
            with entered(namespace_path(name)):
                _disable_ipv6()
        with entered(namespace_path(name_a)):
            _create_persistent_tap("tap0")
        with IPRoute(netns=name_a, flags=0) as ipr_a:
            ipr_a.link("add", ifname="br0", kind="bridge")
            ipr_a.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": name_b})
            bridge = ipr_a.link_lookup(ifname="br0")[0]
            for port in ("eth0", "tap0"):
                index = ipr_a.link_lookup(ifname=port)[0]
                ipr_a.link("set", index=index, master=bridge, mtu=mtu)
                ipr_a.link("set", index=index, state="up")
            ipr_a.link("set", index=bridge, state="up", mtu=mtu)
        kernel_ip, stack_ip = f"10.77.{subnet}.1", f"10.77.{subnet}.2"
        with IPRoute(netns=name_b, flags=0) as ipr_b:
            lo = ipr_b.link_lookup(ifname="lo")[0]
            ipr_b.link("set", index=lo, state="up")
            eth = ipr_b.link_lookup(ifname="eth0")[0]
            ipr_b.link("set", index=eth, mtu=mtu)
            ipr_b.addr("add", index=eth, address=kernel_ip, prefixlen=24)
            ipr_b.link("set", index=eth, state="up")
            ipr_b.neigh("add", dst=stack_ip, lladdr=STACK_MAC.hex(":"), ifindex=eth, state="permanent")
            kernel_mac = bytes.fromhex(ipr_b.get_links(eth)[0].get_attr("IFLA_ADDRESS").replace(":", ""))
        yield ScratchPair(name_a, name_b, "tap0", kernel_ip, kernel_mac, stack_ip, STACK_MAC, mtu)
    finally:
        failures = []
        for name in created:  # every namespace goes, even when removing an earlier one failed
            try:
                netns.remove(name)
            except OSError as exc:
                failures.append(f"{name}: {exc}")
        if failures:
            raise RuntimeError(f"could not remove scratch namespaces: {'; '.join(failures)}")


# --- hand-built frames --------------------------------------------------------------------------------------


def internet_checksum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way: an independent reference for the driver's fast checksum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(dst: bytes, src: bytes, payload: bytes, ethertype: int = ETHERTYPE_IPV4) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 1, ttl: int = 64) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, ttl, proto, 0, src, dst)
    return header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:] + payload


def tcp(
    src_ip: bytes,
    dst_ip: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int = 65535,
    options: bytes = b"",
    payload: bytes = b"",
    checksum: bool = True,
) -> bytes:
    """A TCP segment; checksum=False leaves the field zero (for offload paths that fill it in)."""
    options += b"\x00" * (-len(options) % 4)
    offset = (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0, 0) + options
    segment = header + payload
    if checksum:
        pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, IPPROTO_TCP, len(segment))
        segment = segment[:16] + struct.pack("!H", internet_checksum(pseudo + segment)) + segment[18:]
    return segment


def icmp_echo(kind: int, ident: int, seq: int, data: bytes) -> bytes:
    message = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
    return message[:2] + struct.pack("!H", internet_checksum(message)) + message[4:]


@dataclass(frozen=True)
class ParsedTcp:
    src_ip: bytes
    dst_ip: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: memoryview  # a view into the frame: no copy of a 64 KB payload
    ip_header_checksum_ok: bool


def parse_ipv4_tcp(frame: bytes | memoryview) -> ParsedTcp | None:
    """The TCP segment in an Ethernet/IPv4 frame, or None for anything else (ARP, IPv6, ICMP...)."""
    frame = memoryview(frame)
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != IPPROTO_TCP:
        return None
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    ip_ok = internet_checksum(bytes(frame[14 : 14 + ihl])) == 0
    t = 14 + ihl
    sport, dport, seq, ack, offset, flags, window = struct.unpack_from("!HHIIBBH", frame, t)
    data_offset = (offset >> 4) * 4
    return ParsedTcp(
        bytes(frame[26:30]), bytes(frame[30:34]), sport, dport, seq, ack, flags, window,
        bytes(frame[t + 20 : t + data_offset]), frame[t + data_offset : 14 + total], ip_ok,
    )  # fmt: skip


# --- a scripted TCP peer on the TAP ------------------------------------------------------------------------


class TcpPeerError(AssertionError):
    """The scripted peer saw something it cannot go on from (a RST, a timeout)."""


class ScriptedTcpPeer:
    """Just enough TCP, by hand, to hold one connection with a kernel socket through a `TapDevice`.

    It answers one SYN (MSS 1460, window scale 7, window 65535 << 7: the kernel may send fast), collects
    in-order data and ACKs it once per batch of frames read, and sends data of any size: in offload mode as
    one frame with a virtio_net_hdr (NEEDS_CSUM, TSO above the MSS), in plain mode split into MSS-sized,
    fully checksummed frames. No retransmission of its own: the lab link is loss-free; out-of-order data is
    counted, dropped and answered with a duplicate ACK (the kernel retransmits it).
    """

    MSS = 1460
    WSCALE = 7

    def __init__(
        self,
        tap: TapDevice,
        pair: ScratchPair,
        port: int,
        iss: int = 0x1234_5678,
        keep_frames: bool = False,
        store_data: bool = True,
    ) -> None:
        self.tap = tap
        self.pair = pair
        self.port = port
        self.iss = iss
        self.snd_nxt = iss
        self.snd_una = iss
        self.rcv_nxt = 0
        self.kernel_port = 0
        self.received = bytearray()  # the in-order data, when store_data (a benchmark only counts it)
        self.received_bytes = 0
        self.data_frames = 0
        self.store_data = store_data
        self.frames_seen: list[tuple[VirtioNetHdr | None, int]] = []  # (header, frame length) of data frames
        self.keep_frames = keep_frames
        self.kept_frames: list[tuple[VirtioNetHdr | None, bytes]] = []  # whole data frames, if keep_frames
        self.out_of_order = 0
        self.peer_window = 0
        self.peer_wscale = 0

    # frame building ---------------------------------------------------------------------------------------
    def _frame(self, flags: int, payload: bytes = b"", options: bytes = b"") -> bytearray:
        segment = tcp(
            self.pair.stack_ip_bytes, self.pair.kernel_ip_bytes, self.port, self.kernel_port,
            self.snd_nxt, self.rcv_nxt, flags, 65535, options, payload, checksum=False,
        )  # fmt: skip
        return bytearray(
            ethernet(self.pair.kernel_mac, self.pair.stack_mac,
                     ipv4(self.pair.stack_ip_bytes, self.pair.kernel_ip_bytes, IPPROTO_TCP, segment))
        )  # fmt: skip

    def _send_frame(self, frame: bytearray) -> None:
        if self.tap.offload:
            write_partial_tcp_checksum(frame)
            ok = self.tap.write(frame, tx_header_for_frame(frame, self.MSS))
        else:
            write_full_tcp_checksum(frame)
            ok = self.tap.write(frame)
        if not ok:
            raise TcpPeerError(f"the kernel refused a {len(frame)}-byte frame")

    # reading ----------------------------------------------------------------------------------------------
    def _segments(self, timeout: float) -> list[tuple[VirtioNetHdr | None, memoryview, ParsedTcp]]:
        if not select.select([self.tap], [], [], timeout)[0]:
            return []
        out = []
        for hdr, frame in self.tap.read_batch(256):
            parsed = parse_ipv4_tcp(frame)
            if parsed is None or parsed.dport != self.port or parsed.dst_ip != self.pair.stack_ip_bytes:
                continue  # IGMP, other traffic: not ours
            if parsed.flags & 0x04:
                raise TcpPeerError(f"the kernel reset the connection (seq {parsed.seq})")
            out.append((hdr, frame, parsed))
        return out

    def accept(self, timeout: float = 3.0) -> ParsedTcp:
        """Wait for the kernel's SYN and answer with a SYN-ACK; returns the SYN."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _hdr, _frame, seg in self._segments(0.2):
                if seg.flags & 0x02:
                    self.kernel_port = seg.sport
                    self.rcv_nxt = (seg.seq + 1) & 0xFFFFFFFF
                    self.peer_wscale = _option_wscale(seg.options)
                    options = struct.pack("!BBH", 2, 4, self.MSS) + bytes([1, 3, 3, self.WSCALE])
                    self._send_frame(self._frame(0x12, options=options))
                    self.snd_nxt = (self.snd_nxt + 1) & 0xFFFFFFFF
                    return seg
        raise TcpPeerError(f"no SYN for port {self.port} within {timeout} s")

    def receive(self, nbytes: int, timeout: float = 5.0) -> bytes:
        """Collect `nbytes` of in-order data from the kernel, ACKing as it comes."""
        deadline = time.monotonic() + timeout
        while len(self.received) < nbytes:
            if time.monotonic() > deadline:
                raise TcpPeerError(f"received {len(self.received)} of {nbytes} bytes within {timeout} s")
            self.pump(0.2)
        return bytes(self.received[:nbytes])

    def pump(self, timeout: float) -> int:
        """Read what is ready: take in-order data, one ACK per batch; returns the new in-order bytes."""
        got = 0
        for hdr, frame, seg in self._segments(timeout):
            self.peer_window = seg.window << self.peer_wscale
            if (
                seg.flags & 0x10
                and 0 < (seg.ack - self.snd_una) & 0xFFFFFFFF <= (self.snd_nxt - self.snd_una) & 0xFFFFFFFF
            ):
                self.snd_una = seg.ack
            if seg.payload:
                self.data_frames += 1
                if self.store_data:
                    self.frames_seen.append((hdr, len(frame)))
                if self.keep_frames:
                    self.kept_frames.append((hdr, bytes(frame)))
                already = (self.rcv_nxt - seg.seq) & 0xFFFFFFFF  # bytes of it we have (a retransmission)
                if already < len(seg.payload):
                    fresh = seg.payload[already:]
                    if self.store_data:
                        self.received += fresh
                    self.rcv_nxt = (self.rcv_nxt + len(fresh)) & 0xFFFFFFFF
                    got += len(fresh)
                else:
                    self.out_of_order += 1
                    self._send_frame(self._frame(0x10))  # a duplicate ACK: lets the kernel fast-retransmit
        self.received_bytes += got
        if got:
            self._send_frame(self._frame(0x10))
        return got

    def send(self, payload: bytes) -> None:
        """Send `payload` (offload: one frame, TSO when above the MSS; plain: MSS-sized frames)."""
        chunk = len(payload) if self.tap.offload else self.MSS
        for start in range(0, len(payload), chunk):
            piece = payload[start : start + chunk]
            self._send_frame(self._frame(0x18, piece))
            self.snd_nxt = (self.snd_nxt + len(piece)) & 0xFFFFFFFF

    @property
    def in_flight(self) -> int:
        return (self.snd_nxt - self.snd_una) & 0xFFFFFFFF

    def stream(self, block: bytes, until: float, stall: float = 0.2, pump_every: int = 8) -> int:
        """Send data cut from `block` (repeated) until `until` (monotonic), within the kernel's window.

        Offload mode sends frames of len(block) payload bytes (TSO) as (headers, payload view) without
        copying, with a partial checksum computed once (it covers only addresses and length); plain mode sends
        MSS-sized frames, each checksummed in full, which is the per-segment work plain mode costs. It reads
        ACKs every `pump_every` frames. When no ACK moves for `stall` seconds it goes back to SND.UNA
        (go-back-N): enough for a loss-free lab, should a queue overflow. Returns the bytes acknowledged.
        """
        offload = self.tap.offload
        chunk = len(block) if offload else self.MSS
        doubled = memoryview(block + block)
        template = self._frame(0x10, bytes(chunk))
        vnet = None
        if offload:
            write_partial_tcp_checksum(template)
            vnet = tx_header_for_frame(template, self.MSS)
        headers = template[: len(template) - chunk]
        seq_at = len(headers) - 20 + 4  # the segment carries no options
        start_una = self.snd_una
        last_progress, last_una = time.monotonic(), self.snd_una
        unpumped = 0
        while (now := time.monotonic()) < until:
            room = self.peer_window - self.in_flight
            if room >= chunk:
                offset = (self.snd_nxt - start_una) % len(block)
                payload = doubled[offset : offset + chunk]
                struct.pack_into("!II", headers, seq_at, self.snd_nxt, self.rcv_nxt)
                if offload:
                    ok = self.tap.write_parts((headers, payload), vnet)
                else:
                    frame = headers + payload
                    write_full_tcp_checksum(frame)
                    ok = self.tap.write(frame)
                if not ok:
                    raise TcpPeerError(f"the kernel refused a {len(headers) + chunk}-byte frame")
                self.snd_nxt = (self.snd_nxt + chunk) & 0xFFFFFFFF
                unpumped += 1
                if unpumped >= pump_every:
                    self.pump(0)
                    unpumped = 0
            elif room > 0 and self.peer_window < chunk:  # a window smaller than one chunk: send what fits
                offset = (self.snd_nxt - start_una) % len(block)
                self._send_frame(self._frame(0x10, bytes(doubled[offset : offset + room])))
                self.snd_nxt = (self.snd_nxt + room) & 0xFFFFFFFF
                self.pump(0)
            else:
                self.pump(0.05)
                unpumped = 0
            if self.snd_una != last_una:
                last_progress, last_una = now, self.snd_una
            elif now - last_progress > stall and self.in_flight:
                self.snd_nxt = self.snd_una
                last_progress = now
        return (self.snd_una - start_una) & 0xFFFFFFFF


def _option_wscale(options: bytes) -> int:
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break
        if kind == 3 and options[i + 1] == 3:
            return options[i + 2]
        i += options[i + 1]
    return 0
