"""What a test holds: a lab that is up, its kernel nodes and pystack nodes, watches and captures.

A `Lab` is handed out by the plugin's fixtures and lives for one test: every socket, control client,
trace session and capture it opened is closed when the test ends (the fixture then takes the lab down).
A kernel node's handle runs programs and opens real kernel sockets in its namespace and reads TCP_INFO,
sock_diag and its nstat counters; a pystack node's handle asks its stack process through the control
socket and answers exactly what `lab stack LAB NODE VERB --json` prints.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from lab.build.control import StackClient
from lab.experiments.running import RunningLab
from lab.experiments.stack_answers import counter_value, trace_cursor
from lab.kernel.namespaces import inside_namespace
from lab.kernel.sockdiag import KernelSocket, kernel_tcp_sockets
from lab.kernel.sockets import listening_socket, tcp_info
from lab.kernel.tracepoints import KernelTrace, TraceUnavailable
from lab.testing.expect import (
    ExpectationFailed,
    counter_problem,
    describe_segment_query,
    kernel_sequences,
    matching_segments,
    segment_problem,
    stack_sequences,
    states_problem,
)
from lab.testing.segments import Segment, read_segments
from lab.tools.capture import CaptureResult, capturing

DEFAULT_WITHIN_SECONDS = 2.0  # how long an expectation waits for what it expects (FINs still crossing)
POLL_SECONDS = 0.05


def kernel_counters(namespace: str) -> dict[str, int]:
    """The namespace's nstat counters, /proc/net/snmp and /proc/net/netstat: {"TcpPassiveOpens": n,
    "TcpExtListenOverflows": n, ...}."""
    counters: dict[str, int] = {}
    with inside_namespace(namespace):  # /proc/thread-self/net shows the calling thread's namespace
        texts = [Path(f"/proc/thread-self/net/{name}").read_text() for name in ("snmp", "netstat")]
    for text in texts:
        lines = text.splitlines()
        for header, values in zip(lines[::2], lines[1::2], strict=False):
            group, _, names = header.partition(":")
            for name, value in zip(names.split(), values.partition(":")[2].split(), strict=False):
                counters[f"{group}{name}"] = int(value)
    return counters


def _until(check: Callable[[], str | None], within: float) -> None:
    """Ask `check` until it has no problem or `within` seconds pass; then fail with its last problem."""
    __tracebackhide__ = True  # pytest shows the test's line, not this loop
    deadline = time.monotonic() + within
    while True:
        problem = check()
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise ExpectationFailed(problem)
        time.sleep(POLL_SECONDS)


class KernelNode:
    """A kernel node: its namespace, its addresses, programs and kernel sockets inside it."""

    kind = "kernel"

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.namespace = lab.running.node(name).namespace
        self.address = lab.running.address(name)
        self.addresses = [str(i.address.ip) for i in lab.running.node(name).interfaces]

    def run(self, *argv: str, timeout: float = 30.0, check: bool = False,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run a program in the node's namespace and wait for it (stdout and stderr captured)."""
        done = self.lab.running.exec(self.name, list(argv), timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise ExpectationFailed(f"{self.name}: {' '.join(argv)} exited {done.returncode}: "
                                    f"{done.stderr.decode(errors='replace').strip()[:400]}")
        return done

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A real kernel socket in the node's namespace (closed when the test ends, if not before)."""
        sock = self.lab.running.kernel_socket(self.name, family, type)
        self.lab.cleanup.callback(sock.close)
        return sock

    def connect(self, address: tuple[str, int], *, timeout: float = 5.0) -> socket.socket:
        """A kernel TCP client connected to `address` (a timeout on every call after, too)."""
        sock = self.socket()
        sock.settimeout(timeout)
        sock.connect(address)
        return sock

    def listen(self, port: int, *, backlog: int = 128, timeout: float | None = 10.0) -> socket.socket:
        """A kernel listener on the node's address and `port`."""
        listener = listening_socket(self.namespace, (self.address, port), backlog, timeout)
        self.lab.cleanup.callback(listener.close)
        return listener

    def tcp_info(self, sock: socket.socket) -> dict[str, Any]:
        """TCP_INFO of one of the node's sockets, parsed (state, options, rtt, cwnd, total_retrans...)."""
        return tcp_info(sock)

    def sockets(self) -> list[KernelSocket]:
        """The node's TCP sockets as `ss -tan` lists them (sock_diag): listeners, connections, TIME_WAIT."""
        return kernel_tcp_sockets(self.namespace)

    def counters(self) -> dict[str, int]:
        return kernel_counters(self.namespace)


class StackNode:
    """A pystack node's stack process, through its control socket (the answers are the CLI's --json)."""

    kind = "pystack"

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.address = lab.running.address(name)
        self.addresses = [str(i.address.ip) for i in lab.running.node(name).interfaces]
        self.client: StackClient = lab.running.stack(name)
        lab.cleanup.callback(self.client.close)

    def hello(self) -> dict[str, Any]:
        return self.client.hello()

    def ss(self, **filters: Any) -> dict[str, Any]:
        """`{"connections": [...], ...}`: `lab stack LAB NODE ss --json`."""
        return self.client.ss(**filters)

    def stats(self) -> dict[str, Any]:
        """`{"counters": {...}}`: `lab stack LAB NODE stats --json`."""
        return self.client.stats()

    def tables(self) -> dict[str, Any]:
        """The bound, listening (SYN queue, accept queue) and established tables."""
        return self.client.tables()

    def listen(self, port: int, app: str = "echo", *, backlog: int = 128) -> dict[str, Any]:
        """A listener of the stack on `port` served by `app` (echo, discard, source, http, none)."""
        return self.client.listen(port, app, backlog=backlog, accept=app != "none")

    def close_listener(self, port: int) -> dict[str, Any]:
        return self.client.close_listener(port)

    def connect(self, address: str, port: int, **fields: Any) -> dict[str, Any]:
        """The stack as a client (send, recv, shutdown, timeout, close, hold, ... as the control socket
        takes them); a refused or timed out connect is an answer with `error`, not an exception."""
        return self.client.connect(address, port, **fields)

    def trace(self, since: int = 0) -> dict[str, Any]:
        """`{"events": [...], "next": N}`: the stack's trace ring from event `since` on."""
        return self.client.trace(since)

    def counters(self) -> dict[str, Any]:
        return self.stats()["counters"]


Node = KernelNode | StackNode


class Watch:
    """What the lab's nodes do from now on: state changes (the stack's trace ring and the kernel's
    `sock:inet_sock_set_state` tracepoint, filtered by `ports` in the kernel and by the node's addresses),
    and counters against their values now. It ends with the test."""

    def __init__(self, lab: Lab, ports: Iterable[int]) -> None:
        self.lab = lab
        self.ports = sorted(set(ports))
        self.kernel_trace: KernelTrace | None = None
        self.kernel_trace_missing = ""
        if lab.running.kernel_nodes():
            try:
                self.kernel_trace = KernelTrace(lab.name, self.ports).start()
                lab.cleanup.callback(self.kernel_trace.stop)
            except TraceUnavailable as error:
                self.kernel_trace_missing = str(error)
        self.cursors = {n.name: trace_cursor(n.client) for n in lab.stack_nodes()}
        self.counters_before = {n.name: n.counters() for n in lab.nodes()}

    def states(self, node: str) -> dict[str, list[str]]:
        """Each connection of `node` seen so far (`local > remote`) and the states it went through."""
        handle = self.lab.node(node)
        if isinstance(handle, StackNode):
            events = handle.trace(self.cursors[node]).get("events", [])
            return stack_sequences(events, self.ports)
        if self.kernel_trace is None:
            raise ExpectationFailed(f"{node}: the kernel's state changes cannot be traced here "
                                    f"({self.kernel_trace_missing})")
        return kernel_sequences(self.kernel_trace.events(), handle.addresses)

    def expect_states(self, node: str, expected: Iterable[str], *, exact: bool = False,
                      within: float = DEFAULT_WITHIN_SECONDS) -> None:
        """One connection of `node` went through `expected` states in a row (with `exact`: just them),
        within `within` seconds; else the failure lists every connection's sequence."""
        __tracebackhide__ = True
        wanted = list(expected)
        _until(lambda: states_problem(node, wanted, self.states(node), exact=exact), within)

    def counter(self, node: str, name: str) -> tuple[int | None, int | None]:
        """(value at the watch's start, value now) of a counter by its nstat name; None when absent."""
        now = self.lab.node(node).counters()
        before = self.counters_before[node]
        if not _has_counter(now, name):
            return None, None
        return counter_value(before, name), counter_value(now, name)

    def expect_counter(self, node: str, name: str, *, by: int | None = None, at_least: int | None = None,
                       at_most: int | None = None, within: float = DEFAULT_WITHIN_SECONDS) -> None:
        """The counter `name` of `node` (nstat's names: TcpPassiveOpens, TcpExtListenOverflows, ...) moved
        since the watch started: by at least 1 unless `by`, `at_least` or `at_most` say otherwise."""
        __tracebackhide__ = True
        _until(lambda: counter_problem(node, name, *self.counter(node, name), by=by, at_least=at_least,
                                       at_most=at_most), within)


def _has_counter(counters: Mapping[str, Any], name: str) -> bool:
    """Whether `counter_value` finds `name` (under any of its spellings), rather than answering 0."""
    bare = name.removeprefix("TcpExt") if name.startswith("TcpExt") else name.removeprefix("Tcp")
    for key in (name, bare, f"Tcp{bare}", f"TcpExt{bare}"):
        if key in counters:
            return True
    return any(isinstance(group, dict) and _has_counter(group, name) for group in counters.values())


class Capture:
    """A pcap of one node's interface from now until `stop()` or the end of the test (tcpdump in the
    node's namespace, through `lab.tools.capture.capturing`)."""

    def __init__(self, lab: Lab, node: str, path: Path, interface: str | None) -> None:
        self.lab = lab
        self.node = node
        self.path = path
        self._stack = ExitStack()
        self.result: CaptureResult = self._stack.enter_context(capturing(lab.running, node, path, interface))
        lab.cleanup.callback(self.stop)

    def stop(self) -> CaptureResult:
        """Stop tcpdump (the file is then complete); again is harmless."""
        self._stack.close()
        return self.result

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def segments(self) -> list[Segment]:
        """The TCP segments captured so far (a record tcpdump is still writing is left for next time)."""
        return read_segments(self.path)

    def sent(self) -> list[Segment]:
        """The segments the node sent (source address one of its own)."""
        own = set(self.lab.node(self.node).addresses)
        return [s for s in self.segments() if s.src in own]

    def expect_sent(self, *, flags: str | None = None,
                    options: Mapping[str, Any] | Iterable[str] | None = None, port: int | None = None,
                    length: int | None = None, exact_flags: bool = True, count: int | None = None,
                    within: float = DEFAULT_WITHIN_SECONDS) -> list[Segment]:
        """The node sent a segment (or exactly `count`) with these flags (`S.`: SYN and ACK, no other),
        these options (`["mss", "wscale"]` or `{"wscale": 7}`), port and payload length; the matching
        segments. Else the failure lists what the node sent."""
        __tracebackhide__ = True
        description = describe_segment_query(flags, options, port, length)
        found: list[Segment] = []

        def check() -> str | None:
            sent = self.sent()
            found[:] = matching_segments(sent, flags=flags, options=options, port=port, length=length,
                                         exact_flags=exact_flags)
            return segment_problem(self.node, description, found, sent, count=count)

        _until(check, within)
        return found


class Lab:
    """A lab that is up for one test: nodes by name, watches, captures."""

    def __init__(self, running: RunningLab, cleanup: ExitStack, scratch: Path) -> None:
        self.running = running
        self.cleanup = cleanup  # closed before the lab goes down
        self.scratch = scratch  # the test's tmp_path: captures go there
        self._nodes: dict[str, Node] = {}
        self.captures: list[Capture] = []

    @property
    def name(self) -> str:
        return self.running.name

    def node(self, name: str) -> Node:
        if name not in self._nodes:
            plan = self.running.node(name)  # a one-line error naming the lab's nodes
            self._nodes[name] = StackNode(self, name) if plan.kind == "pystack" and plan.process \
                else KernelNode(self, name)
        return self._nodes[name]

    def kernel(self, name: str) -> KernelNode:
        node = self.node(name)
        if not isinstance(node, KernelNode) or self.running.node(name).kind != "kernel":
            raise ValueError(f"node {name} of lab {self.name} is not a kernel node")
        return node

    def stack(self, name: str) -> StackNode:
        node = self.node(name)
        if not isinstance(node, StackNode):
            raise ValueError(f"node {name} of lab {self.name} runs no stack process")
        return node

    def nodes(self) -> list[Node]:
        return [self.node(n.name) for n in self.running.kernel_nodes()] + self.stack_nodes()

    def stack_nodes(self) -> list[StackNode]:
        return [self.stack(n.name) for n in self.running.pystack_nodes()]

    def address(self, node: str) -> str:
        return self.running.address(node)

    def watch(self, *ports: int) -> Watch:
        """Start watching state changes (on connections with one of `ports` at either end; all the lab's
        connections when none are given) and counters; expectations are asked of the result."""
        return Watch(self, ports)

    def capture(self, node: str, interface: str | None = None) -> Capture:
        """Capture `node`'s interface (a kernel node's first, a pystack node's TAP) into the test's
        temporary folder until `stop()`, the end of a `with` block, or the end of the test."""
        path = self.scratch / f"{self.name}-{node}-{len(self.captures) + 1}.pcap"
        capture = Capture(self, node, path, interface)
        self.captures.append(capture)
        return capture
