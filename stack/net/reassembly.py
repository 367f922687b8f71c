"""IPv4 fragment reassembly (RFC 791 section 3.2, RFC 815), sans-IO and bounded.

The host calls `add(packet, now)` for every IPv4 packet it receives: whole packets come
straight back, fragments are held until their datagram is complete, and `expire(now)`
drops datagrams older than the timeout (the host wakes at `next_deadline()`).

Hostile input is expected. Memory is bounded three ways: at most `max_datagrams` in
progress, at most `max_bytes` held (each fragment is charged its data plus a fixed
overhead, so a flood of 8-byte fragments hits the limit as fast as big ones), and no
datagram beyond 65535 bytes. When a limit is hit the NEW fragment is dropped (and its
datagram, which can no longer complete), as Linux does above ipfrag_high_thresh; the
datagrams already in progress keep their place.

Overlaps: exact duplicates are ignored (the network may duplicate). Any other overlap
drops the whole datagram and the later fragments of it until its deadline (RFC 5722's rule,
which Linux applies to IPv4 too): overlapping fragments are how IDS evasion and
teardrop-style attacks work, and no honest sender produces them.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, replace

from stack.compat import SLOTS
from stack.wire.ipv4 import HEADER_LEN, MAX_PACKET_LEN, Ipv4Packet

DEFAULT_TIMEOUT = 30.0  # Linux's net.ipv4.ipfrag_time
DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # Linux's net.ipv4.ipfrag_high_thresh
DEFAULT_MAX_DATAGRAMS = 64
FRAGMENT_OVERHEAD = 128  # bytes charged per fragment on top of its data (bookkeeping cost)

_Key = tuple[bytes, bytes, int, int]  # (src, dst, protocol, ident): RFC 791's datagram identity


@dataclass(**SLOTS)
class ReassemblyStats:
    """Counters in the spirit of Linux's ReasmReqds/ReasmOKs/ReasmFails/ReasmTimeout."""

    fragments: int = 0  # fragments offered
    reassembled: int = 0  # datagrams completed
    duplicates: int = 0  # exact duplicate fragments ignored
    overlaps: int = 0  # datagrams dropped for overlapping fragments
    inconsistent: int = 0  # datagrams dropped for contradictory or empty fragments
    too_big: int = 0  # datagrams dropped for ending beyond 65535 bytes
    limit_drops: int = 0  # fragments dropped for the datagram or memory limits
    timeouts: int = 0  # datagrams expired incomplete
    discarded_late: int = 0  # fragments of a datagram already dropped


@dataclass(**SLOTS)
class _Datagram:
    deadline: float
    starts: list[int] = field(default_factory=list)  # sorted fragment start offsets
    pieces: list[tuple[int, int, bytes]] = field(default_factory=list)  # (start, end, data), sorted
    length: int | None = None  # payload length, known once the last fragment (MF=0) arrived
    received: int = 0  # payload bytes held
    charge: int = 0  # memory charged against max_bytes
    first: Ipv4Packet | None = None  # the offset-0 fragment: its header becomes the datagram's


