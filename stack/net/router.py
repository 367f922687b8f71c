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
from collections.abc import Sequence
from dataclasses import dataclass, replace

from stack.compat import SLOTS
from stack.deadlines import AT_ONCE
from stack.devices.contract import OutgoingFrame
from stack.net.arp import ArpCache, ArpTimings
from stack.net.counters import Counters
from stack.net.icmp import IcmpErrorSource, MakeError
from stack.net.link import EthernetLink
from stack.net.routing import Route, RoutingTable
from stack.wire.buffer import BytesLike
from stack.wire.errors import MalformedPacket
from stack.wire.ethernet import mac_from_str
from stack.wire.icmp import (
    ICMP_ECHO_REQUEST,
    TIME_EXCEEDED_TTL,
    UNREACH_FRAG_NEEDED,
    UNREACH_HOST,
    UNREACH_NET,
    build_icmp,
    destination_unreachable,
    echo_reply_for,
    parse_icmp,
    time_exceeded,
)
from stack.wire.ipv4 import PROTO_ICMP, Ipv4Packet, build_ipv4, fragment_ipv4, parse_ipv4


@dataclass(frozen=True, **SLOTS)
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
        self.link = EthernetLink(self.mac, self.address, ArpCache(arp, rng=rng), router.counters)

    def __repr__(self) -> str:
        return f"RouterPort({self.index}, {self.interface})"

    def receive_frame(self, frame: BytesLike, now: float, checksum_verified: bool = False) -> None:
        payload = self.link.receive(frame, now)
        if payload is not None:
            self.router.ipv4_input(self, payload, now)

    def poll(self, now: float) -> list[OutgoingFrame]:
        for packet in self.link.poll(now):  # RFC 1812 4.3.3.1: the next hop did not answer
            self.router.next_hop_unreachable(packet, now)
        return self.link.take_frames()

    def next_deadline(self) -> float | None:
        return AT_ONCE if self.link.has_frames else self.link.next_deadline()

    def transmit(self, next_hop: bytes, packet: bytes, now: float) -> None:
        self.link.send_ipv4(next_hop, packet, now)


class Router:
    """An IPv4 router: ``ports`` are (ip/prefix, mac[, mtu]); ``routes``: (destination, gateway) pairs."""

    def __init__(self, ports: Sequence[tuple[str, str] | tuple[str, str, int]], *,
                 routes: Sequence[tuple[str, str]] = (), seed: int = 0, name: str = "router") -> None:
        if len(ports) < 2:
            raise ValueError(f"router {name}: needs at least two ports, got {len(ports)}")
        self.name = name
        self.rng = random.Random(seed)
        self.counters: dict[str, int] = Counters.fromkeys(
            ("IpInReceives", "IpInHdrErrors", "IpForwDatagrams", "IpInAddrErrors", "IpOutNoRoutes",
             "IpFragOKs", "IpFragFails", "IpFragCreates", "IcmpOutTimeExcds", "IcmpOutDestUnreachs",
             "IcmpOutEchoReps", "IcmpOutRateLimited", "EthInErrors", "ArpInErrors"), 0)
        self.icmp_errors = IcmpErrorSource(self.counters)
        timings = ArpTimings()
        self.ports = [RouterPort(self, index, PortConfig(*spec), self.rng, timings)
                      for index, spec in enumerate(ports)]
        self.routes = RoutingTable()
        for port in self.ports:
            self.routes.add(str(port.interface.network))
        for destination, gateway in routes:
            self.routes.add(destination, gateway)
        self._addresses = {port.address: port for port in self.ports}
        self._ident = self.rng.randrange(1 << 16)

    def __repr__(self) -> str:
        return f"Router({self.name}, {[str(p.interface) for p in self.ports]})"

    # -- input ---------------------------------------------------------------------------------------

    def ipv4_input(self, port: RouterPort, data: BytesLike, now: float) -> None:
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

    def _error(self, about: Ipv4Packet, port: RouterPort, make: MakeError, now: float) -> None:
        message = self.icmp_errors.build(about, make, now)
        if message is not None:
            self._originate(port.address, about.src, message, now)

    def _originate(self, src: bytes, dst: bytes, payload: bytes, now: float) -> None:
        found = self._route(socket.inet_ntoa(dst))
        if found is None:
            return
        out_port, next_hop = found
        self._ident = (self._ident + 1) & 0xFFFF
        packet = Ipv4Packet(src, dst, PROTO_ICMP, payload, ident=self._ident, dont_fragment=False)
        for fragment in fragment_ipv4(packet, out_port.mtu):
            out_port.transmit(next_hop, fragment, now)
