"""Kernel sockets inside a node's namespace, and what TCP_INFO and the SNMP counters say about them.

A socket belongs to the network namespace of the thread that created it, for its whole life.
`namespace_socket` moves the calling thread into the node's namespace for the one `socket()`
call and back (a few microseconds; `pyroute2.netns.create_socket` forks a helper per socket,
milliseconds, too slow for an accept-rate benchmark). The socket is then usable from any thread.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

from lab.kernel.namespaces import inside_namespace

# Linux's enum in include/net/tcp_states.h, by the names `ss` prints (and the stack's TcpState uses).
KERNEL_TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
    7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}

# tcpi_options bits (include/uapi/linux/tcp.h).
TCPI_OPT_TIMESTAMPS = 1
TCPI_OPT_SACK = 2
TCPI_OPT_WSCALE = 4
TCPI_OPT_ECN = 8

# struct tcp_info up to tcpi_total_retrans (present since Linux 2.6), then later fields by size.
_TCP_INFO_HEAD = struct.Struct("<8B24I")
_HEAD_FIELDS = (
    "rto", "ato", "snd_mss", "rcv_mss", "unacked", "sacked", "lost", "retrans", "fackets",
    "last_data_sent", "last_ack_sent", "last_data_recv", "last_ack_recv", "pmtu", "rcv_ssthresh",
    "rtt", "rttvar", "snd_ssthresh", "snd_cwnd", "advmss", "reordering", "rcv_rtt", "rcv_space",
    "total_retrans",
)
# (struct code, name) after the head, in the kernel's order; parsed as far as the kernel filled.
_TAIL_FIELDS = (
    ("Q", "pacing_rate"), ("Q", "max_pacing_rate"), ("Q", "bytes_acked"), ("Q", "bytes_received"),
    ("I", "segs_out"), ("I", "segs_in"), ("I", "notsent_bytes"), ("I", "min_rtt"),
    ("I", "data_segs_in"), ("I", "data_segs_out"), ("Q", "delivery_rate"), ("Q", "busy_time"),
    ("Q", "rwnd_limited"), ("Q", "sndbuf_limited"), ("I", "delivered"), ("I", "delivered_ce"),
    ("Q", "bytes_sent"), ("Q", "bytes_retrans"), ("I", "dsack_dups"), ("I", "reord_seen"),
    ("I", "rcv_ooopack"), ("I", "snd_wnd"), ("I", "rcv_wnd"),
)
TCP_INFO_BUFFER = 512


def parse_tcp_info(raw: bytes) -> dict[str, Any]:
    """struct tcp_info as a dict; times in microseconds as the kernel gives them (rto, rtt, ...)."""
    if len(raw) < _TCP_INFO_HEAD.size:
        raise ValueError(f"tcp_info of {len(raw)} bytes, expected at least {_TCP_INFO_HEAD.size}")
    head = _TCP_INFO_HEAD.unpack_from(raw)
    state, ca_state, retransmits, probes, backoff, options, wscale, _flags = head[:8]
    info: dict[str, Any] = {
        "state": KERNEL_TCP_STATES.get(state, str(state)), "ca_state": ca_state,
        "retransmits": retransmits, "probes": probes, "backoff": backoff,
        "options": {
            "timestamps": bool(options & TCPI_OPT_TIMESTAMPS), "sack": bool(options & TCPI_OPT_SACK),
            "wscale": bool(options & TCPI_OPT_WSCALE), "ecn": bool(options & TCPI_OPT_ECN),
        },
        "snd_wscale": wscale & 0x0F, "rcv_wscale": wscale >> 4,
    }
    info.update(zip(_HEAD_FIELDS, head[8:], strict=True))
    offset = _TCP_INFO_HEAD.size
    for code, name in _TAIL_FIELDS:
        size = struct.calcsize(code)
        if offset + size > len(raw):
            break
        (info[name],) = struct.unpack_from("<" + code, raw, offset)
        offset += size
    return info


def tcp_info(sock: socket.socket) -> dict[str, Any]:
    """TCP_INFO of a kernel TCP socket, parsed (see `parse_tcp_info`)."""
    return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BUFFER))


def namespace_socket(namespace: str, family: int = socket.AF_INET,
                     type: int = socket.SOCK_STREAM, *, congestion: str | None = None) -> socket.socket:
    """A kernel socket created inside `namespace` (it stays there, whatever thread uses it).

    `congestion` sets TCP_CONGESTION on it (and so on what a listener accepts): a namespace may only
    default to an algorithm the host allows (net.ipv4.tcp_allowed_congestion_control), but a socket
    of a process with CAP_NET_ADMIN may use any the kernel has, so a lab compares like with like."""
    with inside_namespace(namespace):
        sock = socket.socket(family, type)
    if congestion is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
        except OSError as error:
            sock.close()
            raise OSError(error.errno, f"TCP_CONGESTION {congestion}: {error.strerror}") from None
    return sock


def congestion_of(sock: socket.socket) -> str:
    """The socket's congestion control algorithm (TCP_CONGESTION)."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    return raw.split(b"\0", 1)[0].decode()


