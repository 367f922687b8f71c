"""Congestion control: how much unacknowledged data a sender may have in the network (cwnd).

One file per algorithm behind one interface (`base.CongestionControl`), so a connection can switch by name,
as Linux does with TCP_CONGESTION: `newreno` (RFC 5681 / RFC 6582) and `cubic` (RFC 9438, Linux's default).
"""

from __future__ import annotations

from stack.tcp.congestion.base import INFINITE_SSTHRESH, CongestionControl, initial_window_bytes
from stack.tcp.congestion.cubic import CUBIC_ALPHA, CUBIC_BETA, CUBIC_C, Cubic
from stack.tcp.congestion.newreno import NewReno

CONGESTION_CONTROLS: dict[str, type[CongestionControl]] = {
    "cubic": Cubic,
    "newreno": NewReno,
    "reno": NewReno,
}


def create_congestion_control(name: str, mss: int, initial_window: int = 10) -> CongestionControl:
    """The algorithm called `name` ("cubic", "newreno"; "reno" is Linux's name for NewReno)."""
    try:
        kind = CONGESTION_CONTROLS[name.lower()]
    except (KeyError, AttributeError):
        choices = ", ".join(sorted(CONGESTION_CONTROLS))
        raise ValueError(f"unknown congestion control {name!r}; choose one of: {choices}") from None
    initial_window_bytes(mss, initial_window)  # validates both
    return kind(mss, initial_window)


__all__ = [
    "CONGESTION_CONTROLS", "CUBIC_ALPHA", "CUBIC_BETA", "CUBIC_C", "INFINITE_SSTHRESH", "CongestionControl",
    "Cubic", "NewReno", "create_congestion_control", "initial_window_bytes",
]
