"""The retransmission timer's value: RFC 6298 smoothed RTT, RTT variance and RTO with exponential backoff.

The estimator only turns RTT samples into an RTO. Choosing which samples are valid is the caller's job
(Karn's rule: never sample a retransmitted segment unless timestamps say which transmission was ACKed).
`SendTimes` remembers when each stretch of sequence space first left, on the driver's clock, so an ACK
gives an RTT sample as fine as that clock, as Linux's tcp_clean_rtx_queue times its segments in
microseconds. The timestamp option ticks in milliseconds: on a path faster than that its echoes measure
0, and SRTT fed by them alone falls to 0 while the kernel measures the same path at 1-3 ms.
"""

from __future__ import annotations

import math
from collections import deque

from stack.tcp.seq import seq_gt, seq_le, seq_lt

ALPHA = 1 / 8  # RFC 6298 2.3: gain of the smoothed RTT
BETA = 1 / 4  # RFC 6298 2.3: gain of the RTT variance
K = 4  # RFC 6298 2.3: variance multiplier
_MAX_BACKOFF_SHIFT = 64  # beyond this the doubled RTO is far past any max_rto


class RttEstimator:
    """SRTT, RTTVAR and RTO for one connection (RFC 6298), all in seconds.

    Before the first sample the RTO is `initial_rto` (RFC 6298 2.1; Linux and RFC 6298 use 1 s). After it,
    RTO = max(min_rto, SRTT + max(G, 4*RTTVAR)), capped at max_rto. Each `backoff()` doubles the effective
    RTO (RFC 6298 5.5) until a new sample arrives (5.7 keeps the doubled value until then).

    With `min_rto_on_variance` the floor applies to the variance term instead, as Linux's tcp_set_rto
    does (RTO = SRTT + max(min_rto, 4*RTTVAR)): on a 10 ms path that is 210 ms rather than 200 ms, the
    figure the kernel's tcpi_rto shows for the same path.
    """

    __slots__ = ("_backoff_count", "_base_rto", "_rttvar", "_srtt", "clock_granularity", "max_rto", "min_rto",
                 "min_rto_on_variance")

    def __init__(
        self,
        initial_rto: float = 1.0,
        min_rto: float = 0.2,
        max_rto: float = 120.0,
        clock_granularity: float = 0.001,
        *,
        min_rto_on_variance: bool = False,
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
        self.min_rto_on_variance = min_rto_on_variance
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
        if self.min_rto_on_variance:
            rto = self._srtt + max(self.min_rto, self.clock_granularity, K * self._rttvar)
        else:
            rto = max(self.min_rto, self._srtt + max(self.clock_granularity, K * self._rttvar))
        self._base_rto = min(self.max_rto, rto)
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


class SendTimes:
    """When each stretch of sequence space was first sent, for RTT samples on the driver's clock.

    Segments sent at the same instant share one entry, so a pump that sends a hundred segments costs
    one; the entries are bounded by the flight and by `MAX_ENTRIES` (beyond it a stretch goes untimed
    and its ACK falls back to the timestamp echo). An ACK gives the time since the oldest stretch it
    newly covers was sent, as Linux's tcp_clean_rtx_queue does, and no sample (Karn's rule) when any
    covered stretch was retransmitted: only a timestamp echo then says which transmission it answers.
    """

    MAX_ENTRIES = 4096

    __slots__ = ("_entries", "_last_sample")

    def __init__(self) -> None:
        # [start, end, first sent, retransmitted], ordered by sequence, not overlapping
        self._entries: deque[list] = deque()
        self._last_sample: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def sent(self, start: int, end: int, now: float) -> None:
        """[start, end) left for the first time at `now`."""
        entries = self._entries
        if entries:
            last = entries[-1]
            if not seq_gt(end, last[1]):
                return  # already timed (a caller resending must call `retransmitted`)
            if last[2] == now and not last[3] and last[1] == start:
                last[1] = end
                return
        if len(entries) < self.MAX_ENTRIES:
            entries.append([start, end, now, False])

    def retransmitted(self, start: int, end: int) -> None:
        """[start, end) left again: the stretches it touches can no longer be timed by their ACK."""
        for entry in self._entries:
            if not seq_lt(entry[0], end):
                break
            if seq_gt(entry[1], start):
                entry[3] = True

    def acked(self, ack: int) -> float | None:
        """Forget what `ack` covers; the first send time of the oldest covered stretch, None when a
        covered stretch was retransmitted or none was timed."""
        entries = self._entries
        first: float | None = None
        ambiguous = False
        while entries and seq_le(entries[0][1], ack):
            _start, _end, when, again = entries.popleft()
            ambiguous = ambiguous or again
            if first is None:
                first = when
        if entries and seq_lt(entries[0][0], ack):  # an ACK inside a stretch (the peer cut a TSO segment)
            head = entries[0]
            ambiguous = ambiguous or head[3]
            if first is None:
                first = head[2]
            head[0] = ack
        return None if ambiguous else first

    def repeats(self, first_sent: float, now: float) -> bool:
        """Whether (`first_sent`, `now`) was measured already. The ACKs read in one turn for data sent
        in one turn all measure the same interval; fed once per ACK it would count hundreds of times,
        and RTTVAR would fall to 0 while the path varies by milliseconds."""
        if self._last_sample == (first_sent, now):
            return True
        self._last_sample = (first_sent, now)
        return False

    def clear(self) -> None:
        self._entries.clear()
