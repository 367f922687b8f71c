"""Congestion control: RFC 6928 initial window, NewReno per-ACK growth, CUBIC against RFC 9438's formulas."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.tcp.congestion import (
    CUBIC_ALPHA,
    CUBIC_C,
    INFINITE_SSTHRESH,
    Cubic,
    NewReno,
    create_congestion_control,
    initial_window_bytes,
)

MSS = 1000


@pytest.mark.parametrize(
    ("mss", "segments", "expected"),
    [
        (536, 10, 5360),
        (1000, 10, 10_000),
        (1460, 10, 14_600),
        (4000, 10, 14_600),  # min(40000, max(8000, 14600))
        (9000, 10, 18_000),  # 2*MSS floor
        (1460, 4, 5840),
        (1460, 1, 1460),
    ],
)
def test_initial_window_rfc6928(mss: int, segments: int, expected: int) -> None:
    assert initial_window_bytes(mss, segments) == expected


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_factory_builds_each_algorithm(name: str) -> None:
    cc = create_congestion_control(name, mss=1460)
    assert cc.name == name
    assert cc.cwnd == 14_600
    assert cc.ssthresh == INFINITE_SSTHRESH


def test_factory_rejects_unknown_names_listing_the_choices() -> None:
    message = r"unknown congestion control 'bbr'; choose one of: cubic, newreno, reno"
    with pytest.raises(ValueError, match=message):
        create_congestion_control("bbr", mss=1460)
    assert isinstance(create_congestion_control("Reno", mss=1460), NewReno)
    with pytest.raises(ValueError, match="mss"):
        create_congestion_control("cubic", mss=0)


# ------------------------------------------------------------------ NewReno


def test_newreno_slow_start_grows_by_every_byte_acked() -> None:
    cc = NewReno(MSS)
    # a stretch ACK (a GRO receiver's one ACK for 45 segments) grows cwnd by all it ACKs, as in Linux
    steps = [(1000, 11_000), (2000, 13_000), (45_000, 58_000), (500, 58_500)]
    for acked, expected in steps:
        cc.on_ack(acked, now=0.0, rtt=0.05)
        assert cc.cwnd == expected
    assert cc.in_slow_start


def test_newreno_slow_start_stops_at_ssthresh_and_carries_over() -> None:
    cc = NewReno(MSS)
    cc.ssthresh = 14_000
    cc.cwnd = 13_000
    cc.on_ack(2000, 0.0, None)  # 1000 bytes take cwnd to ssthresh, 1000 go to the byte counter
    assert cc.cwnd == 14_000 and not cc.in_slow_start
    for _ in range(12):
        cc.on_ack(1000, 0.0, None)
    assert cc.cwnd == 14_000  # 13000 bytes counted so far
    cc.on_ack(1000, 0.0, None)
    assert cc.cwnd == 15_000  # one SMSS per cwnd of ACKed bytes (RFC 3465 2.1)


def test_newreno_congestion_avoidance_one_mss_per_rtt() -> None:
    cc = NewReno(MSS)
    cc.ssthresh = 20_000
    cc.cwnd = 20_000
    for rtt_round in range(5):
        window = cc.cwnd
        for _ in range(window // MSS):
            cc.on_ack(MSS, float(rtt_round), 0.1)
        assert cc.cwnd == window + MSS


@pytest.mark.parametrize(("flight", "ssthresh"), [(20_000, 10_000), (3000, 2000), (15_500, 7750)])
def test_newreno_loss_and_rto(flight: int, ssthresh: int) -> None:
    cc = NewReno(MSS)
    cc.on_loss(1.0, flight)
    assert (cc.cwnd, cc.ssthresh) == (ssthresh, ssthresh)
    cc.on_recovery_exit(1.5)
    assert cc.cwnd == ssthresh
    cc.on_rto(2.0, flight)
    assert (cc.cwnd, cc.ssthresh) == (MSS, ssthresh)


def test_newreno_recovery_exit_with_small_flight_avoids_a_burst() -> None:
    cc = NewReno(MSS)
    cc.on_loss(1.0, 40_000)
    cc.on_recovery_exit(1.2, flight_size=3000)
    assert cc.cwnd == 4000  # min(ssthresh=20000, flight + SMSS), RFC 6582 3.2 step 3


def test_idle_restart_cuts_to_the_initial_window() -> None:
    for cc in (NewReno(MSS), Cubic(MSS)):
        cc.cwnd = 50_000
        cc.on_idle_restart(10.0)
        assert cc.cwnd == 10_000
        cc.cwnd = 4000
        cc.on_idle_restart(20.0)
        assert cc.cwnd == 4000


def test_set_mss_before_and_after_data() -> None:
    cc = NewReno(536)
    assert cc.cwnd == 5360
    cc.set_mss(1460)  # negotiated before any data: the initial window is recomputed
    assert cc.cwnd == 14_600
    cc.on_ack(1460, 0.0, None)
    cc.on_loss(0.1, 40_880)
    cc.set_mss(1000)  # PMTU drop later: same number of segments
    assert (cc.cwnd, cc.ssthresh, cc.mss) == (14_000, 14_000, 1000)


# ------------------------------------------------------------------ CUBIC


def run_cubic_epoch(cc: Cubic, start: float, end: float, rtt: float) -> list[tuple[float, float]]:
    """ACK-clock the flow: each RTT the window is ACKed in MSS-sized ACKs. Returns (t, cwnd in segments)."""
    samples = []
    now = start
    while now < end:
        window = cc.cwnd
        acks = max(1, window // MSS)
        for i in range(acks):
            cc.on_ack(MSS, now + rtt * (i + 1) / acks, rtt)
        now += rtt
        samples.append((now - start, cc.cwnd / MSS))
    return samples


def test_cubic_after_loss_follows_w_cubic() -> None:
    """W_max = 1000 segments, RTT 100 ms: CUBIC's own region all along; cwnd(t) within half a segment of
    RFC 9438's W_cubic(t) through the concave part, the plateau at K and the convex part."""
    cc = Cubic(MSS)
    cc.ssthresh = 500_000
    cc.cwnd = 1_000_000
    cc.on_loss(now=0.0, flight_size=1_000_000)
    assert cc.w_max == pytest.approx(1000.0)
    assert cc.ssthresh == 700_000 and cc.cwnd == 700_000  # beta_cubic = 0.7
    cc.on_recovery_exit(now=0.1)
    samples = run_cubic_epoch(cc, start=1.0, end=14.0, rtt=0.1)
    k = (300 / CUBIC_C) ** (1 / 3)  # RFC 9438 equation (2): cbrt((W_max - cwnd_epoch) / C)
    assert cc.k == pytest.approx(k)
    assert k == pytest.approx(9.0856, abs=1e-4)
    for t, cwnd in samples:
        assert cwnd == pytest.approx(CUBIC_C * (t - k) ** 3 + 1000.0, abs=0.5), t
    at_one_second = min(samples, key=lambda s: abs(s[0] - 1.0))[1]
    assert at_one_second == pytest.approx(788.4, abs=0.5)  # concave: fast growth far from W_max
    assert min(samples, key=lambda s: abs(s[0] - k))[1] == pytest.approx(1000.0, abs=0.5)  # plateau at K
    assert samples[-1][1] > 1020  # convex: probing beyond W_max


