"""The TAP driver against the real kernel: scratch namespaces, a persistent TAP, kernel sockets beyond."""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from stack.devices import tap as tap_module
from stack.devices.namespace import THREAD_NAMESPACE, entered, namespace_path
from stack.devices.tap import TapDevice, TapError
from stack.devices.virtio_net import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VirtioNetHdr,
    segment_gso_frame,
    tcp_checksum_trusted,
    tcp_checksum_valid,
)

from .tap_scratch import (
    IPPROTO_ICMP,
    ScratchPair,
    ScriptedTcpPeer,
    ethernet,
    icmp_echo,
    ipv4,
    parse_ipv4_tcp,
    scratch_pair,
)

pytestmark = pytest.mark.root


@pytest.fixture
def pair() -> Iterator[ScratchPair]:
    with scratch_pair() as created:
        yield created


def open_tap(pair: ScratchPair, offload: bool) -> TapDevice:
    return TapDevice.open_in_namespace(pair.netns_a, pair.tap_name, offload=offload)


FrameTest = Callable[[VirtioNetHdr | None, memoryview], bool]


def read_until(
    tap: TapDevice, wanted: FrameTest, timeout: float = 3.0
) -> tuple[VirtioNetHdr | None, memoryview]:
    """Frames until `wanted(hdr, frame)` is true for one; that one is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([tap], [], [], 0.2)
        for hdr, frame in tap.read_batch():
            if wanted(hdr, frame):
                return hdr, frame
    raise AssertionError(f"no matching frame on {tap.name} within {timeout} s")


# --- opening ------------------------------------------------------------------------------------------------


def test_open_in_namespace_leaves_the_thread_where_it_was(pair: ScratchPair) -> None:
    before = os.stat(THREAD_NAMESPACE).st_ino
    with open_tap(pair, offload=True) as tap:
        assert tap.offload and tap.offload_refused_reason is None and tap.fileno() >= 0
        assert not os.get_blocking(tap.fileno())
        assert tap.read() is None  # non-blocking: nothing there yet
    assert tap.closed
    assert os.stat(THREAD_NAMESPACE).st_ino == before


def test_missing_device_is_an_error_and_creates_nothing(pair: ScratchPair) -> None:
    with pytest.raises(TapError, match="no network device named 'tap9'") as caught:
        TapDevice.open_in_namespace(pair.netns_a, "tap9")
    assert caught.value.errno == errno.ENODEV
    with entered(namespace_path(pair.netns_a)), pytest.raises(OSError):
        socket.if_nametoindex("tap9")


def test_a_device_that_is_not_a_tap_is_refused(pair: ScratchPair) -> None:
    with pytest.raises(TapError, match="'br0' exists but is not a TAP"):
        TapDevice.open_in_namespace(pair.netns_a, "br0")


def test_one_reader_per_tap(pair: ScratchPair) -> None:
    with open_tap(pair, offload=True), pytest.raises(TapError, match="already open"):
        open_tap(pair, offload=False)


def test_missing_namespace_is_an_error() -> None:
    with pytest.raises(TapError, match="network namespace 'nslabtest-absent' does not exist"):
        TapDevice.open_in_namespace("nslabtest-absent", "tap0")


def test_offload_refused_by_the_kernel_falls_back_to_plain(
    pair: ScratchPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Asking for a feature bit the kernel does not know is how TUNSETOFFLOAD fails on an older kernel: EINVAL.
    monkeypatch.setattr(tap_module, "OFFLOAD_FEATURES", tap_module.OFFLOAD_FEATURES | 0x4000_0000)
    with open_tap(pair, offload=True) as tap:
        assert not tap.offload
        assert tap.offload_refused_reason == "tap0: TUNSETOFFLOAD refused by the kernel: Invalid argument"


# --- plain mode ---------------------------------------------------------------------------------------------


def test_plain_mode_answers_a_kernel_ping(pair: ScratchPair) -> None:
    """B's kernel sends an ICMP echo request to the stack's address; a hand-built reply reaches B's socket."""
    with open_tap(pair, offload=False) as tap, pair.kernel_socket(socket.SOCK_RAW, IPPROTO_ICMP) as icmp:
        icmp.settimeout(3.0)
        icmp.sendto(icmp_echo(8, 0x4242, 1, b"nslab ping"), (pair.stack_ip, 0))

        def is_echo_request(hdr: VirtioNetHdr | None, frame: memoryview) -> bool:
            return frame[12:14] == b"\x08\x00" and frame[23] == IPPROTO_ICMP and frame[34] == 8

        hdr, frame = read_until(tap, is_echo_request)
        assert hdr is None
        assert bytes(frame[0:6]) == pair.stack_mac and bytes(frame[6:12]) == pair.kernel_mac
        ident, seq = struct.unpack_from("!HH", frame, 38)
        data = bytes(frame[42:])
        reply = ipv4(pair.stack_ip_bytes, pair.kernel_ip_bytes, IPPROTO_ICMP, icmp_echo(0, ident, seq, data))
        offload_only = VirtioNetHdr(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=16)
        assert tap.write(ethernet(pair.kernel_mac, pair.stack_mac, reply), offload_only) is False
        assert tap.counters.tx_rejected == 1  # plain mode has no header to carry that request
        assert tap.write(ethernet(pair.kernel_mac, pair.stack_mac, reply))
        while True:  # the raw socket also sees B's own echo request
            packet, (source, _) = icmp.recvfrom(2048)
            ihl = (packet[0] & 0x0F) * 4
            if packet[ihl] == 0:
                break
        assert source == pair.stack_ip
        assert struct.unpack_from("!HH", packet, ihl + 4) == (0x4242, 1)
        assert packet[ihl + 8 :] == b"nslab ping"
        assert tap.counters.tx_frames == 1 and tap.counters.rx_frames >= 1


