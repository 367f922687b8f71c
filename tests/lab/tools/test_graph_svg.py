"""`lab graph` pictures: Graphviz's SVG of every shipped topology parses, holds every node name and every
interface with its address, and no two text boxes overlap; -o picks the format from the suffix."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli import app
from lab.tools.graph import render_image
from lab.topology import TOPOLOGY_DIR, load_topology
from lab.topology.chain import chain_plan

SHIPPED = sorted(TOPOLOGY_DIR.glob("*.yaml"))
SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
GLYPH_WIDTH = 0.55  # of the font size: Helvetica's average advance, a little generous


@dataclass(frozen=True)
class TextBox:
    text: str
    left: float
    right: float
    top: float
    bottom: float

    def overlaps(self, other: TextBox) -> bool:
        return (self.left < other.right and other.left < self.right
                and self.top < other.bottom and other.top < self.bottom)


def text_boxes(svg: bytes) -> list[TextBox]:
    """Every <text> with the box it covers, estimated from its anchor, font size and length."""
    boxes = []
    for element in ET.fromstring(svg).iter(f"{SVG}text"):
        text = "".join(element.itertext())
        size = float(element.get("font-size", "14"))
        x, y = float(element.get("x", "0")), float(element.get("y", "0"))
        width = GLYPH_WIDTH * size * len(text)
        anchor = element.get("text-anchor", "start")
        left = x - width / 2 if anchor == "middle" else x - width if anchor == "end" else x
        boxes.append(TextBox(text, left, left + width, y - 0.8 * size, y + 0.2 * size))
    return boxes


@needs_dot
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_svg_shows_every_label_and_none_overlap(path: Path) -> None:
    plan = load_topology(path)
    boxes = text_boxes(render_image(plan, "svg"))
    texts = [box.text for box in boxes]
    for node in plan.nodes:
        assert node.name in texts
        for interface in node.interfaces:
            assert f"{interface.name} {interface.address}" in texts
    for link in plan.links:
        assert any(text.startswith(f"{link.subnet} mtu {link.mtu}") for text in texts), texts
    clashes = [(a.text, b.text) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert not clashes, f"overlapping labels in {path.name}: {clashes}"


@needs_dot
def test_a_long_chain_stays_clear() -> None:
    boxes = text_boxes(render_image(chain_plan(12), "svg"))
    assert not [(a.text, b.text) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


@needs_dot
def test_png_and_svg_files_by_suffix(tmp_path: Path) -> None:
    runner = CliRunner()
    files = ((".svg", b"<?xml"), (".png", b"\x89PNG"), (".dot", b"graph "), (".mmd", b"graph LR"))
    for suffix, magic in files:
        target = tmp_path / f"pair{suffix}"
        result = runner.invoke(app, ["graph", "pair", "-o", str(target)])
        assert result.exit_code == 0, result.output
        assert target.read_bytes().startswith(magic)


def test_bad_graph_requests_are_exit_2() -> None:
    runner = CliRunner()
    for args in (["graph", "pair", "-o", "pair.txt"], ["graph", "pair", "--format", "png"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.stderr.startswith("lab: graph"), result.stderr
