"""IPv4 for one host, with ICMP (sans-IO): below it the Ethernet link, above it TCP.

Input (`receive`): header checks, local delivery only (a host does not forward), fragment reassembly, then
TCP or ICMP; any other protocol gets an ICMP protocol-unreachable (UDP: port-unreachable, as a host without
UDP sockets answers).  ICMP: echo requests are answered, echo replies are kept for ``ping``, errors about
our own TCP segments go to TCP.

Output: TCP sends through this layer.  `poll(now)` takes the TCP layer's segments and sends each
(`send_segment`): for a known neighbour, every header of the frame is built in one piece and the payload
rides beside it uncopied, TSO super-segments included (the device cuts them; `gso_size`); otherwise the
packet waits in the ARP cache.  Our own packets are fragmented only when DF is clear (TCP sets DF: path MTU
discovery like Linux); packets to our own address take the loopback path.  ICMP errors we originate obey
RFC 1122 3.2.2 and a rate limit (`stack.net.icmp`).

TCP asks this layer about routing: `tcp_route` (our address and the path MTU toward a peer),
`is_local_address`, `is_directed_broadcast` and `negative_advice` (RFC 9293 R1: re-check the path).

Counters use nstat's names (IpInReceives, IpInHdrErrors, IpOutRequests, IcmpInEchos, ...).
"""

from __future__ import annotations

import ipaddress
import random
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack.compat import SLOTS
from stack.deadlines import earliest
from stack.devices.contract import OutgoingFrame
from stack.net.icmp import IcmpErrorSource, MakeError
from stack.net.link import EthernetLink
from stack.net.reassembly import Reassembler
from stack.net.routing import RoutingTable
from stack.tcp.layer import IcmpError
from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket
from stack.wire.frames import tcp_frame_headers
from stack.wire.icmp import (
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_PARAMETER_PROBLEM,
    ICMP_TIME_EXCEEDED,
    TIME_EXCEEDED_REASSEMBLY,
    UNREACH_FRAG_NEEDED,
    UNREACH_HOST,
    UNREACH_PORT,
    UNREACH_PROTOCOL,
    IcmpMessage,
    QuotedTcp,
    build_icmp,
    destination_unreachable,
    echo_reply_for,
    echo_request,
    parse_icmp,
    parse_icmp_error_quote,
    time_exceeded,
)
from stack.wire.ipv4 import (
    HEADER_LEN,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    Ipv4Packet,
    build_ipv4,
    fragment_ipv4,
    ipv4_header,
    parse_ipv4,
)
from stack.wire.tcp import ChecksumMode, TcpSegment, build_tcp

if TYPE_CHECKING:
    from stack.tcp.layer import TcpLayer

ICMP_KINDS = {ICMP_DEST_UNREACHABLE: "unreachable", ICMP_TIME_EXCEEDED: "time_exceeded",
              ICMP_PARAMETER_PROBLEM: "parameter_problem"}
PMTU_EXPIRES = 600.0  # Linux's net.ipv4.route.mtu_expires
LIMITED_BROADCAST = b"\xff\xff\xff\xff"
ETHERNET_HEADER_LEN = 14
MAX_LOOPBACK_ROUNDS = 64  # packets a host sends itself (connect to its own address) settle in a few rounds


@dataclass(frozen=True, **SLOTS)
class EchoReply:
    """An ICMP echo reply we received: what ``ping`` prints."""

    src: str
    ident: int
    sequence: int
    size: int  # ICMP payload bytes
    ttl: int
    time: float  # when it arrived


