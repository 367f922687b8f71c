"""`close`: how TCP connections end between the stack and Linux, seen from both sides.

Six exchanges, each on its own ports so the two sides' tables can be read without confusion:

- active and passive close both ways: whoever sends the first FIN (the *active closer*) goes through
  FIN_WAIT1, FIN_WAIT2 and ends in TIME_WAIT; the other side (the *passive closer*) goes through
  CLOSE_WAIT and LAST_ACK and is gone. Checked with a kernel client and a stack server, and with a
  stack client and a kernel server, each side closing first once.
- half-close: the side that calls shutdown(SHUT_WR) keeps receiving; the data sent after its FIN
  arrives intact (SHA-256), in both directions.
- closing with unread data sends RST instead of FIN (RFC 9293 3.10.4; Linux tcp_close): the kernel
  does it to the stack, and the stack does it to the kernel.

The kernel side is read with NETLINK_SOCK_DIAG in the kernel node's namespace (what `ss -tan` shows,
TIME_WAIT sockets included); the stack side with the control socket's `ss` and its trace
(inet_sock_set_state, tcp_send_reset, tcp_receive_reset, named as Linux's tracepoints).
"""

from __future__ import annotations

import fcntl
import hashlib
import socket
import struct
import termios
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from lab.build.control import StackClient
from lab.experiments.base import Experiment, Options
from lab.experiments.kernel_peers import ACCEPT_TIMEOUT, KernelServer, send_shutdown_and_read
from lab.experiments.results import STEP_ERRORS, Check, ExperimentResult, step_failed
from lab.experiments.running import RunningLab
from lab.experiments.stack_answers import endpoint_port, event_ports, read_trace, trace_cursor
from lab.kernel.sockdiag import kernel_tcp_sockets
from lab.kernel.tracepoints import KernelTrace, connection_events, optional_kernel_trace, state_sequence
from lab.kernel.transfers import receive_all
from stack.node.apps.content import chunks as pattern_chunks
from stack.node.apps.content import pattern, pattern_sha256

SETTLE_SECONDS = 3.0  # how long the final ACKs and FINs may take to land before we judge
Talked = TypeVar("Talked")  # what a kernel client's conversation returns


@dataclass
class Exchange:
    """What one close scenario left behind on each side."""

    name: str
    active: str  # "kernel" or "stack": who was meant to send the first FIN (or the RST)
    resets: bool = False  # True: the exchange closes with unread data, so a RST is the right end
    kernel_state: str | None = None  # the kernel socket's state after the exchange (None: gone)
    stack_state: str | None = None  # the stack connection's state after the exchange (None: gone)
    stack_states: list[str] = field(default_factory=list)  # the stack's state sequence (trace)
    stack_resets: dict[str, int] = field(default_factory=dict)  # tcp_send_reset / tcp_receive_reset
    kernel_states: list[str] | None = None  # the kernel socket's states (tracepoints); None: not traced
    kernel_resets: dict[str, str] = field(default_factory=dict)  # kernel reset events, name -> reason
    figures: dict[str, Any] = field(default_factory=dict)  # bytes, digests, errors


def end_states(exchange: Exchange) -> tuple[str | None, str | None]:
    """(the active closer's state, the passive closer's state) after the exchange; None: gone."""
    if exchange.active == "kernel":
        return exchange.kernel_state, exchange.stack_state
    return exchange.stack_state, exchange.kernel_state


def closed_as_expected(exchange: Exchange) -> bool:
    """The end of an orderly close, as `observe` waits for it: the active closer in TIME_WAIT, the
    passive closer gone."""
    active, passive = end_states(exchange)
    return active == "TIME_WAIT" and passive is None


def final_states_check(exchange: Exchange) -> Check:
    """The active closer sits in TIME_WAIT, the passive closer is gone (CLOSE)."""
    active, passive = end_states(exchange)
    passed = active == "TIME_WAIT" and passive in (None, "CLOSE")
    return Check(f"{exchange.name}: TIME_WAIT on the active closer ({exchange.active})", passed,
                 f"kernel {exchange.kernel_state or 'gone'}, stack {exchange.stack_state or 'gone'}; "
                 f"stack states {'>'.join(exchange.stack_states) or 'none traced'}")


