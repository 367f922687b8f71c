"""Reading packetdrill syntax: what parses into which events, and every error naming file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.script.calls import check_script
from lab.script.model import Option, Packet, Shell, Syscall
from lab.script.syntax import ScriptError, parse_file, parse_text

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_events_parse_into_typed_calls_segments_and_shell_lines() -> None:
    script = parse_text(
        "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
        "+.1~+.2 connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)\n"
        "/* a block\n comment */ 0.300 < S 0:0(0) win 32792 <mss 1000,sackOK,TS val 7 ecr 0,nop,wscale 7>\n"
        "* > S. 0:0(0) ack 1 <...>  // any options\n"
        "+0 `echo hi`\n", "x.pkt")
    call, connect, inbound, outbound, shell = script.events
    assert isinstance(call, Syscall) and call.name == "socket" and call.result == 3
    assert call.timing.relative is False and call.where.line == 1
    assert isinstance(connect, Syscall) and connect.errno_name == "EINPROGRESS"
    assert (connect.timing.start, connect.timing.end) == (0.1, 0.2)
    assert isinstance(inbound, Packet) and inbound.inbound and inbound.where.line == 4
    assert inbound.segment is not None and inbound.segment.window == 32792
    assert inbound.segment.options == (Option("mss", (1000,)), Option("sackOK"), Option("TS", (7, 0)),
                                       Option("nop"), Option("wscale", (7,)))
    assert isinstance(outbound, Packet) and outbound.timing.anytime and outbound.segment is not None
    assert outbound.segment.options is None and outbound.segment.ack == 1
    assert isinstance(shell, Shell) and shell.command == "echo hi"


def test_icmp_and_blocking_timing() -> None:
    script = parse_text("0...0.1 accept(3, ..., ...) = 4\n"
                        "+0 < icmp unreachable frag_needed mtu 1200 [1:1461(1460)]\n")
    accept, icmp = script.events
    assert accept.timing.blocking_end == 0.1
    assert isinstance(icmp, Packet) and icmp.icmp is not None and icmp.icmp.mtu == 1200
    assert icmp.icmp.quoted is not None and icmp.icmp.quoted.start == 1


@pytest.mark.parametrize(("text", "message"), [
    ("0 frobnicate(3) = 0", "unsupported system call 'frobnicate'"),
    ("0 < SX 0:0(0) win 1", "unknown letter(s) X"),
    ("0 < S 0:10(5) win 1", "not the length 5"),
    ("0 < S 0:0(0) win 70000", "win 70000 is outside 0..65535"),
    ("0 < S 0:0(0) win 1 <md5 1>", "unsupported TCP option 'md5 1'"),
    ("0 < S 0:0(0) tos 3", "unsupported segment field 'tos'"),
    ("0 > . 1:1(0) win 5", "include ACK but no 'ack N'"),
    ("0 close(3)", "needs '= RESULT'"),
    ("0 close(3) = -1", "needs its errno"),
    ("socket(..., SOCK_STREAM, 0) = 3", "expected a time"),
    ("0 `never closed", "must end with a backtick"),
    ("0 > icmp unreachable port_unreachable", "outbound ICMP"),
    ("0 < icmp unreachable frag_needed", "needs 'mtu N'"),
    ("0 close(3, 4) = 0", "close takes 1 arguments"),
    ("0 setsockopt(3, SOL_SOCKET, SO_NOSUCH, [1], 4) = 0", "unknown constant 'SO_NOSUCH'"),
    ("--verbose", "unsupported option line"),
    ("/* never closed", "never closed"),
    ("0 close(3) = -1 ENOSUCH", "unknown errno ENOSUCH"),
    ("700 close(3) = 0", "runs past 600 s"),
    ("0 < S 0:0(0) win 1 <...>", "an inbound one needs its options"),
    ("0 recv(3, ..., 10, MSG_PEEK) = 10", "only flags 0"),
])
def test_bad_scripts_fail_with_file_line_and_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ScriptError) as caught:
        check_script(parse_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n" + text, "bad.pkt"))
    assert str(caught.value).startswith("bad.pkt:2: ")
    assert message in str(caught.value)


def test_a_file_that_cannot_be_read_is_a_script_error(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="cannot read"):
        parse_file(tmp_path / "missing.pkt")
    empty = tmp_path / "empty.pkt"
    empty.write_text("// nothing\n")
    with pytest.raises(ScriptError, match=r"empty\.pkt:1: the script has no events"):
        parse_file(empty)


def test_every_shipped_script_parses() -> None:
    files = sorted(SCRIPTS.rglob("*.pkt"))
    assert len(files) >= 10
    for file in files:
        check_script(parse_file(file))
