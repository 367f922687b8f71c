"""The plugin's pure parts, without a lab: state sequences from trace events, counters, segments decoded
from frames, the messages that show what was seen, the lab-name prefix and topology forms."""

from __future__ import annotations

import io

import pytest

from lab.kernel.tracepoints import parse_trace_line
from lab.testing.expect import (
    contains_run,
    counter_problem,
    kernel_sequences,
    matching_segments,
    normalise_state,
    segment_problem,
    stack_sequences,
    states_problem,
)
from lab.testing.plugin import plan_for, prefix_problem, unique_name
from lab.testing.segments import flags_from_text, read_segments, segments_of_frames
from lab.topology.errors import TopologyError
from stack.devices.pcap import PcapWriter
from stack.wire.ethernet import EthernetFrame, build_ethernet
from stack.wire.ipv4 import Ipv4Packet, build_ipv4
from stack.wire.tcp import PROTO_TCP, TcpFlags, TcpOptions, TcpSegment, build_tcp

H1, S1 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def kernel_event(old: str, new: str, sport: int, dport: int = 7000, saddr: str = "10.0.0.1",
                 daddr: str = "10.0.0.2") -> object:
    line = ("  python3-1234 [001] ..... 100.000001: inet_sock_set_state: family=AF_INET "
            f"protocol=IPPROTO_TCP "
            f"sport={sport} dport={dport} saddr={saddr} daddr={daddr} saddrv6=::ffff:{saddr} "
            f"daddrv6=::ffff:{daddr} oldstate=TCP_{old} newstate=TCP_{new}")
    event = parse_trace_line(line)
    assert event is not None
    return event


def test_a_client_connection_joins_its_portless_first_transition() -> None:
    events = [kernel_event("CLOSE", "SYN_SENT", 0), kernel_event("SYN_SENT", "ESTABLISHED", 40000),
              kernel_event("ESTABLISHED", "FIN_WAIT1", 40000),
              kernel_event("LISTEN", "SYN_RECV", 80, 1, saddr="10.9.9.9")]  # another node's: left out
    sequences = kernel_sequences(events, ["10.0.0.1"])
    assert sequences == {"10.0.0.1:40000 > 10.0.0.2:7000": ["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1"]}
    assert states_problem("h1", ["syn-sent", "ESTABLISHED"], sequences) is None
    whole = ["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1"]
    assert states_problem("h1", whole, sequences, exact=True) is None


def test_a_wrong_state_sequence_shows_each_connection_seen() -> None:
    events = [{"name": "inet_sock_set_state", "local": "10.0.0.2:7000", "remote": "10.0.0.1:40000",
               "oldstate": old, "newstate": new}
              for old, new in (("LISTEN", "SYN_RECV"), ("SYN_RECV", "ESTABLISHED"))]
    events.append({"name": "tcp_retransmit_skb", "local": "10.0.0.2:7000", "remote": "10.0.0.1:40000"})
    sequences = stack_sequences(events, [7000])
    assert stack_sequences(events, [9]) == {}
    problem = states_problem("s1", ["SYN_RECV", "TIME_WAIT"], sequences)
    assert problem == ("s1: no connection went through SYN_RECV -> TIME_WAIT (in a row)\n"
                       "  seen 10.0.0.2:7000 > 10.0.0.1:40000: LISTEN -> SYN_RECV -> ESTABLISHED")
    assert "no state changes at all" in str(states_problem("s1", ["LISTEN"], {}))


def test_states_in_a_row_and_their_spellings() -> None:
    assert contains_run(["A", "B", "C"], ["B", "C"]) and not contains_run(["A", "B", "C"], ["A", "C"])
    assert [normalise_state(s) for s in ("SYN-RECEIVED", "tcp_fin_wait1", "CLOSED", "time-wait")] == \
        ["SYN_RECV", "FIN_WAIT1", "CLOSE", "TIME_WAIT"]


def test_a_counter_moves_by_at_least_one_unless_told_otherwise() -> None:
    assert counter_problem("s1", "TcpPassiveOpens", 3, 4) is None
    assert counter_problem("s1", "TcpPassiveOpens", 3, 3) == (
        "s1: counter TcpPassiveOpens expected to move by at least 1; seen 3 -> 3 (moved by 0)")
    assert counter_problem("s1", "TcpRetransSegs", 5, 5, by=0) is None
    assert "by at most 2" in str(counter_problem("s1", "TcpRetransSegs", 0, 3, at_most=2))
    assert counter_problem("s1", "NoSuch", None, None) == \
        "s1: no counter NoSuch (its counters have no such name)"


