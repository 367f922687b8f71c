"""describe_frame speaks tcpdump: the same summary line for the same frame, and never raises."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.devices.pcap import PcapWriter
from stack.wire import (
    ETHERTYPE_IPV4,
    NO_OPTIONS,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TIME_EXCEEDED_REASSEMBLY,
    TIME_EXCEEDED_TTL,
    UNREACH_FRAG_NEEDED,
    UNREACH_HOST,
    UNREACH_PORT,
    EthernetFrame,
    Ipv4Packet,
    TcpFlags,
    TcpOptions,
    TcpSegment,
    build_ethernet,
    build_icmp,
    build_ipv4,
    build_tcp,
    build_tcp_frame,
    describe_frame,
    destination_unreachable,
    echo_request,
    tcp_flag_letters,
    time_exceeded,
)

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
A, B = socket.inet_aton("10.1.0.1"), socket.inet_aton("10.1.0.2")


def tcp(flags: TcpFlags, payload: bytes = b"", options: TcpOptions = NO_OPTIONS, seq: int = 1000,
        ack: int = 0, urgent: int = 0) -> bytes:
    return build_tcp_frame(MAC_B, MAC_A, A, B, TcpSegment(33000, 5001, seq, ack, flags, 512, options, payload,
                                                          urgent))


def ip(protocol: int, payload: bytes, **fields: object) -> bytes:
    packet = Ipv4Packet(A, B, protocol, payload, **fields)  # type: ignore[arg-type]
    return build_ethernet(EthernetFrame(MAC_B, MAC_A, ETHERTYPE_IPV4, build_ipv4(packet)))


def frames() -> list[bytes]:
    original_tcp = build_ipv4(Ipv4Packet(B, A, PROTO_TCP, build_tcp(
        TcpSegment(5001, 33000, 9, 0, TcpFlags.SYN, 100), B, A)))
    original_udp = build_ipv4(Ipv4Packet(B, A, PROTO_UDP, bytes.fromhex("a4100d3d000c0000") + b"abcd"))
    return [
        tcp(TcpFlags.SYN, options=TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 0))),
        tcp(TcpFlags.SYN, options=TcpOptions(mss=536, sack_permitted=True)),
        tcp(TcpFlags.SYN | TcpFlags.ACK, ack=1, options=TcpOptions(mss=1460)),
        tcp(TcpFlags.ACK | TcpFlags.PSH, b"x" * 100, ack=77, seq=2**32 - 50),
        tcp(TcpFlags.ACK, ack=5,
            options=TcpOptions(timestamp=(7, 8), sack_blocks=((10, 20), (30, 40), (50, 60)))),
        tcp(TcpFlags.FIN | TcpFlags.ACK, ack=5),
        tcp(TcpFlags.FIN | TcpFlags.PSH | TcpFlags.ACK, b"bye", ack=5),
        tcp(TcpFlags.RST, seq=4),
        tcp(TcpFlags.RST | TcpFlags.ACK, ack=4),
        tcp(TcpFlags.URG | TcpFlags.ACK, b"!", ack=4, urgent=1),
        tcp(TcpFlags.ECE | TcpFlags.CWR | TcpFlags.ACK, ack=4),
        tcp(TcpFlags(0)),
        ip(PROTO_ICMP, build_icmp(echo_request(77, 3, b"ping" * 14))),
        ip(PROTO_ICMP, build_icmp(destination_unreachable(UNREACH_PORT, original_udp))),
        ip(PROTO_ICMP, build_icmp(destination_unreachable(UNREACH_PORT, original_tcp))),
        ip(PROTO_ICMP, build_icmp(destination_unreachable(UNREACH_HOST, original_tcp))),
        ip(PROTO_ICMP, build_icmp(destination_unreachable(UNREACH_FRAG_NEEDED, original_tcp, mtu=1400))),
        ip(PROTO_ICMP, build_icmp(time_exceeded(TIME_EXCEEDED_TTL, original_tcp))),
        ip(PROTO_ICMP, build_icmp(time_exceeded(TIME_EXCEEDED_REASSEMBLY, original_tcp))),
        ip(PROTO_UDP, bytes.fromhex("a4100d3d000c0000") + b"abcd"),
        ip(PROTO_UDP, b"later fragment", dont_fragment=False, fragment_offset=1480),
    ]


def test_flag_letters_follow_tcpdump() -> None:
    assert tcp_flag_letters(TcpFlags.SYN | TcpFlags.ACK) == "S."
    assert tcp_flag_letters(TcpFlags.FIN | TcpFlags.PSH | TcpFlags.ACK) == "FP."
    assert tcp_flag_letters(TcpFlags(0)) == "none"


def test_known_lines() -> None:
    described = [describe_frame(frame) for frame in frames()]
    assert described[0] == ("IP 10.1.0.1.33000 > 10.1.0.2.5001: Flags [S], seq 1000, win 512, "
                            "options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0")
    assert described[3].startswith("IP 10.1.0.1.33000 > 10.1.0.2.5001: Flags [P.], seq 4294967246:50, ack 77")
    assert "sack 3 {10:20}{30:40}{50:60}" in described[4]
    assert described[16] == ("IP 10.1.0.1 > 10.1.0.2: ICMP 10.1.0.1 unreachable - need to frag (mtu 1400), "
                             "length 48")


def test_same_lines_as_tcpdump(tmp_path: Path) -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump is not installed (apt-get install tcpdump)")
    path = tmp_path / "describe.pcap"
    with path.open("wb") as file:
        writer = PcapWriter(file)
        for index, frame in enumerate(frames()):
            writer.write(frame, float(index))
    result = subprocess.run([tcpdump, "-nn", "-t", "-S", "-r", str(path)], capture_output=True, text=True,
                            timeout=30)
    theirs = result.stdout.splitlines()
    ours = [describe_frame(frame) for frame in frames()]
    assert len(theirs) == len(ours)
    assert [(o, t) for o, t in zip(ours, theirs, strict=True) if o != t] == []


@given(st.binary(max_size=120))
def test_never_raises(data: bytes) -> None:
    assert isinstance(describe_frame(data), str)
    assert isinstance(describe_frame(frames()[0][:14] + data), str)
