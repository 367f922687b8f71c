"""Host below TCP: gratuitous ARP, ARP both ways, retries and failure, cache expiry, ping, fragments,
ICMP errors in and out, and malformed frames counted rather than raised. Virtual time throughout."""

from __future__ import annotations

import random
import struct

import pytest

from stack.devices.impairment import Impairment
from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.runner import Runner
from stack.net.arp import NeighbourState
from stack.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, build_arp
from stack.wire.ethernet import BROADCAST_MAC, ETHERTYPE_ARP, EthernetFrame, build_ethernet
from stack.wire.icmp import (
    ICMP_DEST_UNREACHABLE,
    ICMP_TIME_EXCEEDED,
    UNREACH_PORT,
    UNREACH_PROTOCOL,
    build_icmp,
    destination_unreachable,
    echo_request,
    parse_icmp,
)
from stack.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Ipv4Packet, build_ipv4

from ..nodes import RAW_MAC, RawEndpoint, ip, ipv4_frame

A_MAC, B_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


def pair(**options: object) -> tuple[Host, Host, Runner]:
    a = Host("10.0.0.1/24", A_MAC, seed=1, **options)  # type: ignore[arg-type]
    b = Host("10.0.0.2/24", B_MAC, seed=2, **options)  # type: ignore[arg-type]
    return a, b, Runner([a, b], [MemoryWire(a, b)])


def beside_raw(**options: object) -> tuple[Host, RawEndpoint, Runner]:
    host = Host("10.0.0.2/24", B_MAC, seed=2, **options)  # type: ignore[arg-type]
    raw = RawEndpoint()
    return host, raw, Runner([host, raw], [MemoryWire(raw, host)])


def teach_raw_mac(host: Host, raw: RawEndpoint, runner: Runner, raw_ip: str = "10.0.0.9") -> None:
    """Let the host learn the raw endpoint's MAC through an ARP request addressed to it."""
    request = ArpPacket(ARP_REQUEST, RAW_MAC, ip(raw_ip), bytes(6), host.address)
    raw.inject(build_ethernet(EthernetFrame(BROADCAST_MAC, RAW_MAC, ETHERTYPE_ARP, build_arp(request))))
    runner.step()
    raw.received.clear()


def test_gratuitous_arp_at_start() -> None:
    host, raw, runner = beside_raw()
    runner.step()
    [(when, dst, packet)] = raw.arp_packets()
    assert when == 0.0 and dst == BROADCAST_MAC
    assert packet.op == ARP_REQUEST and packet.sender_ip == packet.target_ip == host.address
    assert host.counters()["ArpOutRequests"] == 1


def test_ping_resolves_arp_both_ways_like_linux() -> None:
    a, b, runner = pair()
    runner.run_for(1.0)  # the gratuitous ARPs create no entries (Linux learns only from traffic to it)
    assert a.neighbours() == [] and b.neighbours() == []
    assert a.ping("10.0.0.2") == 0.0  # no delay on the wire
    assert a.arp.entry(b.address).state is NeighbourState.REACHABLE  # a reply confirms
    # b learnt a from a request addressed to it: STALE, then used at once for the echo reply: DELAY.
    assert b.arp.entry(a.address).state is NeighbourState.DELAY
    assert b.arp.entry(a.address).mac == a.mac
    assert b.ping("10.0.0.1") == 0.0  # usable at once: no broadcast request
    assert b.counters()["ArpOutRequests"] == 1  # the gratuitous one only
    runner.run_for(5.0)  # delay_first_probe: a unicast probe confirms the entry
    assert b.counters()["ArpOutRequests"] == 2
    assert b.arp.entry(a.address).state is NeighbourState.REACHABLE


def test_rtt_is_the_wire_delay_both_ways() -> None:
    a = Host("10.0.0.1/24", A_MAC, seed=1)
    b = Host("10.0.0.2/24", B_MAC, seed=2)
    runner = Runner([a, b], [MemoryWire(a, b, Impairment(delay=0.010), Impairment(delay=0.015))])
    runner.run_for(1.0)  # gratuitous ARPs settle
    assert a.ping("10.0.0.2") == pytest.approx(0.025 * 2)  # ARP exchange first, then the echo
    assert a.ping("10.0.0.2", sequence=2) == pytest.approx(0.025)


def test_arp_retries_three_times_one_second_apart_then_gives_up() -> None:
    host, raw, runner = beside_raw()
    runner.step()
    raw.received.clear()
    assert host.ping("10.0.0.77", timeout=10.0) is None
    requests = [(t, dst, p) for t, dst, p in raw.arp_packets() if p.target_ip == ip("10.0.0.77")]
    assert [t for t, _, _ in requests] == [0.0, 1.0, 2.0]
    assert all(dst == BROADCAST_MAC for _, dst, _ in requests)
    assert host.counters()["ArpResolveFailed"] == 1
    assert host.arp.entry(ip("10.0.0.77")) is None
    assert raw.ipv4_packets() == []  # the echo request never left


