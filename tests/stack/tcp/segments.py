"""A small language for segment-level TCP tests, in smoltcp's style: segment in at time T, exact segments out.

    t = Tester(isn=1000)
    t.listen(80)
    t.send(seg("S", seq=5000, mss=1460), at=0.0)
    t.expect(seg("SA", sport=80, dport=40000, seq=1000, ack=5001, win=64000, mss=1460), at=0.0)

`Tester` puts a `TcpLayer` on 10.0.0.1 and plays the peer 10.0.0.2 by hand.  `Wire` connects two layers
back to back with a latency, optional loss, and an explicit clock.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import replace

from stack.tcp import TcpConfig, TcpLayer, TcpSocket
from stack.tcp.connection import Connection
from stack.tcp.trace import TraceEvent, flag_letters
from stack.wire.tcp import NO_OPTIONS, TcpFlags, TcpOptions, TcpSegment

LOCAL = "10.0.0.1"
REMOTE = "10.0.0.2"
PEER_PORT = 40000
LETTERS = {
    "S": TcpFlags.SYN,
    "A": TcpFlags.ACK,
    "F": TcpFlags.FIN,
    "R": TcpFlags.RST,
    "P": TcpFlags.PSH,
    "U": TcpFlags.URG,
}
SEQ_MASK = 0xFFFFFFFF


def seg(
    flags: str = "A",
    *,
    seq: int = 0,
    ack: int = 0,
    win: int = 64000,
    sport: int = PEER_PORT,
    dport: int = 80,
    data: bytes = b"",
    mss: int | None = None,
    wscale: int | None = None,
    sack_perm: bool = False,
    sack: tuple[tuple[int, int], ...] = (),
    ts: tuple[int, int] | None = None,
) -> TcpSegment:
    """A segment; flags as letters ("SA" = SYN+ACK, "PA" = PSH+ACK, "R", "FA").  Sequence numbers wrap."""
    bits = TcpFlags(0)
    for letter in flags:
        bits |= LETTERS[letter]
    options = NO_OPTIONS
    if mss is not None or wscale is not None or sack_perm or sack or ts is not None:
        options = TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack_perm, sack_blocks=sack, timestamp=ts)
    return TcpSegment(sport, dport, seq & SEQ_MASK, ack & SEQ_MASK, bits, win, options, data)


def reply_to(segment: TcpSegment, flags: str = "A", **fields: object) -> TcpSegment:
    """A segment from the peer answering `segment` (ports swapped)."""
    return seg(flags, sport=segment.dst_port, dport=segment.src_port, **fields)  # type: ignore[arg-type]


def describe(segment: TcpSegment) -> str:
    o = segment.options
    parts = [
        f"{segment.src_port}>{segment.dst_port}",
        flag_letters(segment.flags),
        f"seq={segment.seq}",
        f"ack={segment.ack}",
        f"win={segment.window}",
        f"len={len(segment.payload)}",
    ]
    if o != NO_OPTIONS:
        parts.append(f"opts(mss={o.mss},ws={o.wscale},sp={o.sack_permitted},sack={o.sack_blocks},ts={o.timestamp})")
    if segment.payload:
        parts.append(repr(bytes(segment.payload[:16])))
    return " ".join(parts)


def same(a: TcpSegment, b: TcpSegment) -> bool:
    return replace(a, payload=bytes(a.payload)) == replace(b, payload=bytes(b.payload))


def plain_config(**overrides: object) -> TcpConfig:
    """Plain options (no timestamps, SACK or scaling) and a 64000-byte receive buffer unless overridden."""
    fields: dict[str, object] = {
        "timestamps": False,
        "sack": False,
        "window_scaling": False,
        "rcvbuf": 64000,
        "time_wait": 2.0,
    }
    fields.update(overrides)
    return TcpConfig(**fields)  # type: ignore[arg-type]


class Tester:
    """A TcpLayer on 10.0.0.1 with an explicit clock; the test plays the peer 10.0.0.2."""

    __test__ = False  # a helper, not a test class

    def __init__(
        self, config: TcpConfig | None = None, *, isn: int = 1000, mtu: int = 1500, **overrides: object
    ) -> None:
        self.config = config if config is not None else plain_config(**overrides)
        self.events: list[TraceEvent] = []
        self.layer = TcpLayer(
            self.config,
            secret=b"test-secret-0123",
            rng=random.Random(7),
            route=lambda ip, now: (LOCAL, mtu),
            trace=self.events.append,
            isn_source=lambda *_: isn,
        )
        self.now = 0.0

    def at(self, when: float | None) -> float:
        if when is not None:
            assert when >= self.now, f"time goes forward: {when} < {self.now}"
            self.now = when
        return self.now

    def send(self, *segments: TcpSegment, at: float | None = None) -> None:
        now = self.at(at)
        for segment in segments:
            self.layer.segment_arrives(REMOTE, LOCAL, segment, now)

    def poll(self, at: float | None = None) -> list[TcpSegment]:
        now = self.at(at)
        out = []
        for src, dst, segment in self.layer.poll(now):
            assert (src, dst) == (LOCAL, REMOTE), f"segment to an unexpected address {src}->{dst}"
            out.append(segment)
        return out

    def expect(self, *expected: TcpSegment, at: float | None = None) -> list[TcpSegment]:
        got = self.poll(at)
        if len(got) != len(expected) or not all(same(g, e) for g, e in zip(got, expected, strict=False)):
            lines = [f"segments differ at t={self.now:.3f}", "expected:"]
            lines += ["  " + describe(e) for e in expected]
            lines += ["got:"] + ["  " + describe(g) for g in got]
            raise AssertionError("\n".join(lines))
        return got

    def expect_nothing(self, at: float | None = None) -> None:
        self.expect(at=at)

    def deadline(self) -> float | None:
        return self.layer.next_deadline()

    # -- common set-ups -----------------------------------------------------------------------------

    def listen(self, port: int = 80, backlog: int = 128) -> TcpSocket:
        sock = self.layer.socket()
        sock.bind((LOCAL, port))
        sock.listen(backlog)
        return sock

    def connect(self, port: int = 80, local_port: int = 50000) -> TcpSocket:
        sock = self.layer.socket()
        sock.bind((LOCAL, local_port))
        try:
            sock.connect((REMOTE, port), self.now)
        except BlockingIOError:
            pass
        return sock

    def accept_one(self, listener: TcpSocket, *, peer_isn: int = 5000, win: int = 64000) -> TcpSocket:
        """Drive a plain handshake into `listener` from PEER_PORT and return the accepted socket."""
        port = listener.getsockname()[1]
        self.send(seg("S", seq=peer_isn, win=win, dport=port, mss=1460))
        synack = self.poll()[0]
        self.send(seg("A", seq=peer_isn + 1, ack=synack.seq + 1, win=win, dport=port))
        self.poll()
        child, _ = listener.accept()
        return child

    def open_client(self, *, peer_isn: int = 5000, win: int = 64000, port: int = 80) -> TcpSocket:
        """connect() and complete the handshake from the peer's side; returns the ESTABLISHED socket."""
        sock = self.connect(port)
        syn = self.poll()[0]
        self.send(seg("SA", seq=peer_isn, ack=syn.seq + 1, win=win, sport=port, dport=50000, mss=1460))
        self.poll()
        assert sock.state == "ESTABLISHED", sock.state
        return sock

    def connection(self) -> Connection:
        (only,) = self.layer.tables.connections()
        return only

    def trace_names(self) -> list[str]:
        return [event.name for event in self.events]


