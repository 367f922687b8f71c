"""Tutorial 4 (accept returns a new socket) runs and passes; the facts it teaches hold as measured."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.tutorials.runner import TutorialResult
from tests.interop.tutorial_runs import failed, holds_handshake, run_shipped, tcpdump_lines

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TutorialResult]:
    yield run_shipped(4, tmp_path_factory.mktemp("tutorial04"), prefix="tc")


def test_every_check_passes(result: TutorialResult) -> None:
    assert result.passed, failed(result)


def test_the_accepted_sockets_4_tuple_differs_from_the_listeners(result: TutorialResult) -> None:
    listener, accepted = result.metrics["kernel_listener"], result.metrics["kernel_accepted"]
    assert listener != accepted
    assert listener.split(" <-> ")[0] == accepted.split(" <-> ")[0] == "10.0.0.1:7400", "same local end"
    assert listener.endswith("0.0.0.0:0") and accepted.split(" <-> ")[1].startswith("10.0.0.2:")


def test_closing_a_listener_resets_what_it_never_accepted_on_both_sides(result: TutorialResult) -> None:
    unaccepted = result.metrics["unaccepted"]
    assert unaccepted["linux_listener"]["queued"] == 3
    assert unaccepted["linux_listener"]["client_errors"] == ["ECONNRESET"] * 3
    assert unaccepted["stack_listener"]["queued"] == 3
    assert unaccepted["stack_listener"]["client_errors"] == ["ECONNRESET"] * 3
    assert unaccepted["stack_resets"]["tcp_send_reset"] >= 3
    assert unaccepted["stack_resets"]["tcp_receive_reset"] >= 3


def test_both_pcaps_parse_and_hold_the_handshake(result: TutorialResult) -> None:
    pcaps = result.artifacts["pcap"]
    assert len(pcaps) == 2
    for pcap in pcaps:
        lines = tcpdump_lines(pcap)
        assert holds_handshake(lines), pcap
        assert sum("Flags [R" in line for line in lines) >= 6, "three RSTs each way"
