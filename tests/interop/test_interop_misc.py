"""Interop between the stack and Linux beyond the experiments: ICMP, ARP, many connections, keepalive,
MSS clamping, offload on and off, and a routed path. Everything runs on real labs (root).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import threading
import time
from typing import Any

import pytest
from pyroute2 import IPRoute

from lab.experiments.close import stack_connection_state
from lab.experiments.kernel_peers import KernelServer, send_shutdown_and_read
from lab.experiments.running import RunningLab
from lab.experiments.stack_answers import counter_value
from lab.kernel.namespaces import inside_namespace
from lab.kernel.sockets import tcp_info
from lab.kernel.transfers import BackgroundCall
from stack.node.apps.content import pattern_sha256

pytestmark = pytest.mark.root

ECHO_PORT = 7  # the pair topology's echo app


def pair_topology(*, mtu: int | None = None, offload: bool | None = None) -> str:
    """The pair topology with the stack serving echo, optionally with a link MTU or an offload switch."""
    link_mtu = f"\n    mtu: {mtu}" if mtu else ""
    offload_key = f", offload: {str(offload).lower()}" if offload is not None else ""
    return f"""
name: pair
nodes:
  h1: {{kind: kernel}}
  s1: {{kind: pystack, apps: [{{app: echo, port: {ECHO_PORT}}}]{offload_key}}}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24{link_mtu}
"""


def kernel_echo_round_trip(lab: RunningLab, node: str, address: str, port: int, size: int) -> dict[str, Any]:
    """A kernel client sends `size` pattern bytes to an echo server, SHUT_WR, reads the echo to EOF."""
    client = lab.kernel_socket(node)
    client.settimeout(30)
    try:
        client.connect((address, port))
        result = send_shutdown_and_read(client, size)
        result["tcp_info"] = tcp_info(client)
        return result
    finally:
        client.close()


def kernel_echo_server(conn: socket.socket) -> dict[str, Any]:
    """Echo until EOF, then close (a kernel-side echo for stack clients)."""
    echoed = 0
    while data := conn.recv(1 << 16):
        conn.sendall(data)
        echoed += len(data)
    conn.close()
    return {"echoed": echoed}


# --- ICMP and ARP ---------------------------------------------------------------------------


def icmp_echo(sock: socket.socket, address: str, ident: int, seq: int, timeout: float) -> float | None:
    """One ICMP echo request from a raw kernel socket; the round-trip time, or None without a reply."""
    payload = struct.pack("!d", time.monotonic()) + bytes(range(48))
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    checksum = internet_checksum(header + payload)
    sock.sendto(struct.pack("!BBHHH", 8, 0, checksum, ident, seq) + payload, (address, 0))
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            packet, (source, _) = sock.recvfrom(2048)
        except TimeoutError:
            return None
        icmp = packet[(packet[0] & 0x0F) * 4:]  # a raw socket hands over the IP header too
        kind, _, _, got_ident, got_seq = struct.unpack_from("!BBHHH", icmp)
        if source == address and kind == 0 and (got_ident, got_seq) == (ident, seq) and icmp[8:] == payload:
            return time.monotonic() - struct.unpack_from("!d", icmp, 8)[0]
    return None


def internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_kernel_ping_to_the_stack_and_arp_both_ways(pair_lab: RunningLab) -> None:
    h1, s1 = pair_lab.node("h1"), pair_lab.node("s1")
    with pair_lab.stack("s1") as stack:
        echoes_before = counter_value(stack.stats(), "IcmpInEchos")
        pinger = icmp_socket(pair_lab, "h1")
        try:
            target = pair_lab.address("s1")
            rtts = [icmp_echo(pinger, target, 0x4E53, seq, timeout=2.0) for seq in range(1, 4)]
        finally:
            pinger.close()
        assert all(rtt is not None for rtt in rtts), f"kernel ping to the stack: {rtts}"
        assert counter_value(stack.stats(), "IcmpInEchos") - echoes_before == 3
        # ARP, kernel side: h1's neighbour table learned the stack's MAC.
        with IPRoute(netns=h1.namespace, flags=0) as ipr:
            neighbours = {n.get("NDA_DST"): n.get("NDA_LLADDR") for n in ipr.neigh("dump")}
        assert neighbours.get(pair_lab.address("s1")) == s1.interfaces[0].mac
        # ARP, stack side: the stack pings the kernel and its table holds h1's MAC.
        replies = stack.ping(pair_lab.address("h1"), count=2, timeout=2.0)
        assert all(reply is not None for reply in replies), f"stack ping to the kernel: {replies}"
        table = stack.request("arp")["neighbours"]
        macs = {str(entry.get("ip", entry.get("address"))): str(entry.get("mac")).lower() for entry in table}
        assert macs.get(pair_lab.address("h1")) == h1.interfaces[0].mac


def icmp_socket(lab: RunningLab, node: str) -> socket.socket:
    """A raw ICMP socket of the node's kernel (what `ping` opens)."""
    with inside_namespace(lab.node(node).namespace):
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


