"""One rule for lab names (`lab.topology.names`), and every name the lab makes up obeys it (no root)."""

from __future__ import annotations

import pytest

from lab.build.state import LabError, LabState, check_lab_name
from lab.experiments.bulk import scratch_lab_name
from lab.tools.bench import bench_name, chain_bench_name
from lab.tools.demo import demo_lab_name
from lab.topology import TopologyError, lab_name_problem, plan_from_data
from lab.topology.chain import MAX_CHAIN
from lab.topology.names import MAX_NAME_LENGTH, derived_lab_name
from tests.interop.conftest import unique_lab_name

LONGEST = "a" * MAX_NAME_LENGTH


@pytest.mark.parametrize("bad", ["", "Pair", "-x", "1ab", "a-b", "a_b", "x" * (MAX_NAME_LENGTH + 1)])
def test_the_topology_the_state_and_the_cli_refuse_the_same_names(bad: str) -> None:
    assert lab_name_problem(bad)
    with pytest.raises(LabError, match="lab name"):
        check_lab_name(bad)
    with pytest.raises(LabError, match="lab name"):
        LabState.for_lab(bad)
    with pytest.raises(TopologyError, match="expected a lab name"):
        plan_from_data({"name": "ok", "nodes": {"h1": {"kind": "kernel"}}, "links": []}, name=bad)


@pytest.mark.parametrize("good", ["a", "pair", "n1", LONGEST])
def test_plain_short_names_are_accepted_everywhere(good: str) -> None:
    assert lab_name_problem(good) is None
    assert check_lab_name(good) == good


def test_every_name_the_lab_derives_passes_the_rule() -> None:
    derived = [
        scratch_lab_name(LONGEST),  # bulk's kernel pair
        *(derived_lab_name(LONGEST, f"l{index}") for index in range(10)),  # loss profiles
        bench_name() + "o", bench_name() + "p", bench_name() + "ok",  # `lab bench`
        chain_bench_name(MAX_CHAIN),  # `lab bench up`, the longest chain
        demo_lab_name(), derived_lab_name(demo_lab_name(), "k"),  # the demo and its bulk baseline
        unique_lab_name("ix"),  # interop fixtures
    ]
    assert [name for name in derived if lab_name_problem(name)] == []
