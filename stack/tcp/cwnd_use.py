"""Whether the congestion window is what limits the sender: cwnd grows only while it is.

A sender held back by the peer's window or by the application never fills cwnd, so the ACKs it gets say
nothing about whether the path could take more; growing cwnd on them anyway lets it swell without bound
(to 18 MB on a 4 MB-window transfer at 10 ms RTT) and then release one huge burst when the window opens.
RFC 7661 and RFC 9438 5.8 ask that cwnd not grow then; this is Linux's rule (tcp_is_cwnd_limited and
tcp_cwnd_validate in net/ipv4/tcp_output.c):

* after each sending pass the sender notes whether cwnd stopped it, and the largest flight it had;
* that verdict holds for one window of data (until SND.UNA passes the SND.NXT of the time it was made),
  unless a later pass is cwnd-limited or, while not limited, has a larger flight;
* cwnd may grow if the last verdict says cwnd-limited, or -- in slow start -- while cwnd is below twice the
  largest flight, so slow start keeps doubling a window the sender really uses.
"""

from __future__ import annotations

from stack.tcp.seq import seq_ge


class CwndUse:
    """The connection's record of how much of cwnd its sending used (bytes)."""

    __slots__ = ("largest_flight", "limited", "valid_until")

    def __init__(self, iss: int) -> None:
        self.limited = False
        self.largest_flight = 0
        self.valid_until = iss  # the verdict stands until SND.UNA reaches this

    def after_sending(self, flight: int, cwnd: int, snd_una: int, snd_nxt: int) -> None:
        """A sending pass ended with `flight` bytes in the network under `cwnd`."""
        limited = flight >= cwnd
        grew = not self.limited and flight > self.largest_flight
        if seq_ge(snd_una, self.valid_until) or limited or grew:
            self.limited = limited
            self.largest_flight = flight
            self.valid_until = snd_nxt

    def allows_growth(self, cwnd: int, in_slow_start: bool) -> bool:
        if self.limited:
            return True
        return in_slow_start and cwnd < 2 * self.largest_flight
