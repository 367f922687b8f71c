"""SACK scoreboard: RFC 6675 IsLost / SetPipe / NextSeg scenarios, D-SACK and validity, the 2**32 wrap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.tcp.sack import SackScoreboard
from stack.tcp.seq import SEQ_MASK

MSS = 1000
BASES = [0, 1_000_000, SEQ_MASK - 3000 + 1, SEQ_MASK]  # the last two put the scenario across the wrap


def at(base: int, offset: int) -> int:
    return (base + offset) & SEQ_MASK


def blocks(base: int, *pairs: tuple[int, int]) -> list[tuple[int, int]]:
    return [(at(base, a), at(base, b)) for a, b in pairs]


@pytest.mark.parametrize("base", BASES)
def test_single_loss_three_sacks(base: int) -> None:
    """Ten segments sent, the first lost; SACKs for segments 2, 3, 4 arrive one by one (RFC 6675 5)."""
    sb = SackScoreboard()
    una, nxt = base, at(base, 10 * MSS)
    assert sb.update(una, blocks(base, (1000, 2000)), nxt) == 1000
    assert not sb.is_lost(una, MSS)
    assert sb.next_seg(una, nxt, una, MSS) is None
    assert sb.update(una, blocks(base, (1000, 3000)), nxt) == 1000
    assert not sb.is_lost(una, MSS)  # 2 segments / 2*SMSS bytes: not yet
    assert sb.update(una, blocks(base, (1000, 4000)), nxt) == 1000
    assert sb.is_lost(una, MSS)  # DupThresh reached
    assert sb.sacked_bytes == 3000
    assert sb.highest_sacked == at(base, 4000)
    assert sb.holes(una, nxt) == blocks(base, (0, 1000))
    # pipe: the lost hole is not in flight; segments 5..10 are
    assert sb.pipe(una, nxt, una, MSS) == 6000
    assert sb.next_seg(una, nxt, una, MSS) == (una, 1000)
    # after retransmitting the hole, the retransmission counts as in flight and nothing else is eligible
    high_rxt = at(base, 1000)
    assert sb.pipe(una, nxt, high_rxt, MSS) == 7000
    assert sb.next_seg(una, nxt, high_rxt, MSS) is None
    assert sb.next_seg(una, nxt, high_rxt, MSS, rule3=True) is None


@pytest.mark.parametrize("base", BASES)
def test_three_holes(base: int) -> None:
    """Segments 1, 3 and 6 (of 10) lost; SACK blocks report the rest up to segment 8."""
    sb = SackScoreboard()
    una, nxt = base, at(base, 10 * MSS)
    assert sb.update(una, blocks(base, (6000, 8000), (3000, 5000), (1000, 2000)), nxt) == 5000
    assert sb.ranges() == blocks(base, (1000, 2000), (3000, 5000), (6000, 8000))
    assert sb.holes(una, nxt) == blocks(base, (0, 1000), (2000, 3000), (5000, 6000))
    assert sb.is_lost(at(base, 0), MSS)  # 5000 bytes above
    assert sb.is_lost(at(base, 2000), MSS)  # 4000 bytes above
    assert not sb.is_lost(at(base, 5000), MSS)  # 2000 bytes, 2 segments above
    # pipe = hole 5000..6000 (not lost) + 8000..10000 (never SACKed above)
    assert sb.pipe(una, nxt, una, MSS) == 3000
    assert sb.next_seg(una, nxt, una, MSS) == (at(base, 0), 1000)
    assert sb.next_seg(una, nxt, at(base, 1000), MSS) == (at(base, 2000), 1000)
    assert sb.next_seg(una, nxt, at(base, 3000), MSS) is None  # rule 1 exhausted; rule 2 is the caller's
    assert sb.next_seg(una, nxt, at(base, 3000), MSS, rule3=True) == (at(base, 5000), 1000)
    # both lost holes retransmitted: they count again in pipe
    assert sb.pipe(una, nxt, at(base, 3000), MSS) == 5000
    # the cumulative ACK moves past the first hole
    sb.advance(at(base, 2000))
    assert sb.ranges() == blocks(base, (3000, 5000), (6000, 8000))
    assert sb.sacked_bytes == 4000
    assert sb.holes(at(base, 2000), nxt) == blocks(base, (2000, 3000), (5000, 6000))


def test_segment_count_rule_small_segments() -> None:
    """Three discontiguous small SACKed pieces make a hole lost even though few bytes are SACKed."""
    sb = SackScoreboard()
    sb.update(1000, [(1100, 1200), (1300, 1400), (1500, 1600)], 5000)
    assert sb.sacked_bytes == 300
    assert sb.is_lost(1000, MSS)
    assert not sb.is_lost(1250, MSS)  # 2 pieces above
    assert not sb.is_lost(1450, MSS)


def test_next_seg_splits_a_long_hole_by_mss() -> None:
    sb = SackScoreboard()
    sb.update(0, [(2500, 5500)], 6000)
    assert sb.next_seg(0, 6000, 0, MSS) == (0, 1000)
    assert sb.next_seg(0, 6000, 1000, MSS) == (1000, 1000)
    assert sb.next_seg(0, 6000, 2000, MSS) == (2000, 500)
    assert sb.next_seg(0, 6000, 2500, MSS) is None


@pytest.mark.parametrize(
    ("given_blocks", "new_bytes", "dsacks", "invalid", "ranges"),
    [
        ([(1000, 2000), (1500, 2500)], 1500, 0, 0, [(1000, 2500)]),  # overlapping blocks count once
        ([(500, 900)], 0, 1, 0, []),  # first block below SND.UNA: D-SACK
        ([(1200, 1300), (1000, 2000)], 1000, 1, 0, [(1000, 2000)]),  # first inside second: D-SACK
        ([(1000, 9000)], 0, 0, 1, []),  # beyond SND.NXT
        ([(2000, 1000)], 0, 0, 1, []),  # backwards
        ([(1000, 1000)], 0, 0, 1, []),  # empty
        ([(1200, 1700), (800, 1200)], 700, 0, 0, [(1000, 1700)]),  # 2nd partly below SND.UNA: clipped
    ],
)
def test_block_validity(
    given_blocks: list[tuple[int, int]],
    new_bytes: int,
    dsacks: int,
    invalid: int,
    ranges: list[tuple[int, int]],
) -> None:
    sb = SackScoreboard()
    una, nxt = 1000, 5000
    assert sb.update(una, given_blocks, nxt) == new_bytes
    assert (sb.dsacks_seen, sb.invalid_blocks_seen) == (dsacks, invalid)
    assert sb.ranges() == ranges


def test_repeated_and_touching_blocks_merge() -> None:
    sb = SackScoreboard()
    assert sb.update(0, [(1000, 2000)], 10_000) == 1000
    assert sb.update(0, [(1000, 2000)], 10_000) == 0
    assert sb.update(0, [(2000, 3000)], 10_000) == 1000
    assert sb.update(0, [(4000, 5000), (2000, 3000)], 10_000) == 1000
    assert sb.update(0, [(3000, 4000)], 10_000) == 1000
    assert sb.ranges() == [(1000, 5000)]


def test_cumulative_ack_inside_a_range_and_stale_ack() -> None:
    sb = SackScoreboard()
    sb.update(0, [(1000, 3000)], 5000)
    assert sb.update(2000, [], 5000) == 0
    assert sb.ranges() == [(2000, 3000)]
    assert sb.sacked_bytes == 1000
    sb.update(0, [], 5000)  # an old cumulative ACK does not bring old ranges back
    assert sb.ranges() == [(2000, 3000)]
    sb.advance(3000)
    assert sb.is_empty and sb.sacked_bytes == 0 and sb.highest_sacked is None


def test_argument_order_snd_nxt_before_blocks_is_accepted() -> None:
    sb = SackScoreboard()
    assert sb.update(0, 5000, [(1000, 2000)]) == 1000  # type: ignore[arg-type]


def test_clear_forgets_everything() -> None:
    sb = SackScoreboard()
    sb.update(0, [(1000, 2000)], 5000)
    sb.clear()
    assert sb.is_empty and sb.sacked_bytes == 0
    assert sb.pipe(0, 5000, 0, MSS) == 5000


def test_long_recovery_reanchors() -> None:
    """SND.UNA advancing 5 GB with a SACKed range always held keeps the offsets right."""
    sb = SackScoreboard()
    una = SEQ_MASK - 10
    step = 1 << 28
    for _ in range(20):
        nxt = at(una, 2 * step)
        sb.update(una, [(at(una, step + 100), at(una, step + 200))], nxt)
        una = at(una, step)
        sb.advance(una)
        assert sb.ranges() == [(at(una, 100), at(una, 200))]
        assert sb.sacked_bytes == 100
        assert sb.holes(una, nxt) == [(una, at(una, 100))]


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=0, max_value=SEQ_MASK),
    st.lists(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 400)), max_size=4), max_size=12),
    st.lists(st.integers(0, 300), max_size=12),
    st.integers(0, 3500),
)
def test_matches_a_set_of_bytes_model(
    base: int, acks: list[list[tuple[int, int]]], moves: list[int], rxt_off: int
) -> None:
    """Any series of ACKs: ranges, sacked bytes, holes, returned counts, SetPipe and NextSeg agree with a
    per-byte model of RFC 6675."""
    sb = SackScoreboard()
    una_off, nxt_off = 0, 3500
    model: set[int] = set()
    for index, pairs in enumerate(acks):
        una_off += moves[index] if index < len(moves) else 0
        una_off = min(una_off, nxt_off)
        model = {b for b in model if b >= una_off}
        given_blocks = [(at(base, s), at(base, min(s + n, nxt_off))) for s, n in pairs]
        expected_new: set[int] = set()
        for i, (s, n) in enumerate(pairs):
            e = min(s + n, nxt_off)
            if e <= s or e <= una_off:
                continue
            inside_second = len(pairs) > 1 and pairs[1][0] <= s and e <= min(sum(pairs[1]), nxt_off)
            if i == 0 and (s < una_off or inside_second):
                continue  # D-SACK
            expected_new |= set(range(max(s, una_off), e)) - model
            model |= set(range(max(s, una_off), e))
        got = sb.update(at(base, una_off), given_blocks, at(base, nxt_off))
        assert got == len(expected_new)
        assert sb.sacked_bytes == len(model)
        assert sb.ranges() == [(at(base, s), at(base, e)) for s, e in _runs(model)]
        top = max(model) + 1 if model else una_off
        missing = sorted(set(range(una_off, top)) - model)
        expected_holes = [(at(base, s), at(base, e)) for s, e in _runs(missing)]
        assert sb.holes(at(base, una_off), at(base, nxt_off)) == expected_holes
        rxt = max(una_off, min(rxt_off, nxt_off))
        pipe, rule1, rule3 = _rfc6675_per_byte(model, una_off, nxt_off, rxt, SMALL_MSS)
        args = (at(base, una_off), at(base, nxt_off), at(base, rxt), SMALL_MSS)
        assert sb.pipe(*args) == pipe
        assert sb.next_seg(*args) == (None if rule1 is None else (at(base, rule1[0]), rule1[1]))
        assert sb.next_seg(*args, rule3=True) == (None if rule3 is None else (at(base, rule3[0]), rule3[1]))


SMALL_MSS = 150  # small against the 3500-byte flight, so IsLost flips often


def _rfc6675_per_byte(
    sacked: set[int], una: int, nxt: int, rxt: int, mss: int
) -> tuple[int, tuple[int, int] | None, tuple[int, int] | None]:
    """SetPipe and NextSeg rules 1 and 3 evaluated octet by octet, straight from RFC 6675's definitions."""
    highest = max(sacked) + 1 if sacked else una
    # IsLost(b) for every unSACKed octet, sweeping down: SACKed octets and whole SACKed runs above b
    lost: dict[int, bool] = {}
    sacked_above = segments_above = run = 0
    for b in range(nxt - 1, una - 1, -1):
        if b in sacked:
            run += 1
            continue
        if run:
            sacked_above += run
            segments_above += -(-run // mss)
            run = 0
        lost[b] = segments_above >= 3 or sacked_above > 2 * mss

    pipe = 0
    rule1 = rule3 = None
    for b in range(una, nxt):
        if b in sacked:
            continue
        pipe += (0 if lost[b] else 1) + (1 if b < rxt else 0)
        if b >= rxt and b < highest and (rule1 is None or rule3 is None):
            run_end = b
            while run_end < highest and run_end not in sacked and run_end - b < mss:
                run_end += 1
            if rule3 is None:
                rule3 = (b, run_end - b)
            if rule1 is None and lost[b]:
                rule1 = (b, run_end - b)
    return pipe, rule1, rule3


def _runs(offsets) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for b in sorted(offsets):
        if runs and runs[-1][1] == b:
            runs[-1] = (runs[-1][0], b + 1)
        else:
            runs.append((b, b + 1))
    return runs
