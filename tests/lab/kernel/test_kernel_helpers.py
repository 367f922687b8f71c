"""The lab's pure kernel-side helpers: TCP_INFO parsing, tracefs lines, the silent-address eBPF program."""

from __future__ import annotations

import os
import socket
from pathlib import Path

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


def test_a_namespace_may_default_only_to_an_allowed_congestion_control(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.kernel import capabilities

    (tmp_path / "allowed").write_text("reno bbr\n")
    (tmp_path / "available").write_text("reno bbr cubic\n")
    monkeypatch.setattr(capabilities, "ALLOWED_CONGESTION", tmp_path / "allowed")
    monkeypatch.setattr(capabilities, "AVAILABLE_CONGESTION", tmp_path / "available")
    assert capabilities.namespace_congestion_problem("bbr") is None
    restricted = capabilities.namespace_congestion_problem("cubic")
    assert restricted is not None and "tcp_allowed_congestion_control" in restricted
    assert "'reno bbr cubic'" in restricted and "TCP_CONGESTION" in restricted
    missing = capabilities.namespace_congestion_problem("vegas")
    assert missing is not None and "not available" in missing


@pytest.mark.root
def test_lab_up_refuses_a_restricted_default_congestion_control_before_creating(lab_name: str) -> None:
    from lab.build import builder
    from lab.build.state import LabError
    from lab.kernel.capabilities import ALLOWED_CONGESTION, AVAILABLE_CONGESTION
    from lab.topology import plan_from_data

    restricted = [a for a in AVAILABLE_CONGESTION.read_text().split()
                  if a not in ALLOWED_CONGESTION.read_text().split()]
    if not restricted:
        pytest.skip("the host allows every available congestion control in namespaces")
    plan = plan_from_data({"name": lab_name, "nodes": {
        "h1": {"kind": "kernel", "sysctls": {"net.ipv4.tcp_congestion_control": restricted[0]}},
        "h2": {"kind": "kernel"}},
        "links": [{"endpoints": ["h1:eth0", "h2:eth0"], "subnet": "10.201.0.0/24"}]})
    with pytest.raises(LabError, match="tcp_allowed_congestion_control") as caught:
        builder.up(plan)
    assert caught.value.exit_code == 2
    assert not [n for n in os.listdir("/var/run/netns") if n.startswith(f"{lab_name}-")]


@pytest.mark.root
def test_a_socket_in_a_lab_namespace_may_use_any_available_congestion_control(lab_name: str) -> None:
    from lab.build import builder
    from lab.kernel.capabilities import AVAILABLE_CONGESTION
    from lab.kernel.sockets import congestion_of, namespace_socket
    from lab.topology.chain import chain_plan

    plan = chain_plan(2, name=lab_name)
    builder.up(plan)
    for algorithm in AVAILABLE_CONGESTION.read_text().split():  # restricted ones included: we are root
        with namespace_socket(plan.nodes[0].namespace, congestion=algorithm) as sock:
            assert congestion_of(sock) == algorithm
