"""Expectations that speak TCP, and the messages they fail with: what was expected, and what was seen.

Pure: they judge what the lab recorded (state sequences per connection, counters before and after,
captured segments), so they can be tested without a lab. A failed expectation is an `AssertionError`
(pytest shows its message as the failure), whose text lists everything that was seen, so a wrong
expectation is corrected from the report alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lab.testing.segments import Segment, flags_from_text

MAX_SHOWN = 30  # connections or segments listed in one message; the rest are counted


class ExpectationFailed(AssertionError):
    """A TCP expectation was not met; the message shows what was seen instead."""


def normalise_state(state: str) -> str:
    """`syn-sent`, `SYN_SENT` and `TCP_SYN_SENT` are one state; Linux's `SYN_RECV` also answers to
    RFC 9293's `SYN_RECEIVED`, and `CLOSED` to Linux's `CLOSE`."""
    word = state.strip().upper().replace("-", "_").removeprefix("TCP_")
    return {"SYN_RECEIVED": "SYN_RECV", "CLOSED": "CLOSE", "FIN_WAIT_1": "FIN_WAIT1",
            "FIN_WAIT_2": "FIN_WAIT2"}.get(word, word)


def contains_run(seen: Sequence[str], expected: Sequence[str]) -> bool:
    """`expected` occurs in `seen` as consecutive states (one transition after the other)."""
    width = len(expected)
    return any(list(seen[i:i + width]) == list(expected) for i in range(len(seen) - width + 1))


def states_problem(node: str, expected: Sequence[str], sequences: Mapping[str, Sequence[str]], *,
                   exact: bool = False) -> str | None:
    """None when one connection of `node` went through `expected` (consecutive states; with `exact`,
    its whole sequence); else the message, listing each connection's sequence."""
    wanted = [normalise_state(s) for s in expected]
    for states in sequences.values():
        if (list(states) == wanted) if exact else contains_run(states, wanted):
            return None
    how = "exactly" if exact else "in a row"
    lines = [f"{node}: no connection went through {' -> '.join(wanted)} ({how})"]
    if not sequences:
        lines.append("  seen: no state changes at all on this node during the watch")
    for connection, states in list(sequences.items())[:MAX_SHOWN]:
        lines.append(f"  seen {connection}: {' -> '.join(states) or '(none)'}")
    if len(sequences) > MAX_SHOWN:
        lines.append(f"  ... and {len(sequences) - MAX_SHOWN} more connections")
    return "\n".join(lines)


def counter_problem(node: str, name: str, before: int | None, after: int | None, *,
                    by: int | None = None, at_least: int | None = None,
                    at_most: int | None = None) -> str | None:
    """None when the counter moved as asked (default: by at least 1); else the message with the figures."""
    if before is None or after is None:
        return f"{node}: no counter {name} (its counters have no such name)"
    moved = after - before
    if by is None and at_least is None and at_most is None:
        at_least = 1
    wanted = []
    if by is not None:
        wanted.append(f"by exactly {by}")
    if at_least is not None:
        wanted.append(f"by at least {at_least}")
    if at_most is not None:
        wanted.append(f"by at most {at_most}")
    if (by is None or moved == by) and (at_least is None or moved >= at_least) and \
            (at_most is None or moved <= at_most):
        return None
    return (f"{node}: counter {name} expected to move {' and '.join(wanted)}; "
            f"seen {before} -> {after} (moved by {moved})")


def option_matches(segment: Segment, name: str, value: Any) -> bool:
    """`value` True: the option is present; False: absent; anything else: present with that value."""
    if value is True:
        return name in segment.options
    if value is False:
        return name not in segment.options
    return segment.options.get(name) == value


def matching_segments(segments: Iterable[Segment], *, flags: str | None = None,
                      options: Mapping[str, Any] | Iterable[str] | None = None,
                      senders: Iterable[str] = (), port: int | None = None,
                      exact_flags: bool = True, length: int | None = None) -> list[Segment]:
    """The segments sent from one of `senders` (any when empty) with these flags (all of them and no
    others, or with `exact_flags=False` at least these), these options (names, or name -> value) and,
    if given, from or to `port` and with `length` payload bytes."""
    wanted_flags = flags_from_text(flags) if flags is not None else None
    wanted_options = (dict(options) if isinstance(options, Mapping)
                      else dict.fromkeys(options or (), True))
    addresses = set(senders)
    chosen = []
    for segment in segments:
        if addresses and segment.src not in addresses:
            continue
        if port is not None and port not in (segment.sport, segment.dport):
            continue
        if length is not None and segment.length != length:
            continue
        if wanted_flags is not None:
            have = flags_from_text(segment.flags)
            if (have != wanted_flags) if exact_flags else (have & wanted_flags) != wanted_flags:
                continue
        if all(option_matches(segment, n, v) for n, v in wanted_options.items()):
            chosen.append(segment)
    return chosen


