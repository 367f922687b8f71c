"""ICMP errors this node originates (a host's protocol unreachable, a router's time exceeded), rate limited.

Shared by the host's IPv4 layer and the router: the rules of RFC 1122 3.2.2 / RFC 1812 4.3.2.7 (never
about an ICMP error, a broadcast, a later fragment or an invalid source) and a token bucket like Linux's
``net.ipv4.icmp_msgs_per_sec`` / ``icmp_msgs_burst``.  `IcmpErrorSource.build` returns the ICMP message to
send (or None); the caller routes it, because a host and a router send from different addresses.
"""

from __future__ import annotations

from collections.abc import Callable

from stack.wire.icmp import ICMP_DEST_UNREACHABLE, IcmpMessage, build_icmp, may_send_error_about
from stack.wire.ipv4 import Ipv4Packet, build_ipv4

ICMP_MSGS_PER_SEC = 1000  # Linux's net.ipv4.icmp_msgs_per_sec
ICMP_MSGS_BURST = 50  # Linux's net.ipv4.icmp_msgs_burst
MakeError = Callable[[bytes], IcmpMessage]  # the quoted original datagram -> the error message


class IcmpRateLimit:
    """A token bucket: `burst` messages at once, refilled at `per_second`."""

    def __init__(self, per_second: float = ICMP_MSGS_PER_SEC, burst: float = ICMP_MSGS_BURST) -> None:
        self.per_second = per_second
        self.burst = burst
        self._tokens = float(burst)
        self._at = 0.0

    def allows(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class IcmpErrorSource:
    """Builds the ICMP errors a node may send, counting them (IcmpOutMsgs, IcmpOutDestUnreachs, ...)."""

    def __init__(self, counters: dict[str, int], limit: IcmpRateLimit | None = None) -> None:
        self.counters = counters
        self.limit = limit if limit is not None else IcmpRateLimit()

    def build(self, about: Ipv4Packet, make: MakeError, now: float) -> bytes | None:
        """The ICMP error about `about` built by `make`, or None when the rules or the rate forbid one."""
        original = build_ipv4(about)  # the header as received, with the payload the error quotes
        if not may_send_error_about(original):
            return None
        counters = self.counters
        if not self.limit.allows(now):
            counters["IcmpOutRateLimited"] += 1
            return None
        message = make(original)
        counters["IcmpOutMsgs"] += 1
        counters["IcmpOutDestUnreachs" if message.type == ICMP_DEST_UNREACHABLE else "IcmpOutTimeExcds"] += 1
        return build_icmp(message)
