"""A Host: one interface's Ethernet, ARP, IPv4, ICMP and TCP, glued together and sans-IO.

The host never touches a device or a clock. Whoever drives it (the deterministic ``Runner``, a real-time
driver, later the TAP loop) feeds it frames with ``receive_frame(frame, now)``, collects the frames it
wants to send with ``poll(now)`` and wakes it at ``next_deadline()``. Everything else (ARP retries, IP
reassembly timeouts, every TCP timer) happens inside those calls, so many hosts can live in one process
and a test can run them on a virtual clock.

Malformed frames are counted (``counters()``) and dropped; they never raise.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket as _socket
from typing import TYPE_CHECKING, Any

from stack.net.arp import ArpCache, ArpTimings, NeighbourEntry
from stack.net.ipv4 import EchoReply, Ipv4Layer
from stack.net.routing import Route, RoutingTable
from stack.tcp.config import TcpConfig
from stack.tcp.layer import IcmpError, TcpLayer
from stack.tcp.snapshot import ConnectionSnapshot, TablesSnapshot
from stack.tcp.trace import TraceSink
from stack.wire.arp import ARP_REPLY, ARP_REQUEST, arp_reply_for, arp_request, build_arp, parse_arp
from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket
from stack.wire.ethernet import (
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ethernet_header,
    mac_from_str,
    mac_to_str,
    parse_ethernet,
)
from stack.wire.frames import FrameParts, tcp_frame_headers
from stack.wire.icmp import QuotedTcp
from stack.wire.ipv4 import HEADER_LEN as IPV4_HEADER_LEN
from stack.wire.ipv4 import PROTO_TCP
from stack.wire.tcp import ChecksumMode, TcpSegment, build_tcp, parse_tcp

if TYPE_CHECKING:
    from stack.api.socket import Socket
    from stack.loops.network import Driver

ARP_OPTIONS = {"arp_retries": "retries", "arp_retry_interval": "retry_interval",
               "arp_reachable_time": "reachable_time", "arp_delay_first_probe": "delay_first_probe",
               "arp_gc_stale_time": "gc_stale_time", "arp_queue_limit": "queue_limit"}
ETHERNET_HEADER_LEN = 14
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
MAX_LOOPBACK_ROUNDS = 64  # packets a host sends itself (connect to its own address) settle in a few rounds


class Host:
    """One host on one Ethernet interface.

    ``ip`` is "address/prefix" (a bare address means /32, as with ``ip addr add``); ``gateway`` adds a
    default route. Options: ``mtu`` (1500), ``tcp`` (a ``TcpConfig``), ``seed`` (for every random choice:
    ISNs' clock offsets, ephemeral ports, ARP jitter, IP IDs), ``secret`` (the ISN / SYN-cookie / port
    key; default from os.urandom), ``trace`` (a callback for TCP trace events), ``trace_segments`` (True;
    False leaves the per-segment events out of the trace, so they cost nothing), ``routes`` (extra
    ``(destination, gateway)`` pairs), ``gratuitous_arp`` (True), ``tx_checksum`` ("full"; "partial"
    leaves the TCP checksum to a device with checksum offload, e.g. a TAP with virtio_net_hdr) and the
    ``arp_*`` timings (``arp_retries``, ``arp_retry_interval``, ``arp_reachable_time``,
    ``arp_delay_first_probe``, ``arp_gc_stale_time``, ``arp_queue_limit``).
    """

    def __init__(self, ip: str = "10.0.0.2/24", mac: str = "02:00:00:00:00:02", gateway: str | None = None, *,
                 mtu: int = 1500, tcp: TcpConfig | None = None, seed: int | None = None,
                 secret: bytes | None = None, trace: TraceSink | None = None,
                 routes: tuple[tuple[str, str | None], ...] = (), gratuitous_arp: bool = True,
                 tx_checksum: ChecksumMode = "full", name: str | None = None, trace_segments: bool = True,
                 **arp_options: float) -> None:
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
        self._broadcast_text = str(self.interface.network.broadcast_address)
        self.address = self.interface.ip.packed
        self.mtu = mtu
        self.tx_checksum: ChecksumMode = tx_checksum
        self.rng = random.Random(seed if seed is not None else os.urandom(16))
        self.secret = secret if secret is not None else os.urandom(32)
        self.driver: Driver | None = None
        self._counters: dict[str, int] = _Counters()

        self.routes = RoutingTable()
        self.routes.add(str(self.interface.network))
        if gateway is not None:
            self.routes.add("default", gateway)
        for destination, via in routes:
            self.routes.add(destination, via)

        timings = ArpTimings(**{ARP_OPTIONS[k]: v for k, v in arp_options.items()})  # type: ignore[arg-type]
        self.arp = ArpCache(timings, rng=self.rng)
        self.ip_layer = Ipv4Layer(self.address, self.interface, self.routes, mtu, self._counters,
                                  transmit=self._transmit, tcp_input=self._tcp_input,
                                  tcp_error=self._tcp_error, rng=self.rng)
        self.tcp = TcpLayer(tcp, secret=self.secret, rng=self.rng, route=self._tcp_route, trace=trace,
                            is_local_address=self._is_local_address,
                            is_broadcast_address=self._is_broadcast_address,
                            negative_advice=self._negative_advice, trace_segments=trace_segments)

        self._outbox: list[bytes | FrameParts] = []
        self._pings: list[tuple[str, int, int, bytes]] = []
        self._pings_sent: dict[tuple[str, int, int], float] = {}
        self._announce = gratuitous_arp
        # TSO super-segments of the frames being sent: id(frame) -> gso_size (the connection's payload
        # limit), for the device that cuts them (see gso_size_of); the frames of the latest poll only.
        self._gso_pending: dict[int, int] = {}
        self._gso_sizes: dict[int, int] = {}
        self._now = 0.0  # the latest time a driver told us: next_deadline's "at once"
        self._address_cache: dict[bytes, str] = {}

    def __repr__(self) -> str:
        return f"Host({self.interface}, {mac_to_str(self.mac)})"

    # -- the sans-IO surface ---------------------------------------------------------------------------

    def receive_frame(self, frame: BytesLike, now: float, *, checksum_verified: bool = False) -> None:
        """Process one received Ethernet frame. Malformed frames are counted and dropped.

        ``checksum_verified``: the device already checked the TCP checksum (a TAP with virtio_net_hdr
        flags NEEDS_CSUM or DATA_VALID), so Python need not sum the payload again.
        """
        self._now = now
        counters = self._counters
        counters["EthInFrames"] += 1
        try:
            parsed = parse_ethernet(frame)
        except MalformedPacket:
            counters["EthInErrors"] += 1
            return
        dst = parsed.dst
        if dst != self.mac and dst != BROADCAST_MAC:
            counters["EthInOtherHost"] += 1  # another host's unicast, or multicast we did not join
            return
        if parsed.vlan_ids:
            counters["EthInOtherVlan"] += 1  # an untagged interface does not belong to any VLAN
            return
        if parsed.ethertype == ETHERTYPE_IPV4:
            self.ip_layer.receive(parsed.payload, now, checksum_verified)
        elif parsed.ethertype == ETHERTYPE_ARP:
            self._arp_input(parsed.payload, now)
        else:
            counters["EthInUnknownType"] += 1

    def poll(self, now: float) -> list[bytes]:
        """Run everything due by ``now`` and return the frames to transmit, in order."""
        frames = self.poll_parts(now)
        gso_sizes = self._gso_sizes
        for index, frame in enumerate(frames):
            if type(frame) is tuple:
                joined = frames[index] = frame[0] + frame[1]
                size = gso_sizes.pop(id(frame), None)
                if size is not None:
                    gso_sizes[id(joined)] = size
        return frames  # type: ignore[return-value]

    def poll_parts(self, now: float) -> list[bytes | FrameParts]:
        """``poll`` for a device that writes a frame in pieces (a TAP's writev): a TCP frame with data comes
        as ``(headers, payload)``, the payload a view of the send buffer, so no frame is joined in Python.
        Write them before the next call into the host."""
        self._now = now
        if self._announce:
            self._announce = False
            self._send_arp(arp_request(self.mac, self.address, self.address), BROADCAST_MAC)  # gratuitous
        self._run_arp(now)
        self.ip_layer.poll(now)
        for dst, ident, sequence, payload in self._pings:
            if self.ip_layer.send_echo_request(dst, ident, sequence, payload, now):
                self._pings_sent[(dst, ident, sequence)] = now
        self._pings.clear()
        for _ in range(MAX_LOOPBACK_ROUNDS):
            for src_ip, dst_ip, segment in self.tcp.poll(now):
                self._send_segment(src_ip, dst_ip, segment, now)
            looped = self.ip_layer.take_loopback()
            if not looped:
                break
            for packet in looped:
                self._counters["LoopbackPackets"] += 1
                self.ip_layer.receive(packet, now)
        self._run_arp(now)  # requests for neighbours first needed just now leave with this batch
        frames, self._outbox = self._outbox, []
        self._gso_sizes, self._gso_pending = self._gso_pending, {}
        return frames

    def gso_size_of(self, frame: bytes | FrameParts) -> int | None:
        """For a frame of the latest ``poll``: the segment size a TSO device must cut it into, or None when
        the frame is a single packet. Only a TCP configured with ``tso_max_bytes`` sends such frames."""
        return self._gso_sizes.get(id(frame))

    def _run_arp(self, now: float) -> None:
        requests, failures = self.arp.poll(now)
        for request in requests:
            self._send_arp(arp_request(self.mac, self.address, request.target_ip),
                           request.dst_mac or BROADCAST_MAC)
        for failure in failures:
            self._counters["ArpResolveFailed"] += 1
            for packet in failure.packets:
                self._unreachable_locally(packet, now)

    def next_deadline(self) -> float | None:
        """When ``poll`` next has work (the latest ``now`` seen, i.e. at once, when work is waiting)."""
        if self._outbox or self._pings or self._announce or self.ip_layer.has_loopback:
            return self._now
        deadline = self.tcp.next_deadline()
        for other in (self.arp.next_deadline(), self.ip_layer.next_deadline()):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    # -- user-facing API -------------------------------------------------------------------------------

    def socket(self) -> Socket:
        """A new BSD-style TCP socket on this host (see ``stack.api.socket.Socket``)."""
        from stack.api.socket import Socket

        return Socket(self, self.tcp.socket())

    def add_route(self, destination: str, gateway: str | None = None, *, metric: int = 0,
                  mtu: int | None = None) -> Route:
        return self.routes.add(destination, gateway, metric=metric, mtu=mtu)

    def send_ping(self, dst: str, ident: int, sequence: int, payload: bytes = b"") -> None:
        """Queue an ICMP echo request; it leaves at the next ``poll`` (replies: ``echo_replies``)."""
        _socket.inet_aton(dst)  # a clear OSError now rather than a failure inside poll
        self._pings.append((dst, ident & 0xFFFF, sequence & 0xFFFF, payload))
        if self.driver is not None:
            self.driver.wakeup()

    @property
    def echo_replies(self) -> list[EchoReply]:
        return self.ip_layer.echo_replies

    def ping(self, dst: str, *, timeout: float = 1.0, payload: bytes = b"", ident: int | None = None,
             sequence: int = 1) -> float | None:
        """Send one echo request and wait (via the host's driver) for its reply: the RTT, or None."""
        driver = self._require_driver()
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
            sent = self._pings_sent.pop((dst, ident, sequence), None)
        assert reply is not None
        return None if sent is None else reply.time - sent

    def counters(self) -> dict[str, int]:
        """nstat-like counters: Eth*, Arp*, Ip*, Icmp* from the host; Tcp*/TcpExt* from the TCP layer."""
        merged = dict.fromkeys(ZERO_COUNTERS, 0)
        merged.update(self._counters)
        merged["ArpQueueDrops"] = self.arp.stats.queue_drops  # packets dropped while resolving (unres_qlen)
        for key, value in self.tcp.counters().items():
            name = f"Tcp{key}" if key in TCP_MIB else f"TcpExt{key}"
            merged[name] = merged.get(name, 0) + value  # TcpInErrs: the layer's plus our parse failures
        return dict(sorted(merged.items()))

    def tables(self) -> TablesSnapshot:
        """The seeds' three tables: bound sockets, listeners (SYN/accept queues, backlog), established."""
        return self.tcp.tables()

    def snapshots(self) -> list[ConnectionSnapshot]:
        return self.tcp.snapshots()

    def neighbours(self) -> list[NeighbourEntry]:
        """The ARP cache, like ``ip neigh``."""
        return self.arp.entries()

    def _require_driver(self) -> Driver:
        if self.driver is None:
            from stack.loops.network import NoDriverError

            raise NoDriverError(f"{self!r} has no driver: a blocking call needs a Runner or a real-time "
                                "driver running this host (or use non-blocking calls and drive it yourself)")
        return self.driver

    # -- ARP ---------------------------------------------------------------------------------------------

    def _arp_input(self, payload: BytesLike, now: float) -> None:
        counters = self._counters
        try:
            packet = parse_arp(payload)
        except MalformedPacket:
            counters["ArpInErrors"] += 1
            return
        counters["ArpInRequests" if packet.op == ARP_REQUEST else "ArpInReplies"] += 1
        if packet.sender_ip == self.address:
            if packet.sender_mac != self.mac:
                counters["ArpAddressConflicts"] += 1  # someone else claims our address: keep ours
            return
        to_us = packet.target_ip == self.address
        if packet.sender_ip != b"\x00\x00\x00\x00":  # RFC 5227 probes carry no sender to learn
            for waiting in self.arp.learn(packet.sender_ip, packet.sender_mac, now,
                                          is_reply=packet.op == ARP_REPLY, to_us=to_us):
                self._frame_ipv4(packet.sender_mac, waiting)
        if packet.op == ARP_REQUEST and to_us:
            self._send_arp(arp_reply_for(packet, self.mac), packet.sender_mac)

    def _send_arp(self, packet: Any, dst_mac: bytes) -> None:
        self._counters["ArpOutRequests" if packet.op == ARP_REQUEST else "ArpOutReplies"] += 1
        header = ethernet_header(dst_mac, self.mac, ETHERTYPE_ARP)
        self._outbox.append(b"".join((header, build_arp(packet), bytes(18))))  # padded to 60 bytes

    # -- IP output ---------------------------------------------------------------------------------------

    def _transmit(self, next_hop: bytes, packet: bytes, now: float) -> None:
        """Frame an IPv4 packet for ``next_hop``, or park it in the ARP cache while resolving."""
        mac = self.arp.lookup(next_hop, now)
        if mac is None:
            self.arp.enqueue(next_hop, packet, now)
        else:
            self._frame_ipv4(mac, packet)

    def _frame_ipv4(self, mac: bytes, packet: bytes) -> None:
        self._outbox.append(b"".join((ethernet_header(mac, self.mac, ETHERTYPE_IPV4), packet)))

    def _send_segment(self, src_ip: str, dst_ip: str, segment: TcpSegment, now: float) -> None:
        counters = self._counters
        dst = _socket.inet_aton(dst_ip)
        route = self.routes.lookup(dst_ip)
        # Fast path: a known neighbour and a segment that fits: the headers of all layers in one piece, the
        # payload beside them, uncopied (``poll`` joins the two, ``poll_parts`` leaves that to the device).
        if route is not None and dst != self.address:
            next_hop = dst if route.gateway is None else _socket.inet_aton(route.gateway)
            mac = self.arp.lookup(next_hop, now)
            if mac is not None:
                headers = tcp_frame_headers(mac, self.mac, self.address, dst, segment,
                                            ident=self.ip_layer.next_ident(), checksum=self.tx_checksum)
                payload = segment.payload
                length = len(headers) + len(payload)
                frame: bytes | FrameParts = (headers, payload) if length > len(headers) else headers
                if length - ETHERNET_HEADER_LEN <= (route.mtu or self.mtu):
                    counters["IpOutRequests"] += 1
                    self._outbox.append(frame)
                    return
                gso_size = self._tso_segment_size(src_ip, dst_ip, segment)
                if gso_size is not None:
                    counters["IpOutRequests"] += 1
                    counters["IpOutTsoFrames"] += 1
                    self._gso_pending[id(frame)] = gso_size
                    self._outbox.append(frame)
                    return
        src = _socket.inet_aton(src_ip)
        tcp = build_tcp(segment, src, dst, self.tx_checksum)
        self.ip_layer.send(dst, PROTO_TCP, tcp, now, dont_fragment=True, dst_str=dst_ip)

    def _tso_segment_size(self, src_ip: str, dst_ip: str, segment: TcpSegment) -> int | None:
        """The MSS a TSO super-segment is to be cut into, or None when this segment is not one (TSO off,
        or no connection owns it: then it is too big for the path and IP refuses it as usual)."""
        if not self.tcp.config.tso_max_bytes:
            return None
        connection = self.tcp.connections.get((src_ip, segment.src_port, dst_ip, segment.dst_port))
        if connection is None:
            return None
        mss = connection.payload_limit()
        return mss if len(segment.payload) > mss else None

    def _is_local_address(self, address: str) -> bool:
        return address == self.ip

    def _is_broadcast_address(self, address: str) -> bool:
        """The interface's directed broadcast (RFC 1122 3.2.1.3 {<Network>, -1}): never a TCP peer.

        /31 (RFC 3021) and /32 interfaces have none: every address of theirs names one host."""
        network = self.interface.network
        return network.prefixlen <= 30 and address == self._broadcast_text

    def _negative_advice(self, remote_ip: str) -> None:
        """RFC 9293 3.8.3 R1: retransmissions to ``remote_ip`` went unanswered, so the path may be broken.

        Like Linux's dst_negative_advice: the next hop's ARP entry becomes STALE (its next use re-probes the
        neighbour) and a learned path MTU is forgotten (a new route may carry larger packets)."""
        self._counters["IpNegativeAdvice"] += 1
        route = self.routes.lookup(remote_ip)
        if route is None:
            return
        next_hop = remote_ip if route.gateway is None else route.gateway
        self.arp.mark_stale(_socket.inet_aton(next_hop), self._now)
        self.ip_layer.forget_path_mtu(remote_ip)

    def _tcp_route(self, remote_ip: str) -> tuple[str, int] | None:
        """The TCP layer's view of routing: (our address, path MTU) toward ``remote_ip``, or None."""
        try:
            if _socket.inet_aton(remote_ip) == self.address:
                return self.ip, self.mtu
        except OSError:
            return None
        mtu = self.ip_layer.path_mtu(remote_ip, self._now)
        return None if mtu is None else (self.ip, mtu)

    # -- IP input to TCP, and errors -------------------------------------------------------------------

    def _dotted(self, address: bytes) -> str:
        cache = self._address_cache
        text = cache.get(address)
        if text is None:
            if len(cache) > 4096:
                cache.clear()
            text = cache[address] = _socket.inet_ntoa(address)
        return text

    def _tcp_input(self, src: bytes, dst: bytes, data: BytesLike, now: float,
                   checksum_verified: bool) -> None:
        try:
            segment = parse_tcp(data, src, dst, verify_checksum=not checksum_verified)
        except MalformedPacket:
            self._counters["TcpInErrs"] += 1
            return
        self.tcp.segment_arrives(self._dotted(src), self._dotted(dst), segment, now)

    def _tcp_error(self, kind: str, code: int, quote: QuotedTcp, mtu: int | None, now: float) -> None:
        self.tcp.icmp_error(IcmpError(kind=kind, code=code, src_ip=self._dotted(quote.src),
                                      dst_ip=self._dotted(quote.dst), src_port=quote.src_port,
                                      dst_port=quote.dst_port, seq=quote.seq, mtu=mtu), now)

    def _unreachable_locally(self, packet: bytes, now: float) -> None:
        """ARP gave up on a packet's next hop: tell its TCP sender "host unreachable" (EHOSTUNREACH)."""
        self._counters["IpOutDiscards"] += 1
        if len(packet) < IPV4_HEADER_LEN + 8 or packet[9] != PROTO_TCP:
            return
        header_length = (packet[0] & 0x0F) * 4
        tcp = packet[header_length:header_length + 8]
        if len(tcp) < 8 or int.from_bytes(packet[6:8], "big") & 0x1FFF:
            return
        quote = QuotedTcp(packet[12:16], packet[16:20], int.from_bytes(tcp[0:2], "big"),
                          int.from_bytes(tcp[2:4], "big"), int.from_bytes(tcp[4:8], "big"))
        self._tcp_error("unreachable", 1, quote, None, now)  # code 1: host unreachable


class _Counters(dict):  # type: ignore[type-arg]
    """A dict of counters where a missing name reads as 0 (so hot paths just do ``c[name] += 1``)."""

    def __missing__(self, key: str) -> int:
        return 0
