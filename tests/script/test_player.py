"""The player's timing rules, with a side that sends prepared segments at prepared times: too early and
too late fail, a late pure ACK passes with ack-timing only (and says so), an unexpected segment fails."""

from __future__ import annotations

from collections.abc import Callable

from lab.script.packets import FLAG_BITS, Observed
from lab.script.player import Outcome, Player
from lab.script.syntax import parse_text

ACK = FLAG_BITS["."]


class PreparedSide:
    """Time is virtual; the local TCP 'sends' the prepared segments at their times, whatever happens."""

    name = "prepared"

    def __init__(self, sent: list[Observed]) -> None:
        self.clock = 0.0
        self.sent = sorted(sent, key=lambda seen: seen.time)
        self.injected: list[bytes] = []
        self.ops = object()

    def now(self) -> float:
        return self.clock

    def advance(self, until: float) -> None:
        self.clock = max(self.clock, until)

    def queued(self) -> list[Observed]:
        return [seen for seen in self.sent if seen.time <= self.clock]

    def take_outbound(self, deadline: float) -> Observed | None:
        if self.sent and self.sent[0].time <= deadline:
            seen = self.sent.pop(0)
            self.clock = max(self.clock, seen.time)
            return seen
        self.clock = max(self.clock, deadline)
        return None

    def inject(self, packet: bytes) -> None:
        self.injected.append(packet)

    def start_call(self, operation: Callable[[], int]) -> Outcome:
        return Outcome(0, None, self.clock)

    def finish_call(self, pending: object, until: float) -> Outcome | None:
        return None

    def shell(self, command: str, cwd: str) -> tuple[int, str] | None:
        return None


def ack_at(time: float) -> Observed:
    return Observed(time, 8080, 48000, ACK, 1, 1001, 500, (), 0, 40)


def play(text: str, sent: list[Observed], relax: frozenset[str] = frozenset()) -> Player:
    side = PreparedSide(sent)
    player = Player(parse_text(text, "t.pkt"), side, relax=relax, tolerance=0.01)  # type: ignore[arg-type]
    player.local_isn = 0
    player.run()
    return player


def test_a_segment_on_time_passes_and_sets_the_time_of_the_next_line() -> None:
    player = play("0.1 > . 1:1(0) ack 1001\n+0.2 > . 1:1(0) ack 1001\n", [ack_at(0.1), ack_at(0.3)])
    assert player.result.passed, player.result.difference


def test_too_early_and_too_late_fail() -> None:
    early = play("0.5 < . 1:1(0) ack 1 win 100\n+0 > . 1:1(0) ack 1001\n", [ack_at(0.45)])
    assert not early.result.passed and "before this line" in (early.result.difference or "")
    before = play("0.5 > . 1:1(0) ack 1001\n", [ack_at(0.2)])
    assert not before.result.passed and "came at 0.200 s" in (before.result.difference or "")
    late = play("0.1 > . 1:1(0) ack 1001\n", [ack_at(0.3)])
    assert not late.result.passed and "nothing was sent" in (late.result.difference or "")


def test_a_late_pure_ack_passes_with_ack_timing_and_says_so() -> None:
    relaxed = play("0.1 > . 1:1(0) ack 1001\n", [ack_at(0.3)], frozenset({"ack-timing"}))
    assert relaxed.result.passed and relaxed.result.relaxed == {"ack-timing"}
    too_late = play("0.1 > . 1:1(0) ack 1001\n", [ack_at(0.7)], frozenset({"ack-timing"}))
    assert not too_late.result.passed


def test_ranges_and_anytime() -> None:
    assert play("0.1~0.5 > . 1:1(0) ack 1001\n", [ack_at(0.4)]).result.passed
    assert play("* > . 1:1(0) ack 1001\n", [ack_at(5.0)]).result.passed
