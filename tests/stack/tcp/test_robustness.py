"""Arbitrary segments, in any state, never raise out of the layer and never wedge it."""

from __future__ import annotations

import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.tcp import TcpConfig
from stack.wire.tcp import TcpFlags, TcpOptions, TcpSegment

from .segments import Tester

sequence = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([999, 1000, 1001, 1002, 5000, 5001, 5002]))
options = st.builds(
    TcpOptions,
    mss=st.none() | st.integers(0, 65535),
    wscale=st.none() | st.integers(0, 255),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(sequence, sequence), max_size=4).map(tuple),
    timestamp=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)
segments = st.builds(
    TcpSegment,
    src_port=st.sampled_from([80, 40000, 0, 65535]),
    dst_port=st.sampled_from([50000, 80, 81]),
    seq=sequence,
    ack=sequence,
    flags=st.integers(0, 255).map(TcpFlags),
    window=st.integers(0, 65535),
    options=options,
    payload=st.binary(max_size=64),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(st.tuples(segments, st.floats(0, 0.5)), max_size=30), timestamps=st.booleans())
def test_random_segments_never_raise_and_leave_a_consistent_layer(
    batch: list[tuple[TcpSegment, float]], timestamps: bool
) -> None:
    t = Tester(TcpConfig(timestamps=timestamps, sack=True, time_wait=1.0))
    t.listen(80)
    client = t.open_client()
    client.send(b"some data")
    now = 0.0
    for segment, gap in batch:
        now += gap
        t.send(segment, at=now)
        t.poll()
        for snapshot in t.layer.snapshots():
            assert 0 <= snapshot.snd_una < 2**32 and 0 <= snapshot.rcv_nxt < 2**32
            assert snapshot.send_queue >= 0 and snapshot.rcv_wnd >= 0
    # Time runs out every timer: whatever state the segments left, the layer ends idle and empty.
    client.close(t.now)
    for step in range(1, 400):
        t.poll(at=now + step * 5.0)
    # Only connections nobody closed may remain (accepted-queue children the random SYNs created), idle.
    assert all(
        c.state.name in ("ESTABLISHED", "CLOSE_WAIT") and not c.orphaned for c in t.layer.tables.connections()
    )
    assert t.layer.next_deadline() is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    loss=st.floats(0, 0.1),
    reorder=st.floats(0, 0.2),
    duplicate=st.floats(0, 0.1),
    sack=st.booleans(),
    timestamps=st.booleans(),
    sizes=st.tuples(st.integers(0, 80_000), st.integers(0, 80_000)),
    seed=st.integers(0, 2**16),
)
def test_impaired_back_to_back_transfer_is_byte_exact_both_ways(
    loss: float, reorder: float, duplicate: float, sack: bool, timestamps: bool,
    sizes: tuple[int, int], seed: int,
) -> None:
    import hashlib
    import random

    from .segments import REMOTE, Wire

    rng = random.Random(seed)
    config = TcpConfig(sack=sack, timestamps=timestamps, time_wait=1.0)
    wire = Wire(config, config, seed=seed, reorder=reorder, duplicate=duplicate,
                drop=lambda src, segment: rng.random() < loss)
    listener = wire.b.socket()
    listener.bind((REMOTE, 80))
    listener.listen(4)
    client = wire.a.socket()
    client.connect_ex((REMOTE, 80), wire.now)
    wire.run_until(lambda: listener.readable, limit=200)
    server, _ = listener.accept()
    data = {client: rng.randbytes(sizes[0]), server: rng.randbytes(sizes[1])}
    offset = {client: 0, server: 0}
    got: dict[object, bytearray] = {client: bytearray(), server: bytearray()}
    eof = {client: False, server: False}
    shut = {client: False, server: False}
    while not all(eof.values()):
        for sock in (client, server):
            out = data[sock]
            if offset[sock] < len(out):
                try:
                    offset[sock] += sock.send(out[offset[sock] : offset[sock] + 65536])
                except BlockingIOError:
                    pass
            if offset[sock] == len(out) and not shut[sock]:
                sock.shutdown(socket.SHUT_WR, wire.now)
                shut[sock] = True
            try:
                while not eof[sock]:
                    chunk = sock.recv(65536)
                    if not chunk:
                        eof[sock] = True
                    got[sock] += chunk
            except BlockingIOError:
                pass
        assert wire.now < 900, f"stuck: {wire.a.snapshots()} {wire.b.snapshots()}"
        wire.run(wire.now + 0.01)
    assert hashlib.sha256(got[server]).digest() == hashlib.sha256(data[client]).digest()
    assert hashlib.sha256(got[client]).digest() == hashlib.sha256(data[server]).digest()
    client.close(wire.now)
    server.close(wire.now)
    listener.close(wire.now)
    wire.run(wire.now + 600)
    assert list(wire.a.tables.connections()) == [] and list(wire.b.tables.connections()) == []
    assert wire.a.next_deadline() is None and wire.b.next_deadline() is None