def test_off_subnet_traffic_resolves_the_gateway() -> None:
    host, raw, runner = beside_raw(gateway="10.0.0.1")
    runner.step()
    raw.received.clear()
    host.ping("192.0.2.50", timeout=0.5)
    assert [p.target_ip for _, _, p in raw.arp_packets()] == [ip("10.0.0.1")]


def test_cache_entries_go_stale_and_expire() -> None:
    a, b, runner = pair()
    a.ping("10.0.0.2")
    runner.run_for(46.0)  # reachable_time is 30 s randomized to at most 45 s
    assert a.arp.entry(b.address).state is NeighbourState.STALE
    runner.run_for(60.0)  # gc_stale_time after the last use
    assert a.arp.entry(b.address) is None
    assert a.ping("10.0.0.2") == 0.0  # resolved again
    assert a.counters()["ArpOutRequests"] == 3  # gratuitous + two resolutions


def test_reply_to_an_arp_request_and_ignore_requests_for_others() -> None:
    host, raw, runner = beside_raw()
    runner.step()
    raw.received.clear()
    for target in ("10.0.0.2", "10.0.0.3"):
        request = ArpPacket(ARP_REQUEST, RAW_MAC, ip("10.0.0.9"), bytes(6), ip(target))
        raw.inject(build_ethernet(EthernetFrame(BROADCAST_MAC, RAW_MAC, ETHERTYPE_ARP, build_arp(request))))
    runner.step()
    [(_, dst, reply)] = raw.arp_packets()
    assert dst == RAW_MAC and reply.op == ARP_REPLY
    assert reply.sender_mac == host.mac and reply.sender_ip == host.address and reply.target_mac == RAW_MAC
    assert host.arp.entry(ip("10.0.0.9")).state is NeighbourState.STALE


def test_large_ping_is_fragmented_and_reassembled_both_ways() -> None:
    a, b, _runner = pair()
    payload = random.Random(5).randbytes(20000)
    assert a.ping("10.0.0.2", payload=payload) == 0.0
    assert a.echo_replies[-1].size == len(payload)
    for host in (a, b):
        counters = host.counters()
        assert counters["IpFragOKs"] == 1 and counters["IpFragCreates"] == 14  # 20008 B over 1480 B pieces
        assert counters["IpReasmOKs"] == 1 and counters["IpReasmReqds"] == 14


def test_fragment_timeout_sends_time_exceeded() -> None:
    host, raw, runner = beside_raw()
    teach_raw_mac(host, raw, runner)
    first = Ipv4Packet(ip("10.0.0.9"), host.address, PROTO_ICMP, bytes(64), ident=7, dont_fragment=False,
                       more_fragments=True)
    raw.inject(build_ethernet(EthernetFrame(host.mac, RAW_MAC, 0x0800, build_ipv4(first))))
    runner.run_for(29.0)
    assert raw.ipv4_packets() == []
    runner.run_for(2.0)
    [error] = raw.ipv4_packets()
    message = parse_icmp(error.payload)
    assert (message.type, message.code) == (ICMP_TIME_EXCEEDED, 1)
    assert host.counters()["IpReasmTimeout"] == 1


@pytest.mark.parametrize(("protocol", "code", "counter"), [(PROTO_UDP, UNREACH_PORT, "UdpNoPorts"),
                                                            (47, UNREACH_PROTOCOL, "IpInUnknownProtos")])
def test_non_tcp_protocols_get_destination_unreachable(protocol: int, code: int, counter: str) -> None:
    host, raw, runner = beside_raw()
    teach_raw_mac(host, raw, runner)
    udp_like = b"\x12\x34\x00\x35\x00\x0c\x00\x00ping"
    raw.inject(ipv4_frame(host.mac, "10.0.0.9", "10.0.0.2", protocol, udp_like))
    runner.step()
    [reply] = raw.ipv4_packets()
    message = parse_icmp(reply.payload)
    assert (message.type, message.code) == (ICMP_DEST_UNREACHABLE, code)
    assert bytes(message.payload[:20])[9] == protocol  # the quote carries the original header
    assert host.counters()[counter] == 1


