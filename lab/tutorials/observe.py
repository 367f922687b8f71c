"""Watching both sides of a tutorial's connections: the kernel's tracepoints, the stack's trace, captures.

A step opens `watching(session, ports)` around what it does. The kernel side is the tracepoint
`sock:inet_sock_set_state` (and the reset events) of a tracing instance of the lab's own, filtered in
the kernel by the step's ports and here by the lab's addresses. Tracepoints are machine-wide and carry
no namespace, and every pair lab has the addresses 10.0.0.1 and 10.0.0.2, so what is said about one
connection is picked by its whole 4-tuple, whose ephemeral port is this run's own: another lab on the
same ports at the same moment cannot slip into a connection's states or its RST count. The stack side
is the node's trace ring (the lab's own process), read through its control socket from a cursor taken
when the block began. Both give state sequences named as Linux names them
(SYN_SENT, ESTABLISHED, FIN_WAIT1, TIME_WAIT, ...), and `StateMark`s in wall-clock time for the
ladder. `capturing_both` takes a pcap at each end of the link (the kernel node's interface and the
stack's TAP); `draw_ladders` turns one of them and the marks into ladder diagrams in the report.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from lab.build.control import StackClient
from lab.experiments.stack_answers import (
    connection_trace,
    endpoint,
    read_trace,
    stack_state_sequence,
    trace_cursor,
)
from lab.kernel.sockdiag import KernelSocket, kernel_tcp_sockets
from lab.kernel.tracepoints import KernelTrace, TraceEvent, optional_kernel_trace, state_sequence
from lab.tools.capture import CaptureResult, capturing
from lab.tutorials.ladder import (
    Endpoint,
    PcapError,
    StateMark,
    ladder_text,
    ladders,
    read_pcap,
    write_ladders,
)
from lab.tutorials.session import Figure, Session


def lab_addresses(session: Session) -> set[str]:
    """Every address an interface of the lab holds: the kernel's events are kept only for these."""
    return {str(iface.address.ip) for node in session.lab.plan.nodes for iface in node.interfaces
            if iface.address is not None}


def events_of_lab(events: list[TraceEvent], addresses: set[str]) -> list[TraceEvent]:
    """The events whose source address is the lab's and whose destination is the lab's too (or none
    yet: a listener's, 0.0.0.0). This drops the machine's own connections and labs with other
    subnets; a lab with the same addresses (every pair lab) is told apart only by its 4-tuples."""
    chosen = []
    for event in events:
        saddr, daddr = event.fields.get("saddr", ""), event.fields.get("daddr", "")
        if saddr in addresses and (daddr in addresses or daddr == "0.0.0.0"):
            chosen.append(event)
    return chosen


