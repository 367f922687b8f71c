"""All of one host's TCP: the seeds' three tables and every connection, behind one sans-IO surface.

The host hands arriving segments to `segment_arrives`, ICMP errors to `icmp_error`, calls `poll(now)` after
every event and sleeps until `next_deadline()`.  Applications use `socket()` (a non-blocking `TcpSocket`).

The three tables, named as in the seeds:
- **bound**: every socket holding a local (address, port), including connections the application already
  closed but that still live (FIN_WAIT2, TIME_WAIT) — they keep their port, as in Linux's bind hash;
- **listening**: one `Listener` per listening (address, port), each with its SYN queue and accept queue;
- **established** (Linux's "ehash"): every connection with a 4-tuple, from SYN_SENT / SYN_RECV to TIME_WAIT.

`poll` is cheap when nothing happened: only connections touched since the last poll or whose timer is due
are visited (a heap of deadlines, entries superseded lazily).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack.tcp.addresses import can_be_a_peer
from stack.tcp.config import TcpConfig
from stack.tcp.connection import Connection
from stack.tcp.isn import initial_sequence_number, timestamp_offset
from stack.tcp.listener import FourTuple, Listener
from stack.tcp.passive import ListenHandler
from stack.tcp.ports import EphemeralPortAllocator
from stack.tcp.seq import SEQ_MASK, seq_add, seq_gt
from stack.tcp.snapshot import BoundEntry, ConnectionSnapshot, ListenerSnapshot, TablesSnapshot
from stack.tcp.state import TcpState
from stack.tcp.trace import TCP_SEND_RESET, TraceEvent, TraceSink
from stack.wire.tcp import TcpFlags, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.tcp_socket import TcpSocket

S = TcpState
Route = Callable[[str], "tuple[str, int] | None"]
IsnSource = Callable[[str, int, str, int, float], int]
WILDCARD = "0.0.0.0"
ACK = int(TcpFlags.ACK)
SYN = int(TcpFlags.SYN)
RST = int(TcpFlags.RST)


@dataclass(frozen=True, slots=True)
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
        negative_advice: Callable[[str], None] | None = None,
        trace_segments: bool = True,
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
        config = self.config
        self.ports = EphemeralPortAllocator(secret, low=config.ephemeral_low, high=config.ephemeral_high)
        self.connections: dict[FourTuple, Connection] = {}
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.bindings: dict[int, list[TcpSocket]] = {}
        self.owner_of: dict[Connection, TcpSocket] = {}
        self.parent_of: dict[Connection, Listener] = {}
        self.counter: Counter[str] = Counter()
        self.now = 0.0
        self.passive = ListenHandler(self)
        self._outbox: list[tuple[str, str, TcpSegment]] = []
        self._dirty: dict[Connection, None] = {}
        self._timers: list[tuple[float, int, Connection]] = []
        self._scheduled: dict[Connection, float] = {}
        self._tie = itertools.count()

    # ------------------------------------------------------------------ the host's side

    def segment_arrives(self, src_ip: str, dst_ip: str, segment: TcpSegment, now: float) -> None:
        self.now = now
        self.counter["InSegs"] += 1
        key = (dst_ip, segment.dst_port, src_ip, segment.src_port)
        connection = self.connections.get(key)
        if connection is not None:
            if connection.state is S.TIME_WAIT and self.time_wait_reusable(connection, segment):
                # Linux (tcp_timewait_state_process): a new SYN newer than the old incarnation ends
                # TIME_WAIT early and goes to the listener.
                connection.terminate(now, 0)
            else:
                parent = self.parent_of.get(connection)
                if (
                    parent is not None
                    and connection.state is S.SYN_RECV
                    and int(segment.flags) & ACK
                    and not int(segment.flags) & (RST | SYN)
                    and parent.accept_queue_full()
                ):
                    self.counter["ListenOverflows"] += 1
                    self.counter["ListenDrops"] += 1
                    return
                connection.on_segment(segment, now)
                self._dirty[connection] = None
                return
        if not can_be_a_peer(src_ip, self.is_broadcast_address):
            # RFC 9293 3.9.2.3 (MUST-63): a SYN from a broadcast, multicast or otherwise invalid source is
            # ignored, and nothing (not even a RST) is sent back to such an address.
            self.counter["InvalidSourceDrops"] += 1
            return
        listener = self.find_listener(dst_ip, segment.dst_port)
        if listener is not None:
            self.passive.segment_arrives(listener, src_ip, dst_ip, segment, now)
            return
        self.reset_unmatched(src_ip, dst_ip, segment, now)

    def icmp_error(self, error: IcmpError, now: float) -> None:
        self.now = now
        self.counter["InIcmpErrors"] += 1
        connection = self.connections.get((error.src_ip, error.src_port, error.dst_ip, error.dst_port))
        if connection is None:
            return
        connection.on_icmp(error.kind, error.code, error.seq, error.mtu, now)
        self._dirty[connection] = None

    def poll(self, now: float) -> list[tuple[str, str, TcpSegment]]:
        self.now = now
        timers = self._timers
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
            for connection in dirty:
                for segment in connection.poll(now):
                    out.append((connection.local_ip, connection.remote_ip, segment))
                self.schedule(connection)
        return out

    def next_deadline(self) -> float | None:
        if self._dirty or self._outbox:
            return self.now
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

    def socket(self) -> TcpSocket:
        from stack.tcp.tcp_socket import TcpSocket

        return TcpSocket(self)

    # ------------------------------------------------------------------ inspection

    def tables(self) -> TablesSnapshot:
        bound = tuple(
            BoundEntry(sock.local_address[0], port, sock.state)
            for port, socks in sorted(self.bindings.items())
            for sock in socks
        )
        listening = tuple(
            ListenerSnapshot(lst.ip, lst.port, lst.backlog, len(lst.syn_queue), len(lst.accept_queue))
            for lst in self.listeners.values()
        )
        return TablesSnapshot(bound=bound, listening=listening, established=tuple(self.snapshots()))

    def snapshots(self) -> list[ConnectionSnapshot]:
        return [connection.snapshot() for connection in self.connections.values()]

    def counters(self) -> dict[str, int]:
        """nstat-like counters (Linux's Tcp* and TcpExt* names without the prefix); CurrEstab is a gauge."""
        result = dict(self.counter)
        result["CurrEstab"] = sum(
            1 for c in self.connections.values() if c.state in (S.ESTABLISHED, S.CLOSE_WAIT)
        )
        for name in ("ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "InSegs", "OutSegs",
                     "RetransSegs", "InErrs", "OutRsts", "ListenOverflows", "ListenDrops"):
            result.setdefault(name, 0)
        return result

    # ------------------------------------------------------------------ connections

    def new_connection(
        self,
        local_ip: str,
        local_port: int,
        remote_ip: str,
        remote_port: int,
        mtu: int,
        now: float,
        *,
        iss: int | None = None,
    ) -> Connection:
        connection = Connection(
            config=self.config,
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
        key = (local_ip, local_port, remote_ip, remote_port)
        self.connections[key] = connection

        def on_state_change(conn: Connection, old: TcpState, new: TcpState) -> None:
            self.on_state_change(key, conn, old, new)

        connection.on_state_change = on_state_change
        connection.on_negative_advice = self.give_negative_advice
        return connection

    def give_negative_advice(self, connection: Connection) -> None:
        if self.negative_advice is not None:
            self.negative_advice(connection.remote_ip)

    def on_state_change(self, key: FourTuple, connection: Connection, old: TcpState, new: TcpState) -> None:
        if new is S.SYN_SENT:
            self.counter["ActiveOpens"] += 1
        elif new is S.SYN_RECV and old is S.LISTEN:
            self.counter["PassiveOpens"] += 1
        parent = self.parent_of.get(connection)
        if parent is not None:
            parent.on_state_change(key, connection, new)
            if new is not S.SYN_RECV:
                del self.parent_of[connection]
        if new is S.CLOSE:
            if self.connections.get(key) is connection:
                del self.connections[key]
            self._scheduled.pop(connection, None)
            owner = self.owner_of.pop(connection, None)
            if owner is not None and owner.closed:
                self.unbind(owner)

    def touch(self, connection: Connection) -> None:
        """A user call changed `connection`: visit it on the next poll."""
        self._dirty[connection] = None

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
        if self.find_listener(connection.local_ip, connection.local_port) is None:
            return False
        ts = segment.options.timestamp
        if connection.negotiated.timestamps and ts is not None:
            return seq_gt(ts[0], connection.ts_recent)
        return seq_gt(segment.seq, connection.rcv_nxt)

    def find_listener(self, ip: str, port: int) -> Listener | None:
        listener = self.listeners.get((ip, port))
        return listener if listener is not None else self.listeners.get((WILDCARD, port))

    def send_raw(self, src_ip: str, dst_ip: str, segment: TcpSegment) -> None:
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

    # ------------------------------------------------------------------ the bound table

    def port_in_use(self, ip: str, port: int) -> bool:
        for sock in self.bindings.get(port, ()):
            other_ip = sock.local_address[0]
            if other_ip == ip or WILDCARD in (other_ip, ip):
                return True
        return False

    def check_bind(self, sock: TcpSocket, ip: str, port: int) -> bool:
        """Linux's bind conflict rule: an overlapping address on the same port conflicts unless both
        sockets set SO_REUSEADDR and the other is not listening."""
        for other in self.bindings.get(port, ()):
            if other is sock:
                continue
            other_ip = other.local_address[0]
            if not (other_ip == ip or WILDCARD in (other_ip, ip)):
                continue
            if sock.reuseaddr and other.reuseaddr and not other.listening:
                continue
            return False
        return True

    def bind(self, sock: TcpSocket, ip: str, port: int) -> int:
        if port == 0:
            port = self.ports.allocate_for_bind(lambda p: self.port_in_use(ip, p), self.rng)
        elif not self.check_bind(sock, ip, port):
            raise OSError(errno.EADDRINUSE, f"address {ip}:{port} already in use")
        self.bindings.setdefault(port, []).append(sock)
        return port

    def connect_port(self, local_ip: str, remote_ip: str, remote_port: int) -> int:
        """An ephemeral port for connect() (RFC 6056): free of bind()s and unique for this 4-tuple."""

        def in_use(port: int) -> bool:
            if (local_ip, port, remote_ip, remote_port) in self.connections:
                return True
            return any(not s.auto_bound for s in self.bindings.get(port, ()))

        return self.ports.allocate(local_ip, remote_ip, remote_port, in_use, self.rng)

    def unbind(self, sock: TcpSocket) -> None:
        port = sock.local_address[1]
        socks = self.bindings.get(port)
        if socks and sock in socks:
            socks.remove(sock)
            if not socks:
                del self.bindings[port]

    def close_listener(self, listener: Listener, now: float) -> None:
        """close() on a listening socket: SYN queue entries vanish, unaccepted connections are reset (Linux's
        inet_csk_listen_stop)."""
        self.listeners.pop((listener.ip, listener.port), None)
        for connection in list(listener.syn_queue.values()):
            connection.terminate(now, 0)
        for connection in list(listener.accept_queue):
            connection.orphaned = True
            connection.abort(now)
            self._dirty[connection] = None
        listener.accept_queue.clear()
