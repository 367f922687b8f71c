"""TCP segments read back from a capture, in the words a test asserts with (flags, options, lengths).

A pcap that `lab.tools.capture.capturing` wrote is decoded with the stack's own codecs: Ethernet, then
IPv4, then TCP (checksums are not verified: a sender with checksum offload hands tcpdump segments whose
checksum the device fills in later). Flags are written as tcpdump writes them, one letter each (S SYN,
F FIN, R RST, P PSH, U URG, E ECE, W CWR) with `.` for ACK, so `S.` is a SYN-ACK.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.devices.pcap import read_pcap
from stack.wire.errors import MalformedPacket
from stack.wire.ethernet import parse_ethernet
from stack.wire.ipv4 import parse_ipv4
from stack.wire.tcp import PROTO_TCP, TcpFlags, parse_tcp

ETHERTYPE_IPV4 = 0x0800
FLAG_LETTERS = (("S", TcpFlags.SYN), ("F", TcpFlags.FIN), ("R", TcpFlags.RST), ("P", TcpFlags.PSH),
                ("U", TcpFlags.URG), ("E", TcpFlags.ECE), ("W", TcpFlags.CWR), (".", TcpFlags.ACK))
OPTION_NAMES = ("mss", "wscale", "sack_permitted", "sack", "timestamp")


@dataclass(frozen=True)
class Segment:
    """One TCP segment of a capture: who sent it to whom, its header fields and its options."""

    time: float
    src: str
    sport: int
    dst: str
    dport: int
    flags: str  # tcpdump's letters: "S", "S.", ".", "P.", "F.", "R."
    seq: int
    ack: int
    window: int  # the raw 16-bit field
    length: int  # payload bytes
    options: dict[str, Any] = field(hash=False)  # present options only: {"mss": 1460, "wscale": 7, ...}

    def describe(self) -> str:
        """One line as tcpdump prints it: `10.0.0.1:40000 > 10.0.0.2:7 [S.] seq 1 ack 2 win 64240 ...`."""
        options = ",".join(f"{k}" if v is True else f"{k} {_shown(v)}" for k, v in self.options.items())
        return (f"{self.src}:{self.sport} > {self.dst}:{self.dport} [{self.flags}] seq {self.seq} "
                f"ack {self.ack} win {self.window}" + (f" <{options}>" if options else "")
                + f" length {self.length}")


def _shown(value: Any) -> str:
    return " ".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def flag_letters(flags: TcpFlags) -> str:
    return "".join(letter for letter, bit in FLAG_LETTERS if flags & bit)


def flags_from_text(text: str) -> TcpFlags:
    """`S.`, `SA` or `SYN,ACK` (any order, any case for names) to the flag bits; ValueError names the bad
    part. `A` is accepted for ACK beside tcpdump's `.`."""
    names = {name: bit for name, bit in TcpFlags.__members__.items()}
    if "," in text or text.upper() in names:
        bits = TcpFlags(0)
        for part in filter(None, (p.strip().upper() for p in text.split(","))):
            if part not in names:
                raise ValueError(f"flags {text!r}: {part!r} is not one of {', '.join(names)}")
            bits |= names[part]
        return bits
    letters = dict(FLAG_LETTERS) | {"A": TcpFlags.ACK}
    bits = TcpFlags(0)
    for letter in text:
        if letter.upper() not in letters:
            raise ValueError(f"flags {text!r}: {letter!r} is not one of S F R P U E W . (or A for ACK)")
        bits |= letters[letter.upper()]
    return bits


def options_of(parsed: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if parsed.mss is not None:
        found["mss"] = parsed.mss
    if parsed.wscale is not None:
        found["wscale"] = parsed.wscale
    if parsed.sack_permitted:
        found["sack_permitted"] = True
    if parsed.sack_blocks:
        found["sack"] = tuple(parsed.sack_blocks)
    if parsed.timestamp is not None:
        found["timestamp"] = tuple(parsed.timestamp)
    return found


def segments_of_frames(frames: Iterable[tuple[float, bytes]]) -> Iterator[Segment]:
    """The TCP segments among Ethernet frames; other frames (ARP, ICMP, broken ones) are passed over."""
    for timestamp, frame in frames:
        try:
            ethernet = parse_ethernet(frame)
            if ethernet.ethertype != ETHERTYPE_IPV4:
                continue
            packet = parse_ipv4(ethernet.payload, verify_checksum=False)
            if packet.protocol != PROTO_TCP or packet.is_fragment:
                continue
            tcp = parse_tcp(packet.payload, packet.src, packet.dst, verify_checksum=False)
        except MalformedPacket:
            continue
        yield Segment(timestamp, str(ipaddress.IPv4Address(packet.src)), tcp.src_port,
                      str(ipaddress.IPv4Address(packet.dst)), tcp.dst_port, flag_letters(tcp.flags), tcp.seq,
                      tcp.ack, tcp.window, len(tcp.payload), options_of(tcp.options))


def read_segments(path: Path) -> list[Segment]:
    """Every TCP segment of a pcap file, in capture order; a last record tcpdump is still writing is
    left out."""
    frames: list[tuple[float, bytes]] = []
    with path.open("rb") as pcap:
        try:
            frames.extend(read_pcap(pcap))
        except MalformedPacket:
            pass  # a truncated header or last record: the capture is still being written
    return list(segments_of_frames(frames))
