"""A packetdrill script as typed events, each with the file:line it came from.

A script is a list of events in time order. Every event has a `Timing`: absolute (``0.100``), relative
to the previous event (``+.1``), a range (``+0~+.1``: any time in it), or ``*`` (any time at all).
The events are system calls with their expected return value (and errno), inbound segments (``<``: the
remote end sends them), expected outbound segments (``>``: the local TCP must send them), inbound ICMP
errors, and backtick shell lines.

Sequence numbers follow packetdrill: the local side's numbers are relative to its initial sequence number
(ISN), learned from the first SYN it sends; the remote side's numbers are written as they go on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LOCAL_IP = "192.168.0.1"
REMOTE_IP = "192.0.2.1"
LOCAL_PORT = 8080
REMOTE_PORT = 48000
PREFIX_LENGTH = 24


@dataclass(frozen=True, slots=True)
class Where:
    """The file and line an event was written on, for messages."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Timing:
    """When an event happens: `start`..`end` seconds, each absolute or after the previous event."""

    start: float = 0.0
    end: float | None = None  # a range's upper bound (None: a single instant)
    relative: bool = True  # `start` counts from the previous event (``+``)
    end_relative: bool = True
    anytime: bool = False  # ``*``
    blocking_end: float | None = None  # ``a...b``: a system call that blocks until b


@dataclass(frozen=True, slots=True)
class Option:
    """One TCP option as written: ``mss 1460``, ``sackOK``, ``TS val 100 ecr 0``, ``nop``, ``wscale 7``,
    ``sack 1:1001 2001:3001``, ``eol``."""

    kind: str
    values: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.kind == "TS":
            return f"TS val {self.values[0]} ecr {self.values[1]}"
        if self.kind == "sack":
            pairs = zip(self.values[::2], self.values[1::2], strict=True)
            return "sack " + " ".join(f"{a}:{b}" for a, b in pairs)
        return " ".join([self.kind, *map(str, self.values)])


@dataclass(frozen=True, slots=True)
class Segment:
    """A TCP segment as a script writes it."""

    flags: str  # letters S F R P E W U and "." for ACK, e.g. "S.", "P.", "R"
    start: int  # seq
    end: int
    length: int
    ack: int | None = None
    window: int | None = None
    options: tuple[Option, ...] | None = ()  # None: ``<...>``, any options
    urgent: int | None = None

    @property
    def has_ack(self) -> bool:
        return "." in self.flags

    def describe(self) -> str:
        text = f"{self.flags} {self.start}:{self.end}({self.length})"
        if self.ack is not None:
            text += f" ack {self.ack}"
        if self.window is not None:
            text += f" win {self.window}"
        if self.options is None:
            text += " <...>"
        elif self.options:
            text += " <" + ",".join(map(str, self.options)) + ">"
        return text


@dataclass(frozen=True, slots=True)
class Icmp:
    """An inbound ICMP error quoting a segment of the connection:
    ``icmp unreachable frag_needed mtu 1200``."""

    type_name: str  # "unreachable" or "time_exceeded"
    code_name: str  # "frag_needed", "port_unreachable", "host_unreachable", "net_unreachable", ...
    mtu: int | None = None
    quoted: Segment | None = None  # the quoted segment's seq (local-ISN relative); None: SND.UNA


@dataclass(frozen=True, slots=True)
class Arg:
    """A system call argument: an int, a name (``AF_INET``, ``O_RDWR|O_NONBLOCK`` as a tuple of names),
    ``...`` (the default), a string, a list ``[1]`` or a struct ``{fd=4, events=POLLIN}``."""

    kind: str  # "int", "names", "ellipsis", "string", "list", "struct"
    value: object = None

    def __str__(self) -> str:
        if self.kind == "ellipsis":
            return "..."
        if self.kind == "names":
            return "|".join(self.value)  # type: ignore[arg-type]
        if self.kind == "string":
            return f'"{self.value}"'
        if self.kind == "list":
            return "[" + ", ".join(map(str, self.value)) + "]"  # type: ignore[call-overload]
        if self.kind == "struct":
            return "{" + ", ".join(f"{k}={v}" for k, v in self.value.items()) + "}"  # type: ignore[union-attr]
        return str(self.value)


@dataclass(frozen=True, slots=True)
class Event:
    where: Where
    timing: Timing


@dataclass(frozen=True, slots=True)
class Syscall(Event):
    name: str
    args: tuple[Arg, ...]
    result: int | None  # None: ``= ...`` (not checked)
    errno_name: str | None = None

    def describe(self) -> str:
        text = f"{self.name}({', '.join(map(str, self.args))}) = "
        text += "..." if self.result is None else str(self.result)
        return text + (f" {self.errno_name}" if self.errno_name else "")


@dataclass(frozen=True, slots=True)
class Packet(Event):
    inbound: bool  # "<": the remote end sends it; ">": the local TCP must send it
    segment: Segment | None = None
    icmp: Icmp | None = None


@dataclass(frozen=True, slots=True)
class Shell(Event):
    command: str


@dataclass(slots=True)
class Script:
    path: str
    events: list[Event] = field(default_factory=list)
    tolerance: float | None = None  # ``--tolerance_usecs=N`` in the script