class Reassembler:
    """Holds fragments per (src, dst, protocol, ident) until each datagram is whole."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_datagrams: int = DEFAULT_MAX_DATAGRAMS, max_datagram_size: int = MAX_PACKET_LEN) -> None:
        if timeout <= 0 or max_bytes <= 0 or max_datagrams <= 0:
            raise ValueError("reassembly: timeout, max_bytes and max_datagrams must be positive")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self.max_datagram_size = min(max_datagram_size, MAX_PACKET_LEN)
        self.stats = ReassemblyStats()
        self._datagrams: dict[_Key, _Datagram] = {}
        self._dropped: dict[_Key, float] = {}  # datagrams killed for overlap etc., until their deadline
        self._bytes_held = 0

    @property
    def bytes_held(self) -> int:
        """Memory charged right now (data plus per-fragment overhead)."""
        return self._bytes_held

    @property
    def pending(self) -> int:
        """Datagrams in progress."""
        return len(self._datagrams)

    def add(self, packet: Ipv4Packet, now: float) -> Ipv4Packet | None:
        """Offer one received packet; returns a whole datagram, or None while incomplete or dropped."""
        if not packet.is_fragment:
            return packet
        self.stats.fragments += 1
        key = (packet.src, packet.dst, packet.protocol, packet.ident)
        if key in self._dropped:
            self.stats.discarded_late += 1
            return None
        datagram = self._datagrams.get(key)
        start = packet.fragment_offset
        end = start + len(packet.payload)
        if end + HEADER_LEN > self.max_datagram_size:
            self.stats.too_big += 1
            self._kill(key, now, datagram)
            return None
        if end == start or (packet.more_fragments and len(packet.payload) & 7):
            # Empty fragments and non-final ones that are not 8-byte multiples: no honest sender.
            self.stats.inconsistent += 1
            self._kill(key, now, datagram)
            return None
        charge = len(packet.payload) + FRAGMENT_OVERHEAD
        if datagram is None:
            if len(self._datagrams) >= self.max_datagrams or self._bytes_held + charge > self.max_bytes:
                self.stats.limit_drops += 1
                return None
            datagram = _Datagram(deadline=now + self.timeout)
            self._datagrams[key] = datagram
        elif self._bytes_held + charge > self.max_bytes:
            self.stats.limit_drops += 1
            self._kill(key, now, datagram)
            return None
        if not self._consistent_length(datagram, packet, end):
            self.stats.inconsistent += 1
            self._kill(key, now, datagram)
            return None
        index = bisect_left(datagram.starts, start)
        if index < len(datagram.pieces) and datagram.pieces[index][0] == start:
            if datagram.pieces[index][1] == end:
                self.stats.duplicates += 1
                return None
            self.stats.overlaps += 1
            self._kill(key, now, datagram)
            return None
        before_overlaps = index > 0 and datagram.pieces[index - 1][1] > start
        after_overlaps = index < len(datagram.pieces) and datagram.pieces[index][0] < end
        if before_overlaps or after_overlaps:
            self.stats.overlaps += 1
            self._kill(key, now, datagram)
            return None
        # Copy: the payload may be a view into a receive buffer the driver will reuse.
        datagram.starts.insert(index, start)
        data = bytes(packet.payload)
        datagram.pieces.insert(index, (start, end, data))
        datagram.received += end - start
        datagram.charge += charge
        self._bytes_held += charge
        if start == 0:
            datagram.first = replace(packet, payload=data)
        if datagram.length is None or datagram.received != datagram.length:
            return None
        # Pieces never overlap and all lie below the length, so a full count means no holes.
        del self._datagrams[key]
        self._bytes_held -= datagram.charge
        first = datagram.first
        assert first is not None  # the piece at offset 0 exists when there are no holes
        if first.header_length + datagram.length > self.max_datagram_size:
            self.stats.too_big += 1  # only knowable now: the first fragment's options lengthen the header
            return None
        self.stats.reassembled += 1
        return Ipv4Packet(first.src, first.dst, first.protocol, b"".join(p[2] for p in datagram.pieces),
                          first.ttl, first.ident, first.dont_fragment, False, 0, first.tos, first.options)

    @staticmethod
    def _consistent_length(datagram: _Datagram, packet: Ipv4Packet, end: int) -> bool:
        """Record the datagram's length from the last fragment; reject anything contradicting it."""
        if not packet.more_fragments:
            if datagram.length is not None and datagram.length != end:
                return False
            if datagram.pieces and datagram.pieces[-1][1] > end:
                return False
            datagram.length = end
            return True
        return datagram.length is None or end <= datagram.length

    def _kill(self, key: _Key, now: float, datagram: _Datagram | None) -> None:
        """Drop a datagram and ignore its later fragments until its deadline."""
        deadline = now + self.timeout
        if datagram is not None:
            del self._datagrams[key]
            self._bytes_held -= datagram.charge
            deadline = datagram.deadline
        if len(self._dropped) >= self.max_datagrams:
            del self._dropped[next(iter(self._dropped))]  # forget the oldest: a bounded memory of drops
        self._dropped[key] = deadline

    def expire(self, now: float) -> list[Ipv4Packet]:
        """Drop datagrams whose timeout passed.

        Returns the first fragment (offset 0) of each expired datagram that had one: RFC 792
        and RFC 1122 3.2.2.4 have the host send ICMP Time Exceeded (code 1) quoting it.
        """
        expired_first: list[Ipv4Packet] = []
        for key in [k for k, d in self._datagrams.items() if d.deadline <= now]:
            datagram = self._datagrams.pop(key)
            self._bytes_held -= datagram.charge
            self.stats.timeouts += 1
            if datagram.first is not None:
                expired_first.append(datagram.first)
        for key in [k for k, deadline in self._dropped.items() if deadline <= now]:
            del self._dropped[key]
        return expired_first

    def next_deadline(self) -> float | None:
        """When `expire` next has work, or None when nothing is held."""
        if not self._datagrams and not self._dropped:
            return None  # the common case, on every poll: no fragments held
        deadlines = [d.deadline for d in self._datagrams.values()]
        deadlines.extend(self._dropped.values())
        return min(deadlines) if deadlines else None
