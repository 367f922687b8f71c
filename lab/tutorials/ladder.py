"""Ladder diagrams: each TCP connection as the two ends' lifelines with the segments between them.

A ladder is built from packets (a pcap a tutorial took with `lab.tools.capture.capturing`, read by
`read_pcap` through `lab.tutorials.packets`, which decodes it with the stack's own codecs) and from state
changes (`StateMark`: what the kernel's `sock:inet_sock_set_state` tracepoint and the stack's trace said,
at the time they said it). Each segment is one row, SYN, SYN-ACK, ACK, data, FIN and RST alike, with
its sequence and acknowledgment numbers relative to each side's initial sequence number (as Wireshark
shows them), its window and payload length, and its time relative to the connection's first packet.
Each state change is a row of its own on its side's lifeline, so no two labels ever share a row.

`ladder_text` draws it for a terminal, `ladder_svg` as an SVG a browser shows (the HTML report
inlines it). Both are pure functions of the packets and marks.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from lab.tutorials.packets import CapturedSegment, tcp_segments
from stack.wire.errors import MalformedPacket
from stack.wire.tcp import TcpFlags

Endpoint = tuple[str, int]
MAX_PCAP_BYTES = 64 * 1024 * 1024  # a tutorial's capture is small; a bigger file is not one of ours
# A longer ladder (a bulk transfer) is drawn as its first and last rows, where the handshake and the
# close are, with one row in between saying how many were left out.
HEAD_ROWS, TAIL_ROWS = 60, 30
_FLAG_ORDER = (("SYN", TcpFlags.SYN), ("FIN", TcpFlags.FIN), ("RST", TcpFlags.RST), ("PSH", TcpFlags.PSH),
               ("ACK", TcpFlags.ACK))


class PcapError(ValueError):
    """A file that is not a pcap (classic pcap of Ethernet frames) or is broken."""


@dataclass(frozen=True)
class Packet:
    """One TCP segment as captured: absolute time (seconds since the epoch), ends, header fields."""

    time: float
    src: Endpoint
    dst: Endpoint
    flags: int
    seq: int
    ack: int
    window: int
    length: int  # payload bytes
    options: str = ""  # "mss 1460, wscale 7, sack, ts" on a SYN; "" otherwise

    @property
    def flag_names(self) -> str:
        names = [name for name, bit in _FLAG_ORDER if self.flags & bit]
        if names == ["ACK"] and self.length:
            return "data"
        if names == ["PSH", "ACK"]:
            return "data" if self.length else "PSH,ACK"
        return ",".join(name for name in names if name != "PSH" or not self.length) or "none"


@dataclass(frozen=True)
class StateMark:
    """A socket of `endpoint` entered `state` at `time` (seconds since the epoch), as `side` reported it."""

    time: float
    endpoint: Endpoint
    state: str
    side: str  # "kernel" or "stack"
    peer: Endpoint | None = None  # the other end, when the reporter named one (a listener names none)


@dataclass
class Ladder:
    """One connection: its client (who sent the first SYN), its server, and its rows in time order."""

    client: Endpoint
    server: Endpoint
    packets: list[Packet] = field(default_factory=list)
    marks: list[StateMark] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{_show(self.client)} -> {_show(self.server)}"

    @property
    def start(self) -> float:
        times = [p.time for p in self.packets] + [m.time for m in self.marks]
        return min(times) if times else 0.0

    def rows(self) -> list[Packet | StateMark]:
        """Packets and state changes in time order; a state change reported at the same instant as a
        packet comes after it (the segment caused it)."""
        keyed: list[tuple[float, int, int, Packet | StateMark]] = []
        keyed += [(p.time, 0, i, p) for i, p in enumerate(self.packets)]
        keyed += [(m.time, 1, i, m) for i, m in enumerate(self.marks)]
        return [row for *_, row in sorted(keyed, key=lambda k: k[:3])]

    def isn(self, sender: Endpoint) -> int:
        for packet in self.packets:
            if packet.src == sender and packet.flags & TcpFlags.SYN:
                return packet.seq
        firsts = [p.seq for p in self.packets if p.src == sender]
        return firsts[0] if firsts else 0

    def label(self, packet: Packet) -> str:
        """"SYN seq=0 win=64240 [mss 1460, ...]": numbers relative to each side's first sequence number."""
        own, other = self.isn(packet.src), self.isn(packet.dst)
        words = [packet.flag_names, f"seq={(packet.seq - own) % 2**32}"]
        if packet.flags & TcpFlags.ACK:
            words.append(f"ack={(packet.ack - other) % 2**32}")
        words.append(f"win={packet.window}")
        if packet.length:
            words.append(f"len={packet.length}")
        if packet.options:
            words.append(f"[{packet.options}]")
        return " ".join(words)