# The states each role passes through after ESTABLISHED (RFC 9293 figure 5; Linux's names). The kernel's
# full socket ends in CLOSE when it hands the connection to a TIME_WAIT mini-socket, so its tracepoint shows
# FIN_WAIT2 > CLOSE; the TIME_WAIT itself is what sock_diag shows (final_states_check).
CLOSE_PATHS = {
    ("stack", "active"): ("FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"),
    ("stack", "passive"): ("CLOSE_WAIT", "LAST_ACK", "CLOSE"),
    ("kernel", "active"): ("FIN_WAIT1", "FIN_WAIT2", "CLOSE"),
    ("kernel", "passive"): ("CLOSE_WAIT", "LAST_ACK", "CLOSE"),
}


def path_check(exchange: Exchange, side: str) -> Check:
    """`side`'s traced state sequence follows the active or the passive close path, as its role says."""
    role = "active" if exchange.active == side else "passive"
    path = CLOSE_PATHS[(side, role)]
    seen = (exchange.stack_states if side == "stack" else exchange.kernel_states) or []
    tail = seen[seen.index("ESTABLISHED") + 1:] if "ESTABLISHED" in seen else []
    return Check(f"{exchange.name}: {side} follows the {role} close path", tuple(tail) == path,
                 f"traced {'>'.join(seen) or 'nothing'}, expected ESTABLISHED>{'>'.join(path)}")


def data_check(exchange: Exchange) -> Check:
    """The bytes sent before the close all arrived, intact, before the connection ended."""
    figures = exchange.figures
    return Check(f"{exchange.name}: data before the FIN arrived exact", bool(figures.get("sha256_equal")),
                 f"{figures.get('received', 0)} B received, sha256 "
                 f"{'equal' if figures.get('sha256_equal') else 'DIFFERENT'}")


def reset_check(exchange: Exchange, *, kernel_error: str | None) -> Check:
    """Closing with unread data sent a RST: the receiving side saw it as a reset, not as EOF. Where the
    kernel was traced, its own tcp_send_reset / tcp_receive_reset event must agree."""
    stack_count = exchange.stack_resets
    kernel = exchange.kernel_resets
    traced = exchange.kernel_states is not None
    absent = "none" if traced else "not traced"
    if exchange.active == "kernel":
        passed = stack_count.get("tcp_receive_reset", 0) >= 1 and (not traced or "tcp_send_reset" in kernel)
        detail = (f"kernel tcp_send_reset {kernel.get('tcp_send_reset', absent)}, "
                  f"stack tcp_receive_reset x{stack_count.get('tcp_receive_reset', 0)}")
    else:
        passed = (stack_count.get("tcp_send_reset", 0) >= 1 and kernel_error == "ECONNRESET"
                  and (not traced or "tcp_receive_reset" in kernel))
        detail = (f"stack tcp_send_reset x{stack_count.get('tcp_send_reset', 0)}, kernel recv() -> "
                  f"{kernel_error or 'no error'}, kernel tcp_receive_reset "
                  f"{'seen' if 'tcp_receive_reset' in kernel else absent}")
    return Check(f"{exchange.name}: RST, not FIN, when closing with unread data", passed,
                 f"{exchange.figures.get('unread_bytes', 0)} B unread; {detail}")


def half_close_check(exchange: Exchange) -> Check:
    """The side that shut down its sending direction still received everything after its FIN."""
    figures = exchange.figures
    passed = (figures.get("sent_sha256") == figures.get("peer_received_sha256")
              and figures.get("reply_sha256") == figures.get("received_sha256")
              and figures.get("received_after_shutdown", 0) > 0)
    return Check(f"{exchange.name}: half-close, data still flows to the side that sent FIN", passed,
                 f"{exchange.active} sent {figures.get('sent', 0)} B then SHUT_WR, received "
                 f"{figures.get('received_after_shutdown', 0)} B after it; sha256 "
                 f"{'equal both ways' if passed else 'DIFFERENT or missing'}")


def exchange_checks(exchange: Exchange) -> list[Check]:
    """The verdicts for one exchange: a reset exchange is judged on its RST, a close on its states,
    its path on each side and its data."""
    if exchange.resets:
        return [reset_check(exchange, kernel_error=exchange.figures.get("kernel_error"))]
    checks = [final_states_check(exchange), path_check(exchange, "stack")]
    if exchange.kernel_states is not None:
        checks.append(path_check(exchange, "kernel"))
    checks.append(half_close_check(exchange) if "sent_sha256" in exchange.figures else data_check(exchange))
    return checks


