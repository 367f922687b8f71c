"""The lab's pure kernel-side helpers: TCP_INFO parsing, tracefs lines, the silent-address eBPF program."""

from __future__ import annotations

import socket

import pytest

from lab.kernel.silent import drop_program
from lab.kernel.sockets import parse_tcp_info, tcp_info
from lab.kernel.tracepoints import connection_events, parse_trace_line, port_filter, state_sequence


def test_tcp_info_of_a_real_loopback_connection() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        info = tcp_info(client)
        assert info["state"] == "ESTABLISHED"
        assert info["options"]["timestamps"] and info["options"]["sack"] and info["options"]["wscale"]
        assert info["snd_mss"] > 0 and info["rto"] >= 200_000  # microseconds
        assert tcp_info(listener)["state"] == "LISTEN"
    finally:
        for sock in (client, server, listener):
            sock.close()
    with pytest.raises(ValueError, match="tcp_info of 10 bytes"):
        parse_tcp_info(bytes(10))


def test_trace_lines_parse_and_select_one_connection() -> None:
    def state_line(time: str, sport: int, old: str, new: str) -> str:
        return (f"  <idle>-0 [000] ..s1. {time}: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP "
                f"sport={sport} dport=80 saddr=10.0.0.1 daddr=10.0.0.2 saddrv6=::1 daddrv6=::1 "
                f"oldstate=TCP_{old} newstate=TCP_{new}")

    lines = [
        "# tracer: nop",
        state_line("100.000100", 0, "CLOSE", "SYN_SENT"),  # before the ephemeral port is chosen
        state_line("100.000300", 4000, "SYN_SENT", "ESTABLISHED"),
        state_line("100.000400", 4001, "SYN_SENT", "ESTABLISHED"),  # another connection
        "  python-9 [001] ..... 100.000500: tcp_send_reset: skbaddr=0 skaddr=0 src=10.0.0.2:80 "
        "dest=10.0.0.1:4002 state=UNKNOWN reason=NO_SOCKET",
    ]
    events = [e for e in map(parse_trace_line, lines) if e is not None]
    assert len(events) == 4 and events[0].time == 100.0001
    assert events[3].fields["saddr"] == "10.0.0.2" and events[3].ports == (80, 4002)
    mine = connection_events(events, ("10.0.0.1", 4000), ("10.0.0.2", 80))
    assert state_sequence(mine) == ["CLOSE", "SYN_SENT", "ESTABLISHED"]
    assert port_filter([80, 7, 80]) == "sport == 7 || dport == 7 || sport == 80 || dport == 80"


def test_the_silent_address_program_is_nine_instructions_with_the_address() -> None:
    program = drop_program(__import__("ipaddress").IPv4Address("10.0.0.250"))
    assert len(program) == 9 * 8
    assert program[4 * 8 + 4:4 * 8 + 8] == (0x0A0000FA).to_bytes(4, "little")
    high = drop_program(__import__("ipaddress").IPv4Address("192.168.1.1"))  # above 2**31: signed imm
    assert high[4 * 8 + 4:4 * 8 + 8] == (0xC0A80101).to_bytes(4, "little")
