"""Link impairments: from the file's two spellings to each interface's egress/ingress.

Spelling. ``impair: {delay: 10ms, loss: 1%}`` impairs both directions alike;
``impair: {h1->s1: {delay: 10ms}, s1->h1: {loss: 1%}}`` gives each direction its own (a direction
left out is clean). Only point-to-point links take impairments: on a LAN, "the direction" of a
packet depends on which of several peers receives it, which one egress/ingress pair cannot say.

Placement. Each direction is recorded exactly once in the plan, where it will be applied:
on the sender's ``egress`` (tc qdiscs shape what leaves an interface) — except when a kernel node
sends to a pystack node, where it goes on the pystack node's ``ingress``: links that touch a
pystack node are impaired in userspace by the stack, which can do what a kernel without sch_netem
cannot. So no packet is ever impaired twice.

Rules (netem's): ``jitter`` varies each packet's delay around ``delay``, so jitter without delay
has nothing to vary, and a jitter above the delay would ask for negative delays; ``reorder`` sends
some packets at once while the others wait ``delay``, so without delay (or at 100 %, when no packet
waits) there is nothing to overtake; ``loss: 100%`` drops every packet, so nothing else applies.
All are errors rather than silent no-ops. Each value's own range is `stack.ranges`'.
"""

from __future__ import annotations

from lab.topology.errors import FieldPath, format_value
from lab.topology.plan import Impairment
from lab.topology.schema import DIRECTION_ARROW, ImpairSpec, LinkSpec
from lab.topology.units import format_duration, format_rate
from lab.topology.yaml_lines import SourceMap

Direction = tuple[str, str]  # (sender node, receiver node)
# What happens to a packet after the loss draw (netem's order): none of it can apply to a dropped packet.
_AFTER_LOSS = ("duplicate", "corrupt", "reorder", "delay", "jitter", "rate")


def link_impairments(link: LinkSpec, lines: SourceMap, link_path: FieldPath) -> dict[Direction, Impairment]:
    """The impairment of each impaired direction of ``link`` (clean directions left out)."""
    if link.impair is None:
        return {}
    impair_path = (*link_path, "impair")
    nodes = [endpoint.node for endpoint in link.endpoints]
    if len(nodes) != 2:
        raise lines.error(
            impair_path,
            f"expected impairments only on a point-to-point link (2 endpoints), "
            f"got a LAN of {len(nodes)} endpoints",
            key=True,
        )
    a, b = nodes
    if isinstance(link.impair, ImpairSpec):
        both = to_impairment(link.impair, lines, impair_path)
        return {(a, b): both, (b, a): both} if not both.is_clean else {}
    out: dict[Direction, Impairment] = {}
    seen: set[Direction] = set()
    for key, spec in link.impair.items():
        path = (*impair_path, key)
        sender, _, receiver = (part.strip() for part in key.partition(DIRECTION_ARROW))
        if {sender, receiver} != {a, b} or sender == receiver:
            raise lines.error(
                path,
                f"expected a direction of this link ({a}->{b} or {b}->{a}), got {format_value(key)}",
                key=True,
            )
        if (sender, receiver) in seen:
            raise lines.error(path, f"expected each direction once, got {format_value(key)} again", key=True)
        seen.add((sender, receiver))
        impairment = to_impairment(spec, lines, path)
        if not impairment.is_clean:
            out[(sender, receiver)] = impairment
    return out


def to_impairment(spec: ImpairSpec, lines: SourceMap, path: FieldPath) -> Impairment:
    delay = spec.delay or 0.0
    if spec.jitter and not delay:
        raise lines.error(
            (*path, "jitter"),
            f"expected a delay for the jitter to vary (netem varies delay; "
            f"jitter alone means nothing), got jitter {format_duration(spec.jitter)} "
            f"with no delay",
        )
    if spec.jitter and spec.jitter > delay:
        raise lines.error(
            (*path, "jitter"),
            f"expected a jitter no larger than the delay it varies ({format_duration(delay)}; a packet "
            f"cannot leave before it was sent), got jitter {format_duration(spec.jitter)}",
        )
    if spec.reorder and not delay:
        raise lines.error(
            (*path, "reorder"),
            f"expected a delay with reorder (netem reorders by letting some "
            f"packets skip the delay), got reorder {spec.reorder:g}% with no delay",
        )
    if spec.reorder == 100:
        raise lines.error(
            (*path, "reorder"),
            "expected reorder below 100% (at 100% every packet skips the delay, so nothing is "
            "reordered and the delay does nothing), got reorder 100%",
        )
    if spec.loss == 100:
        others = [name for name in _AFTER_LOSS if getattr(spec, name)]
        if others:
            raise lines.error(
                (*path, "loss"),
                f"expected loss below 100% with {others[0]} (at 100% every packet is dropped, so "
                f"{others[0]} never applies; loss 100% alone cuts the link), got loss 100% with {others[0]}",
            )
    return Impairment(
        delay_ms=delay,
        jitter_ms=spec.jitter or 0.0,
        loss_pct=spec.loss or 0.0,
        duplicate_pct=spec.duplicate or 0.0,
        reorder_pct=spec.reorder or 0.0,
        corrupt_pct=spec.corrupt or 0.0,
        rate_mbit=spec.rate,
    )


def describe_impairment(impairment: Impairment) -> str:
    """``delay 20ms ±5ms, loss 1%, rate 100mbit`` (empty for a clean direction)."""
    parts: list[str] = []
    if impairment.delay_ms:
        jitter = f" ±{format_duration(impairment.jitter_ms)}" if impairment.jitter_ms else ""
        parts.append(f"delay {format_duration(impairment.delay_ms)}{jitter}")
    for word, pct in (
        ("loss", impairment.loss_pct),
        ("duplicate", impairment.duplicate_pct),
        ("reorder", impairment.reorder_pct),
        ("corrupt", impairment.corrupt_pct),
    ):
        if pct:
            parts.append(f"{word} {pct:g}%")
    if impairment.rate_mbit is not None:
        parts.append(f"rate {format_rate(impairment.rate_mbit)}")
    return ", ".join(parts)
