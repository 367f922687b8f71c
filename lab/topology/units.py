"""Parsing the human units of link impairments: durations, percentages and rates.

The spelling follows tc/netem (``20ms``, ``1%``, ``100mbit``) so a file reads like the tc command a
reader may know, but a bare number is refused: ``delay: 20`` could mean seconds or milliseconds,
and ``rate: 100mbps`` means megaBYTES per second to tc, which nobody writing it means. Every
parser raises ``ValueError("expected ...")``, which the loader turns into a one-line error; the
ranges are `stack.ranges`' (the node's settings file and control socket check the same ones).
"""

from __future__ import annotations

import re

from stack.ranges import DELAY_MS, PERCENT, RATE_MBIT

_NUMBER = r"(?P<number>\d+(?:\.\d+)?|\.\d+)"
_DURATION = re.compile(_NUMBER + r"\s*(?P<unit>us|ms|s)", re.IGNORECASE)
_PERCENT = re.compile(_NUMBER + r"\s*%")
_RATE = re.compile(_NUMBER + r"\s*(?P<unit>bit|kbit|mbit|gbit|tbit)", re.IGNORECASE)

_MS_PER_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_MBIT_PER_UNIT = {"bit": 1e-6, "kbit": 1e-3, "mbit": 1.0, "gbit": 1e3, "tbit": 1e6}


def format_duration(ms: float) -> str:
    """The inverse of `parse_duration_ms`, for graphs and files written by code (`lab.topology.chain`)."""
    return _format_scaled(ms, ("s", "ms", "us"))


def format_rate(mbit: float) -> str:
    """The inverse of `parse_rate_mbit`, for graphs and files written by code (`lab.topology.chain`)."""
    return _format_scaled(mbit, ("gbit", "mbit", "kbit"))


def _format_scaled(value: float, units: tuple[str, str, str]) -> str:
    """`value` (in units[1]) in the unit that reads best: units[0] for whole thousands, units[2] below one."""
    larger, same, smaller = units
    if value >= 1000 and value % 1000 == 0:
        return f"{value / 1000:.12g}{larger}"
    if value < 1:
        return f"{value * 1000:.12g}{smaller}"
    return f"{value:.12g}{same}"


DURATION_EXPECTED = f"expected a duration from 0 to {format_duration(DELAY_MS.high)} like 20ms, 1s or 500us"
PERCENT_EXPECTED = f"expected a percentage from {PERCENT.low:g}% to {PERCENT.high:g}% like 1% or 0.5%"
RATE_EXPECTED = (
    f"expected a rate from {format_rate(RATE_MBIT.low)} to {format_rate(RATE_MBIT.high)} "
    f"like 100mbit, 1gbit or 500kbit"
)


def parse_duration_ms(value: object) -> float:
    """``"20ms"`` -> 20.0, ``"1s"`` -> 1000.0, ``"500us"`` -> 0.5 (milliseconds)."""
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(DURATION_EXPECTED)
    ms = float(match["number"]) * _MS_PER_UNIT[match["unit"].lower()]
    if ms not in DELAY_MS:
        raise ValueError(DURATION_EXPECTED)
    return ms


def parse_percent(value: object) -> float:
    """``"1%"`` -> 1.0, ``"0.5%"`` -> 0.5; at most 100."""
    match = _PERCENT.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or float(match["number"]) not in PERCENT:
        raise ValueError(PERCENT_EXPECTED)
    return float(match["number"])


def parse_rate_mbit(value: object) -> float:
    """``"100mbit"`` -> 100.0, ``"1gbit"`` -> 1000.0, ``"500kbit"`` -> 0.5 (megabits per second)."""
    match = _RATE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(RATE_EXPECTED)
    mbit = float(match["number"]) * _MBIT_PER_UNIT[match["unit"].lower()]
    if mbit not in RATE_MBIT:
        raise ValueError(RATE_EXPECTED)
    return mbit
