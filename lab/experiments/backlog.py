"""`backlog`: a listener that never accepts, and more clients than its backlog, on both sides.

The seeds' two queues: the SYN queue holds half-open connections, the accept queue completed ones that
accept() has not taken. Linux admits `backlog + 1` connections to the accept queue (it drops a SYN only
when the queue holds *more* than the backlog) and then drops further SYNs silently: the client is not
refused, it retransmits its SYN with exponential backoff until a slot frees or it gives up (ETIMEDOUT).
This experiment shows both halves side by side:

1. a stack listener (`listen app none accept false`) and kernel clients from the kernel node: which
   connect, which sit in SYN_SENT retransmitting, which time out; the stack's `tables` queue lengths.
2. a kernel listener that never accepts and stack clients: the kernel's queue lengths, read with
   NETLINK_SOCK_DIAG (what `ss -ltn` shows: Recv-Q = accept queue, Send-Q = backlog).

Both clients use one SYN retransmission (kernel TCP_SYNCNT=1, stack `syn_retries=1`), so a dropped
client times out after 1 + 2 = 3 s on both sides and the whole experiment takes about 7 s.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from typing import Any, ClassVar

from lab.experiments.base import Check, Experiment, ExperimentResult, RunningLab
from lab.kernel import KERNEL_TCP_STATES, inside_namespace
from lab.stackctl import StackClient, StackCommandFailed, StackControlError

# What one step of an experiment may fail with at run time: a kernel socket error or timeout, or the
# stack's control socket failing. The step becomes a failed check and the experiment goes on; bad input
# (ExperimentError) is not caught, it is exit 2.
STEP_ERRORS = (OSError, StackControlError, StackCommandFailed)


def step_failed(step: str, error: BaseException) -> Check:
    return Check(f"{step}: ran to the end", False, f"{type(error).__name__}: {error}")


# --------------------------------------------------------------------------------------------
# The kernel's sockets of one namespace, through NETLINK_SOCK_DIAG (as `ss -tan` reads them)
# --------------------------------------------------------------------------------------------

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
ALL_STATES = 0xFFFFFFFF
_NLMSG_HEADER = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid (48 bytes, all zero: no filter).
_DIAG_REQUEST = struct.Struct("=BBBxI48x")
# inet_diag_msg, after family/state/timer/retrans (4 bytes) and the socket id (48 bytes).
_DIAG_PORTS = struct.Struct("!HH")
_DIAG_TAIL = struct.Struct("=IIIII")  # expires (ms), rqueue, wqueue, uid, inode
_DIAG_MESSAGE_LEN = 72

@dataclass(frozen=True, slots=True)
class KernelSocket:
    """One row of `ss -tan` in a namespace. For a listener, recv_queue is the accept queue's length and
    send_queue the backlog; for a connection they are the bytes queued each way."""

    state: str
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    recv_queue: int
    send_queue: int
    retransmits: int  # icsk_retransmits: retransmissions of the segment now at the head (SYNs in SYN_SENT)
    timer_ms: int  # time left on the socket's timer (TIME_WAIT: until it goes away)


def kernel_tcp_sockets(namespace: str) -> list[KernelSocket]:
    """Every IPv4 TCP socket of `namespace`, listeners, request sockets and TIME_WAIT included."""
    with inside_namespace(namespace):  # a netlink socket answers for the namespace it was made in
        diag = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        diag.settimeout(5)
        request = _DIAG_REQUEST.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, ALL_STATES)
        header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY,
                                    NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        diag.sendall(header + request)
        return read_sock_diag_dump(diag)
    finally:
        diag.close()


def read_sock_diag_dump(diag: socket.socket) -> list[KernelSocket]:
    """The rows of one SOCK_DIAG_BY_FAMILY dump, read until NLMSG_DONE (an NLMSG_ERROR is an OSError)."""
    found: list[KernelSocket] = []
    while True:
        data = diag.recv(1 << 16)
        offset = 0
        while offset + _NLMSG_HEADER.size <= len(data):
            length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
            if length < _NLMSG_HEADER.size:
                raise OSError(errno.EPROTO, "sock_diag: malformed netlink message")
            if kind == NLMSG_DONE:
                return found
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + _NLMSG_HEADER.size)
                raise OSError(-code, f"sock_diag: {errno.errorcode.get(-code, code)}")
            if kind == SOCK_DIAG_BY_FAMILY and length >= _NLMSG_HEADER.size + _DIAG_MESSAGE_LEN:
                found.append(_parse_diag_message(data, offset + _NLMSG_HEADER.size))
            offset += (length + 3) & ~3


def _parse_diag_message(data: bytes, at: int) -> KernelSocket:
    state, timer, retrans = data[at + 1], data[at + 2], data[at + 3]
    sport, dport = _DIAG_PORTS.unpack_from(data, at + 4)
    src = str(IPv4Address(data[at + 8:at + 12]))
    dst = str(IPv4Address(data[at + 24:at + 28]))
    expires, rqueue, wqueue, _, _ = _DIAG_TAIL.unpack_from(data, at + 52)
    return KernelSocket(KERNEL_TCP_STATES.get(state, str(state)), src, sport, dst, dport, rqueue, wqueue,
                        retrans, expires if timer else 0)


def kernel_listener(namespace: str, port: int) -> KernelSocket | None:
    for entry in kernel_tcp_sockets(namespace):
        if entry.state == "LISTEN" and entry.local_port == port:
            return entry
    return None


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------

TCP_SYNCNT = getattr(socket, "TCP_SYNCNT", 7)
# Gaps between clients, so the first backlog+1 SYNs are the ones that get in (deterministic order).
CLIENT_GAP_SECONDS = 0.05
# When to look at the queues: after the first SYN retransmission (1 s) and before the timeout (3 s).
LOOK_AT_SECONDS = 2.0


def client_outcome_counts(outcomes: list[str]) -> dict[str, int]:
    """{"connected": n, "ETIMEDOUT": m, ...}: what the clients saw, by kind."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def judge_listener_side(side: str, backlog: int, clients: int, accept_queue: int,
                        outcomes: list[str], syn_retransmissions: list[int]) -> list[Check]:
    """The verdicts for one side: the accept queue holds backlog+1, the rest of the clients are left to
    retransmit their SYNs and time out (never refused: a full listener drops, it does not reset).

    `outcomes[i]` and `syn_retransmissions[i]` belong to client i."""
    admitted = min(clients, backlog + 1)
    counts = client_outcome_counts(outcomes)
    dropped = clients - admitted
    retransmitted = sorted(n for n, outcome in zip(syn_retransmissions, outcomes, strict=True)
                           if outcome != "connected")
    return [
        Check(f"{side}: accept queue holds backlog+1",
              accept_queue == admitted,
              f"backlog {backlog}, {clients} clients, accept queue {accept_queue} (expected {admitted})"),
        Check(f"{side}: clients beyond the queue time out, not refused",
              counts.get("connected", 0) == admitted and counts.get("ETIMEDOUT", 0) == dropped,
              f"outcomes {counts} (expected {admitted} connected, {dropped} ETIMEDOUT)"),
        Check(f"{side}: dropped clients retransmitted their SYN",
              len(retransmitted) == dropped and (dropped == 0 or min(retransmitted) >= 1),
              f"SYN retransmissions of the {dropped} dropped clients: {retransmitted}"),
    ]


