"""Drawing plans: Mermaid and Graphviz text that parses, shows every node, link, address and impairment."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.tools.graph import render
from lab.topology import TOPOLOGY_DIR, load_topology, plan_from_text
from lab.topology.chain import chain_plan
from lab.topology.impairments import describe_impairment
from lab.topology.plan import Impairment, LabPlan

SHIPPED = sorted(TOPOLOGY_DIR.glob("*.yaml"))

# The Mermaid subset render() writes, one statement per line.
_MERMAID_ID = r"[A-Za-z_][A-Za-z0-9_]*"
_QUOTED = r'"[^"]*"'
_MERMAID_NODE = re.compile(rf"({_MERMAID_ID})(\[{_QUOTED}\]|\(\[{_QUOTED}\]\)|\{{\{{{_QUOTED}\}}\}})")
_MERMAID_EDGE = re.compile(rf"({_MERMAID_ID}) ---\|{_QUOTED}\| ({_MERMAID_ID})")
_DOT_ID = r'"(?:[^"\\]|\\.)*"'
_DOT_HTML = r"<<TABLE [^\n]*</TABLE>>"
_DOT_ATTRS = rf"\[(?:[a-z]+=(?:{_DOT_ID}|{_DOT_HTML}|[A-Za-z0-9.]+)(?:, )?)+\]"
_DOT_NODE = re.compile(rf"({_DOT_ID}) {_DOT_ATTRS};")
_DOT_EDGE = re.compile(rf"({_DOT_ID})(?::{_DOT_ID})? -- ({_DOT_ID})(?::{_DOT_ID})?(?: {_DOT_ATTRS})?;")


def _check_mermaid(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    """Parse render()'s Mermaid line by line; return declared ids and edges (fails on anything else)."""
    lines = text.rstrip("\n").split("\n")
    assert lines[0] == "graph LR"
    declared: set[str] = set()
    edges: list[tuple[str, str]] = []
    for line in lines[1:]:
        body = line.strip()
        if body.startswith("%%"):
            continue
        if node := _MERMAID_NODE.fullmatch(body):
            assert node[1] not in declared, f"declared twice: {node[1]}"
            declared.add(node[1])
        elif edge := _MERMAID_EDGE.fullmatch(body):
            assert edge[1] in declared and edge[2] in declared, f"edge to an undeclared node: {body}"
            edges.append((edge[1], edge[2]))
        else:
            pytest.fail(f"not a Mermaid statement render() should write: {body!r}")
    return declared, edges


def _check_dot(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    lines = text.rstrip("\n").split("\n")
    assert re.fullmatch(rf"graph {_DOT_ID} \{{", lines[0]) and lines[-1] == "}"
    declared: set[str] = set()
    edges: list[tuple[str, str]] = []
    for line in lines[1:-1]:
        body = line.strip()
        if re.fullmatch(r"(rankdir=LR|nodesep=[0-9.]+|ranksep=[0-9.]+|node \[.*\]|edge \[.*\]);", body):
            continue
        if edge := _DOT_EDGE.fullmatch(body):
            assert edge[1] in declared and edge[2] in declared, f"edge to an undeclared node: {body}"
            edges.append((edge[1], edge[2]))
        elif node := _DOT_NODE.fullmatch(body):
            declared.add(node[1])
        else:
            pytest.fail(f"not a dot statement render() should write: {body!r}")
    return declared, edges


def _expected_edges(plan: LabPlan) -> int:
    """A point-to-point link is one edge; a LAN is one edge per endpoint to its bridge node."""
    return sum(1 if len(link.endpoints) == 2 else len(link.endpoints) for link in plan.links)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_mermaid_of_shipped_topologies(path: Path) -> None:
    plan = load_topology(path)
    text = render(plan, "mermaid")
    declared, edges = _check_mermaid(text)
    lans = [link for link in plan.links if len(link.endpoints) > 2]
    assert len(declared) == len(plan.nodes) + len(lans)
    assert len(edges) == _expected_edges(plan)
    for node in plan.nodes:
        assert f"node_{node.name}" in declared and f"{node.name}<br/>{node.kind}" in text
        for interface in node.interfaces:
            assert f"{interface.name} {interface.address}" in text
    for link in plan.links:
        assert f"{link.subnet} mtu {link.mtu}" in text


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_dot_of_shipped_topologies(path: Path) -> None:
    plan = load_topology(path)
    text = render(plan, "dot")
    declared, edges = _check_dot(text)
    assert {f'"{node.name}"' for node in plan.nodes} <= declared
    assert len(edges) == _expected_edges(plan)
    for node in plan.nodes:
        for interface in node.interfaces:  # in the node's table, the row its edges leave from
            row = f'<TD PORT="{interface.name}" BGCOLOR="white">{interface.name} {interface.address}</TD>'
            assert row in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed (Debian: graphviz)")
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_graphviz_accepts_the_dot(path: Path) -> None:
    result = subprocess.run(
        ["dot", "-Tsvg"],
        input=render(load_topology(path), "dot"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert result.stdout.lstrip().startswith("<?xml") and "<svg" in result.stdout


def test_impairments_are_shown_per_direction() -> None:
    plan = load_topology(TOPOLOGY_DIR / "lossy.yaml")
    mermaid, dot = render(plan, "mermaid"), render(plan, "dot")
    assert "h1→s1: delay 20ms ±5ms, loss 1%, reorder 2%" in mermaid
    assert "s1→h1: delay 20ms" in mermaid
    assert "h1->s1: delay 20ms ±5ms, loss 1%, reorder 2%\\ns1->h1: delay 20ms" in dot
    bottleneck = render(load_topology(TOPOLOGY_DIR / "dumbbell.yaml"), "dot")
    assert "r1->r2: rate 100mbit\\nr2->r1: rate 100mbit" in bottleneck


def test_describe_impairment() -> None:
    assert describe_impairment(Impairment()) == ""
    full = Impairment(
        delay_ms=0.5,
        jitter_ms=0.1,
        loss_pct=1,
        duplicate_pct=2,
        reorder_pct=3,
        corrupt_pct=0.25,
        rate_mbit=1500,
    )
    assert describe_impairment(full) == (
        "delay 500us ±100us, loss 1%, duplicate 2%, reorder 3%, corrupt 0.25%, rate 1500mbit"
    )


def test_awkward_names_stay_valid() -> None:
    # `end` closes a Mermaid subgraph and `graph` is a dot keyword: both must be mere labels.
    text = (
        "name: graph\nnodes:\n  end: {kind: kernel}\n  subgraph: {kind: kernel}\nlinks:\n"
        "  - endpoints: [end:eth0, subgraph:eth0]\n    subnet: 10.0.0.0/24\n"
    )
    plan = plan_from_text(text, 'we"ird\\path.yaml')
    declared, _ = _check_mermaid(render(plan, "mermaid"))
    assert declared == {"node_end", "node_subgraph"}
    dot = render(plan, "dot")
    _check_dot(dot)
    assert dot.startswith('graph "graph" {')
    if shutil.which("dot"):
        assert (
            subprocess.run(
                ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=30, check=False
            ).returncode
            == 0
        )


def test_large_chain_renders() -> None:
    plan = chain_plan(120)
    declared, edges = _check_mermaid(render(plan, "mermaid"))
    assert len(declared) == 120 and len(edges) == 119
    assert len(_check_dot(render(plan, "dot"))[1]) == 119


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match=r"^expected a graph format \(mermaid, dot\), got 'svg'$"):
        render(chain_plan(2), "svg")  # type: ignore[arg-type]
