"""Congestion control: how much unacknowledged data a sender may have in the network (cwnd).

Two algorithms share one small interface (`CongestionControl`) so a connection can switch by name, as Linux
does with TCP_CONGESTION:

- `NewReno`: RFC 5681 slow start and congestion avoidance with RFC 3465 byte counting (L = 2*SMSS), the
  window halved on loss.
- `Cubic`: RFC 9438, Linux's default: after a loss the window follows W_cubic(t) = C*(t-K)**3 + W_max in
  time rather than in round trips, with fast convergence and the Reno-friendly region.

Windows are in bytes at the interface; CUBIC computes in segments internally (its constants are defined per
segment). Loss *detection* and recovery bookkeeping (duplicate ACKs, SACK pipe, Karn) are the connection's;
this module only answers "what is cwnd now".
"""

from __future__ import annotations

from typing import Protocol

INFINITE_SSTHRESH = 0x7FFFFFFF  # "arbitrarily high" initial ssthresh (RFC 5681 3.1), Linux's value
RFC6928_WINDOW_BYTES_PER_SEGMENT = 1460  # RFC 6928: IW = min(10*MSS, max(2*MSS, 14600))
ABC_LIMIT_SEGMENTS = 2  # RFC 3465: slow start grows by at most L = 2*SMSS per ACK

CUBIC_C = 0.4  # RFC 9438 4.2, segments / s**3
CUBIC_BETA = 0.7  # RFC 9438 4.6, multiplicative decrease factor
CUBIC_ALPHA = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)  # RFC 9438 4.3, Reno-friendly additive increase
CUBIC_MAX_GROWTH = 1.5  # RFC 9438 4.2: the target is at most 1.5 * cwnd per RTT


class CongestionControl(Protocol):
    """What a connection calls; window sizes in bytes."""

    name: str
    cwnd: int
    ssthresh: int
    mss: int

    def on_ack(self, acked: int, now: float, rtt: float | None) -> None:
        """`acked` bytes of new data were cumulatively ACKed outside loss recovery; rtt is a valid sample."""

    def on_loss(self, now: float, flight_size: int) -> None:
        """Fast retransmit: a loss was detected and recovery begins."""

    def on_recovery_exit(self, now: float, flight_size: int | None = None) -> None:
        """Recovery ended (a full ACK): deflate the window to ssthresh."""

    def on_rto(self, now: float, flight_size: int) -> None:
        """The retransmission timer expired."""

    def on_idle_restart(self, now: float) -> None:
        """Sending resumes after an idle period longer than the RTO (RFC 5681 4.1)."""

    def set_mss(self, mss: int) -> None:
        """The sender's MSS changed (option negotiation, PMTU)."""


def initial_window_bytes(mss: int, segments: int = 10) -> int:
    """RFC 6928's initial window: min(10*MSS, max(2*MSS, 14600)).

    For other segment counts the same shape is used: min(n*MSS, max(2*MSS, n*1460)), which is RFC 6928 for
    n = 10 and keeps a large MSS from making the first flight huge.
    """
    if mss <= 0:
        raise ValueError(f"mss must be positive, got {mss}")
    if segments < 1:
        raise ValueError(f"initial window must be at least 1 segment, got {segments}")
    return min(segments * mss, max(2 * mss, segments * RFC6928_WINDOW_BYTES_PER_SEGMENT))


