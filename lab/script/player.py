"""Playing a script against one side: the same walk through the events for Linux and for the stack.

A side (`Side`) owns time and the wire: it lets time pass, injects the script's inbound packets, hands
over what the local TCP sent, and makes the script's system calls. The player keeps packetdrill's
bookkeeping: each event's time (relative times count from when the previous event really happened), the
local ISN (learned from the first SYN the local side sends; the script's local sequence numbers are
relative to it, the remote's are absolute), the connection's ports, and the call that is still blocked.
It stops at the first difference and says which line it was, what was expected and what was seen.
A segment nobody expected fails the line before which it came; after the last line nothing is checked
(as in packetdrill: a FIN or RST that a final close() sends need not be scripted).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from lab.script.calls import REMOTE_SERVICE_PORT, Calls, Mismatch, Skipped, SocketOps
from lab.script.expect import ACK_DELAY_BOUND, MOD, is_pure_ack, match_segment
from lab.script.model import (
    LOCAL_IP,
    LOCAL_PORT,
    REMOTE_IP,
    REMOTE_PORT,
    Event,
    Option,
    Packet,
    Script,
    Segment,
    Shell,
    Syscall,
)
from lab.script.packets import FLAG_BITS, Observed, flags_bits, icmp_packet, tcp_packet

ANYTIME_WAIT = 10.0  # how long ``*`` waits for an outbound segment
DEFAULT_WINDOW = 65535


@dataclass(slots=True)
class Outcome:
    """How a call ended: its value, or the error it raised, at `time`."""

    value: int | None
    error: BaseException | None
    time: float


class Pending(Protocol):
    """A call still blocked on a side (the side knows what it waits on)."""


class Side(Protocol):
    name: str
    ops: SocketOps

    def now(self) -> float: ...
    def advance(self, until: float) -> None: ...
    def take_outbound(self, deadline: float) -> Observed | None: ...
    def queued(self) -> list[Observed]: ...
    def inject(self, packet: bytes) -> None: ...
    def start_call(self, operation: Callable[[], int]) -> Outcome | Pending: ...
    def finish_call(self, pending: Pending, until: float) -> Outcome | None: ...
    def shell(self, command: str, cwd: str) -> tuple[int, str] | None: ...


@dataclass(slots=True)
class SideResult:
    """One side's verdict on one script."""

    side: str
    script: str
    passed: bool = True
    line: int | None = None
    difference: str | None = None
    relaxed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {"side": self.side, "script": self.script, "passed": self.passed, "line": self.line,
                "difference": self.difference, "relaxed": sorted(self.relaxed), "notes": self.notes,
                "events": self.events, "seconds": round(self.seconds, 4)}


class Failed(Exception):
    def __init__(self, event: Event, message: str) -> None:
        super().__init__(message)
        self.event = event