class Ipv4Layer:
    """IPv4 and ICMP of one interface (`interface`, an address/prefix) over `link`."""

    def __init__(self, interface: ipaddress.IPv4Interface, routes: RoutingTable, mtu: int,
                 counters: dict[str, int], *, link: EthernetLink, rng: random.Random,
                 tx_checksum: ChecksumMode = "full") -> None:
        self.interface = interface
        self.address = interface.ip.packed
        self.address_str = str(interface.ip)
        self.broadcast = interface.network.broadcast_address.packed
        self._broadcast_str = str(interface.network.broadcast_address)
        self.routes = routes
        self.mtu = mtu
        self.counters = counters
        self.link = link
        self.tx_checksum: ChecksumMode = tx_checksum
        self.reassembler = Reassembler()
        self.icmp_errors = IcmpErrorSource(counters)
        self._tcp: TcpLayer | None = None
        self._ident = rng.randrange(1 << 16)  # Linux starts its IP ID counters at random
        self._loopback: list[bytes] = []
        self._pmtu: dict[str, tuple[int, float]] = {}  # destination -> (path MTU, expiry)
        self._pings: list[tuple[str, int, int, bytes]] = []
        self.pings_sent: dict[tuple[str, int, int], float] = {}  # (dst, ident, sequence) -> time sent
        self.echo_replies: list[EchoReply] = []

    def attach_tcp(self, tcp: TcpLayer) -> None:
        """Deliver TCP segments to `tcp` and send what it polls (the one transport this host has)."""
        self._tcp = tcp

    # -- what TCP asks of IP -----------------------------------------------------------------------

    def path_mtu(self, destination: str, now: float | None = None) -> int | None:
        """The MTU toward ``destination`` (route/interface MTU lowered by learned PMTU), None if no route.

        Given `now`, a learned path MTU that has expired is forgotten; without it the table is only read."""
        route = self.routes.lookup(destination)
        if route is None:
            return None
        mtu = route.mtu or self.mtu
        learned = self._pmtu.get(destination)
        if learned is not None:
            if now is not None and now >= learned[1]:
                del self._pmtu[destination]
            else:
                mtu = min(mtu, learned[0])
        return mtu

    def tcp_route(self, remote_ip: str, now: float) -> tuple[str, int] | None:
        """(our address, path MTU) toward ``remote_ip``, or None when there is no route."""
        try:
            if socket.inet_aton(remote_ip) == self.address:
                return self.address_str, self.mtu
        except OSError:
            return None
        mtu = self.path_mtu(remote_ip, now)
        return None if mtu is None else (self.address_str, mtu)

    def is_local_address(self, address: str) -> bool:
        return address == self.address_str

    def is_directed_broadcast(self, address: str) -> bool:
        """The interface's directed broadcast (RFC 1122 3.2.1.3 {<Network>, -1}): never a TCP peer.

        /31 (RFC 3021) and /32 interfaces have none: every address of theirs names one host."""
        return self.interface.network.prefixlen <= 30 and address == self._broadcast_str

    def negative_advice(self, remote_ip: str, now: float) -> None:
        """RFC 9293 3.8.3 R1: retransmissions to ``remote_ip`` went unanswered, so the path may be broken.

        Like Linux's dst_negative_advice: the next hop's ARP entry becomes STALE (its next use re-probes the
        neighbour) and a learned path MTU is forgotten (a new route may carry larger packets)."""
        self.counters["IpNegativeAdvice"] += 1
        route = self.routes.lookup(remote_ip)
        if route is None:
            return
        next_hop = remote_ip if route.gateway is None else route.gateway
        self.link.arp.mark_stale(socket.inet_aton(next_hop), now)
        self._pmtu.pop(remote_ip, None)

    # -- output --------------------------------------------------------------------------------------

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def send(self, dst: bytes, protocol: int, payload: BytesLike, now: float, *, dont_fragment: bool,
             dst_str: str | None = None) -> bool:
        """Route, fragment if allowed and transmit one datagram; False when it could not be sent."""
        counters = self.counters
        counters["IpOutRequests"] += 1
        if dst_str is None:
            dst_str = socket.inet_ntoa(dst)
        packet = Ipv4Packet(self.address, dst, protocol, payload, ident=self.next_ident(),
                            dont_fragment=dont_fragment)
        if dst == self.address:
            self._loopback.append(build_ipv4(packet))
            return True
        route = self.routes.lookup(dst_str)
        if route is None:
            counters["IpOutNoRoutes"] += 1
            return False
        next_hop = dst if route.gateway is None else socket.inet_aton(route.gateway)
        mtu = route.mtu or self.mtu
        if HEADER_LEN + len(payload) <= mtu:
            self.link.send_ipv4(next_hop, b"".join((ipv4_header(packet), payload)), now)
            return True
        if dont_fragment:
            # Our own DF packet is too big for the link: Linux fails it locally with EMSGSIZE and lowers
            # the path MTU; TCP hears it as a fragmentation-needed error.
            counters["IpFragFails"] += 1
            if protocol == PROTO_TCP and len(payload) >= 8:
                quote = QuotedTcp(self.address, dst, int.from_bytes(payload[0:2], "big"),
                                  int.from_bytes(payload[2:4], "big"), int.from_bytes(payload[4:8], "big"))
                self._tcp_error("frag_needed", UNREACH_FRAG_NEEDED, quote, mtu, now)
            return False
        fragments = fragment_ipv4(packet, mtu)
        counters["IpFragOKs"] += 1
        counters["IpFragCreates"] += len(fragments)
        for fragment in fragments:
            self.link.send_ipv4(next_hop, fragment, now)
        return True

    def send_segment(self, src_ip: str, dst_ip: str, segment: TcpSegment, now: float) -> None:
        """Send one TCP segment (DF set).

        Fast path: a known neighbour and a segment that fits, or a TSO super-segment (`gso_size`): the
        headers of all layers in one piece, the payload beside them, uncopied.  Otherwise the segment goes
        the generic way: waiting for ARP, or refused as too big (the path MTU shrank).
        """
        dst = socket.inet_aton(dst_ip)
        route = self.routes.lookup(dst_ip)
        if route is not None and dst != self.address:
            next_hop = dst if route.gateway is None else socket.inet_aton(route.gateway)
            link = self.link
            mac = link.resolve(next_hop, now)
            if mac is not None:
                payload = segment.payload
                headers = tcp_frame_headers(mac, link.mac, self.address, dst, segment,
                                            ident=self.next_ident(), checksum=self.tx_checksum)
                fits = len(headers) - ETHERNET_HEADER_LEN + len(payload) <= (route.mtu or self.mtu)
                if fits or segment.gso_size:
                    counters = self.counters
                    counters["IpOutRequests"] += 1
                    if not fits:
                        counters["IpOutTsoFrames"] += 1
                    link.transmit(OutgoingFrame(headers, payload, gso_size=0 if fits else segment.gso_size,
                                                partial_checksum=self.tx_checksum == "partial"))
                    return
        # The generic way carries complete checksums: the packet may wait for ARP, loop back to us or be
        # refused, and a frame framed from a parked packet does not say that a device must finish it.
        tcp = build_tcp(segment, socket.inet_aton(src_ip), dst)
        self.send(dst, PROTO_TCP, tcp, now, dont_fragment=True, dst_str=dst_ip)

    def queue_echo_request(self, dst: str, ident: int, sequence: int, payload: bytes) -> None:
        """An ICMP echo request that leaves at the next ``poll`` (replies: ``echo_replies``)."""
        socket.inet_aton(dst)  # a clear OSError now rather than a failure inside poll
        self._pings.append((dst, ident & 0xFFFF, sequence & 0xFFFF, payload))

    def _send_echo_request(self, dst: str, ident: int, sequence: int, payload: bytes, now: float) -> None:
        self.counters["IcmpOutMsgs"] += 1
        self.counters["IcmpOutEchos"] += 1
        message = build_icmp(echo_request(ident, sequence, payload))
        if self.send(socket.inet_aton(dst), PROTO_ICMP, message, now, dont_fragment=False, dst_str=dst):
            self.pings_sent[(dst, ident, sequence)] = now

    # -- input ---------------------------------------------------------------------------------------

    def receive(self, data: BytesLike, now: float, checksum_verified: bool = False) -> None:
        """One IPv4 packet from the link; ``checksum_verified``: the device vouched for the TCP checksum."""
        counters = self.counters
        counters["IpInReceives"] += 1
        try:
            packet = parse_ipv4(data)
        except MalformedPacket:
            counters["IpInHdrErrors"] += 1
            return
        dst = packet.dst
        broadcast = dst == LIMITED_BROADCAST or dst == self.broadcast
        if dst != self.address and not broadcast:
            counters["IpInAddrErrors"] += 1  # not ours, and a host does not forward
            return
        if packet.is_fragment:
            counters["IpReasmReqds"] += 1
            failures_before = self._reassembly_failures()
            whole = self.reassembler.add(packet, now)
            counters["IpReasmFails"] += self._reassembly_failures() - failures_before
            if whole is None:
                return
            counters["IpReasmOKs"] += 1
            packet = whole
            checksum_verified = False  # the device vouched for one fragment, not for the datagram
        protocol = packet.protocol
        if protocol == PROTO_TCP:
            counters["IpInDelivers"] += 1
            if not broadcast and self._tcp is not None:  # TCP never accepts broadcast (RFC 1122 4.2.3.10)
                self._tcp.receive(packet.src, dst, packet.payload, now, checksum_verified=checksum_verified)
        elif protocol == PROTO_ICMP:
            counters["IpInDelivers"] += 1
            self._icmp_input(packet, broadcast, now)
        else:
            if protocol == PROTO_UDP:
                counters["UdpNoPorts"] += 1
            else:
                counters["IpInUnknownProtos"] += 1
            if not broadcast:
                code = UNREACH_PORT if protocol == PROTO_UDP else UNREACH_PROTOCOL
                self._send_error(packet, lambda quoted: destination_unreachable(code, quoted), now)

    def _reassembly_failures(self) -> int:
        stats = self.reassembler.stats
        return stats.overlaps + stats.inconsistent + stats.too_big + stats.limit_drops

    def _icmp_input(self, packet: Ipv4Packet, broadcast: bool, now: float) -> None:
        counters = self.counters
        try:
            message = parse_icmp(packet.payload)
        except MalformedPacket:
            counters["IcmpInErrors"] += 1
            counters["IcmpInCsumErrors"] += 1
            return
        counters["IcmpInMsgs"] += 1
        kind = message.type
        if kind == ICMP_ECHO_REQUEST:
            counters["IcmpInEchos"] += 1
            if broadcast:
                return  # net.ipv4.icmp_echo_ignore_broadcasts = 1
            counters["IcmpOutMsgs"] += 1
            counters["IcmpOutEchoReps"] += 1
            # The reply may be as large as the request was: allow fragmentation (DF clear) like Linux.
            self.send(packet.src, PROTO_ICMP, build_icmp(echo_reply_for(message)), now, dont_fragment=False)
        elif kind == ICMP_ECHO_REPLY:
            counters["IcmpInEchoReps"] += 1
            self.echo_replies.append(EchoReply(socket.inet_ntoa(packet.src), message.echo_id,
                                               message.echo_sequence, len(message.payload), packet.ttl, now))
        elif kind in ICMP_KINDS:
            counters["IcmpInDestUnreachs" if kind == ICMP_DEST_UNREACHABLE else
                     "IcmpInTimeExcds" if kind == ICMP_TIME_EXCEEDED else "IcmpInParmProbs"] += 1
            self._icmp_error_input(message, now)
        # Source quench (RFC 6633), redirects (a host with one router needs none) and the rest: ignored.

    def _icmp_error_input(self, message: IcmpMessage, now: float) -> None:
        try:
            quote = parse_icmp_error_quote(message.payload)
        except MalformedPacket:
            self.counters["IcmpInErrors"] += 1
            return
        if quote is None or quote.src != self.address:
            return  # not about a TCP segment we sent
        mtu = message.next_hop_mtu
        if mtu is not None:
            destination = socket.inet_ntoa(quote.dst)
            if mtu >= 68:
                self._pmtu[destination] = (mtu, now + PMTU_EXPIRES)
            self._tcp_error("frag_needed", message.code, quote, mtu, now)
            return
        self._tcp_error(ICMP_KINDS[message.type], message.code, quote, None, now)

    def _tcp_error(self, kind: str, code: int, quote: QuotedTcp, mtu: int | None, now: float) -> None:
        if self._tcp is None:
            return
        self._tcp.icmp_error(IcmpError(kind=kind, code=code, src_ip=socket.inet_ntoa(quote.src),
                                       dst_ip=socket.inet_ntoa(quote.dst), src_port=quote.src_port,
                                       dst_port=quote.dst_port, seq=quote.seq, mtu=mtu), now)

    def next_hop_failed(self, packet: bytes, now: float) -> None:
        """ARP gave up on a packet's next hop: tell its TCP sender "host unreachable" (EHOSTUNREACH)."""
        self.counters["IpOutDiscards"] += 1
        if len(packet) < HEADER_LEN + 8 or packet[9] != PROTO_TCP:
            return
        header_length = (packet[0] & 0x0F) * 4
        tcp = packet[header_length:header_length + 8]
        if len(tcp) < 8 or int.from_bytes(packet[6:8], "big") & 0x1FFF:
            return
        quote = QuotedTcp(packet[12:16], packet[16:20], int.from_bytes(tcp[0:2], "big"),
                          int.from_bytes(tcp[2:4], "big"), int.from_bytes(tcp[4:8], "big"))
        self._tcp_error("unreachable", UNREACH_HOST, quote, None, now)

    def _send_error(self, about: Ipv4Packet, make: MakeError, now: float) -> None:
        if about.src == self.broadcast:
            return
        message = self.icmp_errors.build(about, make, now)
        if message is not None:
            self.send(about.src, PROTO_ICMP, message, now, dont_fragment=False)

    # -- timers ----------------------------------------------------------------------------------------

    def poll(self, now: float) -> None:
        """Expire incomplete datagrams, send queued pings, then what TCP has to send (and what we sent
        ourselves, looped back, until that settles)."""
        if self.reassembler.next_deadline() is not None:
            timeouts_before = self.reassembler.stats.timeouts
            expired_first = self.reassembler.expire(now)
            timeouts = self.reassembler.stats.timeouts - timeouts_before
            self.counters["IpReasmTimeout"] += timeouts
            self.counters["IpReasmFails"] += timeouts
            for first in expired_first:  # each that had its first fragment earns a Time Exceeded (code 1)
                self._send_error(first, lambda quoted: time_exceeded(TIME_EXCEEDED_REASSEMBLY, quoted), now)
        if self._pings:
            for dst, ident, sequence, payload in self._pings:
                self._send_echo_request(dst, ident, sequence, payload, now)
            self._pings.clear()
        tcp = self._tcp
        for _ in range(MAX_LOOPBACK_ROUNDS):
            if tcp is not None:
                for src_ip, dst_ip, segment in tcp.poll(now):
                    self.send_segment(src_ip, dst_ip, segment, now)
            if not self._loopback:
                break
            looped, self._loopback = self._loopback, []
            for packet in looped:
                self.counters["LoopbackPackets"] += 1
                self.receive(packet, now)

    @property
    def has_work(self) -> bool:
        """Packets to loop back or pings to send: the next `poll` must come at once."""
        return bool(self._loopback or self._pings)

    def next_deadline(self) -> float | None:
        tcp = self._tcp.next_deadline() if self._tcp is not None else None
        return earliest(self.reassembler.next_deadline(), tcp)
