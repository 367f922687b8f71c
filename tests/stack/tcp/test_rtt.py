"""RFC 6298 estimator: exact SRTT/RTTVAR/RTO after known samples, backoff doubling and caps."""

from __future__ import annotations

import math

import pytest

from stack.tcp.rtt import RttEstimator, SendTimes


def test_before_any_sample_the_rto_is_the_initial_one() -> None:
    est = RttEstimator()
    assert est.rto == 1.0
    assert est.srtt is None and est.rttvar is None
    assert not est.has_sample


def test_samples_follow_rfc6298_formulas() -> None:
    est = RttEstimator(min_rto=0.2)
    # first sample: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4*RTTVAR = 0.1 + 0.2 = 0.3
    est.sample(0.1)
    assert est.srtt == pytest.approx(0.1)
    assert est.rttvar == pytest.approx(0.05)
    assert est.rto == pytest.approx(0.3)
    # second 0.1: RTTVAR = 3/4*0.05 + 1/4*|0.1-0.1| = 0.0375; SRTT = 0.1; RTO = 0.1 + 0.15 = 0.25
    est.sample(0.1)
    assert est.rttvar == pytest.approx(0.0375)
    assert est.srtt == pytest.approx(0.1)
    assert est.rto == pytest.approx(0.25)
    # third 0.5: RTTVAR = 3/4*0.0375 + 1/4*0.4 = 0.128125; SRTT = 7/8*0.1 + 1/8*0.5 = 0.15
    est.sample(0.5)
    assert est.rttvar == pytest.approx(0.128125)
    assert est.srtt == pytest.approx(0.15)
    assert est.rto == pytest.approx(0.15 + 4 * 0.128125)


@pytest.mark.parametrize(
    ("samples", "min_rto", "expected_rto"),
    [
        ([0.001], 0.2, 0.2),  # tiny RTT: the minimum RTO wins
        ([0.001], 0.0001, 0.003),  # 0.001 + 4*0.0005
        ([0.01] * 60, 0.0001, 0.01 + 0.001),  # RTTVAR decays toward 0: the clock granularity G is the floor
        ([100.0], 0.2, 120.0),  # 100 + 200 capped at max_rto
    ],
)
def test_rto_bounds(samples: list[float], min_rto: float, expected_rto: float) -> None:
    est = RttEstimator(min_rto=min_rto, max_rto=120.0, clock_granularity=0.001)
    for r in samples:
        est.sample(r)
    assert est.rto == pytest.approx(expected_rto, rel=1e-3)


def test_backoff_doubles_until_capped_and_a_sample_clears_it() -> None:
    est = RttEstimator(initial_rto=1.0, max_rto=60.0)
    expected = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    seen = [est.rto]
    for _ in range(len(expected) - 1):
        est.backoff()
        seen.append(est.rto)
    assert seen == expected
    assert est.backoff_count == 7
    est.sample(0.1)
    assert est.backoff_count == 0
    assert est.rto == pytest.approx(0.3)


def test_reset_backoff_keeps_the_estimate() -> None:
    est = RttEstimator()
    est.sample(0.4)
    est.backoff()
    est.backoff()
    assert est.rto == pytest.approx(4 * 1.2)
    est.reset_backoff()
    assert est.rto == pytest.approx(1.2)
    assert est.base_rto == pytest.approx(1.2)


def test_many_backoffs_do_not_overflow() -> None:
    est = RttEstimator()
    for _ in range(10_000):
        est.backoff()
    assert est.rto == 120.0


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf])
def test_bogus_samples_are_ignored(bad: float) -> None:
    est = RttEstimator()
    est.sample(0.1)
    assert est.sample(bad) is False
    assert est.srtt == pytest.approx(0.1)
    assert est.rto == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_rto": 0}, "min_rto"),
        ({"min_rto": 5, "max_rto": 1}, "min_rto"),
        ({"initial_rto": 0}, "initial_rto"),
        ({"clock_granularity": -1}, "clock_granularity"),
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RttEstimator(**kwargs)


def test_linux_floors_the_variance_term_not_the_whole_rto() -> None:
    """tcp_set_rto: RTO = SRTT + max(rto_min, 4*RTTVAR), so a 10 ms path reads 210 ms, as tcpi_rto does."""
    linux = RttEstimator(min_rto=0.2, min_rto_on_variance=True)
    rfc = RttEstimator(min_rto=0.2)
    for est in (linux, rfc):
        for _ in range(50):
            est.sample(0.010)
    assert linux.rto == pytest.approx(0.210, abs=1e-4)
    assert rfc.rto == pytest.approx(0.200)


def test_send_times_give_the_oldest_newly_acked_first_transmission() -> None:
    times = SendTimes()
    times.sent(1000, 2448, now=1.0)
    times.sent(2448, 3896, now=1.0)  # the same instant: one entry
    times.sent(3896, 5344, now=1.0005)
    assert len(times) == 2
    assert times.acked(2448) == 1.0  # inside the first stretch: its time, the stretch cut at the ACK
    assert times.acked(5344) == 1.0  # the rest of the first stretch is the oldest the ACK covers
    assert len(times) == 0
    assert times.acked(5344) is None  # nothing new: no sample


def test_send_times_follow_karns_rule() -> None:
    times = SendTimes()
    times.sent(0, 100, now=1.0)
    times.sent(100, 200, now=2.0)
    times.retransmitted(0, 100)
    assert times.acked(200) is None  # a retransmitted stretch is covered: ambiguous
    times.sent(200, 300, now=3.0)
    assert times.acked(300) == 3.0


def test_send_times_are_bounded() -> None:
    times = SendTimes()
    for i in range(SendTimes.MAX_ENTRIES + 10):
        times.sent(i * 10, i * 10 + 10, now=float(i))
    assert len(times) == SendTimes.MAX_ENTRIES


def test_a_sub_millisecond_path_reads_its_rtt_not_zero() -> None:
    """The timestamp option ticks in ms: echoes on a 150 us path measure 0. Send times measure 150 us."""
    est = RttEstimator()
    times = SendTimes()
    now = 100.0
    for seq in range(0, 100 * 1448, 1448):
        times.sent(seq, seq + 1448, now)
        now += 0.000150
        first = times.acked(seq + 1448)
        assert first is not None
        est.sample(now - first)
    assert est.srtt == pytest.approx(0.000150)


def test_one_turns_acks_for_one_turns_data_count_once() -> None:
    """Two hundred ACKs read at one instant for data sent at one instant are one measurement."""
    times = SendTimes()
    assert not times.repeats(1.0, 1.010)
    assert all(times.repeats(1.0, 1.010) for _ in range(200))
    assert not times.repeats(1.0, 1.011) and not times.repeats(1.002, 1.011)