class Observer:
    """Both sides' view of the connections on some ports, from the moment the block began."""

    def __init__(self, session: Session, ports: list[int]) -> None:
        self.session = session
        self.ports = ports
        self.addresses = lab_addresses(session)
        self.kernel_trace: KernelTrace | None = None
        self.kernel_unavailable = ""
        self.stack_node = session.lab.first("pystack")
        self.stack: StackClient = session.lab.stack(self.stack_node)
        self.cursor = trace_cursor(self.stack)
        self._stack_events: list[dict[str, Any]] = []
        self.wall_offset = time.time() - time.monotonic()  # tracepoints and the stack use the mono clock

    # -- the kernel ---------------------------------------------------------------------------------

    def kernel_events(self) -> list[TraceEvent]:
        """This lab's kernel events: both addresses (or the one a fresh socket has) are the lab's."""
        if self.kernel_trace is None:
            return []
        return events_of_lab(self.kernel_trace.events(), self.addresses)

    def kernel_states(self, local: Endpoint, remote: Endpoint | None = None) -> list[str]:
        """The states of the kernel socket bound to `local` (talking to `remote`), oldest first."""
        return state_sequence(self._kernel_of(local, remote))

    def _kernel_of(self, local: Endpoint, remote: Endpoint | None) -> list[TraceEvent]:
        own, unbound = [], []
        for event in self.kernel_events():
            sport, dport = event.ports
            source = (event.fields.get("saddr"), sport)
            peer = (event.fields.get("daddr"), dport)
            if source == local and (remote is None or peer == remote):
                own.append(event)
            elif sport == 0 and remote is not None and peer == remote and source[0] == local[0]:
                unbound.append(event)
        # A client's CLOSE -> SYN_SENT comes before its ephemeral port is chosen (sport 0): it is the
        # last such event towards the same peer before the socket's first event with its own port.
        if own:
            before = [event for event in unbound if event.time <= own[0].time]
            own = before[-1:] + own
        return own

    def kernel_resets(self, connections: list[tuple[Endpoint, Endpoint]] | None = None) -> dict[str, int]:
        """How many RSTs the kernel sent and received (tcp_send_reset, tcp_receive_reset): on the given
        connections (either end first), or on any of the lab's addresses and the step's ports."""
        counts = {"tcp_send_reset": 0, "tcp_receive_reset": 0}
        wanted = {frozenset(pair) for pair in connections} if connections is not None else None
        for event in self.kernel_events():
            if event.name not in counts:
                continue
            sport, dport = event.ports
            ends = frozenset(((event.fields.get("saddr", ""), sport), (event.fields.get("daddr", ""), dport)))
            if wanted is None or ends in wanted:
                counts[event.name] += 1
        return counts

    # -- the stack ----------------------------------------------------------------------------------

    def stack_events(self) -> list[dict[str, Any]]:
        """The stack's trace events since the block began (read on, not again from the start)."""
        events, self.cursor = read_trace(self.stack, self.cursor)
        self._stack_events += events
        return list(self._stack_events)

    def stack_states(self, local: Endpoint, remote: Endpoint | None = None) -> list[str]:
        return stack_state_sequence(connection_trace(self.stack_events(), local, remote))

    def stack_resets(self) -> dict[str, int]:
        counts = {"tcp_send_reset": 0, "tcp_receive_reset": 0}
        for event in self.stack_events():
            if event.get("name") in counts:
                counts[str(event["name"])] += 1
        return counts

    # -- both, for the report and the ladder ----------------------------------------------------------

    def record(self, connection: str, *, kernel: tuple[Endpoint, Endpoint | None] | None = None,
               stack: tuple[Endpoint, Endpoint | None] | None = None) -> tuple[list[str], list[str]]:
        """Put both sides' state sequences for one connection in the report; returns (kernel, stack)."""
        kernel_seq = self.kernel_states(*kernel) if kernel else []
        stack_seq = self.stack_states(*stack) if stack else []
        if kernel:
            traced = self.kernel_trace is not None
            self.session.states("kernel", connection, kernel_seq if traced else ["(not traced)"])
        if stack:
            self.session.states("stack", connection, stack_seq)
        return kernel_seq, stack_seq

    def marks(self) -> list[StateMark]:
        """Every state change either side reported, in wall-clock time, for the ladder."""
        found = []
        for event in self.kernel_events():
            if event.name == "inet_sock_set_state":
                local = (event.fields.get("saddr", ""), int(event.fields["sport"]))
                peer = (event.fields.get("daddr", ""), int(event.fields.get("dport", 0)))
                state = event.fields.get("newstate", "?")
                found.append(StateMark(event.time + self.wall_offset, local, state, "kernel",
                                       peer if peer[1] else None))
        for event in self.stack_events():
            if event.get("name") == "inet_sock_set_state":
                peer = endpoint(event, "remote")
                found.append(StateMark(float(event.get("time", 0.0)) + self.wall_offset,
                                       endpoint(event, "local"), str(event.get("newstate", "?")), "stack",
                                       peer if peer[1] else None))
        return found

    def close(self) -> None:
        self.stack.close()


@contextmanager
def watching(session: Session, ports: list[int]) -> Iterator[Observer]:
    """An `Observer` of `ports` for the block: a tracing instance of its own and a stack trace cursor."""
    observer = Observer(session, ports)
    try:
        with optional_kernel_trace(session.lab.name, ports) as (trace, why):
            observer.kernel_trace, observer.kernel_unavailable = trace, why
            if trace is None:
                session.say(f"(the kernel's tracepoints are not available here: {why}; its side is read "
                            "with sock_diag only)")
            yield observer
            observer.stack_events()  # read the trace while the session is still open
            observer.kernel_trace = _Frozen(observer.kernel_events()) if trace is not None else None
    finally:
        observer.close()


class _Frozen(KernelTrace):
    """The events a finished tracing session recorded, kept after its instance is gone."""

    def __init__(self, events: list[TraceEvent]) -> None:
        super().__init__("frozen", [])
        self._kept = events

    def events(self) -> list[TraceEvent]:
        return list(self._kept)


@contextmanager
def capturing_both(session: Session, stem: str, bpf_filter: str) -> Iterator[list[CaptureResult]]:
    """A pcap of the kernel node's interface and one of the stack's TAP, listed as the run's pcaps."""
    lab = session.lab
    kernel, stack = lab.first("kernel"), lab.first("pystack")
    with ExitStack() as captures:
        results = [captures.enter_context(capturing(lab, node, session.path(f"{stem}-{node}.pcap"),
                                                    bpf_filter=bpf_filter)) for node in (kernel, stack)]
        yield results
        time.sleep(0.3)  # the last segments reach tcpdump's buffer before it stops
    for result in results:
        session.artifact("pcap", result.path)


