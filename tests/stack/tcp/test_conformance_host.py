"""RFC 9293 requirements that live between IP and TCP, checked with whole frames through a `Host`:
checksums sent and verified (MUST-2, MUST-3), IP options ignored (MUST-50), segments to broadcast or
multicast addresses and SYNs from them discarded (MUST-57, MUST-63), source quench ignored (MUST-55).
The test plays a peer at 10.0.0.9 beside a Host at 10.0.0.2/24, on a virtual clock."""

from __future__ import annotations

import errno
import socket

from stack.devices.contract import OutgoingFrame
from stack.host import Host
from stack.tcp import TcpSocket
from stack.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, build_arp
from stack.wire.ethernet import (
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    EthernetFrame,
    build_ethernet,
    parse_ethernet,
)
from stack.wire.icmp import ICMP_SOURCE_QUENCH, IcmpMessage, build_icmp
from stack.wire.ipv4 import PROTO_ICMP, PROTO_TCP, Ipv4Packet, build_ipv4, parse_ipv4
from stack.wire.tcp import TcpFlags, TcpOptions, TcpSegment, build_tcp, parse_tcp

HOST_IP, HOST_MAC = "10.0.0.2", "02:00:00:00:00:02"
PEER_IP, PEER_MAC = "10.0.0.9", bytes.fromhex("0200000000aa")
SYN = TcpSegment(40000, 80, 5000, 0, TcpFlags.SYN, 64000, TcpOptions(mss=1460))


def a(text: str) -> bytes:
    return socket.inet_aton(text)


def host_with_listener() -> tuple[Host, TcpSocket]:
    """A Host that already knows the peer's MAC (from the peer's ARP request) and listens on port 80."""
    host = Host(f"{HOST_IP}/24", HOST_MAC, gateway="10.0.0.1", seed=5, gratuitous_arp=False)
    request = ArpPacket(ARP_REQUEST, PEER_MAC, a(PEER_IP), bytes(6), a(HOST_IP))
    arp = build_ethernet(EthernetFrame(BROADCAST_MAC, PEER_MAC, ETHERTYPE_ARP, build_arp(request)))
    host.receive_frame(arp, 0.0)
    host.poll(0.0)  # the ARP reply
    listener = host.tcp.socket()
    listener.bind(("0.0.0.0", 80))
    listener.listen(8)
    return host, listener


def tcp_frame(segment: TcpSegment, *, src: str = PEER_IP, dst: str = HOST_IP, dst_mac: bytes | None = None,
              ip_options: bytes = b"", corrupt: bool = False) -> bytes:
    raw = bytearray(build_tcp(segment, a(src), a(dst)))
    if corrupt:
        raw[16] ^= 0x01  # one bit of the checksum field
    packet = Ipv4Packet(a(src), a(dst), PROTO_TCP, bytes(raw), options=ip_options)
    mac = dst_mac if dst_mac is not None else bytes.fromhex(HOST_MAC.replace(":", ""))
    return build_ethernet(EthernetFrame(mac, PEER_MAC, ETHERTYPE_IPV4, build_ipv4(packet)))


def tcp_replies(frames: list[OutgoingFrame]) -> list[tuple[Ipv4Packet, TcpSegment]]:
    """Parse every TCP frame the host sent, verifying both checksums (MUST-2)."""
    found = []
    for frame in frames:
        ethernet = parse_ethernet(frame.joined())
        assert ethernet.ethertype == ETHERTYPE_IPV4, "only IPv4 expected once the peer's MAC is known"
        packet = parse_ipv4(ethernet.payload)  # verifies the header checksum
        assert packet.protocol == PROTO_TCP
        found.append((packet, parse_tcp(packet.payload, packet.src, packet.dst, verify_checksum=True)))
    return found