class NewReno:
    """RFC 5681 / RFC 6582 congestion window.

    Loss recovery follows RFC 6675's form: on loss cwnd = ssthresh and the connection limits sending by its
    pipe estimate. A connection without SACK that uses RFC 6582's artificial inflation (+3*SMSS, then +SMSS
    per further duplicate ACK) adds that to its usable window itself; cwnd here stays ssthresh.
    """

    name = "newreno"
    __slots__ = ("_acked_any", "_bytes_acked", "cwnd", "initial_window", "mss", "ssthresh")

    def __init__(self, mss: int, initial_window: int = 10) -> None:
        self.mss = mss
        self.initial_window = initial_window
        self.cwnd = initial_window_bytes(mss, initial_window)
        self.ssthresh = INFINITE_SSTHRESH
        self._bytes_acked = 0  # RFC 3465 byte counter for congestion avoidance
        self._acked_any = False

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def on_ack(self, acked: int, now: float, rtt: float | None) -> None:
        if acked <= 0:
            return
        self._acked_any = True
        acked = _slow_start(self, acked)
        if acked <= 0:
            return
        # congestion avoidance (RFC 5681 3.1 / RFC 3465 2.1): one SMSS per cwnd of bytes ACKed
        self._bytes_acked += acked
        if self._bytes_acked >= self.cwnd:
            self._bytes_acked -= self.cwnd
            self.cwnd += self.mss

    def on_loss(self, now: float, flight_size: int) -> None:
        self.ssthresh = max(flight_size // 2, 2 * self.mss)  # RFC 5681 equation (4)
        self.cwnd = self.ssthresh
        self._bytes_acked = 0

    def on_recovery_exit(self, now: float, flight_size: int | None = None) -> None:
        """cwnd = ssthresh; given the flight size, RFC 6582's burst-avoiding min(ssthresh, flight + SMSS)."""
        if flight_size is None:
            self.cwnd = self.ssthresh
        else:
            self.cwnd = min(self.ssthresh, max(flight_size, self.mss) + self.mss)
        self._bytes_acked = 0

    def on_rto(self, now: float, flight_size: int) -> None:
        self.ssthresh = max(flight_size // 2, 2 * self.mss)
        self.cwnd = self.mss  # RFC 5681: the loss window is one segment
        self._bytes_acked = 0

    def on_idle_restart(self, now: float) -> None:
        self.cwnd = min(self.cwnd, initial_window_bytes(self.mss, self.initial_window))  # RFC 5681 4.1
        self._bytes_acked = 0

    def set_mss(self, mss: int) -> None:
        self.cwnd, self.ssthresh = _rescale(self, mss)
        self.mss = mss


class Cubic:
    """RFC 9438 CUBIC with fast convergence and the Reno-friendly region (no HyStart++).

    Slow start is RFC 5681's, as for NewReno. In congestion avoidance each ACK moves cwnd toward
    target = W_cubic(t + RTT) (RTT = the minimum seen), by (target - cwnd)/cwnd per segment ACKed, where t is
    the time since the current congestion-avoidance epoch began.
    """

    name = "cubic"
    __slots__ = (
        "_acked_any",
        "_cwnd",
        "_cwnd_epoch",
        "_cwnd_prior",
        "_epoch_start",
        "_k",
        "_w_est",
        "_w_max",
        "fast_convergence",
        "initial_window",
        "min_rtt",
        "mss",
        "ssthresh",
    )

    def __init__(self, mss: int, initial_window: int = 10, fast_convergence: bool = True) -> None:
        self.mss = mss
        self.initial_window = initial_window
        self.fast_convergence = fast_convergence
        self._cwnd = float(initial_window_bytes(mss, initial_window))
        self.ssthresh = INFINITE_SSTHRESH
        self.min_rtt: float | None = None
        self._w_max = 0.0  # segments; 0 = no congestion event in this epoch history (K = 0)
        self._cwnd_prior = 0.0  # segments: cwnd at the last congestion event
        self._k = 0.0
        self._epoch_start: float | None = None
        self._cwnd_epoch = 0.0
        self._w_est = 0.0
        self._acked_any = False

    @property
    def cwnd(self) -> int:
        return int(self._cwnd)

    @cwnd.setter
    def cwnd(self, value: int) -> None:
        self._cwnd = float(value)

    @property
    def in_slow_start(self) -> bool:
        return self._cwnd < self.ssthresh

    @property
    def w_max(self) -> float:
        """W_max in segments: the window before the last reduction (after fast convergence)."""
        return self._w_max

    @property
    def k(self) -> float:
        """K in seconds: when W_cubic returns to W_max in the current epoch."""
        return self._k

    def w_cubic(self, t: float) -> float:
        """RFC 9438 equation (1), in segments: C*(t-K)**3 + W_max."""
        return CUBIC_C * (t - self._k) ** 3 + self._w_max

    def on_ack(self, acked: int, now: float, rtt: float | None) -> None:
        if acked <= 0:
            return
        self._acked_any = True
        if rtt is not None and rtt > 0 and (self.min_rtt is None or rtt < self.min_rtt):
            self.min_rtt = rtt
        acked = _slow_start(self, acked)
        if acked <= 0:
            return
        mss = self.mss
        cwnd = self._cwnd / mss
        if self._epoch_start is None:
            self._start_epoch(now, cwnd)
        t = now - self._epoch_start  # type: ignore[operator]
        segments_acked = acked / mss
        # Reno-friendly estimate (RFC 9438 4.3): alpha_cubic until W_est reaches the pre-loss window, then 1
        alpha = 1.0 if self._w_est >= self._cwnd_prior else CUBIC_ALPHA
        self._w_est += alpha * segments_acked / cwnd
        if self.w_cubic(t) < self._w_est:
            new_cwnd = self._w_est  # Reno-friendly region
        else:
            target = self.w_cubic(t + (self.min_rtt or 0.0))
            target = min(max(target, cwnd), CUBIC_MAX_GROWTH * cwnd)
            new_cwnd = cwnd + (target - cwnd) * segments_acked / cwnd  # concave / convex regions
        if new_cwnd > cwnd:
            self._cwnd = new_cwnd * mss

    def _start_epoch(self, now: float, cwnd: float) -> None:
        self._epoch_start = now
        self._cwnd_epoch = cwnd
        self._w_est = cwnd
        if self._w_max <= cwnd:
            # no reduction to recover from (first epoch, after an RTO, or already past W_max): K = 0
            self._w_max = cwnd
            self._k = 0.0
        else:
            self._k = ((self._w_max - cwnd) / CUBIC_C) ** (1 / 3)  # RFC 9438 equation (2)

    def _reduce(self, flight_size: int) -> None:
        cwnd = self._cwnd / self.mss
        if self.fast_convergence and cwnd < self._w_max:
            self._w_max = cwnd * (1 + CUBIC_BETA) / 2  # RFC 9438 4.7: release bandwidth to new flows
        else:
            self._w_max = cwnd
        self._cwnd_prior = cwnd
        self.ssthresh = max(int(flight_size * CUBIC_BETA), 2 * self.mss)  # RFC 9438 4.6
        self._epoch_start = None

    def on_loss(self, now: float, flight_size: int) -> None:
        self._reduce(flight_size)
        self._cwnd = float(self.ssthresh)

    def on_recovery_exit(self, now: float, flight_size: int | None = None) -> None:
        if flight_size is None:
            self._cwnd = float(self.ssthresh)
        else:
            self._cwnd = float(min(self.ssthresh, max(flight_size, self.mss) + self.mss))
        self._epoch_start = None  # t counts from the start of the congestion-avoidance stage

    def on_rto(self, now: float, flight_size: int) -> None:
        """RFC 9438 4.8: ssthresh by beta_cubic, cwnd = 1 SMSS, and the next epoch starts with K = 0 and
        W_max = cwnd at its start."""
        self._reduce(flight_size)
        self._w_max = 0.0
        self._cwnd = float(self.mss)

    def on_idle_restart(self, now: float) -> None:
        self._cwnd = min(self._cwnd, float(initial_window_bytes(self.mss, self.initial_window)))
        self._epoch_start = None

    def set_mss(self, mss: int) -> None:
        cwnd, self.ssthresh = _rescale(self, mss)
        self._cwnd = float(cwnd)
        self.mss = mss


def _slow_start(cc: NewReno | Cubic, acked: int) -> int:
    """Grow cwnd in slow start (RFC 5681 3.1, RFC 3465 L = 2*SMSS); return the ACKed bytes left over for
    congestion avoidance (those beyond ssthresh, as Linux does)."""
    cwnd = cc.cwnd
    if cwnd >= cc.ssthresh:
        return acked
    increase = min(acked, ABC_LIMIT_SEGMENTS * cc.mss)
    if cwnd + increase < cc.ssthresh:
        cc.cwnd = cwnd + increase
        return 0
    cc.cwnd = cc.ssthresh
    return acked - (cc.ssthresh - cwnd)


def _rescale(cc: NewReno | Cubic, mss: int) -> tuple[int, int]:
    """(cwnd, ssthresh) for a new MSS: the initial window recomputed if nothing was ACKed yet, otherwise the
    same number of segments."""
    if mss <= 0:
        raise ValueError(f"mss must be positive, got {mss}")
    if not cc._acked_any and cc.ssthresh == INFINITE_SSTHRESH:
        return initial_window_bytes(mss, cc.initial_window), INFINITE_SSTHRESH
    cwnd = max(mss, cc.cwnd * mss // cc.mss)
    ssthresh = cc.ssthresh if cc.ssthresh == INFINITE_SSTHRESH else max(2 * mss, cc.ssthresh * mss // cc.mss)
    return cwnd, ssthresh


CONGESTION_CONTROLS: dict[str, type[NewReno] | type[Cubic]] = {
    "cubic": Cubic,
    "newreno": NewReno,
    "reno": NewReno,
}


def create_congestion_control(name: str, mss: int, initial_window: int = 10) -> NewReno | Cubic:
    """The algorithm called `name` ("cubic", "newreno"; "reno" is Linux's name for NewReno)."""
    try:
        kind = CONGESTION_CONTROLS[name.lower()]
    except (KeyError, AttributeError):
        choices = ", ".join(sorted(CONGESTION_CONTROLS))
        raise ValueError(f"unknown congestion control {name!r}; choose one of: {choices}") from None
    initial_window_bytes(mss, initial_window)  # validates both
    return kind(mss, initial_window)
