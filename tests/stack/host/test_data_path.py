"""The data path's shortcuts keep the bytes and events the same: frames handed to a device in pieces
(`OutgoingFrame`s, `TapMedium` writing headers and payload with one writev) and per-segment trace events
left out for a sink that does not want them (`trace_segments=False`)."""

from __future__ import annotations

import random

from stack.devices.tap import TapMedium
from stack.devices.virtio_net import (
    NO_OFFLOAD,
    VirtioNetHdr,
    locate_tcp,
    segment_gso_frame,
    tx_header_for_frame,
)
from stack.host import Host
from stack.loops.runner import Runner
from stack.tcp.config import TSO_MAX_PAYLOAD, TcpConfig
from stack.tcp.trace import INET_SOCK_SET_STATE, TCP_PROBE, TCP_SEGMENT_IN, TCP_SEGMENT_OUT, TraceEvent

from .transfer import bulk

SERVER = ("10.0.0.2", 8080)
PER_SEGMENT = {TCP_SEGMENT_IN, TCP_SEGMENT_OUT, TCP_PROBE}


class RecordingTap:
    """Stands in for an offload-mode `TapDevice`: keeps what the medium writes, hands it frames to read."""

    offload = True

    def __init__(self) -> None:
        self.written: list[tuple[bytes, VirtioNetHdr | None, bool]] = []  # (frame, header, given in pieces)
        self.inbound: list[tuple[VirtioNetHdr | None, memoryview]] = []

    def fileno(self) -> int:
        return -1

    def write(self, frame: bytes, hdr: VirtioNetHdr | None = None) -> bool:
        self.written.append((bytes(frame), hdr, False))
        return True

    def write_parts(self, parts: tuple[bytes, ...], hdr: VirtioNetHdr | None = None) -> bool:
        self.written.append((b"".join(parts), hdr, True))
        return True

    def read_batch(self, max_frames: int = 64) -> list[tuple[VirtioNetHdr | None, memoryview]]:
        batch, self.inbound = self.inbound[:max_frames], self.inbound[max_frames:]
        return batch


class KernelBehindTap:
    """A wire: the TSO host's frames go through `TapMedium` into a `RecordingTap`, are cut the way the
    kernel cuts them (`segment_gso_frame`) and reach a plain peer; the peer's frames come back as reads."""

    def __init__(self, tso_host: Host, peer: Host) -> None:
        self.nodes = (tso_host, peer)
        self.tap = RecordingTap()
        self.medium = TapMedium(tso_host, self.tap)  # type: ignore[arg-type]
        self.peer = peer
        self.checked = 0

    def step(self, now: float) -> int:
        moved = self.medium.step(now)
        for frame, hdr, in_pieces in self.tap.written:
            layout = locate_tcp(frame)
            if in_pieces and layout is not None and layout.payload_len:
                mss = hdr.gso_size if hdr is not None and hdr.is_gso else layout.payload_len
                assert hdr == tx_header_for_frame(frame, mss)  # pieces get the header the whole frame would
                self.checked += 1
            for packet in segment_gso_frame(frame, hdr or NO_OFFLOAD):
                self.peer.receive_frame(packet, now)
                moved += 1
        self.tap.written.clear()
        for frame in self.peer.poll(now):
            self.tap.inbound.append((NO_OFFLOAD, memoryview(frame.joined())))
            moved += 1
        return moved

    def next_deadline(self) -> float | None:
        return None


def test_frames_come_in_pieces_with_what_the_device_must_do() -> None:
    """A TSO host's TCP frames with data leave as (headers, payload view): joined they are the frame a
    device would send; a super-segment says its GSO size (the MSS) and every frame says whether its TCP
    checksum is left partial, so the device needs nothing else from the host."""
    host = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=3, secret=b"k" * 32, gratuitous_arp=False,
                tx_checksum="partial", tcp=TcpConfig(tso_max_bytes=TSO_MAX_PAYLOAD, sndbuf=1 << 20))
    host.arp.learn(bytes((10, 0, 0, 2)), bytes.fromhex("020000000002"), 0.0, is_reply=True, to_us=True)
    peer = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=4, secret=b"p" * 32, gratuitous_arp=False,
                tcp=TcpConfig(rcvbuf=1 << 20))
    listener = peer.socket()
    listener.bind(SERVER)
    listener.listen(1)
    client = host.tcp.socket()
    client.connect_ex(SERVER, 0.0)
    now, pieces, super_segments, sent = 0.0, 0, 0, False
    for _ in range(30):
        now += 0.001
        for frame in host.poll(now):
            joined = frame.joined()
            layout = locate_tcp(joined)
            assert len(joined) == len(frame) and frame.partial_checksum == (layout is not None)
            if layout is None:  # an ARP reply: complete as built
                peer.receive_frame(joined, now)
                continue
            if len(frame.payload):
                pieces += 1
                assert isinstance(frame.payload, memoryview | bytes)
                assert frame.parts() == (frame.head, frame.payload)
            if frame.gso_size:
                super_segments += 1
                assert layout.payload_len > frame.gso_size == client._conn.send_mss
            else:
                assert layout.payload_len <= client._conn.send_mss
            hdr = tx_header_for_frame(joined, frame.gso_size or len(joined))
            assert hdr.is_gso == (frame.gso_size > 0)
            for packet in segment_gso_frame(joined, hdr):  # checksums finished as the device would
                peer.receive_frame(packet, now)
        for reply in peer.poll(now):
            host.receive_frame(reply.joined(), now)
        if client.state == "ESTABLISHED" and not sent:
            sent = True
            client.send(random.Random(1).randbytes(300_000))
    assert sent and pieces > 5 and super_segments > 0, (client.state, pieces)