def _show(endpoint: Endpoint) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


# -- reading a capture --------------------------------------------------------------------------------


def read_pcap(path: Path) -> list[Packet]:
    """The IPv4 TCP segments of a pcap file (what tcpdump -w writes), decoded by
    `lab.tutorials.packets`; other frames are skipped, a broken file is one PcapError."""
    size = path.stat().st_size
    if size > MAX_PCAP_BYTES:
        raise PcapError(f"{path}: {size} bytes, over {MAX_PCAP_BYTES}")
    try:
        return [packet_of(captured) for captured in tcp_segments(path)]
    except MalformedPacket as error:
        raise PcapError(f"{path}: {error}") from None


def packet_of(captured: CapturedSegment) -> Packet:
    """A ladder's row of a captured segment; a SYN's options in words ("mss 1460, wscale 7, sack, ts")."""
    segment = captured.segment
    options = segment.options
    words = []
    if options.mss is not None:
        words.append(f"mss {options.mss}")
    if options.wscale is not None:
        words.append(f"wscale {options.wscale}")
    if options.sack_permitted:
        words.append("sack")
    if options.timestamp is not None and segment.flags & TcpFlags.SYN:
        words.append("ts")
    return Packet(captured.time, captured.src, captured.dst, int(segment.flags), segment.seq, segment.ack,
                  segment.window, len(segment.payload), ", ".join(words))


# -- connections --------------------------------------------------------------------------------------


def ladders(packets: Iterable[Packet], marks: Iterable[StateMark] = ()) -> list[Ladder]:
    """One ladder per connection (4-tuple), in the order their first packets were seen. The client is the
    end that sent a SYN without ACK; state marks join the ladder whose ends they name."""
    by_pair: dict[frozenset[Endpoint], Ladder] = {}
    for packet in sorted(packets, key=lambda p: p.time):
        key = frozenset((packet.src, packet.dst))
        ladder = by_pair.get(key)
        if ladder is None:
            is_syn_ack = packet.flags & TcpFlags.SYN and packet.flags & TcpFlags.ACK
            client, server = (packet.dst, packet.src) if is_syn_ack else (packet.src, packet.dst)
            ladder = by_pair[key] = Ladder(client, server)
        ladder.packets.append(packet)
    found = list(by_pair.values())
    for mark in marks:
        if mark.peer is None:
            continue  # a listener's own change (LISTEN, CLOSE): not one connection's
        if mark.endpoint[1] == 0:
            _place_unbound(mark, found)
            continue
        for ladder in found:
            ends = (ladder.client, ladder.server)
            if mark.endpoint in ends and mark.peer in ends and mark.peer != mark.endpoint:
                ladder.marks.append(mark)
                break
    for ladder in found:
        ladder.marks = aligned_marks(ladder)
    return found


def _place_unbound(mark: StateMark, found: list[Ladder]) -> None:
    """A client's CLOSE -> SYN_SENT comes before its ephemeral port is chosen: it belongs to the
    connection from that address to that server whose first segment (the SYN) follows it soonest."""
    following = [ladder for ladder in found
                 if ladder.client[0] == mark.endpoint[0] and ladder.server == mark.peer and ladder.packets
                 and ladder.packets[0].time >= mark.time - ALIGN_SECONDS]
    if following:
        ladder = min(following, key=lambda candidate: candidate.packets[0].time)
        ladder.marks.append(StateMark(mark.time, ladder.client, mark.state, mark.side, mark.peer))


# Which segment makes a socket enter a state: one it receives (ESTABLISHED on the SYN-ACK or the
# handshake's ACK, CLOSE_WAIT on a FIN, ...) or one it sends right after (SYN_SENT, FIN_WAIT1, LAST_ACK).
_ENTERED_ON_RECEIPT = MappingProxyType({
    "ESTABLISHED": TcpFlags.ACK, "SYN_RECV": TcpFlags.SYN, "CLOSE_WAIT": TcpFlags.FIN,
    "FIN_WAIT2": TcpFlags.ACK, "TIME_WAIT": TcpFlags.FIN, "CLOSING": TcpFlags.FIN,
    "CLOSE": TcpFlags.ACK | TcpFlags.RST})
