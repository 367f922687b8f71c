"""The seeded link impairment model: each effect alone, then determinism."""

from __future__ import annotations

import itertools
import random

import pytest

from stack.devices.impairment import (
    ASSUMED_LINK_BPS,
    MAX_QUEUE_BYTES,
    MIN_QUEUE_BYTES,
    QUEUE_HEADROOM,
    WINDOW_QUEUE_BYTES,
    ImpairedLink,
    Impairment,
    queue_limit_bytes,
)


def run_link(profile: Impairment, frames: list[bytes], seed: int = 1, spacing: float = 0.001,
             horizon: float = 100.0) -> tuple[ImpairedLink, list[tuple[float, bytes]]]:
    """Offer ``frames`` ``spacing`` apart, then collect (arrival time, frame) by stepping to each deadline."""
    link = ImpairedLink(profile, random.Random(seed))
    arrivals: list[tuple[float, bytes]] = []
    now = 0.0
    for frame in frames:
        link.send(frame, now)
        arrivals += [(now, f) for f in link.poll(now)]
        now += spacing
    while (deadline := link.next_deadline()) is not None and deadline < horizon:
        now = max(now, deadline)
        arrivals += [(now, f) for f in link.poll(now)]
    return link, arrivals


FRAMES = [i.to_bytes(4, "big") * 16 for i in range(2000)]


def test_transparent_profile_passes_everything_at_once_in_order() -> None:
    _link, arrivals = run_link(Impairment(), FRAMES)
    assert [f for _, f in arrivals] == FRAMES
    assert all(t == pytest.approx(i * 0.001) for i, (t, _) in enumerate(arrivals))
    assert Impairment().is_transparent and not Impairment(loss=0.1).is_transparent


def test_delay_shifts_every_frame_by_exactly_the_delay() -> None:
    _link, arrivals = run_link(Impairment(delay=0.05), FRAMES[:10])
    assert [t for t, _ in arrivals] == pytest.approx([0.05 + i * 0.001 for i in range(10)])


def test_loss_drops_about_the_configured_fraction() -> None:
    link, arrivals = run_link(Impairment(loss=0.2), FRAMES)
    assert 0.17 < link.stats.lost / len(FRAMES) < 0.23
    assert len(arrivals) == len(FRAMES) - link.stats.lost
    assert [f for _, f in arrivals] == sorted(f for _, f in arrivals)  # survivors keep their order


def test_duplicate_delivers_copies() -> None:
    link, arrivals = run_link(Impairment(duplicate=0.1), FRAMES)
    assert len(arrivals) == len(FRAMES) + link.stats.duplicated
    assert 0.07 < link.stats.duplicated / len(FRAMES) < 0.13


def test_corrupt_flips_exactly_one_bit() -> None:
    link, arrivals = run_link(Impairment(corrupt=0.3), FRAMES)
    changed = [(a, b) for (_, a), b in zip(arrivals, FRAMES, strict=True) if a != b]
    assert len(changed) == link.stats.corrupted > 0
    for got, sent in changed:
        diff = int.from_bytes(got, "big") ^ int.from_bytes(sent, "big")
        assert diff.bit_count() == 1


def test_reorder_lets_a_fraction_overtake_delayed_frames() -> None:
    link, arrivals = run_link(Impairment(delay=0.01, reorder=0.25), FRAMES)
    order = [int.from_bytes(f[:4], "big") for _, f in arrivals]
    assert sorted(order) == list(range(len(FRAMES)))
    overtaken = sum(1 for a, b in itertools.pairwise(order) if b < a)
    assert overtaken > 100
    assert 0.2 < link.stats.reordered / len(FRAMES) < 0.3


def test_jitter_stays_within_bounds() -> None:
    _link, arrivals = run_link(Impairment(delay=0.02, jitter=0.005), FRAMES[:300], spacing=0.0)
    assert all(0.015 - 1e-9 <= t <= 0.025 + 1e-9 for t, _ in arrivals)
    assert len({round(t, 9) for t, _ in arrivals}) > 100


def test_rate_serializes_frames_back_to_back() -> None:
    frame = bytes(1250)  # 10,000 bits: 1 ms at 10 Mbit/s
    _link, arrivals = run_link(Impairment(rate_bps=10e6), [frame] * 5, spacing=0.0)
    assert [t for t, _ in arrivals] == pytest.approx([0.001, 0.002, 0.003, 0.004, 0.005])


def test_queue_limit_tail_drops() -> None:
    link, arrivals = run_link(Impairment(delay=1.0, limit=10), FRAMES[:50], spacing=0.0)
    assert len(arrivals) == 10 and link.stats.queue_drops == 40
    assert [f for _, f in arrivals] == FRAMES[:10]


FULL_FRAME = bytes(1514)


