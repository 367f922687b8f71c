"""The tutorials' plots: both files written, a real PNG, an SVG that parses, and the report told."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

from lab.tutorials.plots import (
    QueueSample,
    SenderSample,
    SenderSeries,
    congestion_plot,
    publish,
    queue_plot,
)
from lab.tutorials.session import Session

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png_and_svg(paths: list[Path]) -> None:
    assert [p.suffix for p in paths] == [".png", ".svg"]
    png, svg = paths
    assert png.read_bytes()[:8] == PNG_MAGIC
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")


def test_queue_plot_writes_png_and_svg_for_both_listeners(tmp_path: Path) -> None:
    samples = [QueueSample(t / 10, min(t, 1), min(t // 2, 3)) for t in range(30)]
    paths = queue_plot({"stack listener": samples, "kernel listener": samples[:5]}, 2, tmp_path / "queues")
    assert_png_and_svg(paths)
    svg_text = paths[1].read_text()
    assert "stack listener" in svg_text and "kernel listener" in svg_text


def test_queue_plot_draws_an_empty_side(tmp_path: Path) -> None:
    assert_png_and_svg(queue_plot({"stack listener": []}, 1, tmp_path / "empty"))


def test_congestion_plot_side_by_side_with_unknown_values(tmp_path: Path) -> None:
    stack = SenderSeries("stack sender (cubic)",
                         [SenderSample(0.0, 10, None, None), SenderSample(0.5, 20, 0x7FFFFFFF, 21.5),
                          SenderSample(1.0, 14, 14, 22.0)], fast_retransmits=[0.7], timeouts=[],
                         retransmits=[0.7, 0.71])
    kernel = SenderSeries("kernel sender (cubic)", [SenderSample(0.1, 10, 7, math.nan)],
                          timeouts=[0.9], retransmits=[0.9])
    paths = congestion_plot([stack, kernel], tmp_path / "sub" / "congestion")
    assert_png_and_svg(paths)
    assert "fast retransmit (1)" in paths[1].read_text()


def test_publish_registers_plots_and_shows_the_svg(tmp_path: Path) -> None:
    session = Session(SimpleNamespace(name="x"), tmp_path)  # type: ignore[arg-type]
    session.begin_step("queues")
    paths = queue_plot({"s": [QueueSample(0.0, 1, 1)]}, 1, session.path("queues"))
    publish(session, paths, "Queues", "both queues")
    assert session.artifacts["plots"] == paths
    assert [f.path.suffix for f in session.figures] == [".svg"]
    assert session.figures[0].step == "queues"