def test_plain_mode_gets_mtu_sized_checksummed_frames_even_after_offload(pair: ScratchPair) -> None:
    """Plain mode switches the device's offloads off: no 64 KB frames, no partial checksums, after an
    offload-mode reader left TSO on."""
    with open_tap(pair, offload=True):
        pass
    payload = os.urandom(300_000)
    with open_tap(pair, offload=False) as tap, pair.kernel_socket() as client:
        peer = ScriptedTcpPeer(tap, pair, port=5001)
        client.setblocking(False)
        client.connect_ex((pair.stack_ip, 5001))
        peer.accept()
        sender = threading.Thread(target=_send_all, args=(client, payload))
        sender.start()
        try:
            assert peer.receive(len(payload)) == payload
        finally:
            sender.join(5)
        assert peer.frames_seen and all(hdr is None and length <= 1514 for hdr, length in peer.frames_seen)


def _send_all(sock: socket.socket, payload: bytes) -> None:
    sock.setblocking(True)
    sock.settimeout(5.0)
    sock.sendall(payload)


# --- offload mode -------------------------------------------------------------------------------------------


def test_offload_mode_receives_tso_super_segments(pair: ScratchPair) -> None:
    payload = os.urandom(2_000_000)
    with open_tap(pair, offload=True) as tap, pair.kernel_socket() as client:
        peer = ScriptedTcpPeer(tap, pair, port=5002, keep_frames=True)
        client.setblocking(False)
        client.connect_ex((pair.stack_ip, 5002))
        syn = peer.accept()  # our SYN-ACK went out with NEEDS_CSUM and a partial checksum
        assert syn.dport == 5002
        sender = threading.Thread(target=_send_all, args=(client, payload))
        sender.start()
        try:
            assert peer.receive(len(payload)) == payload
        finally:
            sender.join(5)
    supers = [(hdr, frame) for hdr, frame in peer.kept_frames if len(frame) > 1514]
    assert supers, f"no TSO super-segment among {len(peer.kept_frames)} data frames"
    biggest = max(len(frame) for _, frame in supers)
    assert biggest > 30_000
    for hdr, frame in supers:
        assert hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 and hdr.gso_size == ScriptedTcpPeer.MSS
        assert hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and (hdr.csum_start, hdr.csum_offset) == (34, 16)
        assert tcp_checksum_trusted(hdr, frame)
        assert parse_ipv4_tcp(frame).ip_header_checksum_ok  # the kernel fills in the IPv4 header checksum
    # The software fallback turns a real super-segment into what the wire would carry.
    hdr, frame = max(supers, key=lambda item: len(item[1]))
    wire = segment_gso_frame(frame, hdr)
    assert len(wire) == -(-len(parse_ipv4_tcp(frame).payload) // hdr.gso_size)
    assert all(len(piece) <= 1514 and tcp_checksum_valid(piece) for piece in wire)
    assert b"".join(parse_ipv4_tcp(piece).payload for piece in wire) == parse_ipv4_tcp(frame).payload


def test_offload_mode_sends_a_64k_segment_the_kernel_cuts_up(pair: ScratchPair) -> None:
    payload = os.urandom(65535 - 20 - 20)  # the largest IPv4 TCP segment without options
    with open_tap(pair, offload=True) as tap, pair.kernel_socket() as client:
        peer = ScriptedTcpPeer(tap, pair, port=5003)
        client.setblocking(False)
        client.connect_ex((pair.stack_ip, 5003))
        peer.accept()
        read_until(tap, lambda hdr, frame: (p := parse_ipv4_tcp(frame)) is not None and p.flags == 0x10)
        assert tap.write(b"\x00" * 10) is False  # a runt frame the kernel refuses is counted, not raised
        peer.send(payload)
        assert tap.counters.tx_rejected == 1
        client.setblocking(True)
        client.settimeout(3.0)
        received = bytearray()
        while len(received) < len(payload):
            chunk = client.recv(1 << 20)
            assert chunk, "the kernel closed the connection"
            received += chunk
        assert bytes(received) == payload
        # The kernel ACKs everything: the super-segment arrived whole, checksums right.
        ack = read_until(
            tap, lambda hdr, frame: (p := parse_ipv4_tcp(frame)) is not None and p.ack == peer.snd_nxt
        )
        assert ack


def test_a_bad_offload_header_is_refused_without_harm(pair: ScratchPair) -> None:
    with open_tap(pair, offload=True) as tap:
        packet = ipv4(pair.stack_ip_bytes, pair.kernel_ip_bytes, 6, b"x" * 40)
        frame = ethernet(pair.kernel_mac, pair.stack_mac, packet)
        bogus = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, csum_start=60, csum_offset=40)
        assert tap.write(frame, bogus) is False
        assert tap.counters.tx_rejected == 1 and tap.counters.tx_frames == 0
        with pair.kernel_socket(socket.SOCK_RAW, IPPROTO_ICMP) as icmp:
            icmp.sendto(icmp_echo(8, 1, 1, b"still alive"), (pair.stack_ip, 0))
            read_until(tap, lambda hdr, frame: frame[12:14] == b"\x08\x00" and frame[23] == IPPROTO_ICMP)