def test_cubic_reno_friendly_once_w_est_passes_the_curve() -> None:
    """W_max = 100 segments at RTT 50 ms: Reno's estimate W_est overtakes the plateau of W_cubic, and from
    then on cwnd grows like Reno, one segment per RTT (RFC 9438 4.3)."""
    cc = Cubic(MSS)
    cc.cwnd = 100_000
    cc.on_loss(now=0.0, flight_size=100_000)
    cc.on_recovery_exit(now=0.0)
    samples = run_cubic_epoch(cc, start=1.0, end=6.0, rtt=0.05)
    k = cc.k
    late = [(t, w) for t, w in samples if t > 3.5]
    for (_, w1), (t2, w2) in itertools.pairwise(late):
        assert w2 - w1 == pytest.approx(1.0, abs=0.05)  # +1 segment per RTT
        assert w2 > CUBIC_C * (t2 - k) ** 3 + 100.0  # above the cubic curve


def test_cubic_fast_convergence_lowers_w_max() -> None:
    cc = Cubic(MSS)
    cc.cwnd = 100_000
    cc.on_loss(0.0, 100_000)
    assert cc.w_max == pytest.approx(100.0)
    cc.on_recovery_exit(0.1)
    cc.on_loss(0.2, 70_000)  # second loss below the previous W_max
    assert cc.w_max == pytest.approx(70 * (1 + 0.7) / 2)
    assert cc.ssthresh == 49_000
    no_fc = Cubic(MSS, fast_convergence=False)
    no_fc.cwnd = 100_000
    no_fc.on_loss(0.0, 100_000)
    no_fc.on_recovery_exit(0.1)
    no_fc.on_loss(0.2, 70_000)
    assert no_fc.w_max == pytest.approx(70.0)


