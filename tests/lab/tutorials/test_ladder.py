"""Ladder diagrams from a synthetic connection: pcap reading, relative numbers, text and SVG."""

from __future__ import annotations

import ipaddress
import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from lab.tutorials.ladder import (
    Packet,
    PcapError,
    StateMark,
    ladder_svg,
    ladder_text,
    ladders,
    read_pcap,
    write_ladders,
)
from stack.wire.ethernet import EthernetFrame, build_ethernet
from stack.wire.ipv4 import Ipv4Packet, build_ipv4
from stack.wire.tcp import PROTO_TCP, TcpFlags, TcpOptions, TcpSegment, build_tcp

CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 80)
C_ISN, S_ISN = 1_000_000, 4_294_967_000  # the server's wraps past 2**32
T0 = 1_700_000_000.0
SYN, ACK, FIN, RST, PSH = TcpFlags.SYN, TcpFlags.ACK, TcpFlags.FIN, TcpFlags.RST, TcpFlags.PSH


def handshake_data_close() -> list[Packet]:
    """SYN, SYN-ACK, ACK, 100 bytes, its ACK, FIN both ways, final ACK, and a stray RST."""
    c, s = CLIENT, SERVER
    return [
        Packet(T0, c, s, SYN, C_ISN, 0, 64240, 0, "mss 1460, wscale 7, sack, ts"),
        Packet(T0 + 0.001, s, c, SYN | ACK, S_ISN, C_ISN + 1, 65535, 0, "mss 1460, wscale 7"),
        Packet(T0 + 0.002, c, s, ACK, C_ISN + 1, S_ISN + 1, 502, 0),
        Packet(T0 + 0.003, c, s, PSH | ACK, C_ISN + 1, S_ISN + 1, 502, 100),
        Packet(T0 + 0.004, s, c, ACK, S_ISN + 1, C_ISN + 101, 512, 0),
        Packet(T0 + 0.005, c, s, FIN | ACK, C_ISN + 101, S_ISN + 1, 502, 0),
        Packet(T0 + 0.006, s, c, FIN | ACK, S_ISN + 1, C_ISN + 102, 512, 0),
        Packet(T0 + 0.007, c, s, ACK, C_ISN + 102, (S_ISN + 2) % 2**32, 502, 0),
        Packet(T0 + 0.008, s, c, RST, (S_ISN + 2) % 2**32, 0, 0, 0),
    ]


def marks() -> list[StateMark]:
    return [
        StateMark(T0 - 0.0001, CLIENT, "SYN_SENT", "kernel", SERVER),
        # reported a little before the SYN-ACK crossed the wire: drawn after it
        StateMark(T0 + 0.0008, CLIENT, "ESTABLISHED", "kernel", SERVER),
        StateMark(T0 + 0.0055, SERVER, "CLOSE_WAIT", "stack", CLIENT),
        StateMark(T0 + 0.0065, CLIENT, "TIME_WAIT", "kernel", SERVER),
        StateMark(T0, SERVER, "LISTEN", "stack", None),  # a listener's own: on no ladder
    ]


