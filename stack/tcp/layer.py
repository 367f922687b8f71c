"""All of one host's TCP behind one sans-IO surface: segments in, segments out, sockets for applications.

IP hands arriving segments to `receive` (bytes, parsed here) or `segment_arrives` (parsed), ICMP errors
to `icmp_error`, calls `poll(now)` after every event and sleeps until `next_deadline()`.  Applications use
`socket()` (a non-blocking `TcpSocket`).  The seeds' three tables (bound, listening, established) live in
`self.tables` (`stack.tcp.tables`), the one place that changes them; a listener's SYN queue and accept queue
are its own (`stack.tcp.listener`).

`poll` is cheap when nothing happened: only connections touched since the last poll or whose timer is due
are visited (a heap of deadlines, entries superseded lazily).  The layer keeps no clock: every call that
can change what goes on the wire is given its `now`.
"""

from __future__ import annotations

import heapq
import itertools
import random
import socket as _socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from stack.compat import SLOTS
from stack.deadlines import AT_ONCE
from stack.tcp.addresses import can_be_a_peer
from stack.tcp.config import TcpConfig
from stack.tcp.connection import Connection
from stack.tcp.isn import initial_sequence_number, timestamp_offset
from stack.tcp.listener import Listener
from stack.tcp.ownership import FlowShare
from stack.tcp.ports import EphemeralPortAllocator
from stack.tcp.seq import SEQ_MASK, seq_add, seq_gt
from stack.tcp.snapshot import ConnectionSnapshot
from stack.tcp.sockopts import SocketOptions
from stack.tcp.state import TcpState
from stack.tcp.tables import SocketTables
from stack.tcp.tcp_socket import TcpSocket
from stack.tcp.trace import TCP_SEND_RESET, TraceEvent, TraceSink
from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket
from stack.wire.tcp import TcpFlags, TcpSegment, parse_tcp

S = TcpState
Route = Callable[[str, float], "tuple[str, int] | None"]  # (remote ip, now) -> (our ip, path MTU)
IsnSource = Callable[[str, int, str, int, float], int]
ACK = int(TcpFlags.ACK)
SYN = int(TcpFlags.SYN)
RST = int(TcpFlags.RST)
ADDRESS_CACHE_LIMIT = 4096  # dotted-quad spellings of the peers' 4-byte addresses kept for reuse


@dataclass(frozen=True, **SLOTS)
class IcmpError:
    """An ICMP error about a segment this host sent; the addresses and ports are the quoted segment's own.

    kind: "unreachable" | "frag_needed" | "time_exceeded" | "parameter_problem" | "source_quench".
    """

    kind: str
    code: int
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    seq: int
    mtu: int | None = None