class Player:
    def __init__(self, script: Script, side: Side, *, relax: frozenset[str], tolerance: float) -> None:
        self.script = script
        self.side = side
        self.relax = relax
        self.tolerance = script.tolerance if script.tolerance is not None else tolerance
        self.calls = Calls()
        self.cwd = os.path.dirname(os.path.abspath(script.path))
        self.result = SideResult(side.name, script.path)
        self.local_isn: int | None = None
        self.local_port: int | None = None
        self.remote_port = REMOTE_PORT
        self.last_tsval: int | None = None
        self.last_time = 0.0
        self.pending: tuple[Syscall, Pending] | None = None

    # -- the walk ------------------------------------------------------------------------------------

    def run(self) -> SideResult:
        try:
            for event in self.script.events:
                self.play(event)
                self.result.events += 1
                self.check_pending(self.side.now())
            if self.pending is not None:
                call, _ = self.pending
                self.check_pending(self.side.now() + self.tolerance)
                if self.pending is not None:
                    raise Failed(call, f"{call.name}() is still blocked when the script ends")
        except Failed as failure:
            self.result.passed = False
            self.result.line = failure.event.where.line
            self.result.difference = f"{failure.event.where}: {failure}"
        self.result.seconds = self.side.now()
        return self.result

    def times(self, event: Event) -> tuple[float, float | None]:
        """The event's earliest and latest time in script seconds (latest None: ``*``)."""
        timing = event.timing
        if timing.anytime:
            return self.side.now(), None
        start = (self.last_time if timing.relative else 0.0) + timing.start
        if timing.end is None:
            return start, start
        return start, (self.last_time if timing.end_relative else 0.0) + timing.end

    def play(self, event: Event) -> None:
        start, end = self.times(event)
        if isinstance(event, Packet) and not event.inbound:
            self.expect(event, start, end)
            return
        if isinstance(event, Syscall) and self.pending is not None:
            blocked, _ = self.pending
            self.check_pending(start + self.tolerance)
            if self.pending is not None:
                raise Failed(event, f"{blocked.name}() of line {blocked.where.line} is still blocked")
        self.side.advance(start)
        self.check_unexpected(event)
        self.last_time = max(start, self.side.now()) if not event.timing.anytime else self.side.now()
        if isinstance(event, Packet):
            self.side.inject(self.inbound(event))
        elif isinstance(event, Shell):
            self.shell(event)
        elif isinstance(event, Syscall):
            self.syscall(event)

    def check_unexpected(self, event: Event) -> None:
        queued = self.side.queued()
        if queued:
            seen = queued[0]
            raise Failed(event, f"unexpected segment > {seen.describe(self.local_isn or 0)} "
                                f"at {seen.time:.3f} s, before this line")

    # -- system calls --------------------------------------------------------------------------------

    def syscall(self, call: Syscall) -> None:
        operation = self.calls.prepare(call)
        if call.name == "connect":
            self.remote_port = REMOTE_SERVICE_PORT  # the SYN goes to 192.0.2.1:8080
        outcome = self.side.start_call(lambda: operation(self.side.ops))
        if isinstance(outcome, Outcome):
            self.judge(call, outcome)
        else:
            self.pending = (call, outcome)

    def check_pending(self, until: float) -> None:
        if self.pending is None:
            return
        call, pending = self.pending
        outcome = self.side.finish_call(pending, until)
        if outcome is not None:
            self.pending = None
            self.judge(call, outcome)

    def judge(self, call: Syscall, outcome: Outcome) -> None:
        error = outcome.error
        if isinstance(error, Skipped):
            self.result.notes.append(f"line {call.where.line}: {call.name} skipped on {self.side.name}: "
                                     f"{error}")
            return
        if isinstance(error, Mismatch):
            raise Failed(call, str(error))
        if error is not None and not isinstance(error, OSError):
            raise error
        if call.timing.blocking_end is not None:
            returned = (self.last_time if call.timing.end_relative else 0.0) + call.timing.blocking_end
            if abs(outcome.time - returned) > self.tolerance:
                raise Failed(call, f"{call.name}() returned at {outcome.time:.3f} s, the script says "
                                   f"{returned:.3f} s")
        if call.result is None:
            return
        if isinstance(error, OSError):
            code = error.errno or 0
            name = errno.errorcode.get(code, str(code))
            if call.errno_name is None:
                raise Failed(call, f"expected {call.describe()}, got -1 {name} ({os.strerror(code)})")
            if getattr(errno, call.errno_name, None) != code:
                raise Failed(call, f"expected errno {call.errno_name}, got {name} ({os.strerror(code)})")
            return
        if call.errno_name is not None:
            raise Failed(call, f"expected -1 {call.errno_name}, got {outcome.value}")
        if outcome.value != call.result:
            raise Failed(call, f"expected {call.describe()}, got {outcome.value}")

    def shell(self, event: Shell) -> None:
        answer = self.side.shell(event.command, self.cwd)
        if answer is None:
            self.result.notes.append(f"line {event.where.line}: shell line skipped on {self.side.name}")
            return
        status, output = answer
        if status != 0:
            raise Failed(event, f"`{event.command}` exited {status}: {output.strip()[:200]}")

    # -- segments ------------------------------------------------------------------------------------

    def inbound(self, event: Packet) -> bytes:
        local_port = self.local_port or LOCAL_PORT
        isn = self.local_isn or 0
        if event.icmp is not None:
            icmp = event.icmp
            quoted = icmp.quoted
            seq = isn + (quoted.start if quoted is not None else 1)
            inner = tcp_packet(LOCAL_IP, REMOTE_IP, local_port, self.remote_port, flags=FLAG_BITS["."],
                               seq=seq, ack=0, window=0, options=(), payload=b"")
            return icmp_packet(REMOTE_IP, LOCAL_IP, icmp.type_name, icmp.code_name, icmp.mtu, inner)
        segment = event.segment
        assert segment is not None
        ack = (isn + segment.ack) % MOD if segment.ack is not None else 0
        return tcp_packet(REMOTE_IP, LOCAL_IP, self.remote_port, local_port, flags=flags_bits(segment.flags),
                          seq=segment.start, ack=ack,
                          window=DEFAULT_WINDOW if segment.window is None else segment.window,
                          options=self.inbound_options(segment), payload=bytes(segment.length),
                          urgent=segment.urgent or 0)

    def inbound_options(self, segment: Segment) -> tuple[Option, ...]:
        options = []
        isn = self.local_isn or 0
        for option in segment.options or ():
            if option.kind == "TS" and option.values[1] and self.last_tsval is not None:
                option = Option("TS", (option.values[0], self.last_tsval))
            elif option.kind == "sack":
                option = Option("sack", tuple((isn + value) % MOD for value in option.values))
            options.append(option)
        return tuple(options)

    def expect(self, event: Packet, start: float, end: float | None) -> None:
        segment = event.segment
        assert segment is not None
        tolerance = self.tolerance
        late = tolerance
        if "ack-timing" in self.relax and is_pure_ack(segment):
            late = max(tolerance, ACK_DELAY_BOUND)
        deadline = (self.side.now() + ANYTIME_WAIT) if end is None else end + late
        seq_start, remaining = segment.start, segment.length
        while True:
            seen = self.side.take_outbound(deadline)
            if seen is None:
                raise Failed(event, f"expected > {segment.describe()} by {deadline:.3f} s, nothing was sent")
            if end is not None and seen.time < start - tolerance:
                raise Failed(event, f"> {seen.describe(self.local_isn or 0)} came at {seen.time:.3f} s, "
                                    f"the script expects it at {start:.3f} s")
            if end is not None and seen.time > end + tolerance:
                self.result.relaxed.add("ack-timing")
            self.learn(segment, seen)
            isn = self.local_isn or 0
            match = match_segment(segment, seen, isn, self.relax, start=seq_start, length=remaining)
            psh_only = (seen.flags ^ flags_bits(segment.flags)) == FLAG_BITS["P"]
            pieces = ("segmentation" in self.relax and 0 < seen.length < remaining
                      and match.differences in (["length"], ["flags", "length"] if psh_only else None))
            if pieces:
                self.result.relaxed.add("segmentation")
                self.result.relaxed |= match.relaxed
                seq_start = (seq_start + seen.length) % MOD
                remaining -= seen.length
                continue
            if not match.ok:
                raise Failed(event, f"expected > {segment.describe()}, got > {seen.describe(isn)} "
                                    f"(differs in {', '.join(match.differences)})")
            self.result.relaxed |= match.relaxed
            self.last_time = seen.time
            return

    def learn(self, segment: Segment, seen: Observed) -> None:
        if self.local_isn is None and seen.flags & FLAG_BITS["S"]:
            self.local_isn = (seen.seq - segment.start) % MOD
        if self.local_port is None:
            self.local_port = seen.src_port
        for option in seen.options:
            if option.kind == "TS":
                self.last_tsval = option.values[0]