def test_cubic_reno_friendly_region_at_short_rtt() -> None:
    """With W_max small and RTT short, W_est (Reno's growth) beats W_cubic and cwnd follows W_est."""
    cc = Cubic(MSS)
    cc.cwnd = 10_000
    cc.on_loss(0.0, 10_000)
    cc.on_recovery_exit(0.0)
    assert cc.cwnd == 7000
    rtt = 0.01
    samples = run_cubic_epoch(cc, start=1.0, end=1.5, rtt=rtt)
    # W_est: +alpha_cubic per RTT from 7 to the pre-loss 10 segments, then +1 per RTT
    # (each round ACKs floor(cwnd) segments, so a round adds slightly less than alpha: allow 5%)
    rtts_to_prior = 3 / CUBIC_ALPHA
    reno_growth = len(samples) - rtts_to_prior
    assert 10 + 0.95 * reno_growth <= samples[-1][1] <= 10 + reno_growth
    assert samples[-1][1] > cc.w_cubic(0.5) + 30  # far above the cubic curve


def test_cubic_rto_restarts_with_k_zero() -> None:
    cc = Cubic(MSS)
    cc.cwnd = 60_000
    cc.ssthresh = 60_000
    cc.on_rto(5.0, flight_size=60_000)
    assert cc.cwnd == MSS and cc.ssthresh == 42_000
    # slow start back to ssthresh, then an epoch with K = 0 and W_max = cwnd at its start
    cc.on_ack(2_000, 6.0, 0.05)
    assert cc.cwnd == 3000 and cc.in_slow_start
    cc.on_ack(39_000, 6.1, 0.05)  # up to ssthresh, the 0 bytes beyond it to congestion avoidance
    assert cc.cwnd == 42_000
    cc.on_ack(MSS, 7.0, 0.05)
    assert cc.k == 0.0
    assert cc.w_max == pytest.approx(42.0)


def test_cubic_slow_start_matches_newreno() -> None:
    cubic, reno = Cubic(MSS), NewReno(MSS)
    for acked in (1000, 3000, 500, 2000):
        cubic.on_ack(acked, 0.0, 0.01)
        reno.on_ack(acked, 0.0, 0.01)
        assert cubic.cwnd == reno.cwnd
    assert cubic.min_rtt == 0.01


def test_ignores_empty_acks() -> None:
    for cc in (NewReno(MSS), Cubic(MSS)):
        cc.on_ack(0, 0.0, None)
        cc.on_ack(-5, 0.0, None)
        assert cc.cwnd == 10_000


events = st.lists(
    st.one_of(
        st.tuples(st.just("ack"), st.integers(-10, 200_000), st.one_of(st.none(), st.floats(0.0001, 2.0))),
        st.tuples(st.just("loss"), st.integers(0, 2_000_000), st.none()),
        st.tuples(st.just("rto"), st.integers(0, 2_000_000), st.none()),
        st.tuples(st.just("exit"), st.integers(0, 1), st.none()),
        st.tuples(st.just("idle"), st.integers(0, 1), st.none()),
        st.tuples(st.just("mss"), st.integers(536, 9000), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["newreno", "cubic"]), events, st.floats(0.001, 5.0))
def test_window_stays_sane_under_any_event_sequence(name: str, sequence, step: float) -> None:
    """Whatever happens, cwnd stays at least one MSS and finite, ssthresh at least 2*MSS after a reduction."""
    cc = create_congestion_control(name, mss=1460)
    now = 0.0
    for kind, value, rtt in sequence:
        now += step
        if kind == "ack":
            cc.on_ack(value, now, rtt)
        elif kind == "loss":
            cc.on_loss(now, value)
            assert cc.ssthresh >= 2 * cc.mss
        elif kind == "rto":
            cc.on_rto(now, value)
            assert cc.cwnd == cc.mss
        elif kind == "exit":
            cc.on_recovery_exit(now)
        elif kind == "idle":
            cc.on_idle_restart(now)
        else:
            cc.set_mss(value)
        assert isinstance(cc.cwnd, int)
        assert cc.mss <= cc.cwnd < 2**40
        assert cc.ssthresh >= 2 * cc.mss or cc.ssthresh == INFINITE_SSTHRESH
