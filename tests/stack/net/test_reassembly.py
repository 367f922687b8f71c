"""IPv4 reassembly: orders, duplicates, overlaps, timeouts and every memory limit, with a virtual clock."""

from __future__ import annotations

import random
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from stack.net.reassembly import FRAGMENT_OVERHEAD, Reassembler
from stack.wire import PROTO_UDP, Ipv4Packet, fragment_ipv4, parse_ipv4

SRC = socket.inet_aton("10.0.0.1")
DST = socket.inet_aton("10.0.0.2")


def fragments_of(payload: bytes, mtu: int = 1500, ident: int = 1) -> list[Ipv4Packet]:
    packet = Ipv4Packet(SRC, DST, PROTO_UDP, payload, ident=ident, dont_fragment=False, ttl=33)
    return [parse_ipv4(raw) for raw in fragment_ipv4(packet, mtu)]


def piece(offset: int, data: bytes, more: bool, ident: int = 1) -> Ipv4Packet:
    return Ipv4Packet(SRC, DST, PROTO_UDP, data, ident=ident, dont_fragment=False, more_fragments=more,
                      fragment_offset=offset)


def feed(reassembler: Reassembler, packets: list[Ipv4Packet], now: float = 0.0) -> list[Ipv4Packet]:
    return [whole for p in packets if (whole := reassembler.add(p, now)) is not None]


def test_unfragmented_packets_pass_straight_through() -> None:
    packet = Ipv4Packet(SRC, DST, PROTO_UDP, b"whole")
    assert Reassembler().add(packet, 0.0) is packet


def test_in_order_and_reversed() -> None:
    payload = random.Random(1).randbytes(4000)
    for order in (lambda x: x, lambda x: list(reversed(x))):
        reassembler = Reassembler()
        done = feed(reassembler, order(fragments_of(payload)))
        assert len(done) == 1 and done[0].payload == payload
        assert (done[0].ttl, done[0].more_fragments, done[0].fragment_offset) == (33, False, 0)
        assert reassembler.pending == 0 and reassembler.bytes_held == 0
        assert reassembler.next_deadline() is None


def test_exact_duplicates_are_ignored() -> None:
    fragments = fragments_of(bytes(3000))
    reassembler = Reassembler()
    assert feed(reassembler, [fragments[0], fragments[0], fragments[1], fragments[1]]) == []
    assert reassembler.stats.duplicates == 2
    assert feed(reassembler, [fragments[2]])[0].payload == bytes(3000)


def test_payload_views_are_copied_so_a_reused_receive_buffer_cannot_corrupt_them() -> None:
    buffer = bytearray(b"A" * 16)
    reassembler = Reassembler()
    reassembler.add(piece(0, memoryview(buffer), True), 0.0)
    buffer[:] = b"B" * 16
    assert reassembler.add(piece(16, b"C" * 8, False), 0.0).payload == b"A" * 16 + b"C" * 8


def test_overlap_drops_the_datagram_and_its_later_fragments() -> None:
    reassembler = Reassembler(timeout=30.0)
    assert reassembler.add(piece(0, bytes(16), True), 0.0) is None
    assert reassembler.add(piece(8, bytes(16), True), 1.0) is None  # overlaps bytes 8..16
    assert reassembler.stats.overlaps == 1 and reassembler.pending == 0 and reassembler.bytes_held == 0
    # Even a fragment that would complete a clean datagram is discarded until the deadline...
    assert reassembler.add(piece(0, bytes(16), True), 2.0) is None
    assert reassembler.add(piece(16, bytes(8), False), 2.0) is None
    assert reassembler.stats.discarded_late == 2
    assert reassembler.next_deadline() == 30.0
    # ...after which the identity may be reused.
    reassembler.expire(30.0)
    assert reassembler.next_deadline() is None
    assert reassembler.add(piece(0, bytes(16), True), 31.0) is None
    assert reassembler.add(piece(16, bytes(8), False), 31.0).payload == bytes(24)


def test_overlap_with_the_following_fragment_and_same_start_different_length() -> None:
    for second in (piece(0, bytes(8), True), piece(8, bytes(24), True)):
        reassembler = Reassembler()
        reassembler.add(piece(16, bytes(16), True), 0.0)
        reassembler.add(piece(0, bytes(8), True), 0.0)
        reassembler.add(second, 0.0)
        assert reassembler.stats.overlaps + reassembler.stats.duplicates == 1