_ENTERED_ON_SENDING = MappingProxyType({"SYN_SENT": TcpFlags.SYN, "FIN_WAIT1": TcpFlags.FIN,
                                        "LAST_ACK": TcpFlags.FIN})
ALIGN_SECONDS = 0.003


def aligned_marks(ladder: Ladder) -> list[StateMark]:
    """The marks, each moved next to the segment that caused it when one is within `ALIGN_SECONDS`.

    The capture's timestamps (the kernel's, as the segment crossed the interface) and the traces'
    (the kernel's tracepoint clock, the stack's loop clock when it processed a batch) differ by a
    fraction of a millisecond, enough to draw ESTABLISHED above the SYN-ACK that caused it. A state
    entered on receipt is drawn just after the nearest fitting segment to that end; one entered on
    sending, just before the nearest fitting segment from it.
    """
    aligned = []
    for mark in ladder.marks:
        received = mark.state in _ENTERED_ON_RECEIPT
        flags = (_ENTERED_ON_RECEIPT if received else _ENTERED_ON_SENDING).get(mark.state)
        moved = mark.time
        if flags is not None:
            if mark.state == "ESTABLISHED":  # the client's comes with the SYN-ACK, the server's the ACK
                flags = TcpFlags.SYN if mark.endpoint == ladder.client else TcpFlags.ACK
            candidates = [p for p in ladder.packets if (p.dst if received else p.src) == mark.endpoint
                          and p.flags & flags and abs(p.time - mark.time) <= ALIGN_SECONDS
                          and not (mark.state == "ESTABLISHED" and mark.endpoint == ladder.server
                                   and p.flags & TcpFlags.SYN)]
            if candidates:
                nearest = min(candidates, key=lambda p: abs(p.time - mark.time)).time
                moved = max(mark.time, nearest + 1e-7) if received else min(mark.time, nearest - 1e-7)
        aligned.append(StateMark(moved, mark.endpoint, mark.state, mark.side, mark.peer))
    return aligned


# -- drawing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """The rows of a long ladder that are not drawn."""

    count: int

    @property
    def text(self) -> str:
        return f"... {self.count} segments and state changes not drawn ..."


Row = Packet | StateMark | Gap


def shown_rows(ladder: Ladder) -> list[Row]:
    """The rows to draw: all of them, or the first HEAD_ROWS and the last TAIL_ROWS with a Gap between."""
    rows: list[Row] = list(ladder.rows())
    if len(rows) <= HEAD_ROWS + TAIL_ROWS + 1:
        return rows
    return [*rows[:HEAD_ROWS], Gap(len(rows) - HEAD_ROWS - TAIL_ROWS), *rows[-TAIL_ROWS:]]


def ladder_text(ladder: Ladder) -> str:
    """The ladder for a terminal: the client's lifeline on the left, the server's on the right."""
    rows = shown_rows(ladder)
    labels = [ladder.label(r) for r in rows if isinstance(r, Packet)]
    marks = [f"{r.state} ({r.side})" for r in rows if isinstance(r, StateMark)]
    marks += [r.text for r in rows if isinstance(r, Gap)]
    client, server = _show(ladder.client), _show(ladder.server)
    width = max([len(text) + 8 for text in labels] + [len(text) + 4 for text in marks] +
                [len(client) + len(server) + 4, 30])
    start = ladder.start
    lines = [f"{'ms':>9}  {client}{server:>{width + 2 - len(client)}}"]
    for row in rows:
        if isinstance(row, Gap):
            lines.append(f"{'':9}  |{row.text.center(width)}|")
            continue
        when = f"{(row.time - start) * 1000:9.3f}"
        if isinstance(row, StateMark):
            text = f"{row.state} ({row.side})"
            inner = f" {text}".ljust(width) if row.endpoint == ladder.client else f"{text} ".rjust(width)
        else:
            body = f" {ladder.label(row)} "
            if row.src == ladder.client:
                inner = ("--" + body).ljust(width - 1, "-") + ">"
            else:
                inner = "<" + (body + "--").rjust(width - 1, "-")
        lines.append(f"{when}  |{inner}|")
    return "\n".join(lines) + "\n"


