"""Tutorial 5, windows, loss and congestion: run on a real lab, the taught facts checked from measurements."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.tutorials.runner import TutorialResult
from tests.interop.tutorial_runs import PNG_MAGIC, failed_checks, run_shipped

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TutorialResult]:
    yield run_shipped("windows-loss-congestion", tmp_path_factory.mktemp("tutorial-05"))


def test_every_check_passes(result: TutorialResult) -> None:
    assert result.passed, failed_checks(result)


def test_both_senders_retransmitted_and_say_how(result: TutorialResult) -> None:
    kernel, stack = result.metrics["kernel_sender"], result.metrics["stack_sender"]
    assert kernel["total_retrans"] > 0
    assert kernel["counters"]["TcpExtTCPFastRetrans"] + kernel["counters"]["TcpExtTCPTimeouts"] > 0
    assert stack["counters"]["RetransSegs"] > 0
    assert stack["counters"]["TCPFastRetrans"] + stack["counters"]["TCPTimeouts"] > 0
    assert stack["series"]["retransmits"] and kernel["series"]["retransmits"]


def test_same_congestion_control_on_both_senders(result: TutorialResult) -> None:
    kernel, stack = result.metrics["kernel_sender"], result.metrics["stack_sender"]
    assert kernel["congestion"] == stack["congestion"] == "cubic"


def test_windows_traced_over_time_on_both(result: TutorialResult) -> None:
    for side in ("kernel_sender", "stack_sender"):
        samples = result.metrics[side]["series"]["samples"]
        assert len(samples) > 10, side
        assert max(row[1] for row in samples) > 10, f"{side}: cwnd never grew past its initial window"


def test_the_plots_are_written(result: TutorialResult) -> None:
    plots = [Path(p) for p in result.to_json()["artifacts"]["plots"]]
    assert sorted(p.suffix for p in plots) == [".png", ".svg"]
    for plot in plots:
        if plot.suffix == ".png":
            assert plot.read_bytes()[:8] == PNG_MAGIC
        else:
            assert ET.parse(plot).getroot().tag.endswith("svg")