def parse_proc_counters(text: str) -> dict[str, int]:
    """/proc/net/snmp or /proc/net/netstat text as {"TcpRetransSegs": n, "TcpExtListenOverflows": m, ...}.

    Both files hold pairs of lines, a header ("TcpExt: SyncookiesSent ListenOverflows ...") and its
    values ("TcpExt: 0 3 ..."); each counter is named by its group and field, as `nstat` names it."""
    lines = text.splitlines()
    counters: dict[str, int] = {}
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        group, _, names = header.partition(":")
        for name, value in zip(names.split(), values.partition(":")[2].split(), strict=False):
            try:
                counters[f"{group}{name}"] = int(value)
            except ValueError:
                continue  # a malformed field is skipped, not guessed
    return counters


def _proc_net_counters(namespace: str, file: str) -> dict[str, int]:
    # /proc/thread-self/net shows the calling thread's namespace.
    with inside_namespace(namespace), open(f"/proc/thread-self/net/{file}", encoding="ascii") as counters:
        return parse_proc_counters(counters.read())


def kernel_snmp(namespace: str) -> dict[str, int]:
    """The namespace's /proc/net/snmp counters as {"TcpRetransSegs": n, ...} (what `nstat` reads)."""
    return _proc_net_counters(namespace, "snmp")


def kernel_netstat(namespace: str) -> dict[str, int]:
    """The namespace's /proc/net/netstat counters as {"TcpExtListenOverflows": n, ...}: the TcpExt
    group (ListenOverflows, ListenDrops, SyncookiesSent, TCPFastRetrans, TCPTimeouts, ...) and IpExt."""
    return _proc_net_counters(namespace, "netstat")


def counter_deltas(before: dict[str, int], after: dict[str, int], names: tuple[str, ...]) -> dict[str, int]:
    """How much each named counter grew between two readings (0 for a counter the kernel lacks)."""
    return {name: after.get(name, 0) - before.get(name, 0) for name in names}


class StatePoller(threading.Thread):
    """The fallback when tracefs is unavailable: TCP_INFO polled every `interval` seconds.

    Records each change of state or of total_retrans with its `time.monotonic()` time. Coarser than
    the tracepoints (a state shorter than the interval can be missed) and it sees one socket only
    from the moment polling starts; experiments say so when they use it.
    """

    def __init__(self, sock: socket.socket, interval: float = 0.0005, limit_seconds: float = 60.0) -> None:
        super().__init__(daemon=True)
        self._sock = sock
        self._interval = interval
        self._limit = limit_seconds
        self._stop_event = threading.Event()
        self.samples: list[tuple[float, str, int]] = []  # (time, state, total_retrans)

    def run(self) -> None:
        deadline = time.monotonic() + self._limit
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            try:
                info = tcp_info(self._sock)
            except OSError:
                break  # the socket was closed: its last state stays the last one seen
            sample = (time.monotonic(), info["state"], info["total_retrans"])
            if not self.samples or self.samples[-1][1:] != sample[1:]:
                self.samples.append(sample)
            self._stop_event.wait(self._interval)

    def finish(self) -> list[str]:
        """Stop polling; the sequence of distinct states seen."""
        self._stop_event.set()
        self.join(2.0)
        states: list[str] = []
        for _, state, _ in self.samples:
            if not states or states[-1] != state:
                states.append(state)
        return states

    def retransmission_times(self) -> list[float]:
        """Times at which total_retrans went up (one entry per retransmission)."""
        times: list[float] = []
        previous = 0
        for moment, _, total in self.samples:
            times.extend([moment] * max(0, total - previous))
            previous = total
        return times


def listening_socket(namespace: str, address: tuple[str, int], backlog: int = 128,
                     timeout: float | None = 30.0, *, congestion: str | None = None) -> socket.socket:
    """A kernel listener inside `namespace` (SO_REUSEADDR, so a run right after another binds)."""
    listener = namespace_socket(namespace, congestion=congestion)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(backlog)
        listener.settimeout(timeout)
    except OSError:
        listener.close()
        raise
    return listener
