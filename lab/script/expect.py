"""Does an observed outbound segment match the one the script expects?

Strict by default, like packetdrill: flags, seq start:end(length), ack, window (when the script writes
one) and options in their order (TS val is never compared: it is the local clock's). Where a script pins a
choice Linux made that RFC 9293 leaves open, a relaxation loosens only that field, and a pass records
which ones it relied on:

* ``window``: any advertised window value;
* ``options``: SYN option order and NOP/EOL padding, offers a TCP may leave out (sackOK, TS, wscale) and
  the wscale value; MSS and SACK blocks are still compared;
* ``ack-timing``: a pure ACK may come up to 0.5 s after its scripted time (RFC 9293 3.8.6.3's bound on
  delayed ACKs);
* ``psh``: the PSH bit;
* ``segmentation``: one scripted data segment may arrive as several smaller ones (the player joins them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.script.model import Option, Segment
from lab.script.packets import FLAG_BITS, Observed, flags_bits

RELAXATIONS = ("window", "options", "ack-timing", "psh", "segmentation")
ACK_DELAY_BOUND = 0.5
MOD = 1 << 32
_OPTIONAL_OFFERS = frozenset({"sackOK", "TS", "wscale"})


def parse_relaxations(text: str | None) -> frozenset[str]:
    """``window,psh`` as a set; ValueError naming an unknown field."""
    if not text:
        return frozenset()
    fields = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(fields - set(RELAXATIONS))
    if unknown:
        raise ValueError(f"--relax: unknown field {', '.join(unknown)} (allowed: {', '.join(RELAXATIONS)})")
    return frozenset(fields)


@dataclass(slots=True)
class Match:
    differences: list[str] = field(default_factory=list)
    relaxed: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.differences


def is_pure_ack(segment: Segment) -> bool:
    return segment.flags == "." and segment.length == 0


def match_segment(expected: Segment, observed: Observed, local_isn: int, relax: frozenset[str], *,
                  start: int | None = None, length: int | None = None) -> Match:
    """Compare one observed segment with the expected one (`start`/`length` override the expected seq
    range, for the remainder of a segment that arrives in pieces)."""
    result = Match()
    want_flags = flags_bits(expected.flags)
    if observed.flags != want_flags:
        psh = FLAG_BITS["P"]
        if "psh" in relax and observed.flags & ~psh == want_flags & ~psh:
            result.relaxed.add("psh")
        else:
            result.differences.append("flags")
    start = expected.start if start is None else start
    length = expected.length if length is None else length
    seen_start = (observed.seq - local_isn) % MOD
    if seen_start != start % MOD:
        result.differences.append("seq")
    elif observed.length != length:
        result.differences.append("length")
    if expected.ack is not None and observed.ack != expected.ack % MOD:
        result.differences.append("ack")
    if expected.window is not None and observed.window != expected.window:
        if "window" in relax:
            result.relaxed.add("window")
        else:
            result.differences.append("window")
    if expected.options is not None:
        verdict = compare_options(expected.options, observed.options, relax)
        if verdict == "relaxed":
            result.relaxed.add("options")
        elif verdict != "same":
            result.differences.append("options")
    return result


def _strict(option: Option) -> tuple[str, tuple[int, ...]]:
    if option.kind == "TS":
        return ("TS", option.values[1:])  # the ecr only: TS val is the sender's clock
    return (option.kind, option.values)


def compare_options(expected: tuple[Option, ...], observed: tuple[Option, ...], relax: frozenset[str]) -> str:
    """``same``, ``relaxed`` (equal only under the options relaxation) or ``different``."""
    if [_strict(o) for o in expected] == [_strict(o) for o in observed]:
        return "same"
    if "options" not in relax:
        return "different"

    def meaning(options: tuple[Option, ...]) -> dict[str, tuple[int, ...]]:
        return {o.kind: _strict(o)[1] for o in options if o.kind not in ("nop", "eol")}

    want, seen = meaning(expected), meaning(observed)
    for kind in set(want) | set(seen):
        if kind in _OPTIONAL_OFFERS:
            if kind == "TS" and kind in want and kind in seen and want[kind] != seen[kind]:
                return "different"
            continue
        if want.get(kind) != seen.get(kind):
            return "different"
    return "relaxed"
