"""Hosts on two subnets joined by a Router: ping through the gateway, TTL, no route, and path MTU
discovery when a link in the middle of the path is narrower than both ends."""

from __future__ import annotations

import random

import pytest

from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.runner import Runner
from stack.net.router import Router
from stack.tcp.config import TcpConfig
from stack.wire.icmp import ICMP_DEST_UNREACHABLE, ICMP_TIME_EXCEEDED, build_icmp, echo_request, parse_icmp
from stack.wire.ipv4 import PROTO_ICMP

from ..nodes import RAW_MAC, RawEndpoint, ipv4_frame

ROUTER_MAC_0, ROUTER_MAC_1 = "02:00:00:00:01:00", "02:00:00:00:01:01"


def topology(middle_mtu: int = 1500) -> tuple[Host, Router, Host, Runner]:
    """a (10.0.0.2) -- [10.0.0.1 router 10.0.1.1, MTU middle_mtu toward b] -- b (10.0.1.2)."""
    config = TcpConfig(time_wait=1.0)
    a = Host("10.0.0.2/24", "02:00:00:00:00:02", gateway="10.0.0.1", seed=1, tcp=config)
    b = Host("10.0.1.2/24", "02:00:00:00:00:03", gateway="10.0.1.1", seed=2, tcp=config)
    router = Router([("10.0.0.1/24", ROUTER_MAC_0), ("10.0.1.1/24", ROUTER_MAC_1, middle_mtu)], seed=3)
    runner = Runner([a, b], [MemoryWire(a, router.ports[0]), MemoryWire(router.ports[1], b)])
    return a, router, b, runner


def test_ping_through_the_gateway_and_to_the_router() -> None:
    a, router, b, _runner = topology()
    assert a.ping("10.0.1.2") == 0.0
    assert a.echo_replies[-1].ttl == 63  # one hop
    assert b.counters()["IcmpInEchos"] == 1
    assert router.counters["IpForwDatagrams"] == 2
    assert a.ping("10.0.1.1") is not None  # the router answers for its own addresses
    assert a.ping("10.0.1.2", payload=bytes(4000)) == 0.0  # fragmented end to end, forwarded as fragments


def test_tcp_through_the_router() -> None:
    a, _router, b, _runner = topology()
    listener = b.socket()
    listener.bind(("10.0.1.2", 80))
    listener.listen()
    client = a.socket()
    client.connect(("10.0.1.2", 80))
    server, peer = listener.accept()
    assert peer == client.getsockname()
    payload = random.Random(4).randbytes(200_000)
    client.sendall(payload)
    assert server.recv_exactly(len(payload)) == payload


def test_path_mtu_discovery_through_a_narrow_middle_link() -> None:
    a, router, b, runner = topology(middle_mtu=1200)
    listener = b.socket()
    listener.bind(("10.0.1.2", 80))
    listener.listen()
    client = a.socket()
    client.connect(("10.0.1.2", 80))
    server, _ = listener.accept()
    assert a.snapshots()[0].mss > 1200  # both ends have MTU 1500: the SYNs cannot know
    payload = random.Random(5).randbytes(300_000)
    client.settimeout(60.0)
    client.sendall(payload)
    server.settimeout(60.0)
    assert server.recv_exactly(len(payload)) == payload
    assert router.counters["IpFragFails"] >= 1  # DF segments too big for the middle link
    assert a.counters()["IcmpInDestUnreachs"] >= 1  # "fragmentation needed", next-hop MTU 1200
    assert a.ip_layer.path_mtu("10.0.1.2") == 1200
    assert a.snapshots()[0].mss <= 1200 - 40
    assert runner.now < 10.0


def test_ttl_expiry_and_no_route_are_reported_by_icmp() -> None:
    raw = RawEndpoint()
    router = Router([("10.0.0.1/24", ROUTER_MAC_0), ("10.0.1.1/24", ROUTER_MAC_1)], seed=3)
    b = Host("10.0.1.2/24", "02:00:00:00:00:03", gateway="10.0.1.1", seed=2)
    runner = Runner([b], [MemoryWire(raw, router.ports[0]), MemoryWire(router.ports[1], b)])
    router_mac = bytes.fromhex(ROUTER_MAC_0.replace(":", ""))
    ping = build_icmp(echo_request(1, 1, b"x"))
    raw.inject(ipv4_frame(router_mac, "10.0.0.9", "10.0.1.2", PROTO_ICMP, ping, ttl=1))
    raw.inject(ipv4_frame(router_mac, "10.0.0.9", "192.0.2.1", PROTO_ICMP, ping))
    # The router must resolve 10.0.0.9 to answer: the raw endpoint does not speak ARP, so teach it.
    router.ports[0].link.arp.learn(bytes([10, 0, 0, 9]), RAW_MAC, 0.0, is_reply=True, to_us=True)
    runner.run_for(0.1)
    errors = [parse_icmp(p.payload) for p in raw.ipv4_packets()]
    assert [(m.type, m.code) for m in errors] == [(ICMP_TIME_EXCEEDED, 0), (ICMP_DEST_UNREACHABLE, 0)]
    assert b.counters()["IcmpInEchos"] == 0


def test_a_router_needs_two_ports() -> None:
    with pytest.raises(ValueError, match="at least two ports"):
        Router([("10.0.0.1/24", ROUTER_MAC_0)])
