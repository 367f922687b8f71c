"""Parsing /proc/net/netstat and /proc/net/snmp, the raw SYN frame the two-queues lab sends, and the ports
tutorials draw for their tracepoint filters."""

from __future__ import annotations

from lab.kernel.rawsyn import SYN_OPTIONS, syn_frame
from lab.kernel.sockets import counter_deltas, parse_proc_counters
from lab.kernel.tracepoints import TRACEABLE_PORTS, traceable_port
from stack.wire.ethernet import parse_ethernet
from stack.wire.ipv4 import parse_ipv4
from stack.wire.tcp import TcpFlags, parse_tcp

NETSTAT = """TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed ListenOverflows ListenDrops TCPTimeouts
TcpExt: 4 1 0 2 3 7
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
"""


def test_netstat_counters_named_as_nstat_names_them() -> None:
    counters = parse_proc_counters(NETSTAT)
    assert counters["TcpExtSyncookiesSent"] == 4
    assert counters["TcpExtListenOverflows"] == 2
    assert counters["TcpExtListenDrops"] == 3
    assert counters["TcpExtTCPTimeouts"] == 7
    assert counters["IpExtInNoRoutes"] == 0


def test_snmp_negative_values_and_bad_fields() -> None:
    text = "Tcp: RtoAlgorithm MaxConn RetransSegs Bad\nTcp: 1 -1 12 x\n"
    assert parse_proc_counters(text) == {"TcpRtoAlgorithm": 1, "TcpMaxConn": -1, "TcpRetransSegs": 12}


def test_truncated_text_keeps_what_is_whole() -> None:
    assert parse_proc_counters("TcpExt: A B\n") == {}
    assert parse_proc_counters("") == {}
    assert parse_proc_counters("TcpExt: A B\nTcpExt: 5\n") == {"TcpExtA": 5}


def test_counter_deltas_of_missing_counters_are_zero() -> None:
    before = {"TcpExtListenDrops": 2}
    after = {"TcpExtListenDrops": 5, "TcpExtSyncookiesSent": 1}
    assert counter_deltas(before, after, ("TcpExtListenDrops", "TcpExtSyncookiesSent", "TcpExtNone")) == {
        "TcpExtListenDrops": 3, "TcpExtSyncookiesSent": 1, "TcpExtNone": 0}


def test_raw_syn_frame_is_a_valid_syn_with_linux_options() -> None:
    frame = syn_frame("02:00:5e:00:53:02", "02:00:00:00:00:01", ("10.0.0.250", 40001), ("10.0.0.1", 5201),
                      isn=12345)
    ethernet = parse_ethernet(frame)
    assert ethernet.ethertype == 0x0800
    packet = parse_ipv4(ethernet.payload)  # verifies the IPv4 header checksum
    segment = parse_tcp(packet.payload, packet.src, packet.dst)  # and the TCP checksum
    assert segment.flags == TcpFlags.SYN
    assert (segment.src_port, segment.dst_port, segment.seq) == (40001, 5201, 12345)
    assert segment.options.mss == SYN_OPTIONS.mss and segment.options.sack_permitted
    assert segment.options.wscale == 7 and segment.options.timestamp is not None


def test_traceable_ports_stay_below_the_ephemeral_range() -> None:
    ports = {traceable_port() for _ in range(200)}
    assert all(TRACEABLE_PORTS[0] <= port < TRACEABLE_PORTS[1] < 32768 for port in ports)
    assert len(ports) > 1