class TcpLayer:
    """All of one host's TCP: the seeds' three tables (bound, listening, established) and every connection."""

    def __init__(
        self,
        config: TcpConfig | None = None,
        *,
        secret: bytes,
        rng: random.Random,
        route: Route,
        trace: TraceSink | None = None,
        isn_source: IsnSource | None = None,
        is_local_address: Callable[[str], bool] | None = None,
        is_broadcast_address: Callable[[str], bool] | None = None,
        negative_advice: Callable[[str, float], None] | None = None,
        trace_segments: bool = True,
        flow_share: FlowShare | None = None,
    ) -> None:
        self.config = config if config is not None else TcpConfig()
        self.secret = secret
        self.rng = rng
        self.route = route
        self.trace_sink = trace
        # False: the sink gets state changes, retransmissions, resets and cwnd changes, but no per-segment
        # events (tcp_segment_in/out, tcp_probe), which are then never built.
        self.trace_segments = trace_segments
        self.is_local_address = is_local_address
        # The host's directed-broadcast test (addresses.py): such an address is never a TCP peer.
        self.is_broadcast_address = is_broadcast_address
        # RFC 9293 3.8.3 R1: called with the remote address when a connection's retransmissions reach R1, so
        # the host can re-check its route to it (Linux: dst_negative_advice, a fresh neighbour lookup).
        self.negative_advice = negative_advice
        if isn_source is None:

            def isn_source(lip: str, lport: int, rip: str, rport: int, now: float) -> int:
                return initial_sequence_number(secret, lip, lport, rip, rport, now)

        self.isn_source: IsnSource = isn_source
        # One worker of several on one TAP: its share of the ephemeral ports, and who owns the others'.
        self.flow_share = flow_share
        self.handover: int | None = None  # the worker the last segment was handed to (`take_handover`)
        ports = EphemeralPortAllocator(secret, low=self.config.ephemeral_low, high=self.config.ephemeral_high,
                                       share=flow_share.allocates if flow_share is not None else None)
        self.tables = SocketTables(ports, rng)
        self.counter: Counter[str] = Counter()
        self._outbox: list[tuple[str, str, TcpSegment]] = []
        self._dirty: dict[Connection, None] = {}
        # Connections visited since the last `take_progressed` (only once a driver has asked): the only ones
        # whose sockets can have become readable, writable or closed since then.
        self._progressed: dict[Connection, None] = {}
        self._reporting_progress = False
        self._timers: list[tuple[float, int, Connection]] = []
        self._scheduled: dict[Connection, float] = {}
        self._tie = itertools.count()
        self._dotted: dict[bytes, str] = {}

    # ------------------------------------------------------------------ IP's side

    def receive(self, src: bytes, dst: bytes, data: BytesLike, now: float, *,
                checksum_verified: bool = False) -> None:
        """One TCP segment as IP delivers it (4-byte addresses, the segment's bytes); bad ones are counted
        (InErrs) and dropped.  `checksum_verified`: the device vouched for the checksum."""
        try:
            segment = parse_tcp(data, src, dst, verify_checksum=not checksum_verified)
        except MalformedPacket:
            self.counter["InErrs"] += 1
            return
        self.segment_arrives(self._dotted_quad(src), self._dotted_quad(dst), segment, now)

    def _dotted_quad(self, address: bytes) -> str:
        cache = self._dotted
        text = cache.get(address)
        if text is None:
            if len(cache) > ADDRESS_CACHE_LIMIT:
                cache.clear()
            text = cache[address] = _socket.inet_ntoa(address)
        return text

    def segment_arrives(self, src_ip: str, dst_ip: str, segment: TcpSegment, now: float) -> None:
        self.counter["InSegs"] += 1
        tables = self.tables
        connection = tables.connection((dst_ip, segment.dst_port, src_ip, segment.src_port))
        if connection is not None:
            if connection.state is S.TIME_WAIT and self.time_wait_reusable(connection, segment):
                # Linux (tcp_timewait_state_process): a new SYN newer than the old incarnation ends
                # TIME_WAIT early and goes to the listener.
                connection.terminate(now, 0)
            else:
                if connection.state is S.SYN_RECV and int(segment.flags) & ACK \
                        and not int(segment.flags) & (RST | SYN):
                    parent = tables.parent(connection)
                    if parent is not None and parent.accept_queue_full():
                        self.counter["ListenOverflows"] += 1
                        self.counter["ListenDrops"] += 1
                        return
                connection.on_segment(segment, now)
                self._dirty[connection] = None
                return
        share = self.flow_share
        if share is not None:
            flags = int(segment.flags)
            owner = share.hand_over_to(segment.dst_port, syn_only=flags & (SYN | ACK) == SYN)
            if owner is not None:
                # Another worker's flow: never answered here (no RST); the caller moves the frame there.
                self.counter["WorkerHandovers"] += 1
                self.handover = owner
                return
        if not can_be_a_peer(src_ip, self.is_broadcast_address):
            # RFC 9293 3.9.2.3 (MUST-63): a SYN from a broadcast, multicast or otherwise invalid source is
            # ignored, and nothing (not even a RST) is sent back to such an address.
            self.counter["InvalidSourceDrops"] += 1
            return
        listener = tables.find_listener(dst_ip, segment.dst_port)
        if listener is not None:
            listener.segment_arrives(self, src_ip, dst_ip, segment, now)
            return
        self.reset_unmatched(src_ip, dst_ip, segment, now)

    def take_handover(self) -> int | None:
        """The worker the segment just received belongs to (then handed over, not answered), or None."""
        owner, self.handover = self.handover, None
        return owner

    def icmp_error(self, error: IcmpError, now: float) -> None:
        self.counter["InIcmpErrors"] += 1
        connection = self.tables.connection((error.src_ip, error.src_port, error.dst_ip, error.dst_port))
        if connection is None:
            return
        connection.on_icmp(error.kind, error.code, error.seq, error.mtu, now)
        self._dirty[connection] = None

    def poll(self, now: float) -> list[tuple[str, str, TcpSegment]]:
        timers = self._timers
        if not self._dirty and not self._outbox and (not timers or timers[0][0] > now):
            return []  # no connection touched, none due: the host's other polls of a round
        scheduled = self._scheduled
        while timers and timers[0][0] <= now:
            deadline, _, connection = heapq.heappop(timers)
            if scheduled.get(connection) == deadline:
                del scheduled[connection]
                self._dirty[connection] = None
        out = self._outbox
        self._outbox = []
        while self._dirty:
            dirty = self._dirty
            self._dirty = {}
            if self._reporting_progress:
                self._progressed.update(dirty)
            for connection in dirty:
                for segment in connection.poll(now):
                    out.append((connection.local_ip, connection.remote_ip, segment))
                self.schedule(connection)
        return out

    def take_progressed(self) -> dict[Connection, None]:
        """The connections `poll` visited since the last call: a segment, a timer or a user call changed
        them, so their sockets may have become readable, writable or closed, and no other socket has.

        A driver that moves bytes for applications asks after every round, and wakes only the owners of
        these, as epoll reports only ready descriptors. Recording starts with the first call, so a layer
        whose driver never asks keeps nothing."""
        self._reporting_progress = True
        progressed, self._progressed = self._progressed, {}
        return progressed

    def next_deadline(self) -> float | None:
        if self._dirty or self._outbox:
            return AT_ONCE
        timers = self._timers
        scheduled = self._scheduled
        while timers:
            deadline, _, connection = timers[0]
            if scheduled.get(connection) != deadline:
                heapq.heappop(timers)  # superseded by an earlier entry
                continue
            actual = connection.next_deadline()
            if actual == deadline:
                return deadline
            # The connection's timer moved later (or stopped) since this entry was pushed: requeue it.
            heapq.heappop(timers)
            del scheduled[connection]
            if actual is not None and connection.state is not S.CLOSE:
                scheduled[connection] = actual
                heapq.heappush(timers, (actual, next(self._tie), connection))
        return None

    # ------------------------------------------------------------------ the applications' side

    def socket(self) -> TcpSocket:
        return TcpSocket(self)

    def close_listener(self, listener: Listener, now: float | None) -> None:
        """close() on a listening socket; `now` may be None only when its queues are empty."""
        self.tables.stop_listening(listener)
        if now is None:
            return
        for connection in listener.close(now):
            self._dirty[connection] = None

    def touch(self, connection: Connection) -> None:
        """A user call changed `connection`: visit it on the next poll."""
        self._dirty[connection] = None

    # ------------------------------------------------------------------ inspection

    def snapshots(self) -> list[ConnectionSnapshot]:
        return [connection.snapshot() for connection in self.tables.connections()]

    def counters(self) -> dict[str, int]:
        """nstat-like counters (Linux's Tcp* and TcpExt* names without the prefix); CurrEstab is a gauge."""
        result = dict(self.counter)
        result["CurrEstab"] = sum(
            1 for c in self.tables.connections() if c.state in (S.ESTABLISHED, S.CLOSE_WAIT)
        )
        for name in ("ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "InSegs", "OutSegs",
                     "RetransSegs", "InErrs", "OutRsts", "ListenOverflows", "ListenDrops"):
            result.setdefault(name, 0)
        return result

    # ------------------------------------------------------------------ connections

    def new_connection(self, local_ip: str, local_port: int, remote_ip: str, remote_port: int, mtu: int,
                       now: float, options: SocketOptions, *, iss: int | None = None,
                       owner: TcpSocket | None = None, parent: Listener | None = None) -> Connection:
        """A connection entered in the established table, owned by `owner` (connect) or waiting in
        `parent`'s SYN queue (passive open)."""
        connection = Connection(
            config=self.config,
            options=options,
            local_ip=local_ip,
            local_port=local_port,
            remote_ip=remote_ip,
            remote_port=remote_port,
            mtu=mtu,
            iss=self.isn_source(local_ip, local_port, remote_ip, remote_port, now) if iss is None else iss,
            # Keyed by the address pair, like Linux's tsoffset, so a SYN cookie's TSval and the later
            # connection's clock agree.
            ts_offset=timestamp_offset(self.secret, local_ip, remote_ip),
            counters=self.counter,
            trace=self.trace_sink,
            trace_segments=self.trace_segments,
        )
        self.tables.add_connection(connection, owner=owner, parent=parent)
        connection.on_state_change = self.on_state_change
        connection.on_negative_advice = self.give_negative_advice
        return connection

    def give_negative_advice(self, connection: Connection, now: float) -> None:
        if self.negative_advice is not None:
            self.negative_advice(connection.remote_ip, now)

    def on_state_change(self, connection: Connection, old: TcpState, new: TcpState) -> None:
        if new is S.SYN_SENT:
            self.counter["ActiveOpens"] += 1
        elif new is S.SYN_RECV and old is S.LISTEN:
            self.counter["PassiveOpens"] += 1
        self.tables.connection_changed(connection, new)
        if new is S.CLOSE:
            self._scheduled.pop(connection, None)

    def schedule(self, connection: Connection) -> None:
        if connection.state is S.CLOSE:
            self._scheduled.pop(connection, None)
            return
        deadline = connection.next_deadline()
        if deadline is None:
            return
        current = self._scheduled.get(connection)
        if current is None or deadline < current:
            self._scheduled[connection] = deadline
            heapq.heappush(self._timers, (deadline, next(self._tie), connection))

    def time_wait_reusable(self, connection: Connection, segment: TcpSegment) -> bool:
        flags = int(segment.flags)
        if not flags & SYN or flags & (ACK | RST):
            return False
        if self.tables.find_listener(connection.local_ip, connection.local_port) is None:
            return False
        ts = segment.options.timestamp
        if connection.negotiated.timestamps and ts is not None:
            return seq_gt(ts[0], connection.ts_recent)
        return seq_gt(segment.seq, connection.rcv_nxt)

    def send_raw(self, src_ip: str, dst_ip: str, segment: TcpSegment) -> None:
        """A segment no connection sends (a SYN cookie's SYN-ACK, a RST for no connection)."""
        self.counter["OutSegs"] += 1
        self._outbox.append((src_ip, dst_ip, segment))

    def reset_unmatched(self, src_ip: str, dst_ip: str, segment: TcpSegment, now: float) -> None:
        """RFC 9293 3.10.7.1: a segment for no connection and no listener gets a RST (never one for a RST)."""
        flags = int(segment.flags)
        if flags & RST:
            return
        if flags & ACK:
            reset = TcpSegment(segment.dst_port, segment.src_port, segment.ack, 0, TcpFlags.RST, 0)
        else:
            ack = seq_add(segment.seq, segment.seg_len) & SEQ_MASK
            reset = TcpSegment(segment.dst_port, segment.src_port, 0, ack, TcpFlags.RST | TcpFlags.ACK, 0)
        self.counter["OutRsts"] += 1
        self.send_raw(dst_ip, src_ip, reset)
        if self.trace_sink is not None:
            self.trace_sink(
                TraceEvent(TCP_SEND_RESET, now, dst_ip, segment.dst_port, src_ip, segment.src_port,
                           {"seq": reset.seq, "ack": reset.ack})
            )
