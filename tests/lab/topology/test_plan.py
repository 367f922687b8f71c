"""Plans: their digest and their JSON form, which a running lab keeps in plan.json (no root)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from lab.topology import TOPOLOGY_DIR, TopologyError, load_topology, plan_from_text
from lab.topology.chain import chain_plan
from lab.topology.plan import Impairment, plan_from_json, plan_json_digest
from tests.lab.plan_examples import pair_plan, router_plan


def test_the_builders_digest_is_the_plans_digest() -> None:
    plans = (router_plan(), pair_plan("p", Impairment(rate_mbit=20)), pair_plan("q", Impairment(delay_ms=1)))
    for plan in plans:
        assert plan_json_digest(plan.to_json()) == plan.digest()


def test_the_digest_is_stable_across_versions() -> None:
    # A lab that is up keeps its digest in plan.json: a repeated `up` must still recognise it.
    assert router_plan().digest() == "827b493c343e5542"
    assert pair_plan("p", Impairment(rate_mbit=20)).digest() == "bd20cabd916b2a88"
    assert pair_plan("q", Impairment(delay_ms=1)).digest() == "6120a4ba881087f5"
    assert chain_plan(100, name="x").digest() == "fb28ba8eacfedb0f"


def test_the_plans_json_is_the_generic_dataclass_form() -> None:
    # to_json is written field by field for speed; it must give what asdict + a JSON round trip gives.
    plans = [router_plan(), pair_plan("p", Impairment(delay_ms=5, loss_pct=1.5, rate_mbit=20)), chain_plan(5),
             *(load_topology(path) for path in sorted(TOPOLOGY_DIR.glob("*.yaml")))]
    for plan in plans:
        assert plan.to_json() == json.loads(json.dumps(asdict(plan), default=str)), plan.name
        assert plan_from_json(plan.to_json()) == plan


def test_a_plan_reads_back_from_its_json_with_the_same_digest() -> None:
    plan = plan_from_text(Path("topologies/router.yaml").read_text(), source="router.yaml", name="rt")
    assert plan_from_json(plan.to_json()) == plan
    off = plan_from_text("name: x\nnodes:\n  h1: {kind: kernel}\n  s1: {kind: pystack, process: false}\n"
                         "links:\n  - endpoints: [h1:eth0, s1:eth0]\n    subnet: 10.0.0.0/24\n")
    assert off.node("s1").process is False and off.node("h1").process is True
    assert plan_from_json(off.to_json()).digest() == off.digest()


def test_impairable_links_reach_the_plan_and_lans_refuse_it() -> None:
    text = ("name: x\nnodes:\n  h1: {kind: kernel}\n  h2: {kind: kernel}\nlinks:\n"
            "  - endpoints: [h1:eth0, h2:eth0]\n    subnet: 10.0.0.0/24\n    impairable: true\n")
    plan = plan_from_text(text)
    assert plan.links[0].impairable and plan_from_json(plan.to_json()) == plan
    assert plan.digest() != plan_from_text(text.replace("    impairable: true\n", "")).digest()
    lan = text.replace("[h1:eth0, h2:eth0]", "[h1:eth0, h2:eth0, h3:eth0]").replace(
        "links:", "  h3: {kind: kernel}\nlinks:")
    with pytest.raises(TopologyError, match=r"links\[0\]\.impairable: expected impairable only on a point"):
        plan_from_text(lan)