class BacklogExperiment(Experiment):
    name = "backlog"
    summary = "a listener that never accepts, more clients than its backlog: stack and Linux side by side"
    options: ClassVar[dict[str, tuple[Any, str]]] = {
        "backlog": (2, "listen() backlog of both listeners"),
        "clients": (5, "clients per listener (more than backlog+1 to see drops)"),
        "port": (5100, "stack listener port; the kernel listener uses port+1"),
    }

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        kernel_node, stack_node = lab.first("kernel"), lab.first("pystack")
        backlog, clients, port = options["backlog"], options["clients"], options["port"]
        checks: list[Check] = []
        metrics: dict[str, Any] = {"backlog": backlog, "clients": clients}
        sides: dict[str, dict[str, Any]] = {}
        try:
            with lab.stack(stack_node) as stack:
                sides["stack listener"] = stack_listener_vs_kernel_clients(
                    lab, stack, kernel_node, stack_node, port, backlog, clients)
        except STEP_ERRORS as error:
            checks.append(step_failed("stack listener, kernel clients", error))
        try:
            sides["kernel listener"] = kernel_listener_vs_stack_clients(
                lab, kernel_node, stack_node, port + 1, backlog, clients)
        except STEP_ERRORS as error:
            checks.append(step_failed("kernel listener, stack clients", error))
        for side, seen in sides.items():
            metrics[side.replace(" ", "_")] = seen
            checks += judge_listener_side(side, backlog, clients, seen["accept_queue"], seen["outcomes"],
                                          seen["syn_retransmissions"])
        if "stack listener" in sides:
            seen = sides["stack listener"]
            pairs = zip(seen["syn_retransmissions"], seen["outcomes"], strict=True)
            dropped_syns = sum(resent + 1 for resent, outcome in pairs if outcome != "connected")
            checks.append(Check("stack listener: every dropped SYN counted as ListenOverflows",
                                seen["listen_overflows"] >= dropped_syns,
                                f"TcpExtListenOverflows +{seen['listen_overflows']} for {dropped_syns} SYNs "
                                f"sent past the full queue; SYN queue {seen['syn_queue']}"))
        if len(sides) == 2:
            ours, linux = sides["stack listener"], sides["kernel listener"]
            checks.append(Check(
                "both listeners admit the same number and drop the rest alike",
                ours["accept_queue"] == linux["accept_queue"]
                and sorted(ours["outcomes"]) == sorted(linux["outcomes"]),
                f"accept queue stack {ours['accept_queue']} / kernel {linux['accept_queue']}; a full accept "
                "queue drops the SYN (no RST): the client's SYN backoff decides when it gives up",
            ))
        return ExperimentResult.from_checks(self.name, checks, metrics)