def test_syn_ack_carries_a_correct_checksum_and_a_bad_checksum_is_dropped() -> None:
    """MUST-2 and MUST-3: a segment with a wrong checksum is counted and dropped; the good one is answered
    with a SYN-ACK whose checksum verifies."""
    host, _ = host_with_listener()
    host.receive_frame(tcp_frame(SYN, corrupt=True), 0.1)
    assert host.poll(0.1) == []
    assert host.counters()["TcpInErrs"] == 1
    assert host.tables().listening[0].syn_queue == 0
    host.receive_frame(tcp_frame(SYN), 0.2)
    ((packet, synack),) = tcp_replies(host.poll(0.2))
    assert synack.flags == TcpFlags.SYN | TcpFlags.ACK and synack.ack == 5001
    assert packet.dst == a(PEER_IP)


def test_ip_options_tcp_does_not_understand_are_ignored() -> None:
    """MUST-50: a SYN carrying IP options (record route, router alert, an unknown one) is handled as if it
    had none; the reply carries no options (we send none: MUST-51..53 do not arise)."""
    host, _ = host_with_listener()
    options = (bytes((1,))  # NOP
               + bytes((7, 7, 4, 0, 0, 0, 0))  # record route, empty
               + bytes((0x94, 4, 0, 0))  # router alert
               + bytes((0x9E, 4, 0xAB, 0xCD)))  # a copied option nobody defined
    host.receive_frame(tcp_frame(SYN, ip_options=options), 0.1)
    ((packet, synack),) = tcp_replies(host.poll(0.1))
    assert synack.flags == TcpFlags.SYN | TcpFlags.ACK and synack.ack == 5001
    assert packet.options == b""


def test_syn_to_a_broadcast_or_multicast_address_is_discarded_silently() -> None:
    """MUST-57: a SYN (or any segment) sent to the subnet broadcast, the limited broadcast or a multicast
    group gets no SYN-ACK, no RST and no SYN queue entry."""
    host, _ = host_with_listener()
    for dst in ("10.0.0.255", "255.255.255.255", "224.0.0.1"):
        host.receive_frame(tcp_frame(SYN, dst=dst, dst_mac=BROADCAST_MAC), 0.1)
        host.receive_frame(tcp_frame(TcpSegment(40000, 81, 1, 1, TcpFlags.ACK, 100), dst=dst,
                                     dst_mac=BROADCAST_MAC), 0.1)
        assert host.poll(0.1) == [], dst
    assert host.tables().listening[0].syn_queue == 0


def test_syn_from_a_multicast_or_broadcast_source_is_ignored() -> None:
    """MUST-63 through the whole host: no answer goes to an address that is not one host."""
    host, _ = host_with_listener()
    for src in ("224.0.0.9", "255.255.255.255", "0.0.0.0"):
        host.receive_frame(tcp_frame(SYN, src=src), 0.1)
        assert host.poll(0.1) == [], src
    assert host.tables().listening[0].syn_queue == 0


def test_source_quench_is_silently_discarded() -> None:
    """MUST-55: a source quench quoting our SYN changes nothing: the connect goes on and the SYN is
    retransmitted on schedule."""
    host, _ = host_with_listener()
    client = host.tcp.socket()
    client.connect_ex((PEER_IP, 80), 0.5)
    ((packet, syn),) = tcp_replies(host.poll(0.5))
    quote = build_ipv4(packet)[:28]  # the IP header and the first 8 bytes of the segment
    quench = IcmpMessage(ICMP_SOURCE_QUENCH, 0, b"\x00\x00\x00\x00", quote)
    frame = build_ethernet(EthernetFrame(bytes.fromhex(HOST_MAC.replace(":", "")), PEER_MAC, ETHERTYPE_IPV4,
                                         build_ipv4(Ipv4Packet(a(PEER_IP), a(HOST_IP), PROTO_ICMP,
                                                               build_icmp(quench)))))
    host.receive_frame(frame, 0.6)
    assert host.poll(0.6) == []
    assert client.state == "SYN_SENT" and client.error == 0
    ((_, again),) = tcp_replies(host.poll(1.5))  # the initial RTO is 1 s
    assert again.flags == TcpFlags.SYN and again.seq == syn.seq


