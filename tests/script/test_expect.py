"""Matching an observed segment against the expected one, and the relaxations a match relied on."""

from __future__ import annotations

import pytest

from lab.script.expect import compare_options, match_segment, parse_relaxations
from lab.script.model import Option, Segment
from lab.script.packets import FLAG_BITS, Observed, decode_options, encode_options, parse_outbound, tcp_packet

ISN = 1_000_000
SYN_ACK = FLAG_BITS["S"] | FLAG_BITS["."]


def seen(flags: int, start: int, length: int, ack: int = 1, window: int = 64240,
         options: tuple[Option, ...] = ()) -> Observed:
    return Observed(0.0, 8080, 48000, flags, ISN + start, ack, window, options, length, 40 + length)


def test_an_exact_segment_matches_with_nothing_relaxed() -> None:
    expected = Segment("S.", 0, 0, 0, ack=1, options=(Option("mss", (1460,)),))
    match = match_segment(expected, seen(SYN_ACK, 0, 0, options=(Option("mss", (1460,)),)), ISN, frozenset())
    assert match.ok and not match.relaxed


@pytest.mark.parametrize(("observed", "field"), [
    (seen(FLAG_BITS["R"] | FLAG_BITS["."], 0, 0), "flags"),
    (seen(SYN_ACK, 1, 0), "seq"),
    (seen(SYN_ACK, 0, 0, ack=2), "ack"),
    (seen(SYN_ACK, 0, 0, window=100), "window"),
])
def test_each_field_is_compared(observed: Observed, field: str) -> None:
    expected = Segment("S.", 0, 0, 0, ack=1, window=64240)
    assert match_segment(expected, observed, ISN, frozenset()).differences == [field]


def test_window_and_psh_relaxations_are_recorded() -> None:
    expected = Segment(".", 1, 1001, 1000, ack=1, window=500)
    observed = seen(FLAG_BITS["P"] | FLAG_BITS["."], 1, 1000, window=600)
    assert match_segment(expected, observed, ISN, frozenset()).differences == ["flags", "window"]
    match = match_segment(expected, observed, ISN, frozenset({"psh", "window"}))
    assert match.ok and match.relaxed == {"psh", "window"}


def test_options_compare_in_order_except_ts_val() -> None:
    linux = (Option("mss", (1460,)), Option("sackOK"), Option("TS", (5, 0)), Option("nop"),
             Option("wscale", (7,)))
    same_but_clock = (Option("mss", (1460,)), Option("sackOK"), Option("TS", (999, 0)), Option("nop"),
                      Option("wscale", (7,)))
    assert compare_options(linux, same_but_clock, frozenset()) == "same"
    other_order = (Option("mss", (1460,)), Option("nop"), Option("nop"), Option("sackOK"), Option("nop"),
                   Option("wscale", (10,)))
    assert compare_options(linux, other_order, frozenset()) == "different"
    assert compare_options(linux, other_order, frozenset({"options"})) == "relaxed"
    other_mss = (Option("mss", (1400,)),)
    assert compare_options(linux, other_mss, frozenset({"options"})) == "different"


def test_relaxation_names_are_checked() -> None:
    assert parse_relaxations("window, psh") == {"window", "psh"}
    with pytest.raises(ValueError, match="unknown field wndow"):
        parse_relaxations("wndow")


def test_packets_round_trip_with_options_in_script_order() -> None:
    options = (Option("mss", (1000,)), Option("sackOK"), Option("nop"), Option("nop"), Option("nop"),
               Option("wscale", (7,)))
    assert decode_options(encode_options(options)) == options
    packet = tcp_packet("192.168.0.1", "192.0.2.1", 8080, 48000, flags=SYN_ACK, seq=5, ack=1, window=9,
                        options=options, payload=b"")
    observed = parse_outbound(packet, 1.5)
    assert observed is not None and observed.seq == 5 and observed.options == options
    assert observed.time == 1.5 and observed.window == 9
    assert decode_options(encode_options((Option("mss", (1460,)), Option("wscale", (7,))))) == (
        Option("mss", (1460,)), Option("wscale", (7,)), Option("eol"))  # padded to 4 bytes with EOL