# --- many connections -----------------------------------------------------------------------


def test_100_concurrent_connections_each_exact(pair_lab: RunningLab) -> None:
    count, size = 100, 32 * 1024
    start = threading.Barrier(count, timeout=30)
    results: list[dict[str, Any] | BaseException] = [RuntimeError("not run")] * count
    address = pair_lab.address("s1")

    def one(index: int) -> None:
        try:
            client = pair_lab.kernel_socket("h1")
            client.settimeout(30)
            start.wait()  # every client connects at the same moment
            with client:
                client.connect((address, ECHO_PORT))
                results[index] = send_shutdown_and_read(client, size)
        except BaseException as error:  # reported below, per client
            results[index] = error

    with pair_lab.stack("s1") as stack:
        opens_before = counter_value(stack.stats(), "TcpPassiveOpens")
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        opens = counter_value(stack.stats(), "TcpPassiveOpens") - opens_before
    failures = [f"{i}: {r}" for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {count} clients failed: {failures[:5]}"
    expected = pattern_sha256(size)
    exact = [r for r in results
             if isinstance(r, dict) and r["received_sha256"] == expected == r["sent_sha256"]]
    assert len(exact) == count
    assert opens == count


# --- keepalive -------------------------------------------------------------------------------


@pytest.mark.slow
def test_idle_connections_kept_by_keepalive_for_60_seconds(pair_lab: RunningLab) -> None:
    """Two connections sit idle for 60 s at once, each kept by one side's keepalive:
    - a kernel client with SO_KEEPALIVE (idle 5 s, interval 2 s, 3 probes) to the stack's echo: the
      kernel probes every 5 s and the stack must answer each (three unanswered probes would reset it);
    - the stack's own client with keepalive (5 s / 2 s / 3, set by `config`) to a kernel server: the
      kernel counts the stack's probes as segments in.
    Both are still ESTABLISHED after the minute, and the first still carries data."""
    idle = 60.0
    stack_side = BackgroundCall(stack_keepalive_probes, pair_lab, 7301, idle)
    client = pair_lab.kernel_socket("h1")
    client.settimeout(10)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    with client, pair_lab.stack("s1") as stack:
        client.connect((pair_lab.address("s1"), ECHO_PORT))
        client.sendall(b"ping")
        assert client.recv(16) == b"ping"
        before = tcp_info(client)
        stack_side.start()
        time.sleep(idle)
        after = tcp_info(client)
        rows = stack.ss()["connections"]
        assert after["state"] == "ESTABLISHED"
        assert stack_connection_state(rows, ECHO_PORT, client.getsockname()[1]) == "ESTABLISHED"
        probes = after["segs_out"] - before["segs_out"]
        answers = after["segs_in"] - before["segs_in"]
        assert probes >= 10 and answers >= probes - 1, f"{probes} kernel probes, {answers} answers"
        client.sendall(b"still here")  # the connection carries data after a minute of silence
        assert client.recv(32) == b"still here"
    seen = stack_side.join_result(30)
    assert seen["answer"].get("error") is None and seen["state"] == "ESTABLISHED", seen
    assert seen["segments_in"] >= 10, f"the kernel saw {seen['segments_in']} stack keepalive probes in 60 s"


def test_stack_sends_keepalive_probes_on_an_idle_connection(pair_lab: RunningLab) -> None:
    """The short form of the stack's half of the test above: probes 5 s and 10 s after the handshake (the
    window has slack for a handshake held up by ARP on a fresh lab)."""
    seen = stack_keepalive_probes(pair_lab, 7300, 14.0)
    assert seen["answer"].get("error") is None and seen["state"] == "ESTABLISHED", seen
    assert seen["segments_in"] >= 2, f"the kernel saw {seen['segments_in']} segments from the idle stack"


def stack_keepalive_probes(lab: RunningLab, port: int, idle: float) -> dict[str, Any]:
    """A stack client with keepalive (keepalive_time 5 s, interval 2 s, 3 probes, set by `config`) holds an
    idle connection to a kernel server for `idle` seconds; the server counts the segments it receives
    until just before the stack closes. Returns {"segments_in", "state", "answer"}."""
    from stack.tcp.config import TcpConfig

    seen: dict[str, Any] = {}
    counted = threading.Event()

    def count_segments(conn: socket.socket) -> dict[str, Any]:
        before = tcp_info(conn)
        counted.wait(idle + 30)
        after = tcp_info(conn)
        seen["segments_in"], seen["state"] = after["segs_in"] - before["segs_in"], after["state"]
        while conn.recv(1 << 16):  # the stack's FIN when its hold ends
            pass
        conn.close()
        return seen

    defaults = TcpConfig()
    with (lab.stack("s1", timeout=idle + 60) as stack,
          KernelServer(lab, "h1", port, count_segments) as server):
        stack.config(keepalive_time=5.0, keepalive_intvl=2.0, keepalive_probes=3)
        try:
            holder = BackgroundCall(_stack_hold_with_keepalive, lab, lab.address("h1"), port, idle)
            holder.start()
            time.sleep(idle - 0.5)
            counted.set()
            seen["answer"] = holder.join_result(idle + 30)
            server.result()
        finally:
            counted.set()
            stack.config(keepalive_time=defaults.keepalive_time, keepalive_intvl=defaults.keepalive_intvl,
                         keepalive_probes=defaults.keepalive_probes)
    return seen


def _stack_hold_with_keepalive(lab: RunningLab, address: str, port: int, idle: float) -> dict[str, Any]:
    with lab.stack("s1", timeout=idle + 60) as control:
        return control.connect(address, port, send=0, recv=0, hold=idle, close="close", keepalive=True)


# --- MSS clamping, offload, routing ----------------------------------------------------------


def test_mss_clamped_to_a_1200_byte_link_mtu(make_lab) -> None:
    """On a 1200-byte link both SYNs carry MSS 1160 (1200 - 20 IP - 20 TCP), as tcpdump sees them on the
    wire, and both sides send segments of at most that size."""
    lab = make_lab(pair_topology(mtu=1200))
    capture = lab.popen("h1", ["tcpdump", "-l", "-n", "-i", "eth0", "-c", "2",
                               f"tcp port {ECHO_PORT} and tcp[tcpflags] & tcp-syn != 0"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_capture(capture)
        client = lab.kernel_socket("h1")
        client.settimeout(10)
        client.connect((lab.address("s1"), ECHO_PORT))
        with lab.stack("s1") as stack:
            port = client.getsockname()[1]
            rows = [r for r in stack.ss()["connections"] if r["remote"].endswith(f":{port}")]
        result = send_shutdown_and_read(client, 1 << 20)
        info = tcp_info(client)
        client.close()
        syns, _ = capture.communicate(timeout=10)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait(5)
    assert result["received_sha256"] == result["sent_sha256"] == pattern_sha256(1 << 20)
    offered = [int(m) for m in re.findall(rb"mss (\d+)", syns)]
    assert offered == [1160, 1160], f"MSS options in the SYN and the SYN-ACK: {syns.decode(errors='replace')}"
    # TCP_INFO's MSS figures leave out the 12 B of the timestamp option: 1148 when timestamps are on.
    assert info["advmss"] <= 1160 and info["snd_mss"] <= 1160
    assert rows and rows[0]["mss"] <= 1160, rows  # the stack's effective send MSS


def wait_for_capture(capture: subprocess.Popen[bytes]) -> None:
    """tcpdump says "listening on ..." on stderr once its filter is in place (or exits: EOF)."""
    assert capture.stderr is not None
    seen = []
    for _ in range(10):
        line = capture.stderr.readline()
        seen.append(line)
        if b"listening on" in line or not line:
            break
    assert b"listening on" in seen[-1], f"tcpdump did not start: {b''.join(seen)!r}"


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
def test_same_transfer_with_and_without_offload(make_lab, offload: bool) -> None:
    lab = make_lab(pair_topology(offload=offload))
    with lab.stack("s1") as stack:
        hello = stack.hello()
    assert hello["offload"] is offload, hello.get("offload_reason")
    size = 8 << 20
    result = kernel_echo_round_trip(lab, "h1", lab.address("s1"), ECHO_PORT, size)
    assert result["received"] == size
    assert result["received_sha256"] == result["sent_sha256"] == pattern_sha256(size)


ROUTER_TOPOLOGY = """
name: router
nodes:
  r1: {kind: kernel, sysctls: {net.ipv4.ip_forward: 1}}
  s1: {kind: pystack, gateway: 10.0.1.1, apps: [{app: echo, port: 7}]}
  h2: {kind: kernel, gateway: 10.0.2.1}
links:
  - endpoints: [r1:eth0, s1:eth0]
    subnet: 10.0.1.0/24
  - endpoints: [r1:eth1, h2:eth0]
    subnet: 10.0.2.0/24
"""


def test_stack_and_kernel_across_a_router(make_lab) -> None:
    lab = make_lab(ROUTER_TOPOLOGY)
    size = 1 << 20
    # kernel h2 -> stack s1 across r1
    result = kernel_echo_round_trip(lab, "h2", lab.address("s1"), ECHO_PORT, size)
    assert result["received_sha256"] == result["sent_sha256"] == pattern_sha256(size)
    # stack s1 -> kernel h2 across r1
    with lab.stack("s1") as stack, KernelServer(lab, "h2", 7400, kernel_echo_server) as server:
        answer = stack.connect(lab.address("h2"), 7400, send=size, shutdown=True, recv="eof", timeout=20)
        echoed = server.result()["echoed"]
        replies = stack.ping(lab.address("h2"), count=1, timeout=2.0)
    assert answer.get("error") is None, answer
    assert echoed == size and answer["received"] == size
    assert answer["received_sha256"] == answer["sent_sha256"] == pattern_sha256(size)
    assert replies[0] is not None


def test_hello_describes_the_node(pair_lab: RunningLab) -> None:
    with pair_lab.stack("s1") as stack:
        hello = stack.hello()
    assert hello["node"] == "s1" and hello["address"].split("/")[0] == pair_lab.address("s1")
    assert hello["mac"].lower() == pair_lab.node("s1").interfaces[0].mac
    assert os.path.exists(f"/proc/{hello['pid']}")


# --- the linux profile against the kernel's own defaults ------------------------------------------

#: sysctl (under /proc/sys/net) -> the TcpConfig fields it mirrors.  Only sysctls a new network
#: namespace starts at the kernel's built-in default (not copied from the host's), so the comparison
#: holds whatever the machine's own settings are.
PROFILE_SYSCTLS = {
    "ipv4/tcp_syn_retries": ("syn_retries",),
    "ipv4/tcp_synack_retries": ("synack_retries",),
    "ipv4/tcp_retries1": ("retries1",),
    "ipv4/tcp_retries2": ("retries2",),
    "ipv4/tcp_rfc1337": ("rfc1337",),
    "ipv4/tcp_fin_timeout": ("fin_timeout",),
    "ipv4/tcp_keepalive_time": ("keepalive_time",),
    "ipv4/tcp_keepalive_intvl": ("keepalive_intvl",),
    "ipv4/tcp_keepalive_probes": ("keepalive_probes",),
    "ipv4/tcp_syncookies": ("syncookies",),
    "ipv4/tcp_timestamps": ("timestamps",),
    "ipv4/tcp_sack": ("sack",),
    "ipv4/tcp_window_scaling": ("window_scaling",),
    "ipv4/ip_local_port_range": ("ephemeral_low", "ephemeral_high"),
    "core/somaxconn": ("somaxconn",),
}


def test_linux_profile_is_the_kernels_defaults(pair_lab: RunningLab) -> None:
    """TcpConfig() is the "linux" profile: each field that mirrors a sysctl holds what the kernel itself
    starts a namespace with (h1's), among them tcp_syn_retries = 6, which gives up a connect short of
    RFC 9293's 3 minutes (MUST-23), and tcp_rfc1337 = 0, which lets a RST end TIME_WAIT."""
    from stack.tcp.config import TcpConfig

    paths = [f"/proc/sys/net/{name}" for name in PROFILE_SYSCTLS]
    done = pair_lab.exec("h1", ["cat", *paths], timeout=10)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    lines = done.stdout.decode().splitlines()
    assert len(lines) == len(paths), lines
    profile = TcpConfig.profile("linux")
    differences = []
    for (name, fields), line in zip(PROFILE_SYSCTLS.items(), lines, strict=True):
        kernel = [int(value) for value in line.split()]
        ours = [int(getattr(profile, field)) for field in fields]
        if kernel != ours:
            differences.append(f"net.{name.replace('/', '.')}: kernel {kernel}, TcpConfig {ours}")
    assert not differences, "; ".join(differences)
