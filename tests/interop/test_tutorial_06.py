"""Tutorial 6 (close) runs and passes; TIME_WAIT is on the active closer only, with Linux's 60 s."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.tutorials.runner import TutorialResult
from tests.interop.tutorial_runs import failed, holds_handshake, run_shipped, tcpdump_lines

pytestmark = pytest.mark.root
ORDERLY = ["kernel client closes first", "stack server closes first", "kernel server closes first",
           "stack client closes first"]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TutorialResult]:
    yield run_shipped(6, tmp_path_factory.mktemp("tutorial06"), prefix="tc")


def test_every_check_passes(result: TutorialResult) -> None:
    assert result.passed, failed(result)


@pytest.mark.parametrize("name", ORDERLY)
def test_time_wait_is_on_the_active_closer_only(result: TutorialResult, name: str) -> None:
    exchange = result.metrics[name]
    states = {"kernel": exchange["kernel_state"], "stack": exchange["stack_state"]}
    passive = "stack" if exchange["active"] == "kernel" else "kernel"
    if exchange["time_wait_ended_by_rst"]:  # reached, then assassinated (a retransmitted FIN under load)
        traced = exchange["stack_states"] if exchange["active"] == "stack" else exchange["kernel_states"]
        assert "TIME_WAIT" in traced or exchange["active"] == "kernel", exchange
    else:
        assert states[exchange["active"]] == "TIME_WAIT", exchange
    assert states[passive] in (None, "CLOSE"), exchange
    assert "TIME_WAIT" not in (exchange["stack_states"] if passive == "stack" else exchange["kernel_states"])


def test_the_kernels_time_wait_timer_is_sixty_seconds(result: TutorialResult) -> None:
    left = result.metrics["kernel_time_wait_seconds_left"]
    assassinated = sum(bool(result.metrics[name]["time_wait_ended_by_rst"]) for name in ORDERLY[:3]
                       if result.metrics[name]["active"] == "kernel")
    assert len(left) == 2 - assassinated and all(45 < seconds <= 60 for seconds in left), left


def test_closing_with_unread_data_sends_rst_each_way(result: TutorialResult) -> None:
    assert result.metrics["kernel closes with unread data"]["stack_resets"].get("tcp_receive_reset", 0) >= 1
    assert result.metrics["stack closes with unread data"]["stack_resets"].get("tcp_send_reset", 0) >= 1


def test_every_pcap_parses_and_the_close_ones_hold_the_handshake(result: TutorialResult) -> None:
    pcaps = result.artifacts["pcap"]
    assert len(pcaps) == 6, "both ends of three steps"
    for pcap in pcaps:
        lines = tcpdump_lines(pcap)
        assert holds_handshake(lines), pcap
        assert any("Flags [F" in line or "Flags [R" in line for line in lines), pcap
