"""SYN cookies: round trip of the MSS, rejection of tampering, wrong tuples and age; timestamp options."""

from __future__ import annotations

import random

import pytest

from stack.tcp.seq import SEQ_MASK
from stack.tcp.syncookies import (
    COOKIE_PERIOD,
    MSS_TABLE,
    CookieOptions,
    cookie_mss,
    decode_cookie,
    decode_cookie_timestamp,
    encode_cookie,
    encode_cookie_timestamp,
)

SECRET = b"cookie secret 0123456789"
SERVER = ("10.0.0.1", 80)
CLIENT = ("10.0.0.2", 40000)


def encode(client_isn: int, mss: int, now: float, client: tuple[str, int] = CLIENT) -> int:
    return encode_cookie(SECRET, *SERVER, *client, client_isn, mss, now)


def decode(cookie: int, client_isn: int, now: float, client: tuple[str, int] = CLIENT) -> int | None:
    return decode_cookie(SECRET, *SERVER, *client, cookie, client_isn, now)


@pytest.mark.parametrize(
    ("offered", "carried"),
    [
        (1460, 1460),
        (9000, 1460),
        (1459, 1440),
        (1440, 1440),
        (1400, 1300),
        (1300, 1300),
        (1000, 536),
        (536, 536),
        (100, 536),
    ],
)
def test_mss_round_trip_uses_linux_table(offered: int, carried: int) -> None:
    assert cookie_mss(offered) == carried
    for client_isn in (0, 12345, SEQ_MASK):
        cookie = encode(client_isn, offered, now=1000.0)
        assert 0 <= cookie <= SEQ_MASK
        assert decode(cookie, client_isn, now=1000.0) == carried


def test_valid_for_two_counter_steps_only() -> None:
    start = 64 * 100.0  # the start of a counter period
    cookie = encode(777, 1460, start)
    assert decode(cookie, 777, start + COOKIE_PERIOD - 0.001) == 1460  # same period
    assert decode(cookie, 777, start + 2 * COOKIE_PERIOD - 0.001) == 1460  # next period
    assert decode(cookie, 777, start + 2 * COOKIE_PERIOD) is None  # two steps old
    assert decode(cookie, 777, start - 1.0) is None  # from the future


def test_cookie_near_a_counter_boundary_lives_at_least_one_period() -> None:
    late = 64 * 100.0 + 63.9
    cookie = encode(5, 1300, late)
    assert decode(cookie, 5, late + 64.0) == 1300


def test_counter_changes_the_cookie() -> None:
    assert encode(1, 1460, 0.0) != encode(1, 1460, 64.0)


@pytest.mark.parametrize("mss", MSS_TABLE)
def test_any_flipped_bit_is_rejected(mss: int) -> None:
    cookie = encode(99, mss, 500.0)
    for bit in range(32):
        assert decode(cookie ^ (1 << bit), 99, 500.0) is None, bit
    for delta in (1, 2, 3, -1):  # an off-by-small cookie must not decode to a neighbouring MSS
        assert decode((cookie + delta) & SEQ_MASK, 99, 500.0) is None


def test_wrong_tuple_isn_or_secret_is_rejected() -> None:
    cookie = encode(42, 1440, 10.0)
    assert decode(cookie, 43, 10.0) is None
    assert decode(cookie, 42, 10.0, client=("10.0.0.3", 40000)) is None
    assert decode(cookie, 42, 10.0, client=("10.0.0.2", 40001)) is None
    assert decode_cookie(b"other secret", *SERVER, *CLIENT, cookie, 42, 10.0) is None


def test_random_guesses_almost_never_pass() -> None:
    rng = random.Random(11)
    accepted = sum(decode(rng.getrandbits(32), 1, 3000.0) is not None for _ in range(5000))
    # each guess passes with probability 2 (ages) / 2**22 ~ 5e-7
    assert accepted == 0


def test_cookies_for_different_clients_differ() -> None:
    cookies = {encode(1000, 1460, 0.0, client=("10.0.0.2", port)) for port in range(40000, 41000)}
    assert len(cookies) == 1000


@pytest.mark.parametrize(
    ("wscale", "sack", "ecn", "low_bits"),
    [
        (7, True, False, 0b010111),
        (None, False, False, 0b001111),
        (0, True, True, 0b110000),
        (14, False, True, 0b101110),
    ],
)
def test_timestamp_carries_options(wscale: int | None, sack: bool, ecn: bool, low_bits: int) -> None:
    ts_now = 1_000_000
    tsval = encode_cookie_timestamp(ts_now, wscale, sack, ecn)
    assert tsval & 0x3F == low_bits
    assert ts_now - 64 < tsval <= ts_now  # never ahead of the clock, at most one 64-tick step behind
    assert decode_cookie_timestamp(tsval) == CookieOptions(wscale=wscale, sack_permitted=sack, ecn=ecn)


def test_timestamp_never_runs_ahead_across_the_wrap() -> None:
    tsval = encode_cookie_timestamp(5, 14, True, True)  # low bits 0x3E > 5: moved back across 0
    assert tsval == (SEQ_MASK + 1 - 64 + 0x3E)
    assert decode_cookie_timestamp(tsval).wscale == 14


def test_bad_wscale_rejected() -> None:
    with pytest.raises(ValueError, match="window scale"):
        encode_cookie_timestamp(0, 15, False, False)


def test_table_is_linux_ipv4_msstab() -> None:
    assert MSS_TABLE == (536, 1300, 1440, 1460)
