"""The script corpus (tests/scripts/): every packetdrill script played against Linux and against the stack.

Each script is written from the RFCs and states what it checks in its opening comment.  A script runs
once per side, as `lab script FILE --against linux|stack` plays it (lab.script.run.play).  Where the
two sides differ by a choice the RFCs allow, the script is played with `--relax FIELD` (RELAX); where a
side departs from what the script's RFC text asks, the pair (script, side) is an expected failure
(KNOWN_DIFFERENCES), strict, so it fails loudly the day the difference goes away.  Both tables are
written out in docs/conformance.md ("Script corpus"), which a test below keeps in step.

The Linux side runs in real time (about a minute for the corpus); the stack side runs on a virtual clock.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.script import run
from lab.script.expect import parse_relaxations
from lab.script.player import SideResult
from lab.script.run import DEFAULT_TOLERANCE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = PROJECT_ROOT / "tests" / "scripts"
CONFORMANCE = PROJECT_ROOT / "docs" / "conformance.md"
SIDES = ("linux", "stack")
#: The corpus must cover the issue's topics with at least this many scripts.
MINIMUM_SCRIPTS = 40
#: Timing tolerance on the Linux side, in ms: Linux's RTO includes the real RTT the handshake measured
#: (a few ms more than the script's 100 ms) and its timers tick in jiffies, so backed-off timers drift
#: tens of ms from the script's times on a shared machine.  The stack's virtual clock needs none.
LINUX_TOLERANCE_MS = 80

#: Script (relative to tests/scripts) -> the --relax fields its pass relies on, each an RFC-allowed
#: choice in docs/conformance.md's table.
RELAX: dict[str, tuple[str, ...]] = {
    "ack/acceptable-acks-advance-snd-una.pkt": ("psh",),
    "data/send-window-limits-what-is-in-flight.pkt": ("psh",),
    "fast-retransmit/sack-blocks-trigger-a-retransmission.pkt": ("psh",),
    "fast-retransmit/three-duplicate-acks-trigger-a-retransmission.pkt": ("psh",),
    "fast-retransmit/two-duplicate-acks-do-not.pkt": ("psh",),
    "retransmit/rto-resends-one-segment-then-slow-starts.pkt": ("psh",),
    "sack/sender-resends-only-the-holes.pkt": ("psh",),
}

#: (script, side) -> why that side fails the script, as docs/conformance.md's table says.
KNOWN_DIFFERENCES: dict[tuple[str, str], str] = {
    ("retransmit/syn-retransmits-with-backoff.pkt", "linux"): (
        "Linux (net.ipv4.tcp_syn_linear_timeouts = 4) resends its first SYNs every second, without the "
        "backoff of RFC 6298 5.5"
    ),
}


#: Scripts the runner's own tests play to see them fail (tests/interop/test_lab_script.py), not corpus.
MUST_FAIL = "must-fail"


def corpus() -> list[str]:
    return sorted(str(path.relative_to(SCRIPTS)) for path in SCRIPTS.rglob("*.pkt")
                  if path.relative_to(SCRIPTS).parts[0] != MUST_FAIL)


def cases() -> list[object]:
    params = []
    for script in corpus():
        for side in SIDES:
            marks = []
            reason = KNOWN_DIFFERENCES.get((script, side))
            if reason is not None:
                marks.append(pytest.mark.xfail(reason=reason, strict=True))
            params.append(pytest.param(script, side, marks=marks, id=f"{script}-{side}"))
    return params


def play(script: str, side: str) -> SideResult:
    """One side's verdict on one script, with the script's relaxations; a Linux side's namespace is named
    with this corpus's prefix and removed whatever happens."""
    tolerance = LINUX_TOLERANCE_MS / 1000 if side == "linux" else DEFAULT_TOLERANCE
    relax = parse_relaxations(",".join(RELAX.get(script, ())) or None)
    [result] = run.play(run.load(SCRIPTS / script), (side,), relax=relax, tolerance=tolerance, prefix="sc")
    return result


@pytest.mark.root
@pytest.mark.parametrize(("script", "side"), cases())
def test_script_passes(script: str, side: str) -> None:
    result = play(script, side)
    assert result.passed, f"{script} against {side}: line {result.line}: {result.difference}"
    assert result.relaxed <= set(RELAX.get(script, ())), f"{script}: relied on {sorted(result.relaxed)}"


# ------------------------------------------------------------------ the corpus itself (no root)


def test_corpus_covers_the_topics_with_enough_scripts() -> None:
    scripts = corpus()
    assert len(scripts) >= MINIMUM_SCRIPTS, f"{len(scripts)} scripts, at least {MINIMUM_SCRIPTS} wanted"
    topics = {Path(script).parts[0] for script in scripts if len(Path(script).parts) > 1}
    assert MUST_FAIL not in topics
    wanted = {"handshake", "reset", "ack", "data", "close", "listen", "retransmit", "zero-window",
              "fast-retransmit", "sack", "pmtu", "time-wait", "keepalive"}
    assert wanted <= topics, f"topics without a script: {sorted(wanted - topics)}"


@pytest.mark.parametrize("script", [s for s in corpus() if len(Path(s).parts) > 1])
def test_each_script_says_what_it_checks_and_from_which_rfc(script: str) -> None:
    text = (SCRIPTS / script).read_text()
    opening = []
    for line in text.splitlines():
        if not line.startswith("//"):
            break
        opening.append(line)
    assert opening, f"{script}: no opening comment saying what it checks"
    assert re.search(r"RFC \d+", " ".join(opening)), f"{script}: the opening comment cites no RFC"


def test_every_relaxation_and_known_difference_is_documented() -> None:
    doc = CONFORMANCE.read_text()
    scripts = set(corpus())
    for script, fields in RELAX.items():
        assert script in scripts, f"RELAX names a script that does not exist: {script}"
        for field in fields:
            assert re.search(rf"\| `{re.escape(script)}` \| {field} \|", doc), (
                f"docs/conformance.md has no row for {script}, field {field}"
            )
    for script, side in KNOWN_DIFFERENCES:
        assert script in scripts, f"KNOWN_DIFFERENCES names a script that does not exist: {script}"
        assert f"`{script}`" in doc, f"docs/conformance.md does not explain {script} failing on {side}"