def segment_problem(node: str, description: str, found: Sequence[Segment], sent: Sequence[Segment], *,
                    count: int | None = None) -> str | None:
    """None when `found` (the matching segments) is what was asked (at least one, or exactly `count`);
    else the message, listing the segments `node` sent."""
    if (len(found) >= 1) if count is None else len(found) == count:
        return None
    asked = "a segment" if count is None else f"exactly {count} segment{'s' * (count != 1)}"
    lines = [f"{node}: expected {asked} sent with {description}; {len(found)} matched, "
             f"of {len(sent)} it sent"]
    lines += [f"  sent {s.describe()}" for s in sent[:MAX_SHOWN]]
    if len(sent) > MAX_SHOWN:
        lines.append(f"  ... and {len(sent) - MAX_SHOWN} more")
    return "\n".join(lines)


def describe_segment_query(flags: str | None, options: Any, port: int | None, length: int | None) -> str:
    parts = []
    if flags is not None:
        parts.append(f"flags [{flags}]")
    if options:
        shown = (", ".join(f"{k}={v}" for k, v in options.items()) if isinstance(options, Mapping)
                 else ", ".join(options))
        parts.append(f"options {shown}")
    if port is not None:
        parts.append(f"port {port}")
    if length is not None:
        parts.append(f"length {length}")
    return " and ".join(parts) or "any flags"


def kernel_sequences(events: Iterable[Any], addresses: Iterable[str]) -> dict[str, list[str]]:
    """The kernel's state sequences per connection (`10.0.0.1:40000 > 10.0.0.2:7`) from
    `inet_sock_set_state` tracepoint events whose source address is one of the node's.

    A client's first transition (CLOSE -> SYN_SENT) comes before its ephemeral port is chosen, with
    sport 0: it opens the next connection from that address to the same destination."""
    own = set(addresses)
    sequences: dict[str, list[str]] = {}
    unported: dict[tuple[str, str, str], list[str]] = {}
    for event in events:
        if event.name != "inet_sock_set_state":
            continue
        fields = event.fields
        saddr, sport, daddr, dport = (fields.get("saddr"), fields.get("sport", "0"), fields.get("daddr"),
                                      fields.get("dport", "0"))
        if saddr not in own:
            continue
        old, new = normalise_state(fields.get("oldstate", "?")), normalise_state(fields.get("newstate", "?"))
        if sport == "0":
            _extend(unported.setdefault((saddr, daddr, dport), []), old, new)
            continue
        key = f"{saddr}:{sport} > {daddr}:{dport}"
        if key not in sequences:
            sequences[key] = unported.pop((saddr, daddr, dport), [])
        _extend(sequences[key], old, new)
    for (saddr, daddr, dport), states in unported.items():
        sequences[f"{saddr}:? > {daddr}:{dport}"] = states
    return sequences


def _extend(states: list[str], old: str, new: str) -> None:
    """One transition onto a sequence: `old` is written only where it does not repeat the last state."""
    if not states or states[-1] != old:
        states.append(old)
    states.append(new)


def stack_sequences(events: Iterable[Mapping[str, Any]], ports: Iterable[int] = ()) -> dict[str, list[str]]:
    """The stack's state sequences per connection from its trace ring's `inet_sock_set_state` events
    (optionally only connections with one of `ports` at either end)."""
    wanted = {str(p) for p in ports}
    sequences: dict[str, list[str]] = {}
    for event in events:
        if event.get("name") != "inet_sock_set_state":
            continue
        local, remote = str(event.get("local", "?")), str(event.get("remote", "?"))
        if wanted and local.rpartition(":")[2] not in wanted and remote.rpartition(":")[2] not in wanted:
            continue
        key = f"{local} > {remote}"
        states = sequences.setdefault(key, [normalise_state(str(event.get("oldstate", "?")))])
        states.append(normalise_state(str(event.get("newstate", "?"))))
    return sequences
