"""NewReno: RFC 5681 slow start (grown by every byte ACKed, as Linux does: `base.slow_start`) and
congestion avoidance with RFC 3465 byte counting, the window halved on loss (RFC 6582 for the recovery it
runs under)."""

from __future__ import annotations

from stack.tcp.congestion.base import INFINITE_SSTHRESH, initial_window_bytes, rescaled_windows, slow_start


class NewReno:
    """RFC 5681 / RFC 6582 congestion window.

    Loss recovery follows RFC 6675's form: on loss cwnd = ssthresh and the connection limits sending by its
    pipe estimate. A connection without SACK that uses RFC 6582's artificial inflation (+3*SMSS, then +SMSS
    per further duplicate ACK) adds that to its usable window itself; cwnd here stays ssthresh.
    """

    name = "newreno"
    __slots__ = ("_bytes_acked", "acked_any", "cwnd", "initial_window", "mss", "ssthresh")

    def __init__(self, mss: int, initial_window: int = 10) -> None:
        self.mss = mss
        self.initial_window = initial_window
        self.cwnd = initial_window_bytes(mss, initial_window)
        self.ssthresh = INFINITE_SSTHRESH
        self._bytes_acked = 0  # RFC 3465 byte counter for congestion avoidance
        self.acked_any = False

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def on_ack(self, acked: int, now: float, rtt: float | None, cwnd_limited: bool = True) -> None:
        if acked <= 0:
            return
        self.acked_any = True
        if not cwnd_limited:
            return  # application- or window-limited: no growth (RFC 7661)
        acked = slow_start(self, acked)
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
        self.cwnd, self.ssthresh = rescaled_windows(self, mss)
        self.mss = mss