class Wire:
    """Two layers back to back (A = 10.0.0.1, B = 10.0.0.2) with a one-way latency and an explicit clock.

    `drop(src_ip, segment)` decides losses; `reorder` and `duplicate` are probabilities (seeded): a
    reordered segment is held back by up to four latencies, a duplicated one arrives twice.  The run loop is
    bounded by `max_events`.
    """

    def __init__(
        self,
        config_a: TcpConfig | None = None,
        config_b: TcpConfig | None = None,
        *,
        latency: float = 0.005,
        mtu: int = 1500,
        drop: Callable[[str, TcpSegment], bool] | None = None,
        seed: int = 1,
        reorder: float = 0.0,
        duplicate: float = 0.0,
    ) -> None:
        self.latency = latency
        self.drop = drop
        self.reorder = reorder
        self.duplicate = duplicate
        self.impair_rng = random.Random(seed * 7919)
        self.now = 0.0
        self.delivered: list[tuple[float, str, TcpSegment]] = []
        self.a = TcpLayer(config_a or TcpConfig(), secret=b"secret-of-host-a", rng=random.Random(seed),
                          route=lambda ip, now: (LOCAL, mtu))
        self.b = TcpLayer(config_b or TcpConfig(), secret=b"secret-of-host-b", rng=random.Random(seed + 1),
                          route=lambda ip, now: (REMOTE, mtu))
        self._flight: list[tuple[float, int, str, str, TcpSegment]] = []
        self._tie = itertools.count()

    def layer_of(self, ip: str) -> TcpLayer:
        return self.a if ip == LOCAL else self.b

    def _collect(self) -> None:
        for layer in (self.a, self.b):
            for src, dst, segment in layer.poll(self.now):
                if self.drop is not None and self.drop(src, segment):
                    continue
                copies = 2 if self.duplicate and self.impair_rng.random() < self.duplicate else 1
                for _ in range(copies):
                    delay = self.latency
                    if self.reorder and self.impair_rng.random() < self.reorder:
                        delay += self.impair_rng.uniform(0, 4 * self.latency)
                    heapq.heappush(self._flight, (self.now + delay, next(self._tie), src, dst, segment))

    def run(self, until: float, max_events: int = 200_000) -> None:
        for _ in range(max_events):
            self._collect()
            candidates = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d is not None]
            if self._flight:
                candidates.append(self._flight[0][0])
            nxt = min(candidates) if candidates else None
            if nxt is None or nxt > until:
                self.now = max(self.now, until)
                self._collect()
                return
            self.now = max(self.now, nxt)
            while self._flight and self._flight[0][0] <= self.now:
                _, _, src, dst, segment = heapq.heappop(self._flight)
                self.delivered.append((self.now, src, segment))
                self.layer_of(dst).segment_arrives(src, dst, segment, self.now)
        raise AssertionError(f"no quiescence after {max_events} events (t={self.now})")

    def run_until(self, condition: Callable[[], bool], limit: float, step: float = 0.001) -> None:
        """Advance in small steps until `condition()` holds; fail at `limit`."""
        while not condition():
            if self.now >= limit:
                raise AssertionError(f"condition not met by t={limit}")
            self.run(self.now + step)
