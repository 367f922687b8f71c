"""A small IPv4 router with several Ethernet ports, sans-IO, for simulated topologies.

Hosts are end systems; to test what happens *between* them (a gateway, a smaller MTU in the middle of a
path, a TTL running out) a simulation needs a router. This one does what RFC 1812 asks of the forwarding
path and nothing more: TTL decrement and Time Exceeded, Destination Unreachable when there is no route or
the next hop does not answer ARP, Fragmentation Needed (with the next-hop MTU, RFC 1191) for DF packets
too big for the outgoing link, fragmentation of the others, echo replies for its own addresses. ICMP
errors are rate limited and never sent about ICMP errors, broadcasts or later fragments (RFC 1812 4.3.2.7).

Each port is a ``FrameNode`` to plug into a ``MemoryWire``: ``router.ports[i]``.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from stack.net.arp import ArpCache, ArpTimings
from stack.net.routing import Route, RoutingTable
from stack.wire.arp import ARP_REPLY, ARP_REQUEST, arp_reply_for, arp_request, build_arp, parse_arp
from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket
from stack.wire.ethernet import (
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ethernet_header,
    mac_from_str,
    parse_ethernet,
)
from stack.wire.icmp import (
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REQUEST,
    TIME_EXCEEDED_TTL,
    UNREACH_FRAG_NEEDED,
    UNREACH_HOST,
    UNREACH_NET,
    IcmpMessage,
    build_icmp,
    destination_unreachable,
    echo_reply_for,
    may_send_error_about,
    parse_icmp,
    time_exceeded,
)
from stack.wire.ipv4 import PROTO_ICMP, Ipv4Packet, build_ipv4, fragment_ipv4, parse_ipv4

ICMP_MSGS_PER_SEC = 1000  # Linux's net.ipv4.icmp_msgs_per_sec
ICMP_MSGS_BURST = 50  # Linux's net.ipv4.icmp_msgs_burst


@dataclass(frozen=True, slots=True)
class PortConfig:
    ip: str  # "address/prefix"
    mac: str
    mtu: int = 1500


class RouterPort:
    """One Ethernet port of a Router: a FrameNode for a wire."""

    def __init__(self, router: Router, index: int, config: PortConfig, rng: random.Random,
                 arp: ArpTimings) -> None:
        try:
            self.interface = ipaddress.IPv4Interface(config.ip)
        except ValueError as exc:
            raise ValueError(f"router port {index}: ip {config.ip!r}: {exc}") from None
        if not 68 <= config.mtu <= 65535:
            raise ValueError(f"router port {index}: mtu {config.mtu} is outside 68..65535")
        self.router = router
        self.index = index
        self.mac = mac_from_str(config.mac)
        self.mtu = config.mtu
        self.address = self.interface.ip.packed
        self.arp = ArpCache(arp, rng=rng)
        self.outbox: list[bytes] = []
        self.announce = True
        self.now = 0.0

    def __repr__(self) -> str:
        return f"RouterPort({self.index}, {self.interface})"

    def receive_frame(self, frame: BytesLike, now: float) -> None:
        self.now = now
        self.router.frame_input(self, frame, now)

    def poll(self, now: float) -> list[bytes]:
        self.now = now
        if self.announce:
            self.announce = False
            self.send_arp(arp_request(self.mac, self.address, self.address), BROADCAST_MAC)
        requests, failures = self.arp.poll(now)
        for request in requests:
            self.send_arp(arp_request(self.mac, self.address, request.target_ip),
                          request.dst_mac or BROADCAST_MAC)
        for failure in failures:
            for packet in failure.packets:  # RFC 1812 4.3.3.1: the next hop did not answer
                self.router.next_hop_unreachable(packet, now)
        frames, self.outbox = self.outbox, []
        return frames

    def next_deadline(self) -> float | None:
        if self.outbox or self.announce:
            return self.now
        return self.arp.next_deadline()

    def send_arp(self, packet: object, dst_mac: bytes) -> None:
        self.outbox.append(b"".join((ethernet_header(dst_mac, self.mac, ETHERTYPE_ARP),
                                     build_arp(packet), bytes(18))))  # type: ignore[arg-type]

    def transmit(self, next_hop: bytes, packet: bytes, now: float) -> None:
        mac = self.arp.lookup(next_hop, now)
        if mac is None:
            self.arp.enqueue(next_hop, packet, now)
        else:
            self.outbox.append(b"".join((ethernet_header(mac, self.mac, ETHERTYPE_IPV4), packet)))


class Router:
    """An IPv4 router: ``ports`` are (ip/prefix, mac[, mtu]); ``routes``: (destination, gateway) pairs."""

    def __init__(self, ports: Sequence[tuple[str, str] | tuple[str, str, int]], *,
                 routes: Sequence[tuple[str, str]] = (), seed: int = 0, name: str = "router") -> None:
        if len(ports) < 2:
            raise ValueError(f"router {name}: needs at least two ports, got {len(ports)}")
        self.name = name
        self.rng = random.Random(seed)
        timings = ArpTimings()
        self.ports = [RouterPort(self, index, PortConfig(*spec), self.rng, timings)
                      for index, spec in enumerate(ports)]
        self.routes = RoutingTable()
        for port in self.ports:
            self.routes.add(str(port.interface.network))
        for destination, gateway in routes:
            self.routes.add(destination, gateway)
        self.counters: dict[str, int] = dict.fromkeys(
            ("IpInReceives", "IpInHdrErrors", "IpForwDatagrams", "IpInAddrErrors", "IpOutNoRoutes",
             "IpFragOKs", "IpFragFails", "IpFragCreates", "IcmpOutTimeExcds", "IcmpOutDestUnreachs",
             "IcmpOutEchoReps", "IcmpOutRateLimited", "EthInErrors", "ArpInErrors"), 0)
        self._addresses = {port.address: port for port in self.ports}
        self._tokens = float(ICMP_MSGS_BURST)
        self._tokens_at = 0.0
        self._ident = self.rng.randrange(1 << 16)

    def __repr__(self) -> str:
        return f"Router({self.name}, {[str(p.interface) for p in self.ports]})"

    # -- input ---------------------------------------------------------------------------------------

    def frame_input(self, port: RouterPort, frame: BytesLike, now: float) -> None:
        try:
            parsed = parse_ethernet(frame)
        except MalformedPacket:
            self.counters["EthInErrors"] += 1
            return
        if (parsed.dst != port.mac and parsed.dst != BROADCAST_MAC) or parsed.vlan_ids:
            return
        if parsed.ethertype == ETHERTYPE_ARP:
            self._arp_input(port, parsed.payload, now)
        elif parsed.ethertype == ETHERTYPE_IPV4:
            self._ipv4_input(port, parsed.payload, now)

    def _arp_input(self, port: RouterPort, payload: BytesLike, now: float) -> None:
        try:
            packet = parse_arp(payload)
        except MalformedPacket:
            self.counters["ArpInErrors"] += 1
            return
        if packet.sender_ip == port.address:
            return
        to_us = packet.target_ip == port.address
        if packet.sender_ip != b"\x00\x00\x00\x00":
            for waiting in port.arp.learn(packet.sender_ip, packet.sender_mac, now,
                                          is_reply=packet.op == ARP_REPLY, to_us=to_us):
                port.transmit(packet.sender_ip, waiting, now)
        if packet.op == ARP_REQUEST and to_us:
            port.send_arp(arp_reply_for(packet, port.mac), packet.sender_mac)

    def _ipv4_input(self, port: RouterPort, data: BytesLike, now: float) -> None:
        self.counters["IpInReceives"] += 1
        try:
            packet = parse_ipv4(data)
        except MalformedPacket:
            self.counters["IpInHdrErrors"] += 1
            return
        if packet.dst in self._addresses:
            self._local_input(packet, now)
        elif packet.dst in (b"\xff\xff\xff\xff", port.interface.network.broadcast_address.packed):
            self.counters["IpInAddrErrors"] += 1  # broadcasts are not forwarded (RFC 1812 5.3.5)
        else:
            self._forward(packet, port, now)

    def _local_input(self, packet: Ipv4Packet, now: float) -> None:
        if packet.protocol != PROTO_ICMP or packet.is_fragment:
            return
        try:
            message = parse_icmp(packet.payload)
        except MalformedPacket:
            return
        if message.type == ICMP_ECHO_REQUEST:
            self.counters["IcmpOutEchoReps"] += 1
            self._originate(packet.dst, packet.src, build_icmp(echo_reply_for(message)), now)

    # -- forwarding ----------------------------------------------------------------------------------

    def _forward(self, packet: Ipv4Packet, in_port: RouterPort, now: float) -> None:
        if packet.ttl <= 1:
            self._error(packet, in_port, lambda quoted: time_exceeded(TIME_EXCEEDED_TTL, quoted), now)
            return
        found = self._route(socket.inet_ntoa(packet.dst))
        if found is None:
            self.counters["IpOutNoRoutes"] += 1
            self._error(packet, in_port, lambda quoted: destination_unreachable(UNREACH_NET, quoted), now)
            return
        out_port, next_hop = found
        forwarded = replace(packet, ttl=packet.ttl - 1)
        size = forwarded.header_length + len(forwarded.payload)
        if size <= out_port.mtu:
            self.counters["IpForwDatagrams"] += 1
            out_port.transmit(next_hop, build_ipv4(forwarded), now)
            return
        if packet.dont_fragment:
            self.counters["IpFragFails"] += 1
            mtu = out_port.mtu
            self._error(packet, in_port,
                        lambda quoted: destination_unreachable(UNREACH_FRAG_NEEDED, quoted, mtu=mtu), now)
            return
        fragments = fragment_ipv4(forwarded, out_port.mtu)
        self.counters["IpForwDatagrams"] += 1
        self.counters["IpFragOKs"] += 1
        self.counters["IpFragCreates"] += len(fragments)
        for fragment in fragments:
            out_port.transmit(next_hop, fragment, now)

    def _route(self, destination: str) -> tuple[RouterPort, bytes] | None:
        route: Route | None = self.routes.lookup(destination)
        if route is None:
            return None
        hop = route.gateway or destination
        hop_address = ipaddress.IPv4Address(hop)
        port = next((p for p in self.ports if hop_address in p.interface.network), None)
        return None if port is None else (port, hop_address.packed)

    def next_hop_unreachable(self, packet_bytes: bytes, now: float) -> None:
        try:
            packet = parse_ipv4(packet_bytes, verify_checksum=False)
        except MalformedPacket:
            return
        back = self._route(socket.inet_ntoa(packet.src))
        if back is not None:
            self._error(packet, back[0], lambda quoted: destination_unreachable(UNREACH_HOST, quoted), now)

    # -- ICMP we originate ---------------------------------------------------------------------------

    def _error(self, about: Ipv4Packet, port: RouterPort, make: Callable[[bytes], IcmpMessage],
               now: float) -> None:
        original = build_ipv4(about)
        if not may_send_error_about(original) or not self._rate_allows(now):
            return
        message = make(original)
        unreachable = message.type == ICMP_DEST_UNREACHABLE
        self.counters["IcmpOutDestUnreachs" if unreachable else "IcmpOutTimeExcds"] += 1
        self._originate(port.address, about.src, build_icmp(message), now)

    def _originate(self, src: bytes, dst: bytes, payload: bytes, now: float) -> None:
        found = self._route(socket.inet_ntoa(dst))
        if found is None:
            return
        out_port, next_hop = found
        self._ident = (self._ident + 1) & 0xFFFF
        packet = Ipv4Packet(src, dst, PROTO_ICMP, payload, ident=self._ident, dont_fragment=False)
        for fragment in fragment_ipv4(packet, out_port.mtu):
            out_port.transmit(next_hop, fragment, now)

    def _rate_allows(self, now: float) -> bool:
        self._tokens = min(float(ICMP_MSGS_BURST), self._tokens + (now - self._tokens_at) * ICMP_MSGS_PER_SEC)
        self._tokens_at = now
        if self._tokens < 1.0:
            self.counters["IcmpOutRateLimited"] += 1
            return False
        self._tokens -= 1.0
        return True
