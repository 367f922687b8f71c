"""CUBIC (RFC 9438), Linux's default: after a loss the window follows W_cubic(t) = C*(t-K)**3 + W_max in
time rather than in round trips, with fast convergence and the Reno-friendly region.

CUBIC computes in segments internally (its constants are defined per segment); the interface is in bytes.
"""

from __future__ import annotations

from stack.tcp.congestion.base import INFINITE_SSTHRESH, initial_window_bytes, rescaled_windows, slow_start

CUBIC_C = 0.4  # RFC 9438 4.2, segments / s**3
CUBIC_BETA = 0.7  # RFC 9438 4.6, multiplicative decrease factor
CUBIC_ALPHA = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)  # RFC 9438 4.3, Reno-friendly additive increase
CUBIC_MAX_GROWTH = 1.5  # RFC 9438 4.2: the target is at most 1.5 * cwnd per RTT


class Cubic:
    """RFC 9438 CUBIC with fast convergence and the Reno-friendly region (no HyStart++).

    Slow start is RFC 5681's, as for NewReno. In congestion avoidance each ACK moves cwnd toward
    target = W_cubic(t + RTT) (RTT = the minimum seen), by (target - cwnd)/cwnd per segment ACKed, where t is
    the time since the current congestion-avoidance epoch began.
    """

    name = "cubic"
    __slots__ = (
        "_cwnd",
        "_cwnd_epoch",
        "_cwnd_prior",
        "_epoch_start",
        "_k",
        "_w_est",
        "_w_max",
        "acked_any",
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
        self.acked_any = False

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

    def on_ack(self, acked: int, now: float, rtt: float | None, cwnd_limited: bool = True) -> None:
        if acked <= 0:
            return
        self.acked_any = True
        if rtt is not None and rtt > 0 and (self.min_rtt is None or rtt < self.min_rtt):
            self.min_rtt = rtt
        if not cwnd_limited:
            return  # application- or window-limited: the ACKs say nothing about more room (RFC 9438 5.8)
        acked = slow_start(self, acked)
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
        cwnd, self.ssthresh = rescaled_windows(self, mss)
        self._cwnd = float(cwnd)
        self.mss = mss