def test_one_ladder_per_connection_with_the_syn_sender_as_client() -> None:
    other = Packet(T0 + 1, ("10.0.0.2", 5000), ("10.0.0.1", 22), SYN | ACK, 1, 2, 100, 0)
    found = ladders([*handshake_data_close(), other], marks())
    assert [(ladder.client, ladder.server) for ladder in found] == [
        (CLIENT, SERVER), (("10.0.0.1", 22), ("10.0.0.2", 5000))]
    assert [m.state for m in found[0].marks] == ["SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "TIME_WAIT"]


def test_numbers_are_relative_to_each_sides_first_sequence_number() -> None:
    ladder = ladders(handshake_data_close())[0]
    labels = [ladder.label(p) for p in ladder.packets]
    assert labels[0] == "SYN seq=0 win=64240 [mss 1460, wscale 7, sack, ts]"
    assert labels[1] == "SYN,ACK seq=0 ack=1 win=65535 [mss 1460, wscale 7]"
    assert labels[3] == "data seq=1 ack=1 win=502 len=100"
    assert labels[6] == "FIN,ACK seq=1 ack=102 win=512"
    assert labels[7] == "ACK seq=102 ack=2 win=502"
    assert labels[8] == "RST seq=2 win=0"


def test_a_state_change_is_drawn_after_the_segment_that_caused_it() -> None:
    ladder = ladders(handshake_data_close(), marks())[0]
    rows = [r.state if isinstance(r, StateMark) else r.flag_names for r in ladder.rows()]
    assert rows.index("SYN_SENT") < rows.index("SYN") < rows.index("SYN,ACK") < rows.index("ESTABLISHED")
    assert rows.index("CLOSE_WAIT") > rows.index("FIN,ACK")


def test_the_text_ladder_points_each_arrow_from_its_sender() -> None:
    text = ladder_text(ladders(handshake_data_close(), marks())[0])
    lines = text.splitlines()
    assert "10.0.0.1:40000" in lines[0] and lines[0].rstrip().endswith("10.0.0.2:80")
    syn = next(line for line in lines if "SYN seq=0 win=64240" in line)
    syn_ack = next(line for line in lines if "SYN,ACK" in line)
    assert syn.rstrip().endswith(">|") and "|<" in syn_ack
    assert len({len(line) for line in lines[1:]}) == 1, "every row is as wide as the others"
    assert "ESTABLISHED (kernel)" in text and "CLOSE_WAIT (stack)" in text
    assert syn.lstrip().startswith("0.000") or lines[1].lstrip().startswith("0.000")


def test_the_svg_is_well_formed_and_no_two_labels_share_a_row() -> None:
    svg = ladder_svg(ladders(handshake_data_close(), marks())[0])
    root = ElementTree.fromstring(svg)
    namespace = "{http://www.w3.org/2000/svg}"
    labels = [t for t in root.iter(f"{namespace}text") if t.get("class") in ("segment", "state")]
    assert len(labels) == 9 + 4
    rows = [float(t.get("y", 0)) for t in labels]
    assert len(set(rows)) == len(rows), "each segment and state change has a row of its own"
    assert all(abs(a - b) >= 20 for a, b in zip(sorted(rows), sorted(rows)[1:], strict=False))
    width = float(root.get("width", 0))
    longest = max(len(t.text or "") for t in labels if t.get("class") == "segment")
    assert longest * 7.2 < width - 2 * 150, "the longest label fits between the margins"
    for state in (t for t in labels if t.get("class") == "state"):
        x, size = float(state.get("x", 0)), len(state.text or "") * 7.2
        left, right = (x - size, x) if state.get("text-anchor") == "end" else (x, x + size)
        assert left > 60 and right <= width, f"{state.text} is drawn inside the picture"


def test_a_long_state_name_widens_the_margins() -> None:
    established = StateMark(T0 + 0.0021, SERVER, "ESTABLISHED", "kernel", CLIENT)
    ladder = ladders(handshake_data_close(), [established])[0]
    root = ElementTree.fromstring(ladder_svg(ladder))
    state = next(t for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "state")
    assert float(state.get("x", 0)) + len(state.text or "") * 7.2 <= float(root.get("width", 0))


def test_a_pcap_written_with_the_stacks_codecs_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap_of(handshake_data_close()[:4]))
    packets = read_pcap(path)
    assert [p.flag_names for p in packets] == ["SYN", "SYN,ACK", "ACK", "data"]
    assert packets[0].src == CLIENT and packets[0].options == "mss 1460, wscale 7, sack, ts"
    assert packets[3].length == 100 and abs(packets[3].time - (T0 + 0.003)) < 1e-5
    written = write_ladders(ladders(packets), tmp_path / "l.txt", tmp_path, "l")
    assert [p.name for p in written] == ["l.txt", "l-1.svg"]


def test_what_is_not_a_pcap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    path.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\0" * 40)
    with pytest.raises(PcapError, match=r"x\.pcapng: pcap: bad magic"):
        read_pcap(path)


def pcap_of(packets: list[Packet]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for p in packets:
        src, dst = ipaddress.IPv4Address(p.src[0]).packed, ipaddress.IPv4Address(p.dst[0]).packed
        options = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 0)) if p.options else \
            TcpOptions()
        segment = TcpSegment(p.src[1], p.dst[1], p.seq, p.ack, TcpFlags(p.flags), p.window, options,
                             b"x" * p.length)
        ip = build_ipv4(Ipv4Packet(src, dst, PROTO_TCP, build_tcp(segment, src, dst)))
        frame = build_ethernet(EthernetFrame(b"\x02" * 6, b"\x04" * 6, 0x0800, ip))
        seconds = int(p.time)
        micros = round((p.time - seconds) * 1e6)
        out.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)
    return b"".join(out)


def test_an_unbound_syn_sent_joins_the_connection_whose_syn_follows_it() -> None:
    first = handshake_data_close()[:3]
    second = [Packet(p.time + 0.5, ("10.0.0.1", 40001) if p.src == CLIENT else p.src,
                     ("10.0.0.1", 40001) if p.dst == CLIENT else p.dst, p.flags, p.seq, p.ack, p.window, 0)
              for p in first]
    unbound = [StateMark(T0 - 0.0001, ("10.0.0.1", 0), "SYN_SENT", "kernel", SERVER),
               StateMark(T0 + 0.4999, ("10.0.0.1", 0), "SYN_SENT", "kernel", SERVER)]
    found = ladders(first + second, unbound)
    assert [[(m.endpoint, m.state) for m in ladder.marks] for ladder in found] == [
        [(CLIENT, "SYN_SENT")], [(("10.0.0.1", 40001), "SYN_SENT")]]


def test_a_long_ladder_keeps_its_beginning_and_its_end() -> None:
    c, s = CLIENT, SERVER
    data = [Packet(T0 + 0.001 * i, c, s, ACK, C_ISN + 1 + 100 * i, S_ISN + 1, 502, 100) for i in range(500)]
    ladder = ladders([*handshake_data_close()[:3], *data, handshake_data_close()[5]])[0]
    text = ladder_text(ladder)
    assert "SYN seq=0" in text and "FIN,ACK" in text
    assert "... 414 segments and state changes not drawn ..." in text
    root = ElementTree.fromstring(ladder_svg(ladder))
    rows = [t for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") in ("segment", "gap")]
    assert len(rows) == 60 + 1 + 30 and float(root.get("height", 0)) < 3000