def test_contradictory_lengths_are_dropped() -> None:
    cases = [
        [piece(0, bytes(8), True), piece(16, bytes(8), False), piece(24, bytes(8), False)],  # two ends
        [piece(32, bytes(8), True), piece(8, bytes(8), False)],  # data beyond the last fragment's end
        [piece(8, bytes(8), False), piece(16, bytes(8), True)],  # a middle fragment past the end
        [piece(0, bytes(8), True), piece(8, b"", False)],  # an empty fragment
        [piece(0, bytes(10), True)],  # a non-final fragment that is not a multiple of 8
    ]
    for packets in cases:
        reassembler = Reassembler()
        assert feed(reassembler, packets) == []
        assert reassembler.stats.inconsistent == 1
        assert reassembler.pending == 0 and reassembler.bytes_held == 0


def test_timeout_expires_and_returns_the_first_fragment_for_icmp() -> None:
    fragments = fragments_of(bytes(3000))
    reassembler = Reassembler(timeout=30.0)
    reassembler.add(fragments[0], 10.0)
    reassembler.add(fragments[1], 25.0)
    assert reassembler.next_deadline() == 40.0
    assert reassembler.expire(39.9) == []
    expired = reassembler.expire(40.0)
    assert len(expired) == 1 and expired[0].fragment_offset == 0 and expired[0].ident == 1
    assert reassembler.stats.timeouts == 1 and reassembler.pending == 0 and reassembler.bytes_held == 0
    # a datagram that never saw its first fragment expires silently (no ICMP: nothing to quote)
    reassembler.add(fragments[2], 50.0)
    assert reassembler.expire(80.0) == [] and reassembler.stats.timeouts == 2


def test_max_datagrams_limit_drops_new_datagrams_not_old_ones() -> None:
    reassembler = Reassembler(max_datagrams=3)
    for ident in range(5):
        reassembler.add(piece(0, bytes(8), True, ident=ident), 0.0)
    assert reassembler.pending == 3 and reassembler.stats.limit_drops == 2
    assert reassembler.add(piece(8, bytes(8), False, ident=0), 0.0) is not None


def test_tiny_fragment_flood_is_bounded_by_memory() -> None:
    limit = 64 * 1024
    reassembler = Reassembler(max_bytes=limit)
    for index in range(8000):  # 8-byte fragments of one datagram, every other one (never completes)
        reassembler.add(piece(16 * index, bytes(8), True), 0.0)
        assert reassembler.bytes_held <= limit
    assert reassembler.stats.limit_drops == 1 and reassembler.pending == 0
    assert (limit // (8 + FRAGMENT_OVERHEAD)) < 8000


def test_memory_limit_counts_every_datagram() -> None:
    reassembler = Reassembler(max_bytes=3 * (1480 + FRAGMENT_OVERHEAD))
    for ident in range(4):
        reassembler.add(fragments_of(bytes(3000), ident=ident)[0], 0.0)
    assert reassembler.pending == 3 and reassembler.stats.limit_drops == 1


def test_datagram_larger_than_65535_is_dropped() -> None:
    reassembler = Reassembler()
    reassembler.add(piece(0, bytes(8), True), 0.0)
    assert reassembler.add(piece(65512, bytes(8), False), 0.0) is None  # 20 + 65520 > 65535
    assert reassembler.stats.too_big == 1 and reassembler.pending == 0


def test_different_identities_do_not_mix() -> None:
    a, b = fragments_of(b"a" * 3000, ident=1), fragments_of(b"b" * 3000, ident=2)
    done = feed(Reassembler(), [a[0], b[1], b[0], a[2], a[1], b[2]])
    assert [d.payload for d in done] == [b"a" * 3000, b"b" * 3000]


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=6000), st.integers(68, 1500), st.randoms(use_true_random=False),
       st.integers(0, 3))
def test_any_order_with_duplicates_reassembles_once(payload: bytes, mtu: int, rng: random.Random,
                                                     duplicates: int) -> None:
    fragments = fragments_of(payload, mtu)
    shuffled = fragments + [rng.choice(fragments) for _ in range(duplicates)]
    rng.shuffle(shuffled)
    reassembler = Reassembler()
    done = feed(reassembler, shuffled)
    if len(fragments) == 1:
        assert [d.payload for d in done] == [payload] * len(shuffled)  # not a fragment: passes through
        return
    # duplicates arriving after completion start a new (never completed) datagram; the first is whole
    assert done[0].payload == payload and len(done) == 1
    reassembler.expire(1e9)
    assert reassembler.bytes_held == 0 and reassembler.pending == 0


def test_first_fragment_options_count_towards_the_65535_limit() -> None:
    reassembler = Reassembler()
    first = Ipv4Packet(SRC, DST, PROTO_UDP, bytes(8), ident=9, dont_fragment=False, more_fragments=True,
                       options=bytes([1]) * 40)
    reassembler.add(first, 0.0)
    assert reassembler.add(piece(8, bytes(65504), False, ident=9), 0.0) is None  # 60 + 65512 > 65535
    assert reassembler.stats.too_big == 1 and reassembler.pending == 0 and reassembler.bytes_held == 0
