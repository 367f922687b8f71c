"""The retransmission timer's value: RFC 6298 smoothed RTT, RTT variance and RTO with exponential backoff.

The estimator only turns RTT samples into an RTO. Choosing which samples are valid is the caller's job
(Karn's rule: never sample a retransmitted segment unless timestamps say which transmission was ACKed).
"""

from __future__ import annotations

import math

ALPHA = 1 / 8  # RFC 6298 2.3: gain of the smoothed RTT
BETA = 1 / 4  # RFC 6298 2.3: gain of the RTT variance
K = 4  # RFC 6298 2.3: variance multiplier
_MAX_BACKOFF_SHIFT = 64  # beyond this the doubled RTO is far past any max_rto


class RttEstimator:
    """SRTT, RTTVAR and RTO for one connection (RFC 6298), all in seconds.

    Before the first sample the RTO is `initial_rto` (RFC 6298 2.1; Linux and RFC 6298 use 1 s). After it,
    RTO = max(min_rto, SRTT + max(G, 4*RTTVAR)), capped at max_rto. Each `backoff()` doubles the effective
    RTO (RFC 6298 5.5) until a new sample arrives (5.7 keeps the doubled value until then).
    """

    __slots__ = ("_backoff_count", "_base_rto", "_rttvar", "_srtt", "clock_granularity", "max_rto", "min_rto")

    def __init__(
        self,
        initial_rto: float = 1.0,
        min_rto: float = 0.2,
        max_rto: float = 120.0,
        clock_granularity: float = 0.001,
    ) -> None:
        if not 0 < min_rto <= max_rto:
            raise ValueError(f"need 0 < min_rto <= max_rto, got min_rto={min_rto} max_rto={max_rto}")
        if initial_rto <= 0:
            raise ValueError(f"initial_rto must be positive, got {initial_rto}")
        if clock_granularity < 0:
            raise ValueError(f"clock_granularity must not be negative, got {clock_granularity}")
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.clock_granularity = clock_granularity
        self._base_rto = min(initial_rto, max_rto)
        self._srtt: float | None = None
        self._rttvar: float | None = None
        self._backoff_count = 0

    def sample(self, rtt: float) -> bool:
        """Feed one RTT measurement R; returns False (and changes nothing) for a negative or non-finite R.

        A bogus timestamp echo can yield such values; ignoring them keeps a bad packet from poisoning the
        timer. An accepted sample also clears the backoff.
        """
        if not math.isfinite(rtt) or rtt < 0:
            return False
        if self._srtt is None or self._rttvar is None:
            self._srtt = rtt  # RFC 6298 2.2
            self._rttvar = rtt / 2
        else:
            # RFC 6298 2.3: RTTVAR first, with the old SRTT
            self._rttvar = (1 - BETA) * self._rttvar + BETA * abs(self._srtt - rtt)
            self._srtt = (1 - ALPHA) * self._srtt + ALPHA * rtt
        rto = self._srtt + max(self.clock_granularity, K * self._rttvar)
        self._base_rto = min(self.max_rto, max(self.min_rto, rto))
        self._backoff_count = 0
        return True

    def backoff(self) -> None:
        """The retransmission timer expired: double the effective RTO (RFC 6298 5.5), up to max_rto."""
        self._backoff_count += 1

    def reset_backoff(self) -> None:
        """Forget the backoff (e.g. new data was ACKed but no valid RTT sample came with it)."""
        self._backoff_count = 0

    @property
    def rto(self) -> float:
        """The retransmission timeout to arm now, backoff included."""
        shift = min(self._backoff_count, _MAX_BACKOFF_SHIFT)
        return min(self.max_rto, self._base_rto * (1 << shift))

    @property
    def base_rto(self) -> float:
        """The RTO without backoff."""
        return self._base_rto

    @property
    def srtt(self) -> float | None:
        """Smoothed RTT, None before the first sample."""
        return self._srtt

    @property
    def rttvar(self) -> float | None:
        """RTT variance, None before the first sample."""
        return self._rttvar

    @property
    def backoff_count(self) -> int:
        """How many times the RTO has been doubled since the last sample or reset."""
        return self._backoff_count

    @property
    def has_sample(self) -> bool:
        return self._srtt is not None
