"""Tutorial 3, connect and the ephemeral port: run on a real lab, the taught facts checked from what it
measured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.tutorials.packets import tcp_segments
from lab.tutorials.runner import TutorialResult
from stack.wire.tcp import TcpFlags
from tests.interop.tutorial_runs import failed_checks, run_shipped

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TutorialResult]:
    yield run_shipped("connect-ephemeral-port", tmp_path_factory.mktemp("tutorial-03"))


def test_every_check_passes(result: TutorialResult) -> None:
    assert result.passed, failed_checks(result)


@pytest.mark.parametrize("side", ["kernel", "stack"])
def test_ephemeral_ports_in_range_and_different(result: TutorialResult, side: str) -> None:
    seen = result.metrics["ephemeral"]
    low, high = seen[f"{side}_range"]
    ports = seen[f"{side}_ports"]
    assert len(ports) == 2 and ports[0] != ports[1]
    assert all(low <= port <= high for port in ports)


@pytest.mark.parametrize("side", ["kernel", "stack"])
def test_syn_retransmissions_back_off_1_2_4_seconds(result: TutorialResult, side: str) -> None:
    gaps = result.metrics["syn_backoff"][f"{side}_gaps"]
    assert len(gaps) >= 3, gaps
    for got, want in zip(gaps, [1.0, 2.0, 4.0], strict=False):
        assert abs(got - want) <= 0.2 * want, gaps


def test_closed_ports_refuse_both_ways(result: TutorialResult) -> None:
    assert result.metrics["refused"] == {"kernel": "ECONNREFUSED", "stack": "ECONNREFUSED"}


def test_both_captures_parse_and_hold_the_handshakes(result: TutorialResult) -> None:
    pcaps = [Path(p) for p in result.to_json()["artifacts"]["pcap"]]
    assert len(pcaps) == 2
    for pcap in pcaps:
        segments = tcp_segments(pcap)
        syns = [s for s in segments if s.is_syn]
        syn_acks = [s for s in segments if s.segment.flags & TcpFlags.SYN and s.segment.flags & TcpFlags.ACK]
        counts = f"{pcap.name}: {len(syns)} SYNs, {len(syn_acks)} SYN-ACKs"
        assert len(syns) == 4 and len(syn_acks) == 4, counts
        for syn in syns:  # each SYN-ACK answers its SYN, and its ACK follows
            answer = next(s for s in syn_acks if s.src == syn.dst and s.dst == syn.src)
            assert answer.segment.ack == (syn.segment.seq + 1) % 2**32
            assert any(s.src == syn.src and s.dst == syn.dst and s.segment.flags == TcpFlags.ACK
                       and s.segment.ack == (answer.segment.seq + 1) % 2**32 for s in segments)
