"""Tutorial 1 (socket, bind, listen) runs and passes; the facts it teaches hold in what it measured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.tutorials.runner import TutorialResult
from tests.interop.tutorial_runs import failed, holds_handshake, run_shipped, tcpdump_lines

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TutorialResult]:
    yield run_shipped(1, tmp_path_factory.mktemp("tutorial01"), prefix="tc")


def test_every_check_passes(result: TutorialResult) -> None:
    assert result.passed, failed(result)


def test_listen_backlog_is_capped_at_somaxconn_on_both_sides(result: TutorialResult) -> None:
    somaxconn = result.metrics["somaxconn"]
    backlogs = result.metrics["backlogs"]
    assert backlogs["kernel_backlog_5"] == 5 and backlogs["stack_backlog_5"] == 5
    assert backlogs["kernel_backlog_100000"] == somaxconn == backlogs["stack_backlog_60000"]


def test_so_reuseaddr_is_what_lets_a_port_in_time_wait_be_bound_again(result: TutorialResult) -> None:
    reuse = result.metrics["reuse"]
    assert reuse["kernel_without"] == "EADDRINUSE"
    assert reuse["kernel_with"] == "ok"
    assert reuse["stack_relisten"] == "ok"


def test_both_pcaps_parse_and_hold_the_handshake(result: TutorialResult) -> None:
    pcaps = result.artifacts["pcap"]
    assert {p.name for p in pcaps} == {"reuse-h1.pcap", "reuse-s1.pcap", "reuse-both-h1.pcap",
                                       "reuse-both-s1.pcap"}
    for pcap in pcaps:
        assert holds_handshake(tcpdump_lines(pcap)), pcap


def test_the_report_and_ladders_are_written(result: TutorialResult) -> None:
    report: Path = result.artifacts["report"][0]
    text = report.read_text()
    assert "Tutorial 1: socket, bind, listen" in text and 'class="ladder"' in text
    assert any(p.suffix == ".txt" for p in result.artifacts["ladder"])


def test_so_reuseaddr_must_be_on_both_sockets_on_both_sides(result: TutorialResult) -> None:
    both = result.metrics["reuse_on_both"]
    assert both["linux_old_without_new_with"] == "EADDRINUSE"
    assert both["stack_code"] == {"old without, new without": "EADDRINUSE",
                                  "old without, new with": "EADDRINUSE", "old with, new with": "ok"}