class CloseExperiment(Experiment):
    summary = "active/passive close both ways, half-close, RST on unread data, TIME_WAIT on the right side"
    options: ClassVar[Options] = {
        "bytes": (262144, "bytes each exchange sends (the half-close data)"),
        "port": (7100, "first of six ports the experiment uses (stack: port, port+1; kernel: port+2..5)"),
    }

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        scenario = CloseScenarios(lab, options["bytes"], options["port"])
        metrics: dict[str, Any] = {}
        checks: list[Check] = []
        with lab.stack(scenario.stack_node, timeout=30.0) as stack, ExitStack() as tracing:
            scenario.stack = stack
            scenario.kernel_trace, unavailable = tracing.enter_context(
                optional_kernel_trace(lab.name, [options["port"] + i for i in range(6)]))
            if scenario.kernel_trace is None:  # sock_diag still shows the kernel's final states
                metrics["kernel_trace"] = f"unavailable: {unavailable}"
            exchanges: list[Exchange] = []
            for step in (scenario.kernel_client_closes_first, scenario.stack_server_closes_first,
                         scenario.stack_client_closes_first, scenario.kernel_server_closes_first,
                         scenario.kernel_resets_on_unread_data, scenario.stack_resets_on_unread_data):
                try:
                    exchanges.append(step())
                except STEP_ERRORS as error:  # one broken exchange is a failed check, not a crash
                    checks.append(step_failed(step.__name__.replace("_", " "), error))
        for exchange in exchanges:
            checks += exchange_checks(exchange)
            metrics[exchange.name] = {
                "active": exchange.active, "kernel_state": exchange.kernel_state,
                "stack_state": exchange.stack_state, "kernel_states": exchange.kernel_states,
                "stack_states": exchange.stack_states, "kernel_resets": exchange.kernel_resets,
                "stack_resets": exchange.stack_resets, **exchange.figures}
        return ExperimentResult.from_checks(self.name, checks, metrics)


