"""The ARP cache: a neighbour table with Linux's states and timers (sans-IO).

States, as ``ip neigh`` shows them:
- INCOMPLETE: a broadcast request is out; packets for the neighbour wait in a bounded queue. After
  ``retries`` requests ``retry_interval`` apart with no reply, resolution fails: the entry is removed and
  the queued packets are handed back so the host can report "host unreachable" to their senders.
- REACHABLE: confirmed by a reply within ``reachable_time`` (randomized 0.5x-1.5x, as Linux does).
- STALE: the MAC is still used, but unconfirmed. The first use moves it to DELAY.
- DELAY: used while STALE; waits ``delay_first_probe`` for a confirmation before probing.
- PROBE: unicast requests to the known MAC, ``retries`` of them; no reply removes the entry.
An unused STALE entry is forgotten after ``gc_stale_time``.

Learning follows Linux: a reply to us makes an entry REACHABLE; a request addressed to us creates or
refreshes the sender's entry as STALE (it proves the sender exists, not that it hears us); other traffic
only updates entries we already hold.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from stack.compat import SLOTS


class NeighbourState(Enum):
    INCOMPLETE = "INCOMPLETE"
    REACHABLE = "REACHABLE"
    STALE = "STALE"
    DELAY = "DELAY"
    PROBE = "PROBE"

    __hash__ = object.__hash__  # identity, in C: Enum's own __hash__ runs Python code (see TcpState)


@dataclass(frozen=True, **SLOTS)
class ArpTimings:
    """Linux's defaults (net.ipv4.neigh.default.*)."""

    retries: int = 3  # mcast_solicit / ucast_solicit
    retry_interval: float = 1.0  # retrans_time_ms
    reachable_time: float = 30.0  # base_reachable_time_ms
    delay_first_probe: float = 5.0  # delay_first_probe_time
    gc_stale_time: float = 60.0
    queue_limit: int = 101  # packets held per INCOMPLETE entry (unres_qlen); the oldest is dropped first

    def __post_init__(self) -> None:
        if self.retries < 1 or self.queue_limit < 1:
            raise ValueError(f"arp: retries={self.retries} and queue_limit={self.queue_limit} must be >= 1")
        for name in ("retry_interval", "reachable_time", "delay_first_probe", "gc_stale_time"):
            if getattr(self, name) <= 0:
                raise ValueError(f"arp: {name}={getattr(self, name)!r} must be positive")


@dataclass(**SLOTS)
class NeighbourEntry:
    ip: bytes
    state: NeighbourState
    mac: bytes | None
    deadline: float  # when the current state's timer fires
    probes_sent: int = 0
    last_used: float = 0.0
    queue: deque[bytes] = field(default_factory=deque)


@dataclass(frozen=True, **SLOTS)
class ArpRequest:
    """A request the host must send: broadcast when ``dst_mac`` is None, unicast (PROBE) otherwise."""

    target_ip: bytes
    dst_mac: bytes | None


@dataclass(frozen=True, **SLOTS)
class ResolutionFailure:
    """A neighbour that did not answer, and the packets that were waiting for it."""

    ip: bytes
    packets: list[bytes]


@dataclass(**SLOTS)
class ArpCacheStats:
    requests_sent: int = 0
    resolution_failures: int = 0
    queue_drops: int = 0


