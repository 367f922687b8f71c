"""A bounded ring of the stack's TCP trace events, numbered, for the control socket's `trace` command.

Per-segment events (tcp_segment_in/out, tcp_probe) are left out unless asked for (`segments=True`): at
gigabit rates they would flush the ring in milliseconds and hide the state changes, retransmissions and
resets a reader wants, and building them costs a dict per segment. The Host is told the same choice
(`Host(trace_segments=ring.segments)`), so without them they are never built at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from stack.tcp.trace import INET_SOCK_SET_STATE, TCP_PROBE, TCP_SEGMENT_IN, TCP_SEGMENT_OUT, TraceEvent

RING_SIZE = 10_000
SKIPPED = frozenset({TCP_SEGMENT_IN, TCP_SEGMENT_OUT, TCP_PROBE})


class TraceRing:
    def __init__(self, size: int = RING_SIZE, *, segments: bool = False) -> None:
        self.segments = segments
        # The events as the stack made them: turning one into JSON waits until someone reads it (`since`),
        # as a connection makes about five and most are overwritten before anyone asks.
        self.events: deque[TraceEvent] = deque(maxlen=size)
        self.next_seq = 0
        self.state_watchers: list[Callable[[TraceEvent], None]] = []

    def sink(self, event: TraceEvent) -> None:
        """The Host's trace callback."""
        if event.name in SKIPPED and not self.segments:
            return
        if event.name == INET_SOCK_SET_STATE:
            for watcher in self.state_watchers:
                watcher(event)
        self.events.append(event)
        self.next_seq += 1

    def since(self, seq: int) -> tuple[list[dict[str, Any]], int]:
        """Events numbered `seq` and later that are still in the ring, and the number to ask from next."""
        first = self.next_seq - len(self.events)
        start = max(0, seq - first)
        return [_json(first + i, e) for i, e in enumerate(self.events) if i >= start], self.next_seq


def _json(seq: int, event: TraceEvent) -> dict[str, Any]:
    return {"seq": seq, "time": event.time, "name": event.name,
            "local": f"{event.local_ip}:{event.local_port}",
            "remote": f"{event.remote_ip}:{event.remote_port}", **_plain(event.fields)}


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe field values (tuples become lists, enums their value, bytes hex)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, bytes):
            value = value.hex()
        elif hasattr(value, "value") and not isinstance(value, (int, float, str)):
            value = value.value
        out[key] = value
    return out