def stack_listener_vs_kernel_clients(lab: RunningLab, stack: StackClient, kernel_node: str,
                                     stack_node: str, port: int, backlog: int,
                                     clients: int) -> dict[str, Any]:
    """Part 1: kernel clients (TCP_SYNCNT=1) against a stack listener that never accepts."""
    address = lab.address(stack_node)
    namespace = lab.node(kernel_node).namespace
    # Resolve ARP both ways first: a kernel SYN held back for ARP would leave with the later ones in one
    # burst, all reaching the SYN queue before the accept queue fills, and no SYN would be dropped.
    stack.ping(lab.address(kernel_node), count=1, timeout=1.0)
    overflows_before = counter_value(stack.stats(), "TcpExtListenOverflows")
    stack.listen(port, app="none", backlog=backlog, accept=False)
    sockets: list[socket.socket] = []
    try:
        for _ in range(clients):
            client = lab.kernel_socket(kernel_node)
            sockets.append(client)
            client.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, 1)
            client.setblocking(False)
            client.connect_ex((address, port))
            time.sleep(CLIENT_GAP_SECONDS)
        time.sleep(max(0.0, LOOK_AT_SECONDS - clients * CLIENT_GAP_SECONDS))
        listener = stack_listener_row(stack.tables(), port)
        by_port = {s.local_port: s for s in kernel_tcp_sockets(namespace) if s.remote_port == port}
        local_ports = [s.getsockname()[1] for s in sockets]
        retransmissions = [by_port[p].retransmits if p in by_port else -1 for p in local_ports]
        states_seen = [by_port[p].state if p in by_port else "gone" for p in local_ports]
        outcomes = wait_for_connects(sockets, deadline=time.monotonic() + 3.0)
        overflows = counter_value(stack.stats(), "TcpExtListenOverflows") - overflows_before
    finally:
        for client in sockets:
            client.close()
        stack.close_listener(port)
    return {"accept_queue": listener.get("accept_queue", -1), "syn_queue": listener.get("syn_queue", -1),
            "backlog_stored": listener.get("backlog", -1), "outcomes": outcomes,
            "states_at_2s": states_seen, "syn_retransmissions": retransmissions,
            "listen_overflows": overflows}


def wait_for_connects(sockets: list[socket.socket], *, deadline: float) -> list[str]:
    """Each non-blocking connect's outcome: "connected" or the errno name it failed with."""
    outcomes: dict[int, str] = {}
    while len(outcomes) < len(sockets) and time.monotonic() < deadline:
        waiting = [s for i, s in enumerate(sockets) if i not in outcomes]
        _, writable, _ = select.select([], waiting, [], max(0.0, deadline - time.monotonic()))
        for client in writable:
            code = client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            outcome = "connected" if code == 0 else errno.errorcode.get(code, str(code))
            outcomes[sockets.index(client)] = outcome
    return [outcomes.get(i, "pending") for i in range(len(sockets))]


def stack_listener_row(tables: dict[str, Any], port: int) -> dict[str, Any]:
    for row in tables.get("listening", []):
        if endpoint_port(row.get("local", "")) == port or row.get("port") == port:
            return row
    return {}


# --------------------------------------------------------------------------------------------
# Reading the stack's side: counters and trace events from the control socket
# --------------------------------------------------------------------------------------------


def endpoint_port(endpoint: object) -> int | None:
    """The port of an "ip:port" endpoint string, as the control socket writes them."""
    _, _, port = str(endpoint).rpartition(":")
    return int(port) if port.isdigit() else None