def test_syn_from_the_subnet_directed_broadcast_is_ignored() -> None:
    """MUST-63 with the host's own prefix: 10.0.0.255 is the /24's directed broadcast, so a SYN from it gets
    no SYN-ACK, no RST and no SYN queue entry (the host passes `is_broadcast_address` to its TCP)."""
    host, _ = host_with_listener()
    host.receive_frame(tcp_frame(SYN, src="10.0.0.255"), 0.1)
    assert host.poll(0.1) == []
    assert host.tables().listening[0].syn_queue == 0
    assert host.counters()["TcpExtInvalidSourceDrops"] == 1
    host.receive_frame(tcp_frame(SYN), 0.2)  # the same SYN from a unicast peer is answered
    ((_, synack),) = tcp_replies(host.poll(0.2))
    assert synack.flags == TcpFlags.SYN | TcpFlags.ACK
    ip_layer = host.ip_layer
    assert not ip_layer.is_directed_broadcast("10.0.0.254") and ip_layer.is_directed_broadcast("10.0.0.255")


def test_connect_to_the_subnet_directed_broadcast_is_refused() -> None:
    """MUST-46: an OPEN to the interface's directed broadcast fails at once and sends nothing."""
    host, _ = host_with_listener()
    client = host.tcp.socket()
    assert client.connect_ex(("10.0.0.255", 80), 0.1) == errno.ENETUNREACH
    assert host.poll(0.1) == []


def test_a_31_or_32_prefix_has_no_directed_broadcast() -> None:
    """RFC 3021: on a /31 both addresses name hosts, so the "broadcast" one is a valid peer."""
    for prefix, peer in (("10.0.0.2/31", "10.0.0.3"), ("10.0.0.2/32", "10.0.0.2")):
        host = Host(prefix, HOST_MAC, seed=1, gratuitous_arp=False)
        assert not host.ip_layer.is_directed_broadcast(peer), prefix


def test_r1_negative_advice_marks_the_next_hop_stale_and_forgets_the_path_mtu() -> None:
    """MUST-20: at R1 (three unanswered timeouts) the host re-checks the path, as Linux's
    dst_negative_advice: the neighbour's ARP entry turns STALE, so its next use probes it again with a
    unicast ARP request, and a learned path MTU is dropped."""
    host, _ = host_with_listener()
    reply = ArpPacket(ARP_REPLY, PEER_MAC, a(PEER_IP), bytes.fromhex(HOST_MAC.replace(":", "")), a(HOST_IP))
    host.receive_frame(build_ethernet(EthernetFrame(bytes.fromhex(HOST_MAC.replace(":", "")), PEER_MAC,
                                                    ETHERTYPE_ARP, build_arp(reply))), 0.1)
    assert host.arp.entry(a(PEER_IP)).state.value == "REACHABLE"
    client = host.tcp.socket()
    client.connect_ex((PEER_IP, 80), 0.2)
    assert len(tcp_replies(host.poll(0.2))) == 1  # the SYN
    host.ip_layer._pmtu[PEER_IP] = (1400, 1e9)  # as if a "fragmentation needed" had taught it
    assert host.ip_layer.path_mtu(PEER_IP, 0.2) == 1400
    now = 0.2
    for timeout in range(1, 4):  # SYN retransmissions 1, 3 and 7 s after connect() (at 0.2)
        now = host.next_deadline()
        frames = host.poll(now)
        assert len(tcp_replies(frames)) == 1
        assert host.counters().get("IpNegativeAdvice", 0) == (1 if timeout == 3 else 0), timeout
        assert host.arp.entry(a(PEER_IP)).state.value == ("DELAY" if timeout == 3 else "REACHABLE")
    assert now == 7.2 and client.state == "SYN_SENT"
    assert host.ip_layer.path_mtu(PEER_IP, now) == 1500
    # The retransmitted SYN used the STALE entry (DELAY); delay_first_probe (5 s) later comes the probe.
    now = host.next_deadline()
    frames = [frame.joined() for frame in host.poll(now)]
    ((probe,),) = [[f for f in frames if parse_ethernet(f).ethertype == ETHERTYPE_ARP]]
    assert now == 12.2 and parse_ethernet(probe).dst == PEER_MAC  # unicast to the known MAC (NUD_PROBE)
