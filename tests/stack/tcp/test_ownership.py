"""FlowShare: which worker of a node owns a flow, and which ports a worker may choose (no root)."""

from __future__ import annotations

import random

import pytest

from stack.tcp.ownership import FlowShare
from stack.tcp.ports import EphemeralPortAllocator


def test_the_owner_of_an_ephemeral_port_is_its_remainder() -> None:
    share = FlowShare(0, 2, 32768, 60999)
    assert share.owner_of(40001) == 1
    assert share.owner_of(40000) == 0
    assert share.owner_of(80) is None  # a listener's port: whoever got the SYN


def test_only_a_segment_of_another_workers_flow_is_handed_over() -> None:
    share = FlowShare(0, 3, 32768, 60999)
    assert share.hand_over_to(40001, syn_only=False) == 2  # 40001 % 3
    assert share.hand_over_to(40003, syn_only=False) == 1
    assert share.hand_over_to(40002, syn_only=False) is None  # its own
    assert share.hand_over_to(40001, syn_only=True) is None  # a new passive connection: answered here
    assert share.hand_over_to(7, syn_only=False) is None


@pytest.mark.parametrize(("index", "count"), [(-1, 2), (2, 2)])
def test_a_worker_index_outside_the_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="worker index"):
        FlowShare(index, count, 32768, 60999)


def test_a_worker_allocates_only_ports_of_its_share() -> None:
    rng = random.Random(1)
    for index in range(3):
        share = FlowShare(index, 3, 40000, 40029)
        ports = EphemeralPortAllocator(b"secret", 40000, 40029, share=share.allocates)
        taken: set[int] = set()
        for _ in range(10):
            port = ports.allocate("10.0.0.2", "10.0.0.1", 5001, taken.__contains__, rng)
            assert port % 3 == index
            taken.add(port)
        with pytest.raises(OSError):  # the share's 10 ports are used up; the others' are never taken
            ports.allocate("10.0.0.2", "10.0.0.1", 5001, taken.__contains__, rng)
        assert ports.allocate_for_bind(lambda port: False, rng) % 3 == index