def draw_ladders(session: Session, pcap: Path, observer: Observer | None, stem: str, *,
                 caption: str = "", echo: bool = True, in_step: bool = True) -> int:
    """Ladder diagrams of every connection in `pcap`, with both sides' state changes: a text file, an SVG
    each (`ladder` artifacts, and figures of the current step, or of the report's captures section
    without `in_step`). Returns how many connections it drew."""
    found = ladders(read_pcap(pcap), observer.marks() if observer is not None else [])
    if not found:
        if in_step:
            session.say(f"(no TCP segments in {pcap.name} to draw)")
        return 0
    text_path, *svgs = write_ladders(found, session.path(f"{stem}-ladder.txt"), session.out, f"{stem}-ladder")
    for ladder, svg in zip(found, svgs, strict=True):
        session.artifact("ladder", svg)
        title = f"Ladder: {ladder.title}"
        if in_step:
            session.figure(title, svg, caption)
        else:
            session.figures.append(Figure(title, svg, caption))
        if echo and in_step:
            session.show(f"ladder of {ladder.title}:\n{ladder_text(ladder)}")
    session.artifact("ladder", text_path)
    return len(found)


def draw_missing_ladders(session: Session) -> int:
    """Ladders (without state changes) of the captures no step drew: one pcap of each pair a tutorial
    took (`<stem>-<node>.pcap`), so every run that captured has its ladder diagrams."""
    drawn = 0
    stems_done = {path.name.split("-ladder", 1)[0] for path in session.artifacts["ladder"]}
    for pcap in list(session.artifacts["pcap"]):
        stem = pcap.stem.rsplit("-", 1)[0]
        if stem in stems_done or not pcap.is_file():
            continue
        stems_done.add(stem)
        try:
            drawn += draw_ladders(session, pcap, None, stem, caption=f"from {pcap.name}", echo=False,
                                  in_step=False)
        except PcapError as error:  # a capture cut short: the run's figures say so, the report goes on
            session.metrics.setdefault("ladder_errors", []).append(str(error))
    return drawn


# -- the tables each side keeps ---------------------------------------------------------------------


def kernel_rows(session: Session, port: int | None = None) -> list[KernelSocket]:
    """What `ss -tan` shows in the kernel node's namespace (sock_diag), only `port`'s sockets if given."""
    namespace = session.lab.node(session.lab.first("kernel")).namespace
    rows = kernel_tcp_sockets(namespace)
    return [r for r in rows if port is None or port in (r.local_port, r.remote_port)]


def kernel_row_text(row: KernelSocket) -> str:
    """One row as `ss -tan` prints it: state, Recv-Q, Send-Q, local, peer (and the timer if any)."""
    timer = f" timer {row.timer_ms / 1000:.1f}s" if row.timer_ms else ""
    return (f"{row.state:<11} {row.recv_queue:>6} {row.send_queue:>6}  {row.local_ip}:{row.local_port:<6} "
            f"{row.remote_ip}:{row.remote_port}{timer}")


def stack_tables(session: Session) -> dict[str, Any]:
    """The stack node's three tables (bound, listening, established), as its control socket answers."""
    with session.lab.stack(session.lab.first("pystack")) as stack:
        return stack.tables()


def stack_rows(tables: dict[str, Any], table: str, port: int) -> list[dict[str, Any]]:
    """The rows of one of the stack's tables whose local or remote endpoint has `port`."""
    chosen = []
    for row in tables.get(table, []):
        ends = [endpoint(row, "local")[1]] + ([endpoint(row, "remote")[1]] if "remote" in row or
                                               "remote_port" in row else [])
        if port in ends:
            chosen.append(row)
    return chosen


def stack_connections(client: StackClient) -> list[dict[str, Any]]:
    """The stack's connections (`ss`): the node's answer is `{"connections": [...], ...}`."""
    answer: Any = client.ss()
    return list(answer["connections"] if isinstance(answer, dict) else answer)


RUN_PORTS_LOW, RUN_PORTS_HIGH = 20000, 30000  # below Linux's ephemeral range (32768-60999)


def run_ports(session: Session, count: int) -> int:
    """The first of `count` consecutive ports of this run's own, chosen at random the first time and
    kept in the run's metrics (`ports`), so its text can name them and two runs rarely share one."""
    chosen = session.metrics.get("ports")
    if not isinstance(chosen, dict) or chosen.get("count") != count:
        blocks = (RUN_PORTS_HIGH - RUN_PORTS_LOW) // count
        chosen = {"first": RUN_PORTS_LOW + secrets.randbelow(blocks) * count, "count": count}
        session.metric("ports", chosen)
    return int(chosen["first"])
