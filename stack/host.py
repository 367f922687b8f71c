"""A Host: one interface's Ethernet and ARP, IPv4 and ICMP, and TCP, composed and sans-IO.

The layers stack as in a kernel: the Ethernet link (`stack.net.link`, with the ARP cache) carries IPv4
(`stack.net.ipv4`), which delivers to TCP (`stack.tcp.layer`) and sends what TCP polls.  The host only
composes them and answers for the whole: ``receive_frame(frame, now)`` feeds the link, ``poll(now)``
returns the frames to send (`OutgoingFrame`s, the device contract of `stack.devices.contract`) and
``next_deadline()`` says when to wake it.  Everything else (ARP retries, IP reassembly timeouts, every TCP
timer) happens inside those calls, so many hosts can live in one process and a test can run them on a
virtual clock.  The host never touches a device or a clock.

Malformed frames are counted (``counters()``) and dropped; they never raise.
"""

from __future__ import annotations

import ipaddress
import os
import random
from typing import TYPE_CHECKING

from stack.api.readiness import ReadinessSet
from stack.api.socket import Socket
from stack.deadlines import AT_ONCE, earliest
from stack.devices.contract import OutgoingFrame
from stack.loops.network import NoDriverError
from stack.net.arp import ArpCache, ArpTimings, NeighbourEntry
from stack.net.counters import Counters
from stack.net.ipv4 import EchoReply, Ipv4Layer
from stack.net.link import EthernetLink
from stack.net.routing import Route, RoutingTable
from stack.tcp.config import TcpConfig
from stack.tcp.layer import TcpLayer
from stack.tcp.ownership import FlowShare
from stack.tcp.snapshot import ConnectionSnapshot, TablesSnapshot
from stack.tcp.trace import TraceSink
from stack.wire.buffer import BytesLike
from stack.wire.ethernet import mac_from_str, mac_to_str
from stack.wire.tcp import ChecksumMode

if TYPE_CHECKING:
    from stack.loops.network import Driver
    from stack.tcp.connection import Connection

# Host options for the ARP timings (ArpTimings' fields).
ARP_OPTIONS = {"arp_retries": "retries", "arp_retry_interval": "retry_interval",
               "arp_reachable_time": "reachable_time", "arp_delay_first_probe": "delay_first_probe",
               "arp_gc_stale_time": "gc_stale_time", "arp_queue_limit": "queue_limit"}
# RFC 4022's TCP MIB (nstat's Tcp* names); the TCP layer's other counters are Linux extensions (TcpExt*).
TCP_MIB = frozenset({"RtoAlgorithm", "RtoMin", "RtoMax", "MaxConn", "ActiveOpens", "PassiveOpens",
                     "AttemptFails", "EstabResets", "CurrEstab", "InSegs", "OutSegs", "RetransSegs", "InErrs",
                     "OutRsts", "InCsumErrors"})
# Shown even at zero, as ``nstat -az`` does: the counters a reader looks for first.
ZERO_COUNTERS = (
    "EthInFrames", "EthInErrors", "EthInOtherHost", "ArpInRequests", "ArpInReplies", "ArpOutRequests",
    "ArpOutReplies", "ArpResolveFailed", "IpInReceives", "IpInHdrErrors", "IpInAddrErrors",
    "IpInUnknownProtos", "IpInDelivers", "IpOutRequests", "IpOutNoRoutes", "IpOutDiscards", "IpReasmReqds",
    "IpReasmOKs", "IpReasmFails", "IpFragOKs", "IpFragFails", "IpFragCreates", "IcmpInMsgs", "IcmpInErrors",
    "IcmpInEchos", "IcmpInEchoReps", "IcmpInDestUnreachs", "IcmpInTimeExcds", "IcmpOutMsgs", "IcmpOutEchos",
    "IcmpOutEchoReps", "IcmpOutDestUnreachs", "IcmpOutTimeExcds", "TcpInErrs", "UdpNoPorts",
)


