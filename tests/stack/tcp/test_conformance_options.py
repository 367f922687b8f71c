"""RFC 9293 3.1/3.2/3.7 option rules not pinned down elsewhere: options are accepted on any segment
(MUST-5) at any alignment (MUST-64); MSS only ever rides on a SYN (MUST-65); every option area we build is
a whole number of 32-bit words with nothing but options or zero padding in it (MUST-68, MUST-69); the
effective send MSS leaves room for the options sent (MUST-16); the last segment of a write carries PSH
(MUST-61)."""

from __future__ import annotations

import errno
import random
import socket

from hypothesis import given
from hypothesis import strategies as st

from stack.tcp import TcpConfig
from stack.wire.tcp import (
    MAX_OPTIONS_LEN,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    build_options,
    build_tcp,
    parse_options,
    parse_tcp,
)

from .segments import LOCAL, REMOTE, Tester, Wire, seg

SRC, DST = socket.inet_aton(REMOTE), socket.inet_aton(LOCAL)


def peer(flags: str, **fields: object) -> TcpSegment:
    return seg(flags, sport=80, dport=50000, **fields)  # type: ignore[arg-type]


def test_mss_option_never_leaves_on_a_segment_without_syn() -> None:
    """MUST-65: over a whole lossy transfer with every option negotiated (SACK blocks, timestamps,
    retransmissions, window probes, FINs), only SYNs carry MSS; and every SYN does (MUST-14)."""
    rng = random.Random(5)
    config = TcpConfig(time_wait=1.0, rcvbuf=30_000)
    wire = Wire(config, config, drop=lambda src, segment: rng.random() < 0.05)
    listener = wire.b.socket()
    listener.bind((REMOTE, 80))
    listener.listen(4)
    client = wire.a.socket()
    assert client.connect_ex((REMOTE, 80), wire.now) == errno.EINPROGRESS
    wire.run_until(lambda: listener.readable, limit=30)
    server, _ = listener.accept()
    data = random.Random(6).randbytes(150_000)
    sent = 0
    received = bytearray()
    while len(received) < len(data):
        if sent < len(data):
            try:
                sent += client.send(data[sent:sent + 16384])
            except BlockingIOError:
                pass
        try:
            received += server.recv(4096)
        except BlockingIOError:
            wire.run(wire.now + 0.05)
        assert wire.now < 300, f"transfer stalled at {len(received)} bytes"
    assert bytes(received) == data
    client.close(wire.now)
    server.close(wire.now)
    wire.run(wire.now + 60)
    segments = [segment for _, _, segment in wire.delivered]
    assert wire.a.counters()["RetransSegs"] > 0 and any(s.options.sack_blocks for s in segments)
    for segment in segments:
        has_syn = bool(segment.flags & TcpFlags.SYN)
        assert (segment.options.mss is not None) == has_syn, segment


def test_options_on_a_data_segment_are_received() -> None:
    """MUST-5 and MUST-6: a data segment whose option area holds an unknown option, a misplaced MSS and
    NOPs at odd offsets is parsed and its data delivered; the options TCP does not use change nothing."""
    t = Tester()
    sock = t.open_client()
    raw_options = bytes.fromhex("01" "fe04abcd" "01" "020405b4" "01" "00")  # NOP, unknown, NOP, MSS, NOP, EOL
    header = bytearray(build_tcp(peer("PA", seq=5001, ack=1001, data=b"payload"), SRC, DST, "none"))
    padded = raw_options + bytes(-len(raw_options) % 4)
    header[12] = (20 + len(padded)) << 2
    raw = bytes(header[:20]) + padded + b"payload"
    segment = parse_tcp(raw, SRC, DST, verify_checksum=False)
    assert segment.options.mss == 1460 and bytes(segment.payload) == b"payload"
    t.send(segment, at=1.0)
    assert sock.recv(100) == b"payload"
    assert t.connection().send_mss == 1460  # an MSS outside a SYN does not renegotiate anything


@given(st.integers(min_value=0, max_value=7), st.integers(min_value=0, max_value=4))
def test_options_are_found_at_any_alignment(nops: int, tail_nops: int) -> None:
    """MUST-64: options start wherever the previous one ended: no 16- or 32-bit alignment is assumed."""
    body = (b"\x01" * nops + bytes.fromhex("020405b4") + b"\x01" * tail_nops + bytes.fromhex("030307")
            + bytes.fromhex("0402") + bytes.fromhex("080a0000000100000002"))
    assert len(body) <= MAX_OPTIONS_LEN
    assert parse_options(body) == TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 2))


option_sets = st.builds(
    TcpOptions,
    mss=st.none() | st.integers(min_value=0, max_value=0xFFFF),
    wscale=st.none() | st.integers(min_value=0, max_value=14),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=4)
    .map(tuple),
    timestamp=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)


@given(option_sets)
def test_built_option_areas_are_whole_words_of_options(options: TcpOptions) -> None:
    """MUST-68 and MUST-69: every option but NOP/EOL carries its length, the area is padded to a 32-bit
    boundary (with NOPs before options, never garbage), and walking it by the lengths ends exactly at its
    end.  The header's data offset counts it."""
    area = build_options(options)
    assert len(area) % 4 == 0 and len(area) <= MAX_OPTIONS_LEN
    index = 0
    while index < len(area):
        kind = area[index]
        if kind == 1:
            index += 1
            continue
        assert kind != 0, "no EOL is needed: the area ends on a word boundary"
        length = area[index + 1]
        assert length >= 2 and index + length <= len(area)
        index += length
    assert index == len(area)
    segment = TcpSegment(1, 2, 3, 4, TcpFlags.ACK, 5, options)
    raw = build_tcp(segment, SRC, DST)
    assert (raw[12] >> 4) * 4 == 20 + len(area)


def test_effective_send_mss_leaves_room_for_the_options() -> None:
    """MUST-16: Eff.snd.MSS = min(SendMSS + 20, MMS_S) - TCP header - IP options: with timestamps
    (12 option bytes on every segment) a 1460 MSS carries 1448 payload bytes, and a peer MSS smaller than
    the route's wins."""
    t = Tester(timestamps=True)
    sock = t.connect(80)
    syn = t.poll()[0]
    assert syn.options.mss == 1460 and syn.options.timestamp is not None
    t.send(peer("SA", seq=5000, ack=1001, mss=1460, ts=(7, syn.options.timestamp[0])))
    t.poll()
    sock.send(bytes(4000))
    sizes = [len(s.payload) for s in t.poll(at=0.1)]
    assert sizes[:2] == [1448, 1448]
    assert all(len(build_tcp(s, DST, SRC)) - 20 - 12 <= 1448 for s in t.poll())
    small = Tester()
    sock = small.connect(80)
    small.poll()
    small.send(peer("SA", seq=5000, ack=1001, mss=700))
    small.poll()
    sock.send(bytes(2000))
    assert [len(s.payload) for s in small.poll(at=0.1)] == [700, 700, 600]


def test_psh_marks_the_last_segment_of_what_was_written() -> None:
    """MUST-61 (and MUST-60: nothing is held back waiting for more): a write split into several segments
    sets PSH on the one that empties the send buffer, and only there."""
    t = Tester()
    sock = t.open_client()
    sock.send(bytes(4000))
    out = t.poll(at=0.1)
    assert [len(s.payload) for s in out] == [1460, 1460, 1080]
    assert [bool(s.flags & TcpFlags.PSH) for s in out] == [False, False, True]