def test_a_window_in_flight_on_a_delayed_link_is_never_dropped() -> None:
    """5 ms of delay and no loss: a sender's whole 4 MB window (2,770 frames offered at once, as a TSO
    burst cut into wire packets is) must all arrive; a 1000-frame queue dropped the rest."""
    frames = [FULL_FRAME] * (4 * 1024 * 1024 // len(FULL_FRAME))
    link, arrivals = run_link(Impairment(delay=0.005), frames, spacing=0.0)
    assert link.stats.queue_drops == 0 and len(arrivals) == len(frames)


def test_the_queue_holds_the_bandwidth_delay_product_of_a_rate_limited_link() -> None:
    """1 Gbit/s and 100 ms: 12.5 MB in flight when a sender keeps the pipe full; none of it is dropped."""
    rate = 1e9
    spacing = len(FULL_FRAME) * 8 / rate  # offered exactly at the link's rate
    frames = [FULL_FRAME] * 20_000  # 240 ms of sending: the pipe fills, then stays full
    link, arrivals = run_link(Impairment(delay=0.1, rate_bps=rate), frames, spacing=spacing)
    assert link.stats.queue_drops == 0 and len(arrivals) == len(frames)
    assert queue_limit_bytes(Impairment(delay=0.1, rate_bps=rate)) >= rate * 0.1 / 8


def test_a_burst_beyond_the_bandwidth_delay_product_tail_drops() -> None:
    """The queue is bounded: 30 MB offered at once to a 1 Gbit/s, 100 ms link (BDP 12.5 MB) loses
    some, after holding at least the product."""
    frames = [FULL_FRAME] * 20_000
    link, arrivals = run_link(Impairment(delay=0.1, rate_bps=1e9), frames, spacing=0.0)
    assert link.stats.queue_drops > 0 and len(arrivals) + link.stats.queue_drops == len(frames)
    assert len(arrivals) * len(FULL_FRAME) >= 1e9 * 0.1 / 8


def test_queue_sizes_follow_rate_and_delay_within_bounds() -> None:
    assert queue_limit_bytes(Impairment()) == WINDOW_QUEUE_BYTES  # no rate: the largest window
    assert queue_limit_bytes(Impairment(rate_bps=1e6)) == MIN_QUEUE_BYTES
    assert queue_limit_bytes(Impairment(delay=0.001)) == WINDOW_QUEUE_BYTES  # 3 MB product, 4 MB windows
    assert queue_limit_bytes(Impairment(delay=0.01)) == int(ASSUMED_LINK_BPS * 0.01 / 8 * QUEUE_HEADROOM)
    assert queue_limit_bytes(Impairment(delay=3600.0)) == MAX_QUEUE_BYTES


def test_reconfigure_changes_new_frames_and_keeps_those_in_flight() -> None:
    link = ImpairedLink(Impairment(delay=1.0), random.Random(1))
    link.send(b"old", 0.0)
    link.reconfigure(Impairment())
    link.send(b"new", 0.5)
    assert link.poll(0.5) == [b"new"] and link.poll(0.99) == [] and link.poll(1.0) == [b"old"]


def test_a_carried_header_is_never_corrupted_nor_counted() -> None:
    link = ImpairedLink(Impairment(corrupt=1.0, rate_bps=8e3), random.Random(3), header_bytes=10)
    for _ in range(200):
        link.send(bytes(10) + b"\xff" * 10, 0.0)
    delivered = link.poll(1e9)
    assert all(frame[:10] == bytes(10) and frame[10:] != b"\xff" * 10 for frame in delivered)
    assert link.next_deadline() is None and len(delivered) == 200


def test_same_seed_same_run_different_seed_different_run() -> None:
    profile = Impairment(delay=0.01, jitter=0.004, loss=0.05, duplicate=0.05, reorder=0.1, corrupt=0.05)
    first = run_link(profile, FRAMES, seed=7)[1]
    assert run_link(profile, FRAMES, seed=7)[1] == first
    assert run_link(profile, FRAMES, seed=8)[1] != first


@pytest.mark.parametrize(("field", "value"), [("loss", 1.5), ("corrupt", -0.1), ("delay", -1.0),
                                              ("rate_bps", 0), ("limit", 0)])
def test_bad_profiles_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Impairment(**{field: value})


def test_a_window_sent_at_once_into_a_delay_only_link_loses_nothing() -> None:
    """A TSO sender refills a 4 MB window at once: a 1 ms link with no rate must hold all of it (it held
    3 MB, its product at the assumed veth rate, and dropped the rest)."""
    frames = [FULL_FRAME] * (4 * 1024 * 1024 // len(FULL_FRAME) + 1)
    link, arrivals = run_link(Impairment(delay=0.001), frames, spacing=0.0)
    assert link.stats.queue_drops == 0 and len(arrivals) == len(frames)