class Host:
    """One host on one Ethernet interface.

    ``ip`` is "address/prefix" (a bare address means /32, as with ``ip addr add``); ``gateway`` adds a
    default route. Options: ``mtu`` (1500), ``tcp`` (a ``TcpConfig``), ``seed`` (for every random choice:
    ISNs' clock offsets, ephemeral ports, ARP jitter, IP IDs), ``secret`` (the ISN / SYN-cookie / port
    key; default from os.urandom), ``trace`` (a callback for TCP trace events), ``trace_segments`` (True;
    False leaves the per-segment events out of the trace, so they cost nothing), ``routes`` (extra
    ``(destination, gateway)`` pairs), ``gratuitous_arp`` (True), ``tx_checksum`` ("full"; "partial"
    leaves the TCP checksum to a device with checksum offload, e.g. a TAP with virtio_net_hdr),
    ``flow_share`` (None; one worker's `FlowShare` when a node runs as several Hosts on one TAP) and the
    ``arp_*`` timings (``arp_retries``, ``arp_retry_interval``, ``arp_reachable_time``,
    ``arp_delay_first_probe``, ``arp_gc_stale_time``, ``arp_queue_limit``).
    """

    def __init__(self, ip: str = "10.0.0.2/24", mac: str = "02:00:00:00:00:02", gateway: str | None = None, *,
                 mtu: int = 1500, tcp: TcpConfig | None = None, seed: int | None = None,
                 secret: bytes | None = None, trace: TraceSink | None = None,
                 routes: tuple[tuple[str, str | None], ...] = (), gratuitous_arp: bool = True,
                 tx_checksum: ChecksumMode = "full", name: str | None = None, trace_segments: bool = True,
                 flow_share: FlowShare | None = None, **arp_options: float) -> None:
        try:
            self.interface = ipaddress.IPv4Interface(ip)
        except ValueError as exc:
            raise ValueError(f"host: ip {ip!r}: {exc}") from None
        self.mac = mac_from_str(mac)
        if self.mac[0] & 1:
            raise ValueError(f"host: mac {mac!r} is a multicast address")
        if not 68 <= mtu <= 65535:
            raise ValueError(f"host: mtu {mtu} is outside 68..65535")
        unknown = sorted(set(arp_options) - set(ARP_OPTIONS))
        if unknown:
            raise TypeError(f"host: unknown option(s) {', '.join(unknown)}")
        self.name = name or str(self.interface.ip)
        self.ip = str(self.interface.ip)
        self.address = self.interface.ip.packed
        self.mtu = mtu
        self.rng = random.Random(seed if seed is not None else os.urandom(16))
        self.secret = secret if secret is not None else os.urandom(32)
        self.driver: Driver | None = None
        self.readiness = ReadinessSet()  # descriptors of the sockets asked for fileno()
        self._counters = Counters()

        self.routes = RoutingTable()
        self.routes.add(str(self.interface.network))
        if gateway is not None:
            self.routes.add("default", gateway)
        for destination, via in routes:
            self.routes.add(destination, via)

        timings = ArpTimings(**{ARP_OPTIONS[name]: value for name, value in arp_options.items()})
        self.arp = ArpCache(timings, rng=self.rng)
        self.link = EthernetLink(self.mac, self.address, self.arp, self._counters, announce=gratuitous_arp)
        self.ip_layer = Ipv4Layer(self.interface, self.routes, mtu, self._counters, link=self.link,
                                  rng=self.rng, tx_checksum=tx_checksum)
        ip_layer = self.ip_layer
        self.tcp = TcpLayer(tcp, secret=self.secret, rng=self.rng, route=ip_layer.tcp_route, trace=trace,
                            is_local_address=ip_layer.is_local_address,
                            is_broadcast_address=ip_layer.is_directed_broadcast,
                            negative_advice=ip_layer.negative_advice, trace_segments=trace_segments,
                            flow_share=flow_share)
        ip_layer.attach_tcp(self.tcp)

    def __repr__(self) -> str:
        return f"Host({self.interface}, {mac_to_str(self.mac)})"

    @property
    def tx_checksum(self) -> ChecksumMode:
        return self.ip_layer.tx_checksum

    # -- the sans-IO surface (a FrameNode) -------------------------------------------------------------

    def receive_frame(self, frame: BytesLike, now: float, checksum_verified: bool = False) -> None:
        """Process one received Ethernet frame. Malformed frames are counted and dropped.

        ``checksum_verified``: the device already checked the TCP checksum (a TAP with virtio_net_hdr
        flags NEEDS_CSUM or DATA_VALID), so Python need not sum the payload again.
        """
        payload = self.link.receive(frame, now)
        if payload is not None:
            self.ip_layer.receive(payload, now, checksum_verified)

    def poll(self, now: float) -> list[OutgoingFrame]:
        """Run everything due by ``now`` and return the frames to transmit, in order.

        A TCP frame with data carries its payload as a view of the send buffer: write the frames before
        the next call into the host."""
        link = self.link
        for packet in link.poll(now):
            self.ip_layer.next_hop_failed(packet, now)
        self.ip_layer.poll(now)
        for packet in link.poll(now):  # requests for neighbours first needed just now leave with this batch
            self.ip_layer.next_hop_failed(packet, now)
        return link.take_frames()

    def take_progressed(self) -> dict[Connection, None]:
        """The TCP connections visited since the last call (`TcpLayer.take_progressed`)."""
        return self.tcp.take_progressed()

    def next_deadline(self) -> float | None:
        """When ``poll`` next has work (`AT_ONCE` when work is waiting)."""
        if self.link.has_frames or self.ip_layer.has_work:
            return AT_ONCE
        return earliest(self.ip_layer.next_deadline(), self.link.next_deadline())

    # -- user-facing API -------------------------------------------------------------------------------

    def socket(self) -> Socket:
        """A new BSD-style TCP socket on this host (see ``stack.api.socket.Socket``)."""
        return Socket(self, self.tcp.socket())

    def add_route(self, destination: str, gateway: str | None = None, *, metric: int = 0,
                  mtu: int | None = None) -> Route:
        return self.routes.add(destination, gateway, metric=metric, mtu=mtu)

    def send_ping(self, dst: str, ident: int, sequence: int, payload: bytes = b"") -> None:
        """Queue an ICMP echo request; it leaves at the next ``poll`` (replies: ``echo_replies``)."""
        self.ip_layer.queue_echo_request(dst, ident, sequence, payload)
        if self.driver is not None:
            self.driver.wakeup()

    @property
    def echo_replies(self) -> list[EchoReply]:
        return self.ip_layer.echo_replies

    def ping(self, dst: str, *, timeout: float = 1.0, payload: bytes = b"", ident: int | None = None,
             sequence: int = 1) -> float | None:
        """Send one echo request and wait (via the host's driver) for its reply: the RTT, or None."""
        driver = self.driver
        if driver is None:
            raise NoDriverError(f"{self!r} has no driver: a blocking call needs a Runner or a real-time "
                                "driver running this host (or use non-blocking calls and drive it yourself)")
        ident = self.rng.randrange(1 << 16) if ident is None else ident
        with driver.locked():
            seen = len(self.echo_replies)
            self.send_ping(dst, ident, sequence, payload)

        def answered() -> EchoReply | None:
            return next((r for r in self.echo_replies[seen:]
                         if r.src == dst and r.ident == ident and r.sequence == sequence), None)

        if not driver.wait_until(lambda: answered() is not None, timeout):
            return None
        with driver.locked():
            reply = answered()
            sent = self.ip_layer.pings_sent.pop((dst, ident, sequence), None)
        assert reply is not None
        return None if sent is None else reply.time - sent

    def counters(self) -> dict[str, int]:
        """nstat-like counters: Eth*, Arp*, Ip*, Icmp* from the link and IP; Tcp*/TcpExt* from TCP."""
        merged = dict.fromkeys(ZERO_COUNTERS, 0)
        merged.update(self._counters)
        merged["ArpQueueDrops"] = self.arp.stats.queue_drops  # packets dropped while resolving (unres_qlen)
        for key, value in self.tcp.counters().items():
            merged[f"Tcp{key}" if key in TCP_MIB else f"TcpExt{key}"] = value
        return dict(sorted(merged.items()))

    def tables(self) -> TablesSnapshot:
        """The seeds' three tables: bound sockets, listeners (SYN/accept queues, backlog), established."""
        return self.tcp.tables.snapshot()

    def snapshots(self) -> list[ConnectionSnapshot]:
        return self.tcp.snapshots()

    def neighbours(self) -> list[NeighbourEntry]:
        """The ARP cache, like ``ip neigh``."""
        return self.arp.entries()
