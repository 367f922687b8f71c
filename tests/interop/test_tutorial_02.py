"""Tutorial 2, the two queues: run on a real lab, and the facts it teaches checked from what it measured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.tutorials.runner import TutorialResult
from tests.interop.tutorial_runs import PNG_MAGIC, failed_checks, run_shipped

pytestmark = pytest.mark.root
BACKLOG = 2


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TutorialResult]:
    yield run_shipped("two-queues", tmp_path_factory.mktemp("tutorial-02"))


def largest(samples: list[list[float]], column: int) -> float:
    return max((row[column] for row in samples), default=0)


def test_every_check_passes(result: TutorialResult) -> None:
    assert result.passed, failed_checks(result)


@pytest.mark.parametrize("side", ["stack_listener", "kernel_listener"])
def test_the_syn_queue_is_seen_non_empty(result: TutorialResult, side: str) -> None:
    samples = result.metrics[side]["samples"]
    assert largest(samples, 1) > 0, samples


@pytest.mark.parametrize("side", ["stack_listener", "kernel_listener"])
def test_the_accept_queue_stops_at_backlog_plus_one(result: TutorialResult, side: str) -> None:
    seen = result.metrics[side]
    assert largest(seen["samples"], 2) == BACKLOG + 1
    assert seen["outcomes"].count("connected") == BACKLOG + 1
    assert "ECONNREFUSED" not in seen["outcomes"]


def test_overflows_and_synack_retransmissions_on_both_sides(result: TutorialResult) -> None:
    stack, kernel = result.metrics["stack_listener"], result.metrics["kernel_listener"]
    assert stack["counters"]["ListenOverflows"] >= 1
    assert kernel["counters"]["TcpExtListenOverflows"] >= 1
    assert stack["synack_retransmissions"] >= 1
    assert kernel["synack_retransmissions"] >= 1


def test_syn_cookies_past_a_full_syn_queue(result: TutorialResult) -> None:
    cookies = result.metrics["cookies"]
    assert cookies["stack"]["SyncookiesSent"] >= 1 and cookies["stack"]["SyncookiesRecv"] >= 1
    assert cookies["kernel"]["TcpExtSyncookiesSent"] >= 1


def test_the_queue_plot_is_written(result: TutorialResult) -> None:
    plots = [Path(p) for p in result.to_json()["artifacts"]["plots"]]
    assert sorted(p.suffix for p in plots) == [".png", ".svg"]
    png = next(p for p in plots if p.suffix == ".png")
    assert png.read_bytes()[:8] == PNG_MAGIC