class ArpCache:
    """One interface's neighbour table."""

    def __init__(self, timings: ArpTimings | None = None, *, rng: random.Random) -> None:
        self.timings = timings or ArpTimings()
        self._rng = rng
        self._entries: dict[bytes, NeighbourEntry] = {}
        self._requests: list[ArpRequest] = []
        self._failures: list[ResolutionFailure] = []
        # No entry's timer fires before this (a lower bound: every deadline set lowers it, a scan in
        # `poll` recomputes it), so a poll between timers costs no walk over the table.
        self._timers_from = float("inf")
        self.stats = ArpCacheStats()

    # -- lookups from the IP output path -------------------------------------------------------------

    def lookup(self, ip: bytes, now: float) -> bytes | None:
        """The MAC to send to ``ip`` right now, or None when resolution is needed (call ``enqueue``)."""
        entry = self._entries.get(ip)
        if entry is None or entry.mac is None:
            return None
        entry.last_used = now
        if entry.state is NeighbourState.REACHABLE and now >= entry.deadline:
            entry.state = NeighbourState.STALE
        if entry.state is NeighbourState.STALE:
            entry.state = NeighbourState.DELAY
            self._arm(entry, now + self.timings.delay_first_probe)
        return entry.mac

    def enqueue(self, ip: bytes, packet: bytes, now: float) -> None:
        """Hold ``packet`` until ``ip`` resolves; starts resolving (a broadcast request) if not yet."""
        entry = self._entries.get(ip)
        if entry is None or entry.mac is not None:
            entry = NeighbourEntry(ip, NeighbourState.INCOMPLETE, None, now + self.timings.retry_interval,
                                   probes_sent=1, last_used=now)
            self._entries[ip] = entry
            self._timers_from = min(self._timers_from, entry.deadline)
            self._request(ip, None)
        if len(entry.queue) >= self.timings.queue_limit:
            entry.queue.popleft()
            self.stats.queue_drops += 1
        entry.queue.append(packet)

    # -- learning from ARP packets -------------------------------------------------------------------

    def learn(self, ip: bytes, mac: bytes, now: float, *, is_reply: bool, to_us: bool) -> list[bytes]:
        """Account for an ARP packet from ``ip``/``mac``; returns the packets that can now be sent."""
        entry = self._entries.get(ip)
        if entry is None:
            if not to_us:
                return []  # Linux does not create entries from traffic that is not for us
            state = NeighbourState.REACHABLE if is_reply else NeighbourState.STALE
            deadline = self._reachable_deadline(now) if is_reply else now + self.timings.gc_stale_time
            self._entries[ip] = NeighbourEntry(ip, state, mac, deadline, last_used=now)
            self._timers_from = min(self._timers_from, deadline)
            return []
        if is_reply and to_us:
            entry.state = NeighbourState.REACHABLE
            self._arm(entry, self._reachable_deadline(now))
        elif entry.mac != mac or entry.state is NeighbourState.INCOMPLETE:
            # A new or changed address that is not a confirmation: usable, but STALE (Linux's NUD_STALE).
            entry.state = NeighbourState.STALE
            self._arm(entry, now + self.timings.gc_stale_time)
        entry.mac = mac
        entry.probes_sent = 0
        waiting = list(entry.queue)
        entry.queue.clear()
        return waiting

    def mark_stale(self, ip: bytes, now: float) -> bool:
        """Negative advice (RFC 9293 3.8.3 R1, Linux's dst_negative_advice): stop trusting ``ip``'s MAC.

        A resolved entry becomes STALE, so its next use starts the DELAY/PROBE re-check; the MAC stays
        usable meanwhile. Returns False when there is no resolved entry (nothing to re-check)."""
        entry = self._entries.get(ip)
        if entry is None or entry.mac is None or entry.state is NeighbourState.INCOMPLETE:
            return False
        if entry.state is not NeighbourState.PROBE:  # already re-checking: let the probes run
            entry.state = NeighbourState.STALE
            self._arm(entry, now + self.timings.gc_stale_time)
        return True

    # -- timers --------------------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether `poll` has anything to do at `now`: a timer due, or requests or failures waiting."""
        return now >= self._timers_from or bool(self._requests) or bool(self._failures)

    def poll(self, now: float) -> tuple[list[ArpRequest], list[ResolutionFailure]]:
        """Run the timers due by ``now``; returns the requests to send and the failed resolutions."""
        if now >= self._timers_from:
            self._run_timers(now)
        requests, failures = self._requests, self._failures
        if requests or failures:
            self._requests, self._failures = [], []
        return requests, failures

    def _run_timers(self, now: float) -> None:
        timings = self.timings
        for ip, entry in list(self._entries.items()):
            if now < entry.deadline:
                continue
            state = entry.state
            if state is NeighbourState.INCOMPLETE or state is NeighbourState.PROBE:
                if entry.probes_sent >= timings.retries:
                    del self._entries[ip]
                    self.stats.resolution_failures += 1
                    self._failures.append(ResolutionFailure(ip, list(entry.queue)))
                    continue
                entry.probes_sent += 1
                self._arm(entry, now + timings.retry_interval)
                self._request(ip, entry.mac if state is NeighbourState.PROBE else None)
            elif state is NeighbourState.REACHABLE:
                entry.state = NeighbourState.STALE
                self._arm(entry, now + timings.gc_stale_time)
            elif state is NeighbourState.DELAY:
                entry.state = NeighbourState.PROBE
                entry.probes_sent = 1
                self._arm(entry, now + timings.retry_interval)
                self._request(ip, entry.mac)
            elif now - entry.last_used >= timings.gc_stale_time:  # STALE and unused
                del self._entries[ip]
            else:
                self._arm(entry, entry.last_used + timings.gc_stale_time)
        self._timers_from = min((entry.deadline for entry in self._entries.values()), default=float("inf"))

    def next_deadline(self) -> float | None:
        if self._requests or self._failures:
            return float("-inf")  # work is pending now
        if not self._entries:
            return None
        return min(entry.deadline for entry in self._entries.values())

    # -- inspection ----------------------------------------------------------------------------------

    def entry(self, ip: bytes) -> NeighbourEntry | None:
        return self._entries.get(ip)

    def entries(self) -> list[NeighbourEntry]:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    # -- helpers -------------------------------------------------------------------------------------

    def _request(self, ip: bytes, dst_mac: bytes | None) -> None:
        self.stats.requests_sent += 1
        self._requests.append(ArpRequest(ip, dst_mac))

    def _arm(self, entry: NeighbourEntry, deadline: float) -> None:
        entry.deadline = deadline
        self._timers_from = min(self._timers_from, deadline)

    def _reachable_deadline(self, now: float) -> float:
        return now + self.timings.reachable_time * self._rng.uniform(0.5, 1.5)