def counter_value(counters: dict[str, Any], name: str) -> int:
    """A counter from `stats` by its nstat name ("TcpExtListenOverflows", "TcpRetransSegs"), whether the
    node groups counters (tcp: {...}) or not and whether it keeps the Tcp/TcpExt prefix; 0 when absent."""
    bare = name.removeprefix("TcpExt") if name.startswith("TcpExt") else name.removeprefix("Tcp")
    for key in (name, bare, f"Tcp{bare}", f"TcpExt{bare}"):
        value = counters.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    for group in counters.values():
        if isinstance(group, dict):
            found = counter_value(group, name)
            if found:
                return found
    return 0


def event_ports(event: dict[str, Any]) -> tuple[int | None, int | None]:
    """(local port, remote port) of a stack trace event."""
    local = event.get("local_port", endpoint_port(event.get("local", "")))
    remote = event.get("remote_port", endpoint_port(event.get("remote", "")))
    return local, remote


def read_trace(stack: StackClient, since: int) -> tuple[list[dict[str, Any]], int]:
    """Trace events after `since`, and the cursor to pass next time."""
    answer = stack.trace(since)
    return list(answer.get("events", [])), int(answer.get("next", since))


def trace_cursor(stack: StackClient) -> int:
    """Where the trace ring is now: events after this are the experiment's own."""
    return read_trace(stack, 0)[1]


def retransmissions_by_local_port(events: list[dict[str, Any]], remote_port: int,
                                  name: str = "tcp_retransmit_skb") -> dict[int, int]:
    """How many `name` events each connection to `remote_port` logged, by its local port."""
    counts: dict[int, int] = {}
    for event in events:
        local, remote = event_ports(event)
        if event.get("name") == name and remote == remote_port and local is not None:
            counts[local] = counts.get(local, 0) + 1
    return counts


def kernel_listener_vs_stack_clients(lab: RunningLab, kernel_node: str, stack_node: str, port: int,
                                     backlog: int, clients: int) -> dict[str, Any]:
    """Part 2: stack clients (syn_retries=1) against a kernel listener that never accepts."""
    from stack.tcp.config import TcpConfig

    namespace = lab.node(kernel_node).namespace
    address = lab.address(kernel_node)
    listener = lab.kernel_socket(kernel_node)
    results: list[dict[str, Any]] = [{} for _ in range(clients)]
    hold = 3.5  # admitted clients stay connected past the moment we read the queues

    def client(index: int) -> None:
        with lab.stack(stack_node, timeout=15.0) as control:
            results[index] = control.connect(address, port, send=0, recv=0, timeout=6.0, hold=hold)

    with lab.stack(stack_node) as stack:
        cursor = trace_cursor(stack)
        stack.config(syn_retries=1)
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((address, port))
            listener.listen(backlog)
            for thread in threads:
                thread.start()
                time.sleep(CLIENT_GAP_SECONDS)
            time.sleep(max(0.0, LOOK_AT_SECONDS - clients * CLIENT_GAP_SECONDS))
            row = kernel_listener(namespace, port)
            for thread in threads:
                thread.join(timeout=hold + 15.0)
        finally:
            stack.config(syn_retries=TcpConfig().syn_retries)
            listener.close()
        events, _ = read_trace(stack, cursor)
    outcomes = [connect_outcome(r) for r in results]
    by_port = retransmissions_by_local_port(events, port)
    admitted_ports = {endpoint_port(r.get("local")) for r in results if r and not r.get("error")}
    # A failed connect's answer does not name its ephemeral port: the trace does, for every SYN resent.
    dropped_counts = iter(sorted(n for p, n in by_port.items() if p not in admitted_ports))
    retransmissions = [by_port.get(endpoint_port(r.get("local")) or -1, 0) if outcome == "connected"
                       else next(dropped_counts, 0) for r, outcome in zip(results, outcomes, strict=True)]
    return {"accept_queue": row.recv_queue if row else -1, "backlog_stored": row.send_queue if row else -1,
            "listener": asdict(row) if row else None, "outcomes": outcomes,
            "syn_retransmissions": retransmissions,
            "connect_seconds": [r.get("connect_seconds") for r in results]}


def connect_outcome(result: dict[str, Any]) -> str:
    """"connected", the errno name a stack `connect` failed with, or "no answer" (the request failed)."""
    if not result:
        return "no answer"
    return str(result["error"]) if result.get("error") else "connected"