def test_tso_transfer_through_the_tap_medium_in_pieces() -> None:
    """A TSO host behind `TapMedium` (offload): data frames leave as (headers, payload) with the
    virtio_net_hdr the joined frame would get (NEEDS_CSUM, GSO for super-segments); cut as the kernel cuts
    them, 2 MB arrive intact."""
    sender = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, tx_checksum="partial",
                  tcp=TcpConfig(tso_max_bytes=TSO_MAX_PAYLOAD, sndbuf=1 << 20))
    receiver = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2, tcp=TcpConfig(rcvbuf=1 << 20))
    wire = KernelBehindTap(sender, receiver)
    Runner([sender, receiver], [wire])
    bulk(sender, receiver, 2_000_000)
    assert wire.checked > 20
    assert wire.medium.gso_frames_sent > 0


def test_locate_tcp_on_headers_alone_matches_the_whole_frame() -> None:
    """`locate_tcp(headers, length)` gives the whole frame's layout, and a piece too short for its headers
    is refused (None), never an IndexError."""
    host = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, gratuitous_arp=False, tx_checksum="partial")
    host.arp.learn(bytes((10, 0, 0, 2)), bytes.fromhex("020000000002"), 0.0, is_reply=True, to_us=True)
    sock = host.tcp.socket()
    sock.connect_ex(SERVER, 0.0)
    (frame,) = host.poll(0.0)
    assert not len(frame.payload)  # a SYN: everything is in the head
    syn = frame.head
    for extra in (0, 1, 1448, 65000):
        layout = locate_tcp(syn + bytes(extra))
        assert layout is not None
        assert locate_tcp(syn, len(syn) + extra) == layout
    for cut in range(len(syn)):
        assert locate_tcp(syn[:cut], len(syn)) is None
    assert locate_tcp(syn, len(syn) - 1) is None  # a length shorter than the headers given


def events_of(trace_segments: bool) -> list[TraceEvent]:
    events: list[TraceEvent] = []
    sender = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, trace=events.append,
                  trace_segments=trace_segments)
    receiver = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
    from stack.devices.memory import MemoryWire

    Runner([sender, receiver], [MemoryWire(sender, receiver)])
    bulk(sender, receiver, 100_000)
    return events


def test_trace_segments_false_leaves_out_only_the_per_segment_events() -> None:
    """The same transfer traced twice: without per-segment events the sink still gets every state change
    (and the rest), exactly as with them."""
    everything = events_of(True)
    lean = events_of(False)
    assert {e.name for e in everything} & PER_SEGMENT == PER_SEGMENT
    assert not {e.name for e in lean} & PER_SEGMENT
    kept = [(e.name, e.fields) for e in everything if e.name not in PER_SEGMENT]
    assert [(e.name, e.fields) for e in lean] == kept
    assert any(e.name == INET_SOCK_SET_STATE for e in lean)


def test_the_node_trace_ring_keeps_segment_events_only_when_asked() -> None:
    """The node's ring drops per-segment events by default (and the node's Host then never builds them);
    `TraceRing(segments=True)` keeps them."""
    from stack.node.trace_ring import TraceRing

    segment = TraceEvent(TCP_SEGMENT_IN, 1.0, "10.0.0.2", 7, "10.0.0.1", 40000, {"flags": "S"})
    state = TraceEvent(INET_SOCK_SET_STATE, 1.0, "10.0.0.2", 7, "10.0.0.1", 40000,
                       {"oldstate": "LISTEN", "newstate": "SYN_RECV"})
    lean, full = TraceRing(), TraceRing(segments=True)
    for ring in (lean, full):
        ring.sink(segment)
        ring.sink(state)
    assert [e["name"] for e in lean.since(0)[0]] == [INET_SOCK_SET_STATE]
    assert [e["name"] for e in full.since(0)[0]] == [TCP_SEGMENT_IN, INET_SOCK_SET_STATE]
    assert not lean.segments and full.segments


def test_send_keeps_a_view_of_immutable_bytes_and_copies_anything_else() -> None:
    """`Connection.send` keeps a view over a bytes object (nobody can change it) instead of copying it,
    and still copies a bytearray, whose owner may reuse it at once; the peer gets the bytes as written."""
    sender = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1)
    receiver = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2)
    from stack.devices.memory import MemoryWire

    Runner([sender, receiver], [MemoryWire(sender, receiver)])
    listener = receiver.socket()
    listener.bind(SERVER)
    listener.listen(1)
    client = sender.socket()
    client.settimeout(5)
    client.connect(SERVER)
    server, _ = listener.accept()
    connection = next(iter(sender.tcp.tables.connections()))
    immutable = random.Random(2).randbytes(3000)
    reused = bytearray(b"x" * 2000)
    assert connection.send(memoryview(immutable)[1000:]) == 2000
    assert connection.send(reused) == 2000
    chunks = list(connection.send_buffer._chunks)
    assert type(chunks[0]) is memoryview and chunks[0].obj is immutable  # kept, not copied
    assert type(chunks[1]) is bytes  # copied
    reused[:] = b"y" * 2000  # the application reuses its buffer before the data left
    sender.tcp.touch(connection)
    server.settimeout(5)
    received = bytearray()
    while len(received) < 4000:
        received += server.recv(1 << 16)
    assert bytes(received) == immutable[1000:] + b"x" * 2000
