"""The kernel's side of a connection, from its TCP tracepoints (tracefs), for experiments.

Tracepoints are global, not per namespace, so a session filters in the kernel by port (cheap,
and keeps the ring small) and then in Python by address. Each session is an instance of its
own, `/sys/kernel/tracing/instances/nslab-<lab>-<pid>`, so several labs and a system tracer
never see each other's events; it is removed when the session ends. The instance's clock is
`mono`, so event times are `time.monotonic()` times and line up with the lab's own clock.

Kprobes and function filters are unavailable on the reference machine: tracepoints only.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from lab.kernel.errors import NetlinkOpError
from lab.kernel.namespaces import mount

TRACEFS = Path("/sys/kernel/tracing")
EVENTS = (
    "sock/inet_sock_set_state",
    "tcp/tcp_retransmit_skb",
    "tcp/tcp_retransmit_synack",
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
)
# "<task>-<pid> [cpu] flags  12345.678901: event_name: key=value key=value ..."
_LINE = re.compile(r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+\[\d+\]\s+\S+\s+(?P<time>\d+\.\d+):\s+"
                   r"(?P<name>\w+):\s(?P<fields>.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")


class TraceUnavailable(Exception):
    """tracefs cannot be mounted or written (no root, a locked-down kernel): experiments fall back."""


@dataclass(frozen=True)
class TraceEvent:
    time: float  # time.monotonic() seconds
    name: str  # "inet_sock_set_state", "tcp_retransmit_skb", ...
    fields: dict[str, str] = field(hash=False)

    @property
    def ports(self) -> tuple[int, int]:
        return int(self.fields.get("sport", 0)), int(self.fields.get("dport", 0))

    def to_json(self) -> dict:
        return {"time": self.time, "name": self.name, **self.fields}


def parse_trace_line(line: str) -> TraceEvent | None:
    """One line of the `trace` file, or None for comments and lines of other shapes."""
    match = _LINE.match(line)
    if match is None:
        return None
    fields = dict(_FIELD.findall(match["fields"]))
    # tcp_send_reset prints sockaddrs ("src=10.0.0.1:80 dest=...") instead of address and port fields
    for side, name in (("s", "src"), ("d", "dest")):
        address = fields.get(name, "")
        if f"{side}port" not in fields and address.count(":") == 1:
            fields[f"{side}addr"], fields[f"{side}port"] = address.split(":")
    for key in ("oldstate", "newstate", "state"):
        if key in fields:
            fields[key] = fields[key].removeprefix("TCP_")  # TCP_SYN_SENT -> SYN_SENT, as `ss` says
    return TraceEvent(float(match["time"]), match["name"], fields)


def ensure_tracefs() -> Path:
    """The tracefs mount point, mounting it when it is not mounted yet."""
    if (TRACEFS / "instances").is_dir():
        return TRACEFS
    try:
        mount("nodev", str(TRACEFS), "tracefs", 0, "mount")
    except NetlinkOpError as error:
        raise TraceUnavailable(f"tracefs is not mounted at {TRACEFS} and cannot be: {error}") from None
    if not (TRACEFS / "instances").is_dir():
        raise TraceUnavailable(f"tracefs at {TRACEFS} has no instances directory")
    return TRACEFS


def port_filter(ports: Iterable[int]) -> str:
    """A tracefs filter expression matching events whose source or destination port is listed."""
    terms = [f"sport == {p} || dport == {p}" for p in sorted(set(ports))]
    return " || ".join(terms)


class KernelTrace:
    """One tracing session over a set of ports; `events()` reads what has been recorded so far."""

    def __init__(self, lab: str, ports: Iterable[int], events: Iterable[str] = EVENTS) -> None:
        self.lab = lab
        self.ports = sorted(set(ports))
        self.event_names = tuple(events)
        self.directory: Path | None = None

    def start(self) -> KernelTrace:
        root = ensure_tracefs()
        directory = root / "instances" / f"nslab-{self.lab}-{os.getpid()}-{id(self) & 0xFFFF:x}"
        try:
            directory.mkdir()
        except OSError as error:
            raise TraceUnavailable(f"cannot create trace instance {directory}: {error.strerror}") from None
        self.directory = directory
        try:
            (directory / "trace_clock").write_text("mono")
            (directory / "buffer_size_kb").write_text("1024")
            expression = port_filter(self.ports)
            for event in self.event_names:
                event_dir = directory / "events" / event
                if not event_dir.is_dir():
                    continue  # an older kernel without this tracepoint: the others still count
                if expression:
                    try:
                        (event_dir / "filter").write_text(expression)
                    except OSError:
                        pass  # no port fields (tcp_send_reset carries sockaddrs): filtered in Python
                (event_dir / "enable").write_text("1")
            (directory / "tracing_on").write_text("1")
        except OSError as error:
            self.stop()
            raise TraceUnavailable(f"cannot configure trace instance {directory}: {error.strerror}") from None
        return self

    def events(self) -> list[TraceEvent]:
        if self.directory is None:
            return []
        text = (self.directory / "trace").read_text(errors="replace")
        found = [parse_trace_line(line) for line in text.splitlines() if not line.startswith("#")]
        return [e for e in found if e is not None]

    def stop(self) -> None:
        """Disable and remove the instance (rmdir of an instance frees its buffers)."""
        directory, self.directory = self.directory, None
        if directory is None:
            return
        with suppress(OSError):
            (directory / "tracing_on").write_text("0")
        for _ in range(50):  # rmdir fails with EBUSY while a reader still has a file open
            try:
                directory.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


@contextmanager
def optional_kernel_trace(lab: str, ports: Iterable[int]) -> Iterator[tuple[KernelTrace | None, str]]:
    """A started session over `ports` for the block, stopped after it: `(trace, "")`; or `(None, why)`
    where tracefs cannot be used, so an experiment falls back to coarser views (sock_diag, TCP_INFO
    polling) and says so instead of failing."""
    try:
        trace = KernelTrace(lab, ports).start()
    except TraceUnavailable as error:
        yield None, str(error)
        return
    try:
        yield trace, ""
    finally:
        trace.stop()


def connection_events(events: Iterable[TraceEvent], local: tuple[str, int],
                      remote: tuple[str, int] | None = None) -> list[TraceEvent]:
    """The events of one kernel socket: its own address and port as source (and the peer's, if given).

    A client's first transition (CLOSE -> SYN_SENT) happens before its ephemeral port is chosen and
    carries sport 0: it is counted when the destination is `remote`.
    """
    chosen = []
    for event in events:
        saddr, sport = event.fields.get("saddr"), int(event.fields.get("sport", -1))
        daddr, dport = event.fields.get("daddr"), int(event.fields.get("dport", -1))
        if sport == 0 and remote is not None and (daddr, dport) == remote and saddr == local[0]:
            chosen.append(event)
            continue
        if (saddr, sport) != local:
            continue
        if remote is not None and (daddr, dport) != remote and remote[1] != 0:
            continue
        chosen.append(event)
    return chosen


def state_sequence(events: Iterable[TraceEvent]) -> list[str]:
    """["CLOSE", "SYN_SENT", "ESTABLISHED", ...] from inet_sock_set_state events, in order."""
    states: list[str] = []
    for event in events:
        if event.name != "inet_sock_set_state":
            continue
        if not states:
            states.append(event.fields.get("oldstate", "?"))
        states.append(event.fields.get("newstate", "?"))
    return states


TRACEABLE_PORTS = (20000, 30000)  # below the ephemeral range, above the well-known services


def traceable_port() -> int:
    """A listening port drawn for one run: tracepoints are machine-wide and parallel labs share
    addresses (10.0.0.1, 10.0.0.2), so a filter on a port of the run's own sees its connections only."""
    low, high = TRACEABLE_PORTS
    return low + secrets.randbelow(high - low)
