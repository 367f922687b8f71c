"""Ephemeral port selection (RFC 6056), the port `connect()` picks for an unbound socket.

`allocate` is RFC 6056 algorithm 4, "double-hash port selection", the scheme Linux uses: a keyed hash of
(local ip, remote ip, remote port) gives each destination its own starting offset in the range, and a
second hash picks an entry of a small table of per-bucket counters that advance on every allocation. So
ports toward one destination are spread and do not repeat soon, while an observer talking to another
destination learns nothing about them. As Linux does since 2022, the counter also moves on by a small
random step, so the next port toward a destination is not predictable from the last.

`allocate_for_bind` serves bind() to port 0, where no destination is known yet: a random starting point
scanned upward (RFC 6056 algorithm 1, Linux's inet_csk_find_open_port).
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable

from stack.tcp.isn import keyed_hash

LINUX_EPHEMERAL_LOW = 32768  # net.ipv4.ip_local_port_range defaults
LINUX_EPHEMERAL_HIGH = 60999
TABLE_LENGTH = 1024  # RFC 6056 3.3.4 TABLE_LENGTH (the RFC suggests >= 10; Linux uses 65536)
MAX_RANDOM_STEP = 8  # Linux: the counter advances by max(tries, random below 8) + 1


class EphemeralPortAllocator:
    """Chooses ephemeral ports in [low, high] for one host."""

    __slots__ = ("_table", "high", "low", "secret", "share")

    def __init__(
        self, secret: bytes, low: int = LINUX_EPHEMERAL_LOW, high: int = LINUX_EPHEMERAL_HIGH,
        share: Callable[[int], bool] | None = None,
    ) -> None:
        """`share`: True for the ports this host may pick (one worker's share of the range); None: all."""
        if not secret:
            raise ValueError("the port allocator needs a non-empty secret")
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"ephemeral port range must satisfy 1 <= low <= high <= 65535, got {low}-{high}")
        self.secret = secret
        self.low = low
        self.high = high
        self.share = share
        # RFC 6056 initialises the table with random values at boot; the randomness is injected, so each
        # entry is drawn from the caller's rng the first time it is used.
        self._table: dict[int, int] = {}

    @property
    def size(self) -> int:
        """How many ports the range holds."""
        return self.high - self.low + 1

    def allocate(
        self,
        local_ip: str,
        remote_ip: str,
        remote_port: int,
        in_use: Callable[[int], bool],
        rng: random.Random,
    ) -> int:
        """A port for a connection to (remote_ip, remote_port), skipping ports for which in_use(port) is True.

        Every port of the range is tried at most once; when all are in use, OSError(EADDRNOTAVAIL) is raised,
        as Linux's connect() does.
        """
        count = self.size
        in_use = self._outside_share(in_use)
        offset = keyed_hash(self.secret, b"port-off", local_ip, remote_ip, remote_port)
        index = keyed_hash(self.secret, b"port-idx", local_ip, remote_ip, remote_port) % TABLE_LENGTH
        counter = self._table.get(index)
        if counter is None:
            counter = rng.randrange(65536)
        for tries in range(count):
            port = self.low + (offset + counter + tries) % count
            if not in_use(port):
                self._table[index] = counter + max(tries, rng.randrange(MAX_RANDOM_STEP)) + 1
                return port
        self._table[index] = counter + count
        raise OSError(
            errno.EADDRNOTAVAIL,
            f"{os.strerror(errno.EADDRNOTAVAIL)}: all {count} ephemeral ports {self.low}-{self.high} in use "
            f"toward {remote_ip}:{remote_port}",
        )

    def _outside_share(self, in_use: Callable[[int], bool]) -> Callable[[int], bool]:
        """`in_use`, with every port of another worker's share counted as taken."""
        share = self.share
        if share is None:
            return in_use
        return lambda port: not share(port) or in_use(port)

    def allocate_for_bind(self, in_use: Callable[[int], bool], rng: random.Random) -> int:
        """A free port for bind(("addr", 0)): scan from a random point; OSError(EADDRINUSE) when none is free
        (Linux's bind() error)."""
        count = self.size
        in_use = self._outside_share(in_use)
        start = rng.randrange(count)
        for tries in range(count):
            port = self.low + (start + tries) % count
            if not in_use(port):
                return port
        raise OSError(
            errno.EADDRINUSE,
            f"{os.strerror(errno.EADDRINUSE)}: all {count} ephemeral ports {self.low}-{self.high} in use",
        )