ROW_HEIGHT = 26
CHAR_WIDTH = 7.2  # 12 px monospace
MARGIN_TIME = 80
MARGIN_SIDE = 150  # the least room for a state name outside each lifeline
TOP = 56


def ladder_svg(ladder: Ladder) -> str:
    """The ladder as a standalone SVG: one row per segment or state change, labels above their arrows."""
    rows = shown_rows(ladder)
    longest = max([len(ladder.label(r)) for r in rows if isinstance(r, Packet)] + [20])
    longest_state = max([len(f"{r.state} ({r.side})") for r in rows if isinstance(r, StateMark)] + [0])
    side = max(MARGIN_SIDE, longest_state * CHAR_WIDTH + 24)  # a state name fits outside its lifeline
    span = max(320.0, longest * CHAR_WIDTH + 40)
    left = MARGIN_TIME + side
    right = left + span
    width = int(right + side)
    height = int(TOP + ROW_HEIGHT * len(rows) + 30)
    # the marker's id is the ladder's own: a report inlines many ladders in one page
    arrow = "arrow-" + hashlib.sha1(f"{ladder.title} {ladder.start}".encode()).hexdigest()[:10]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">',
             f"<title>{html.escape(ladder.title)}</title>",
             f'<defs><marker id="{arrow}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
             'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/>'
             "</marker></defs>",
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="20" text-anchor="middle" font-weight="bold">'
             f"{html.escape(_show(ladder.client))}</text>",
             f'<text x="{left}" y="36" text-anchor="middle" fill="#555">client</text>',
             f'<text x="{right}" y="20" text-anchor="middle" font-weight="bold">'
             f"{html.escape(_show(ladder.server))}</text>",
             f'<text x="{right}" y="36" text-anchor="middle" fill="#555">server</text>',
             '<text x="8" y="36" fill="#555">time (ms)</text>']
    bottom = height - 16
    for x in (left, right):
        parts.append(f'<line x1="{x}" y1="{TOP - 12}" x2="{x}" y2="{bottom}" stroke="#999" '
                     'stroke-width="2"/>')
    start = ladder.start
    for index, row in enumerate(rows):
        y = TOP + index * ROW_HEIGHT + ROW_HEIGHT // 2
        if isinstance(row, Gap):
            parts.append(f'<text x="{(left + right) / 2}" y="{y + 4}" text-anchor="middle" fill="#555" '
                         f'class="gap">{html.escape(row.text)}</text>')
            continue
        parts.append(f'<text x="8" y="{y + 4}" fill="#555">{(row.time - start) * 1000:.3f}</text>')
        if isinstance(row, StateMark):
            x = left if row.endpoint == ladder.client else right
            anchor, dx = ("end", -10) if x == left else ("start", 10)
            color = "#1f5fbf" if row.side == "stack" else "#b35900"
            parts.append(f'<circle cx="{x}" cy="{y}" r="4" fill="{color}"/>')
            parts.append(f'<text x="{x + dx}" y="{y + 4}" text-anchor="{anchor}" fill="{color}" '
                         f'class="state">{html.escape(row.state)} ({html.escape(row.side)})</text>')
            continue
        x1, x2 = (left, right) if row.src == ladder.client else (right, left)
        color = "#c00" if row.flags & TcpFlags.RST else ("#060" if row.flags & (TcpFlags.SYN | TcpFlags.FIN)
                                                          else "#333")
        parts.append(f'<line x1="{x1}" y1="{y + 6}" x2="{x2}" y2="{y + 6}" stroke="{color}" '
                     f'stroke-width="1.5" marker-end="url(#{arrow})"/>')
        parts.append(f'<text x="{(left + right) / 2}" y="{y + 1}" text-anchor="middle" fill="{color}" '
                     f'class="segment">{html.escape(ladder.label(row))}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_ladders(found: list[Ladder], text_path: Path, svg_dir: Path, stem: str) -> list[Path]:
    """All ladders into one text file and one SVG per connection; the paths written, the text first."""
    text_path.parent.mkdir(parents=True, exist_ok=True)
    svg_dir.mkdir(parents=True, exist_ok=True)
    text_path.write_text("\n".join(f"{ladder.title}\n{ladder_text(ladder)}" for ladder in found))
    written = [text_path]
    for index, ladder in enumerate(found, start=1):
        svg = svg_dir / f"{stem}-{index}.svg"
        svg.write_text(ladder_svg(ladder))
        written.append(svg)
    return written
