"""Out-of-order reassembly: overlaps, duplicates, the 2**32 wrap, memory limits, RFC 2018 block order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.tcp.reassembly import ReassemblyQueue
from stack.tcp.seq import SEQ_MASK, seq_add

STREAM = bytes(range(256)) * 8  # 2048 distinct-enough bytes


def chunk(start: int, end: int) -> bytes:
    return STREAM[start:end]


def drain(queue: ReassemblyQueue, rcv_nxt: int) -> tuple[bytes, int]:
    pieces = queue.pop_ready(rcv_nxt)
    data = b"".join(bytes(p) for p in pieces)
    return data, seq_add(rcv_nxt, len(data))


@pytest.mark.parametrize("base", [1000, SEQ_MASK - 30, SEQ_MASK])
def test_hole_then_fill(base: int) -> None:
    q = ReassemblyQueue(limit=10_000)
    assert q.add(seq_add(base, 10), chunk(10, 20), base)
    assert q.add(seq_add(base, 30), chunk(30, 40), base)
    assert q.buffered_bytes == 20
    assert q.pop_ready(base) == []  # the hole at base..base+10 is still open
    # the caller consumes in-order data 0..10 itself, then asks what follows
    data, nxt = drain(q, seq_add(base, 10))
    assert data == chunk(10, 20)
    assert nxt == seq_add(base, 20)
    assert q.ranges() == [(seq_add(base, 30), seq_add(base, 40))]
    q.add(seq_add(base, 20), chunk(20, 30), nxt)
    data, nxt = drain(q, nxt)
    assert data == chunk(20, 40)
    assert q.is_empty and q.buffered_bytes == 0


def test_overlaps_are_trimmed_and_old_data_kept() -> None:
    q = ReassemblyQueue(limit=10_000)
    q.add(110, chunk(10, 20), 100)
    q.add(130, chunk(30, 40), 100)
    # covers both pieces and the gap between and around them
    q.add(105, chunk(5, 45), 100)
    assert q.buffered_bytes == 40
    assert q.ranges() == [(105, 145)]
    data, _ = drain(q, 105)
    assert data == chunk(5, 45)


@pytest.mark.parametrize(
    ("seq", "payload", "expected_bytes"),
    [
        (110, chunk(10, 20), 10),  # exact duplicate
        (112, chunk(12, 18), 10),  # inside
        (90, chunk(0, 15), 15),  # starts below rcv_nxt: adds 100..105 only
        (90, chunk(0, 10), 10),  # wholly below rcv_nxt
        (115, chunk(15, 25), 15),  # overlaps the tail: 5 new bytes
    ],
)
def test_duplicates_add_only_new_bytes(seq: int, payload: bytes, expected_bytes: int) -> None:
    q = ReassemblyQueue(limit=10_000)
    q.add(110, chunk(10, 20), 100)
    assert q.add(seq, payload, 100)
    assert q.buffered_bytes == expected_bytes


def test_segment_straddling_rcv_nxt_is_cut_at_rcv_nxt() -> None:
    q = ReassemblyQueue(limit=10_000)
    q.add(95, chunk(95, 120), 100)
    assert q.buffered_bytes == 20
    data, nxt = drain(q, 100)
    assert data == chunk(100, 120) and nxt == 120


def test_rcv_nxt_moving_past_held_data_discards_it() -> None:
    q = ReassemblyQueue(limit=10_000)
    q.add(110, chunk(10, 20), 100)
    q.add(130, chunk(30, 40), 100)
    # the caller took bytes 100..115 from elsewhere (e.g. a retransmission it consumed directly)
    data, nxt = drain(q, 115)
    assert data == chunk(15, 20) and nxt == 120
    assert q.buffered_bytes == 10


def test_rcv_nxt_inside_a_block_of_several_chunks() -> None:
    q = ReassemblyQueue(limit=10_000)
    for start in (130, 110, 120):  # one block 110..140 built from three chunks
        q.add(start, chunk(start - 100, start - 90), 100)
    assert q.ranges() == [(110, 140)]
    pieces = q.pop_ready(125)  # bytes up to 125 arrived by another path
    assert [bytes(p) for p in pieces] == [chunk(25, 30), chunk(30, 40)]
    assert q.is_empty and q.buffered_bytes == 0
    q.add(150, chunk(50, 60), 140)
    q.add(160, chunk(60, 70), 140)
    assert [bytes(p) for p in q.pop_ready(165)] == [chunk(65, 70)]  # the first chunk wholly consumed
    assert q.is_empty and q.buffered_bytes == 0


def test_memory_limit_drops_whole_segment() -> None:
    q = ReassemblyQueue(limit=25)
    assert q.add(110, chunk(10, 20), 100)
    assert q.add(130, chunk(30, 40), 100)
    assert not q.add(150, chunk(50, 60), 100)  # 30 > 25: dropped whole
    assert q.buffered_bytes == 20
    assert q.ranges() == [(110, 120), (130, 140)]
    assert q.add(120, chunk(20, 25), 100)  # 5 new bytes still fit
    assert q.buffered_bytes == 25
    assert q.add(110, chunk(10, 20), 100)  # a duplicate needs no memory
    data, _ = drain(q, 110)
    assert data == chunk(10, 25)
    assert q.add(150, chunk(50, 60), 125)  # room again after delivery


def test_piece_count_limit() -> None:
    q = ReassemblyQueue(limit=10_000, max_segments=2)
    assert q.add(110, b"a", 100)
    assert q.add(120, b"b", 100)
    assert not q.add(130, b"c", 100)
    assert not q.add(111, b"x", 100)  # new bytes, but a third piece
    assert q.add(110, b"a", 100)  # a duplicate needs no new piece
    assert q.buffered_bytes == 2
    q.pop_ready(110)
    assert q.add(130, b"c", 111)


def test_partial_overlap_copies_instead_of_pinning() -> None:
    big = bytes(60_000)
    q = ReassemblyQueue(limit=100_000)
    q.add(101, big[1:], 100)
    q.add(100, big, 99)  # 59_999 bytes overlap, 1 new byte
    assert q.buffered_bytes == 60_000
    pieces = q.pop_ready(100)
    assert [len(p) for p in pieces] == [1, 59_999]
    assert isinstance(pieces[0], bytes)  # the 1-byte piece is a copy, not a view on a 60 KB buffer


def test_whole_segments_are_kept_zero_copy() -> None:
    payload = memoryview(b"z" * 100)
    q = ReassemblyQueue(limit=1000)
    q.add(200, payload, 100)
    q.add(100, b"y" * 100, 100)
    assert q.pop_ready(100)[1] is payload


def test_sack_blocks_most_recent_first_rfc2018() -> None:
    q = ReassemblyQueue(limit=10_000)
    for start in (200, 400, 600, 800, 1000):
        q.add(start, b"x" * 100, 100)
    # RFC 2018: the block with the most recent segment first, then the other recent ones
    assert q.sack_blocks() == [(1000, 1100), (800, 900), (600, 700), (400, 500)]
    assert q.sack_blocks(max_blocks=3) == [(1000, 1100), (800, 900), (600, 700)]
    q.add(300, b"x" * 100, 100)  # joins 200..300 and 400..500 into one block, now the most recent
    assert q.sack_blocks() == [(200, 500), (1000, 1100), (800, 900), (600, 700)]
    q.add(800, b"x" * 50, 100)  # a duplicate: reported as a D-SACK, then the block holding it (RFC 2883)
    assert q.sack_blocks(2) == [(800, 850), (800, 900)]


def test_sack_blocks_across_wrap() -> None:
    base = SEQ_MASK - 99  # 2**32 - 100
    q = ReassemblyQueue(limit=10_000)
    q.add(seq_add(base, 50), b"x" * 100, base)  # spans the wrap: 2**32-50 .. 50
    q.add(seq_add(base, 200), b"x" * 10, base)
    assert q.sack_blocks() == [(100, 110), (SEQ_MASK - 49, 50)]
    assert q.ranges() == [(SEQ_MASK - 49, 50), (100, 110)]


def test_long_run_with_data_always_held() -> None:
    """5 GB of sequence space with a piece always held: offsets survive re-anchoring and the wrap."""
    q = ReassemblyQueue(limit=10_000)
    rcv_nxt = SEQ_MASK - 5
    step = 1 << 28
    q.add(seq_add(rcv_nxt, 1000), b"p0", rcv_nxt)
    for i in range(1, 21):
        q.add(seq_add(rcv_nxt, step + 1000), b"p%d" % i, rcv_nxt)
        # the caller consumed [rcv_nxt, rcv_nxt + step) directly: the older held piece falls below RCV.NXT
        rcv_nxt = seq_add(rcv_nxt, step)
        assert q.pop_ready(rcv_nxt) == []
        assert q.ranges() == [(seq_add(rcv_nxt, 1000), seq_add(rcv_nxt, 1000 + len(b"p%d" % i)))]
        assert q.buffered_bytes == len(b"p%d" % i)
    assert [bytes(p) for p in q.pop_ready(seq_add(rcv_nxt, 1000))] == [b"p20"]
    assert q.is_empty


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=SEQ_MASK),
    st.lists(st.tuples(st.integers(0, 1999), st.integers(1, 300)), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
)
def test_any_arrival_order_delivers_the_stream(isn: int, cuts: list[tuple[int, int]], rnd) -> None:
    """Segments (overlapping, duplicated, in any order) rebuild exactly the original bytes."""
    total = 2000
    segments = [(s, min(total, s + n)) for s, n in cuts]
    # make sure the whole stream is covered at least once, then shuffle everything
    segments += [(s, min(total, s + 250)) for s in range(0, total, 250)]
    segments += rnd.sample(segments, k=min(5, len(segments)))  # duplicates
    rnd.shuffle(segments)
    q = ReassemblyQueue(limit=total)
    rcv_nxt = isn
    received = bytearray()
    for s, e in segments:
        assert q.add(seq_add(isn, s), STREAM[s:e], rcv_nxt)
        for piece in q.pop_ready(rcv_nxt):
            received += piece
            rcv_nxt = seq_add(rcv_nxt, len(piece))
        assert q.buffered_bytes <= total
    assert bytes(received) == STREAM[:total]
    assert q.is_empty and q.buffered_bytes == 0


def test_negative_limit_rejected() -> None:
    with pytest.raises(ValueError, match="limit"):
        ReassemblyQueue(limit=-1)
