"""TCP segments out of a capture, decoded with the stack's own codecs, for tutorials that show a SYN.

A tutorial captures both ends (`lab.tools.capture.capturing`) and reads the pcap back here: each IPv4
TCP frame becomes a `CapturedSegment` (time, addresses, the parsed `TcpSegment`), frames of other
kinds are skipped, and a damaged frame is skipped rather than failing the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from stack.devices.pcap import read_pcap
from stack.wire.errors import MalformedPacket
from stack.wire.ethernet import parse_ethernet
from stack.wire.ipv4 import parse_ipv4
from stack.wire.tcp import PROTO_TCP, TcpFlags, TcpSegment, parse_tcp

ETHERTYPE_IPV4 = 0x0800


@dataclass(frozen=True)
class CapturedSegment:
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    segment: TcpSegment

    @property
    def is_syn(self) -> bool:
        """A connection's first segment: SYN without ACK."""
        flags = self.segment.flags
        return bool(flags & TcpFlags.SYN) and not flags & TcpFlags.ACK


def tcp_segments(path: Path) -> list[CapturedSegment]:
    """Every TCP segment of an Ethernet pcap, in capture order (checksums not verified: offloaded
    frames carry partial ones)."""
    found: list[CapturedSegment] = []
    with path.open("rb") as capture:
        for moment, frame in read_pcap(capture):
            try:
                ethernet = parse_ethernet(frame)
                if ethernet.ethertype != ETHERTYPE_IPV4:
                    continue
                packet = parse_ipv4(ethernet.payload, verify_checksum=False)
                if packet.protocol != PROTO_TCP:
                    continue
                segment = parse_tcp(packet.payload, packet.src, packet.dst, verify_checksum=False)
            except (MalformedPacket, ValueError):
                continue
            found.append(CapturedSegment(moment, (str(IPv4Address(packet.src)), segment.src_port),
                                         (str(IPv4Address(packet.dst)), segment.dst_port), segment))
    return found


def syn_options(segment: TcpSegment) -> dict[str, Any]:
    """What a SYN offers, as a student reads it next to tcp_connect_init: MSS, window scale, SACK,
    timestamps, and the window before scaling."""
    options = segment.options
    return {"mss": options.mss, "wscale": options.wscale, "sack_permitted": options.sack_permitted,
            "timestamps": options.timestamp is not None, "window": segment.window}