def test_no_icmp_error_about_broadcasts_or_icmp_errors() -> None:
    host, raw, runner = beside_raw()
    teach_raw_mac(host, raw, runner)
    raw.inject(ipv4_frame(host.mac, "10.0.0.9", "10.0.0.255", PROTO_UDP, bytes(12)))
    error = destination_unreachable(UNREACH_PORT, build_ipv4(Ipv4Packet(host.address, ip("10.0.0.9"), 99,
                                                                        bytes(8))))
    raw.inject(ipv4_frame(host.mac, "10.0.0.9", "10.0.0.2", PROTO_ICMP, build_icmp(error)))
    runner.step()
    assert raw.ipv4_packets() == []


def test_icmp_errors_about_our_tcp_segments_reach_the_tcp_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    host, raw, runner = beside_raw()
    teach_raw_mac(host, raw, runner)
    seen = []
    monkeypatch.setattr(host.tcp, "icmp_error", lambda error, now: seen.append(error))
    tcp_header = struct.pack("!HHI", 40000, 80, 123456) + bytes(12)
    ours = build_ipv4(Ipv4Packet(host.address, ip("10.0.0.9"), PROTO_TCP, tcp_header))
    raw.inject(ipv4_frame(host.mac, "10.0.0.9", "10.0.0.2", PROTO_ICMP,
                          build_icmp(destination_unreachable(4, ours, mtu=1200))))
    raw.inject(ipv4_frame(host.mac, "10.0.0.9", "10.0.0.2", PROTO_ICMP,
                          build_icmp(destination_unreachable(UNREACH_PORT, ours))))
    runner.step()
    assert [(e.kind, e.code, e.mtu) for e in seen] == [("frag_needed", 4, 1200), ("unreachable", 3, None)]
    assert (seen[0].src_ip, seen[0].src_port, seen[0].dst_ip, seen[0].dst_port, seen[0].seq) == (
        "10.0.0.2", 40000, "10.0.0.9", 80, 123456)
    assert host.ip_layer.path_mtu("10.0.0.9") == 1200  # the path MTU is remembered for new connections


def test_malformed_frames_are_counted_not_raised() -> None:
    host, raw, runner = beside_raw()
    teach_raw_mac(host, raw, runner)
    good_ping = ipv4_frame(host.mac, "10.0.0.9", "10.0.0.2", PROTO_ICMP, build_icmp(echo_request(1, 1, b"x")))
    bad_ip_checksum = bytearray(good_ping)
    bad_ip_checksum[24] ^= 0xFF
    bad_icmp_checksum = bytearray(good_ping)
    bad_icmp_checksum[-1] ^= 0xFF
    bad_tcp = ipv4_frame(host.mac, "10.0.0.9", "10.0.0.2", PROTO_TCP, bytes(20))  # zero checksum, offset 0
    frames = [b"", b"\x01" * 5, host.mac + RAW_MAC + b"\x08\x00", bytes(bad_ip_checksum),
              bytes(bad_icmp_checksum), bad_tcp, host.mac + RAW_MAC + b"\x08\x06" + bytes(10)]
    for frame in frames:
        host.receive_frame(frame, runner.now)
    counters = host.counters()
    assert counters["EthInErrors"] == 2
    assert counters["IpInHdrErrors"] == 2  # empty IPv4 payload, bad header checksum
    assert counters["IcmpInCsumErrors"] == 1
    assert counters["TcpInErrs"] == 1
    assert counters["ArpInErrors"] == 1
    raw.inject(good_ping)
    runner.step()
    assert host.counters()["IcmpOutEchoReps"] == 1  # still healthy


def test_bad_host_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"ip '10\.0\.0\.300/24'"):
        Host("10.0.0.300/24")
    with pytest.raises(ValueError, match="MAC"):
        Host(mac="02:00")
    with pytest.raises(ValueError, match="not on a connected subnet"):
        Host("10.0.0.2/24", gateway="192.0.2.1")
    with pytest.raises(TypeError, match="arp_bogus"):
        Host(arp_bogus=1)


def test_icmp_errors_are_rate_limited_like_linux() -> None:
    host, raw, runner = beside_raw()
    teach_raw_mac(host, raw, runner)
    for port in range(100):
        udp = port.to_bytes(2, "big") + b"\x00\x35\x00\x08\x00\x00"
        raw.inject(ipv4_frame(host.mac, "10.0.0.9", "10.0.0.2", PROTO_UDP, udp))
    runner.step()
    assert len(raw.ipv4_packets()) == 50  # icmp_msgs_burst
    assert host.counters()["IcmpOutRateLimited"] == 50
    runner.run_for(1.0)  # the bucket refills at icmp_msgs_per_sec
    raw.received.clear()
    raw.inject(ipv4_frame(host.mac, "10.0.0.9", "10.0.0.2", PROTO_UDP, b"\x00\x01\x00\x35\x00\x08\x00\x00"))
    runner.step()
    assert len(raw.ipv4_packets()) == 1