class CloseScenarios:
    """The six exchanges; each returns an `Exchange` with both sides' view of its end."""

    stack: StackClient
    kernel_trace: KernelTrace | None = None  # tracepoints of the six ports, when tracefs is usable

    def __init__(self, lab: RunningLab, size: int, port: int) -> None:
        self.lab = lab
        self.size = size
        self.port = port
        self.kernel_node = lab.first("kernel")
        self.stack_node = lab.first("pystack")
        self.kernel_namespace = lab.node(self.kernel_node).namespace
        self.kernel_address = lab.address(self.kernel_node)
        self.stack_address = lab.address(self.stack_node)

    # --- the stack is the server -----------------------------------------------------------

    def kernel_client_closes_first(self) -> Exchange:
        """Kernel client → stack echo: the client sends, SHUT_WR (first FIN), reads the echo to EOF."""
        port = self.port
        exchange = Exchange("kernel client closes first", active="kernel")
        cursor = trace_cursor(self.stack)
        local_port, figures = self.kernel_client(port, "echo", lambda client: send_shutdown_and_read(
            client, self.size))
        figures["reply_sha256"] = figures["sent_sha256"]  # echo: what comes back is what went out
        figures["peer_received_sha256"] = figures["received_sha256"]
        exchange.figures = figures
        self.observe(exchange, kernel_port=local_port, stack_port=port, cursor=cursor)
        return exchange

    def stack_server_closes_first(self) -> Exchange:
        """Kernel client ← stack source: the stack sends N bytes and closes first; the client reads to EOF."""
        port = self.port + 1
        exchange = Exchange("stack server closes first", active="stack")
        cursor = trace_cursor(self.stack)
        local_port, received = self.kernel_client(port, "source", receive_all, bytes=self.size)
        exchange.figures = {"received": received.received,
                            "sha256_equal": received.received_sha256 == pattern_sha256(self.size)}
        self.observe(exchange, kernel_port=local_port, stack_port=port, cursor=cursor)
        return exchange

    def kernel_client(self, port: int, app: str, talk: Callable[[socket.socket], Talked], *,
                      bytes: int | None = None) -> tuple[int, Talked]:
        """Serve `app` on the stack's `port`, connect a kernel client and let `talk` use it; returns the
        client's port and what `talk` returned. The listener goes away whatever happens."""
        self.stack.listen(port, app=app, bytes=bytes)
        try:
            with self.lab.kernel_socket(self.kernel_node) as client:
                client.settimeout(ACCEPT_TIMEOUT)
                client.connect((self.stack_address, port))
                return client.getsockname()[1], talk(client)
        finally:
            self.stack.close_listener(port)

    # --- the kernel is the server ----------------------------------------------------------

    def stack_client_closes_first(self) -> Exchange:
        """Stack client → kernel: the stack sends, SHUT_WR (first FIN); the kernel reads to EOF, then
        answers with data the half-closed stack still receives, then closes."""
        port = self.port + 2
        exchange = Exchange("stack client closes first", active="stack")
        reply = pattern(self.size // 2)

        def serve(conn: socket.socket) -> dict[str, Any]:
            got = receive_all(conn)
            conn.sendall(reply)
            conn.close()
            return {"peer_received_sha256": got.received_sha256}

        answer, served, cursor = self.stack_client(port, serve, send=self.size, shutdown=True, recv="eof")
        exchange.figures = {
            "sent": answer.get("sent", 0), "sent_sha256": answer.get("sent_sha256"),
            "received_sha256": answer.get("received_sha256"),
            "reply_sha256": hashlib.sha256(reply).hexdigest(),
            "received_after_shutdown": answer.get("received", 0), "stack_error": answer.get("error"),
            **served,
        }
        self.observe(exchange, kernel_port=port, stack_port=endpoint_port(answer.get("local", "")) or 0,
                     cursor=cursor)
        return exchange

    def kernel_server_closes_first(self) -> Exchange:
        """Stack client ← kernel: the kernel sends N bytes and closes first; the stack reads to EOF."""
        port = self.port + 3
        exchange = Exchange("kernel server closes first", active="kernel")

        def serve(conn: socket.socket) -> dict[str, Any]:
            for chunk in pattern_chunks(self.size):
                conn.sendall(chunk)
            conn.close()
            return {}

        answer, _, cursor = self.stack_client(port, serve, send=0, recv="eof")
        exchange.figures = {"received": answer.get("received", 0),
                            "sha256_equal": answer.get("received_sha256") == pattern_sha256(self.size),
                            "stack_error": answer.get("error")}
        self.observe(exchange, kernel_port=port, stack_port=endpoint_port(answer.get("local", "")) or 0,
                     cursor=cursor)
        return exchange

    def stack_client(self, port: int, serve: Callable[[socket.socket], dict[str, Any]],
                     **connect: Any) -> tuple[dict[str, Any], dict[str, Any], int]:
        """A kernel server on `port` running `serve`, and the stack's `connect` to it (`connect` holds the
        request's data fields). Returns the stack's answer, what `serve` returned, and the trace cursor
        taken before the connection began."""
        cursor = trace_cursor(self.stack)
        with KernelServer(self.lab, self.kernel_node, port, serve) as server:
            answer = self.stack.connect(self.kernel_address, port, close="close", timeout=10.0, **connect)
            served = server.result()
        return answer, served, cursor

    # --- RST on close with unread data ------------------------------------------------------

    def kernel_resets_on_unread_data(self) -> Exchange:
        """The stack sends and waits; the kernel server closes without reading: Linux sends RST."""
        port = self.port + 4
        exchange = Exchange("kernel closes with unread data", active="kernel", resets=True)
        unread = min(self.size, 65536)

        def serve(conn: socket.socket) -> dict[str, Any]:
            waited = wait_for_bytes(conn, unread, timeout=5.0)
            conn.close()  # data in the receive queue: tcp_close() sends RST
            return {"unread_bytes": waited}

        answer, served, cursor = self.stack_client(port, serve, send=unread, recv=0, hold=1.5)
        exchange.figures = {**served, "stack_error": answer.get("error")}
        self.observe_resets(exchange, port, cursor)
        return exchange

    def stack_resets_on_unread_data(self) -> Exchange:
        """The kernel sends; the stack client closes without reading: the stack must send RST."""
        port = self.port + 5
        exchange = Exchange("stack closes with unread data", active="stack", resets=True)
        unread = min(self.size, 65536)

        def serve(conn: socket.socket) -> dict[str, Any]:
            for chunk in pattern_chunks(unread):
                conn.sendall(chunk)
            conn.settimeout(5.0)
            try:
                data = conn.recv(1)
                error = None if data else "EOF"  # an orderly FIN would be the wrong answer
            except ConnectionResetError:
                error = "ECONNRESET"
            except TimeoutError:
                error = "no answer within 5 s"
            finally:
                conn.close()
            return {"kernel_error": error}

        answer, served, cursor = self.stack_client(port, serve, send=0, recv=0, hold=0.5)
        exchange.figures = {**served, "unread_bytes": unread, "stack_error": answer.get("error")}
        self.observe_resets(exchange, port, cursor)
        return exchange

    # --- observation ----------------------------------------------------------------------

    def observe(self, exchange: Exchange, *, kernel_port: int, stack_port: int, cursor: int) -> None:
        """Read both sides until the active closer sits in TIME_WAIT and the passive closer is gone, or
        SETTLE_SECONDS pass (the last ACK may be in flight)."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            exchange.kernel_state = kernel_connection_state(self.kernel_namespace, kernel_port, stack_port)
            connections = self.stack.ss()["connections"]
            exchange.stack_state = stack_connection_state(connections, stack_port, kernel_port)
            if closed_as_expected(exchange) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        events, _ = read_trace(self.stack, cursor)
        exchange.stack_states = stack_states_by_ports(events, stack_port, kernel_port)
        if self.kernel_trace is not None:
            own = connection_events(self.kernel_trace.events(), (self.kernel_address, kernel_port),
                                    (self.stack_address, stack_port))
            exchange.kernel_states = state_sequence(own)

    def observe_resets(self, exchange: Exchange, kernel_port: int, cursor: int) -> None:
        time.sleep(0.2)  # the RST travels after close() returns
        events, _ = read_trace(self.stack, cursor)
        for event in events:
            _, remote = event_ports(event)
            name = str(event.get("name"))
            if remote == kernel_port and name in ("tcp_send_reset", "tcp_receive_reset"):
                exchange.stack_resets[name] = exchange.stack_resets.get(name, 0) + 1
        exchange.stack_states = [str(e.get("newstate")) for e in events
                                 if e.get("name") == "inet_sock_set_state"
                                 and event_ports(e)[1] == kernel_port]
        if self.kernel_trace is not None:
            exchange.kernel_states = []
            for kernel_event in self.kernel_trace.events():
                if kernel_event.name in ("tcp_send_reset", "tcp_receive_reset") \
                        and kernel_port in kernel_event.ports:
                    exchange.kernel_resets[kernel_event.name] = kernel_event.fields.get("reason", "seen")


def kernel_connection_state(namespace: str, local_port: int, remote_port: int) -> str | None:
    for entry in kernel_tcp_sockets(namespace):
        if entry.local_port == local_port and entry.remote_port == remote_port:
            return entry.state
    return None


def stack_connection_state(connections: list[dict[str, Any]], local_port: int,
                           remote_port: int) -> str | None:
    for row in connections:
        ports = (endpoint_port(row.get("local", "")), endpoint_port(row.get("remote", "")))
        if ports == (local_port, remote_port):
            return str(row.get("state"))
    return None


def stack_states_by_ports(events: list[dict[str, Any]], local_port: int, remote_port: int) -> list[str]:
    """The states one stack connection passed through, in order, from its inet_sock_set_state events."""
    states: list[str] = []
    for event in events:
        if event.get("name") == "inet_sock_set_state" and event_ports(event) == (local_port, remote_port):
            states.append(str(event.get("newstate")))
    return states


def wait_for_bytes(conn: socket.socket, count: int, *, timeout: float) -> int:
    """Wait (without reading) until `count` bytes sit in the receive queue (FIONREAD); returns how many do."""
    deadline = time.monotonic() + timeout
    while True:
        (queued,) = struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.FIONREAD, b"\0\0\0\0"))
        if queued >= count or time.monotonic() >= deadline:
            return queued
        time.sleep(0.02)
