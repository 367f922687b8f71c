"""IPv4 input and output for one host, with ICMP (sans-IO).

Input: header checks, local delivery only (a host does not forward), fragment reassembly, then TCP or
ICMP; any other protocol gets an ICMP protocol-unreachable (UDP: port-unreachable, as a host without UDP
sockets answers). ICMP: echo requests are answered, echo replies are kept for ``ping``, errors about our
own TCP segments go to the TCP layer.

Output: routing, fragmentation of our own packets only when DF is clear (TCP sets DF: path MTU discovery
like Linux), and a loopback path for packets to our own address. ICMP errors we originate obey RFC 1122
3.2.2 (never about an ICMP error, a broadcast or a later fragment) and a token bucket like Linux's
``icmp_msgs_per_sec``/``icmp_msgs_burst``.

Counters use nstat's names (IpInReceives, IpInHdrErrors, IcmpInEchos, ...).
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

from stack.net.reassembly import Reassembler
from stack.net.routing import RoutingTable
from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket
from stack.wire.icmp import (
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_PARAMETER_PROBLEM,
    ICMP_TIME_EXCEEDED,
    TIME_EXCEEDED_REASSEMBLY,
    UNREACH_FRAG_NEEDED,
    UNREACH_PORT,
    UNREACH_PROTOCOL,
    IcmpMessage,
    QuotedTcp,
    build_icmp,
    destination_unreachable,
    echo_reply_for,
    echo_request,
    may_send_error_about,
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

ICMP_KINDS = {ICMP_DEST_UNREACHABLE: "unreachable", ICMP_TIME_EXCEEDED: "time_exceeded",
              ICMP_PARAMETER_PROBLEM: "parameter_problem"}
PMTU_EXPIRES = 600.0  # Linux's net.ipv4.route.mtu_expires
ICMP_MSGS_PER_SEC = 1000  # Linux's net.ipv4.icmp_msgs_per_sec
ICMP_MSGS_BURST = 50  # Linux's net.ipv4.icmp_msgs_burst
LIMITED_BROADCAST = b"\xff\xff\xff\xff"

TransmitFn = Callable[[bytes, bytes, float], None]  # (next hop, IPv4 packet, now)
TcpInputFn = Callable[[bytes, bytes, BytesLike, float, bool], None]  # (src, dst, TCP bytes, now, verified)
TcpErrorFn = Callable[[str, int, QuotedTcp, "int | None", float], None]  # (kind, code, quote, mtu, now)


@dataclass(frozen=True, slots=True)
class EchoReply:
    """An ICMP echo reply we received: what ``ping`` prints."""

    src: str
    ident: int
    sequence: int
    size: int  # ICMP payload bytes
    ttl: int
    time: float  # when it arrived


class Ipv4Layer:
    def __init__(self, address: bytes, interface: ipaddress.IPv4Interface, routes: RoutingTable, mtu: int,
                 counters: dict[str, int], *, transmit: TransmitFn, tcp_input: TcpInputFn,
                 tcp_error: TcpErrorFn, rng: random.Random) -> None:
        self.address = address
        self.address_str = socket.inet_ntoa(address)
        self.broadcast = interface.network.broadcast_address.packed
        self.routes = routes
        self.mtu = mtu
        self.counters = counters
        self._transmit = transmit
        self._tcp_input = tcp_input
        self._tcp_error = tcp_error
        self.reassembler = Reassembler()
        self._ident = rng.randrange(1 << 16)  # Linux starts its IP ID counters at random
        self._loopback: list[bytes] = []
        self._pmtu: dict[str, tuple[int, float]] = {}  # destination -> (path MTU, expiry)
        self._icmp_tokens = float(ICMP_MSGS_BURST)
        self._icmp_tokens_at = 0.0
        self.echo_replies: list[EchoReply] = []

    # -- output --------------------------------------------------------------------------------------

    def path_mtu(self, destination: str, now: float | None = None) -> int | None:
        """The MTU toward ``destination`` (route/interface MTU lowered by learned PMTU), None if no route."""
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

    def forget_path_mtu(self, destination: str) -> bool:
        """Drop the path MTU learned toward ``destination`` (negative advice: the path may have changed);
        the route's MTU applies until a new "fragmentation needed" arrives. False when none was cached."""
        return self._pmtu.pop(destination, None) is not None

    def send(self, dst: bytes, protocol: int, payload: BytesLike, now: float, *, dont_fragment: bool,
             dst_str: str | None = None) -> bool:
        """Route, fragment if allowed and transmit one datagram; False when it could not be sent."""
        counters = self.counters
        counters["IpOutRequests"] += 1
        if dst_str is None:
            dst_str = socket.inet_ntoa(dst)
        if dst == self.address:
            packet = Ipv4Packet(self.address, dst, protocol, payload, ident=self.next_ident(),
                                dont_fragment=dont_fragment)
            self._loopback.append(build_ipv4(packet))
            return True
        route = self.routes.lookup(dst_str)
        if route is None:
            counters["IpOutNoRoutes"] += 1
            return False
        next_hop = dst if route.gateway is None else socket.inet_aton(route.gateway)
        mtu = route.mtu or self.mtu
        packet = Ipv4Packet(self.address, dst, protocol, payload, ident=self.next_ident(),
                            dont_fragment=dont_fragment)
        if HEADER_LEN + len(payload) <= mtu:
            self._transmit(next_hop, b"".join((ipv4_header(packet), payload)), now)
            return True
        if dont_fragment:
            # Our own DF packet is too big for the link: Linux fails it locally with EMSGSIZE and lowers
            # the path MTU; the TCP layer hears it as a fragmentation-needed error.
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
            self._transmit(next_hop, fragment, now)
        return True

    def send_echo_request(self, dst: str, ident: int, sequence: int, payload: bytes, now: float) -> bool:
        self.counters["IcmpOutMsgs"] += 1
        self.counters["IcmpOutEchos"] += 1
        message = build_icmp(echo_request(ident, sequence, payload))
        return self.send(socket.inet_aton(dst), PROTO_ICMP, message, now, dont_fragment=False, dst_str=dst)

    @property
    def has_loopback(self) -> bool:
        return bool(self._loopback)

    def take_loopback(self) -> list[bytes]:
        """Packets we sent to ourselves, to be fed back to ``receive`` by the host."""
        packets, self._loopback = self._loopback, []
        return packets

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

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
            if not broadcast:  # TCP never accepts broadcast (RFC 1122 4.2.3.10)
                self._tcp_input(packet.src, dst, packet.payload, now, checksum_verified)
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

    # -- ICMP errors we originate -----------------------------------------------------------------

    def _send_error(self, about: Ipv4Packet, make: Callable[[bytes], IcmpMessage], now: float) -> None:
        original = build_ipv4(about)  # the header as received, with the payload we quote from
        if not may_send_error_about(original) or about.src == self.broadcast:
            return
        if not self._icmp_rate_allows(now):
            self.counters["IcmpOutRateLimited"] += 1
            return
        message = make(original)
        self.counters["IcmpOutMsgs"] += 1
        is_unreachable = message.type == ICMP_DEST_UNREACHABLE
        self.counters["IcmpOutDestUnreachs" if is_unreachable else "IcmpOutTimeExcds"] += 1
        self.send(about.src, PROTO_ICMP, build_icmp(message), now, dont_fragment=False)

    def _icmp_rate_allows(self, now: float) -> bool:
        self._icmp_tokens = min(float(ICMP_MSGS_BURST),
                                self._icmp_tokens + (now - self._icmp_tokens_at) * ICMP_MSGS_PER_SEC)
        self._icmp_tokens_at = now
        if self._icmp_tokens < 1.0:
            return False
        self._icmp_tokens -= 1.0
        return True

    # -- timers ----------------------------------------------------------------------------------------

    def poll(self, now: float) -> None:
        """Expire incomplete datagrams; each that had its first fragment earns a Time Exceeded (code 1)."""
        if self.reassembler.next_deadline() is None:
            return
        timeouts_before = self.reassembler.stats.timeouts
        expired_first = self.reassembler.expire(now)
        timeouts = self.reassembler.stats.timeouts - timeouts_before
        self.counters["IpReasmTimeout"] += timeouts
        self.counters["IpReasmFails"] += timeouts
        for first in expired_first:
            self._send_error(first, lambda quoted: time_exceeded(TIME_EXCEEDED_REASSEMBLY, quoted), now)

    def next_deadline(self) -> float | None:
        return self.reassembler.next_deadline()