def frame(src: bytes, dst: bytes, segment: TcpSegment) -> bytes:
    tcp = build_tcp(segment, src, dst)
    ip = build_ipv4(Ipv4Packet(src, dst, PROTO_TCP, tcp))
    return build_ethernet(EthernetFrame(b"\x02" * 6, b"\x04" * 6, 0x0800, ip))


def captured() -> bytes:
    syn_ack = TcpSegment(7000, 40000, 100, 51, TcpFlags.SYN | TcpFlags.ACK, 65535,
                         TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 2)))
    data = TcpSegment(7000, 40000, 101, 51, TcpFlags.PSH | TcpFlags.ACK, 512, TcpOptions(timestamp=(3, 4)),
                      b"hello")
    syn = TcpSegment(40000, 7000, 50, 0, TcpFlags.SYN, 64240, TcpOptions(mss=1460))
    file = io.BytesIO()
    writer = PcapWriter(file)
    for moment, (src, dst, segment) in enumerate(((H1, S1, syn), (S1, H1, syn_ack), (S1, H1, data))):
        writer.write(frame(src, dst, segment), float(moment))
    writer.flush()
    return file.getvalue()


def test_segments_decoded_from_a_pcap_are_matched_by_flags_and_options(tmp_path) -> None:
    path = tmp_path / "c.pcap"
    path.write_bytes(captured()[:-3])  # the last record still being written: left for next time
    assert len(read_segments(path)) == 2
    path.write_bytes(captured())
    segments = read_segments(path)
    assert [s.flags for s in segments] == ["S", "S.", "P."]
    assert segments[1].options == {"mss": 1460, "wscale": 7, "sack_permitted": True, "timestamp": (1, 2)}
    sent = [s for s in segments if s.src == "10.0.0.2"]
    assert matching_segments(sent, flags="SA", options=["mss", "wscale"]) == [segments[1]]
    assert matching_segments(sent, flags="SYN,ACK", options={"wscale": 7}) == [segments[1]]
    assert matching_segments(sent, options={"mss": False}, length=5) == [segments[2]]
    assert matching_segments(sent, flags=".", exact_flags=False) == sent
    assert matching_segments(sent, flags="S") == []
    problem = segment_problem("s1", "flags [S]", [], sent)
    assert problem is not None and problem.splitlines() == [
        "s1: expected a segment sent with flags [S]; 0 matched, of 2 it sent",
        "  sent 10.0.0.2:7000 > 10.0.0.1:40000 [S.] seq 100 ack 51 win 65535 "
        "<mss 1460,wscale 7,sack_permitted,timestamp 1 2> length 0",
        "  sent 10.0.0.2:7000 > 10.0.0.1:40000 [P.] seq 101 ack 51 win 512 <timestamp 3 4> length 5"]
    assert segment_problem("s1", "flags [S.]", sent[:1], sent, count=1) is None


def test_frames_that_are_not_tcp_are_passed_over() -> None:
    arp = build_ethernet(EthernetFrame(b"\xff" * 6, b"\x02" * 6, 0x0806, b"\x00" * 28))
    assert list(segments_of_frames([(0.0, arp), (0.1, b"\x00" * 5)])) == []


def test_flag_text_that_is_not_flags_is_refused_with_the_letters_allowed() -> None:
    assert flags_from_text("F.") == TcpFlags.FIN | TcpFlags.ACK
    with pytest.raises(ValueError, match="'X' is not one of S F R P U E W"):
        flags_from_text("SX")


def test_lab_names_are_the_prefix_and_hex_and_fit_the_name_limit() -> None:
    assert prefix_problem("pp") is None and prefix_problem("abcde") is None
    assert prefix_problem("abcdef") is not None and prefix_problem("9a") is not None
    name = unique_name("abcde")
    assert len(name) == 12 and name.startswith("abcde")


def test_a_topology_is_a_shipped_name_text_or_a_dict() -> None:
    assert {n.name for n in plan_for("pair", "pt1").nodes} == {"h1", "s1"}
    text = ("name: x\nnodes:\n  a: {kind: kernel}\n  b: {kind: kernel}\n"
            "links:\n  - endpoints: [a:eth0, b:eth0]\n    subnet: 10.1.0.0/24\n")
    assert plan_for(text, "pt2").name == "pt2"
    data = {"name": "x", "nodes": {"a": {"kind": "kernel"}, "b": {"kind": "kernel"}},
            "links": [{"endpoints": ["a:eth0", "b:eth0"], "subnet": "10.2.0.0/24"}]}
    assert [n.namespace for n in plan_for(data, "pt3").nodes] == ["pt3-a", "pt3-b"]
    with pytest.raises(TopologyError, match="links"):
        plan_for({"name": "x", "nodes": {"a": {"kind": "kernel"}}, "links": "no"}, "pt4")
