"""The HTML report is one self-contained file: inline SVG, PNG as data URIs, no external reference."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lab.tutorials import Session, find_tutorial
from lab.tutorials.ladder import ladder_svg, ladders
from lab.tutorials.report import report_html, write_report
from tests.lab.tutorials.test_ladder import handshake_data_close, marks, pcap_of

# The smallest valid PNG: 1x1, one grey pixel.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgAB4iG8MwAAAABJ"
                       "RU5ErkJggg==")


class References(HTMLParser):
    """Every attribute that could make a browser fetch something: src, href, and url() in styles."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "data", "srcset") and value is not None:
                self.found.append((tag, name, value))


def session_with_pictures(tmp_path: Path) -> Session:
    session = Session(SimpleNamespace(name="tcab123"), tmp_path)  # type: ignore[arg-type]
    session.begin_step("the handshake")
    session.say("Linux sent a SYN <with> & \"quotes\"")
    session.check("the handshake completed", True, "SYN, SYN-ACK, ACK")
    session.states("kernel", "10.0.0.1:40000 -> 10.0.0.2:80", ["CLOSE", "SYN_SENT", "ESTABLISHED"])
    session.states("stack", "10.0.0.1:40000 -> 10.0.0.2:80", ["LISTEN", "SYN_RECV", "ESTABLISHED"])
    svg = session.path("ladder-1.svg")
    svg.write_text('<?xml version="1.0"?>\n' + ladder_svg(ladders(handshake_data_close(), marks())[0]))
    session.artifact("ladder", svg)
    session.figure("Ladder", svg, "captured on h1")
    png = session.path("plot.png")
    png.write_bytes(PNG)
    session.artifact("plots", png)
    session.figure("A plot", png)
    session.begin_step("the close")
    session.check("TIME_WAIT on the active closer", False, "kernel gone, stack gone")
    return session


def test_the_report_is_self_contained(tmp_path: Path) -> None:
    session = session_with_pictures(tmp_path)
    path = write_report(session, find_tutorial("1"))
    assert path == tmp_path / "report.html" and session.artifacts["report"] == [path]
    text = path.read_text()
    parser = References()
    parser.feed(text)
    assert all(value.startswith("data:") for _, _, value in parser.found), parser.found
    assert all(ref.startswith("#") for ref in re.findall(r"url\(([^)]*)\)", text)), "url() only names ids"
    without_namespace = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"(https?:)?//", without_namespace), "no URL but the SVG namespace"
    assert "<?xml" not in text, "an inlined SVG loses its XML prologue"
    assert "svg" in parser.tags and "img" in parser.tags


def test_the_report_shows_steps_checks_states_and_pictures(tmp_path: Path) -> None:
    session = session_with_pictures(tmp_path)
    text = report_html(session, find_tutorial("1"), lab="tcab123")
    assert "Tutorial 1: socket, bind, listen" in text
    assert "1/2 checks passed" in text and 'class="verdict failed"' in text
    assert "Step 1: the handshake" in text and "Step 2: the close" in text
    assert "Linux sent a SYN &lt;with&gt; &amp; &quot;quotes&quot;" in text
    assert "CLOSE &gt; SYN_SENT &gt; ESTABLISHED" in text and "LISTEN &gt; SYN_RECV &gt; ESTABLISHED" in text
    assert 'class="ladder"' in text and "data:image/png;base64," in text
    assert "Kernel functions it mirrors" in text and "inet_listen" in text
    assert "<summary>The tutorial's text</summary>" in text and "bind hash table" in text


def test_a_missing_picture_is_named_not_linked(tmp_path: Path) -> None:
    session: Any = Session(SimpleNamespace(name="tcab123"), tmp_path)  # type: ignore[arg-type]
    session.begin_step("one")
    session.figure("gone", tmp_path / "gone.svg")
    text = report_html(session, find_tutorial("1"), lab="tcab123")
    assert "gone.svg is not inlined" in text and "<img" not in text


def test_captures_no_step_drew_get_their_ladders_in_the_report(tmp_path: Path) -> None:
    session = Session(SimpleNamespace(name="tcab123"), tmp_path)  # type: ignore[arg-type]
    session.begin_step("connect")
    for node in ("h1", "s1"):  # both ends of one capture: one ladder is drawn
        pcap = session.path(f"connect-{node}.pcap")
        pcap.write_bytes(pcap_of(handshake_data_close()[:3]))
        session.artifact("pcap", pcap)
    broken = session.path("late-h1.pcap")
    broken.write_bytes(b"not a pcap at all, long enough for a header")
    session.artifact("pcap", broken)
    text = write_report(session, find_tutorial("1")).read_text()
    assert [p.name for p in session.artifacts["ladder"]] == ["connect-ladder-1.svg", "connect-ladder.txt"]
    assert "Ladder diagrams of the captures" in text and text.count('class="ladder"') == 1
    assert "late-h1.pcap" in session.metrics["ladder_errors"][0]
