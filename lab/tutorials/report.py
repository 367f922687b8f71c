"""The HTML report of a tutorial run: one self-contained file a student opens in a browser.

Everything is inside the file: the style, every SVG (ladder diagrams inline, so the browser draws them
as part of the page) and every PNG (as a `data:` URI). Nothing refers to another file or to the
network, so the report can be mailed, copied or opened offline. It shows the tutorial's summary, its
seed passage and the kernel functions it mirrors, then each step with what was observed, its checks
and its pictures, the two sides' state sequences side by side, and the list of artifacts.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from lab.tutorials.model import Tutorial
from lab.tutorials.observe import draw_missing_ladders
from lab.tutorials.session import Figure, Session, StateSequence

MAX_INLINE_BYTES = 8 * 1024 * 1024  # a picture larger than this is linked by name, not inlined
_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
.verdict { font-weight: bold; padding: .2em .6em; border-radius: 4px; }
.passed { color: #075; } .failed { color: #b00; }
.verdict.passed { background: #e3f6ec; } .verdict.failed { background: #fbe4e4; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: 12px; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid #ccc; padding: .3em .6em;
  text-align: left; vertical-align: top; }
figure { margin: 1em 0; overflow-x: auto; } figcaption { color: #555; font-size: .9em; }
.states { font-family: monospace; } pre.text { white-space: pre-wrap; font-size: 13px; }
p.observed { white-space: pre-wrap; }
"""
_SVG_PROLOGUE = re.compile(r"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?", re.IGNORECASE)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def inline_figure(figure: Figure) -> str:
    """A figure as HTML: an SVG's own markup, a PNG as a data URI; never a reference to the file."""
    path = figure.path
    caption = f"<figcaption>{_e(figure.title)}{': ' + _e(figure.caption) if figure.caption else ''}" \
              "</figcaption>"
    if not path.is_file() or path.stat().st_size > MAX_INLINE_BYTES:
        return f"<figure><p>({_e(path.name)} is not inlined: missing or too large)</p>{caption}</figure>"
    if path.suffix.lower() == ".svg":
        svg = _SVG_PROLOGUE.sub("", path.read_text(errors="replace"))
        return f"<figure>{svg}{caption}</figure>"
    kind = "png" if path.suffix.lower() == ".png" else "jpeg"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{_e(figure.title)}" src="data:image/{kind};base64,{data}">{caption}</figure>'


def states_table(sequences: list[StateSequence]) -> str:
    """Both sides' state sequences of each connection, side by side (kernel, stack)."""
    if not sequences:
        return ""
    by_connection: dict[str, dict[str, StateSequence]] = {}
    for sequence in sequences:
        by_connection.setdefault(sequence.connection, {})[sequence.side] = sequence
    sides = sorted({s.side for s in sequences}, key=lambda side: (side != "kernel", side))
    heads = "".join(f"<th>{_e(side)}</th>" for side in sides)
    rows = [f'<table class="states"><tr><th>connection</th>{heads}</tr>']
    for connection, found in by_connection.items():
        cells = "".join(f"<td>{_e(' > '.join(found[side].states)) if side in found else ''}</td>"
                        for side in sides)
        rows.append(f"<tr><td>{_e(connection)}</td>{cells}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def report_html(session: Session, tutorial: Tutorial, *, lab: str) -> str:
    """The whole report as one HTML document."""
    checks = [check for step in session.steps for check in step.checks]
    passed = bool(checks) and all(check.passed for check in checks)
    verdict = "passed" if passed else "failed"
    body = [f"<h1>Tutorial {tutorial.number}: {_e(tutorial.title)}</h1>",
            f"<p>{_e(tutorial.summary)}</p>",
            f'<p><span class="verdict {verdict}">{sum(c.passed for c in checks)}/{len(checks)} checks '
            f"passed</span> &nbsp; lab <code>{_e(lab)}</code></p>",
            f"<p><b>Seed passage:</b> {_e(tutorial.seed)}</p>",
            f"<p><b>Kernel functions it mirrors:</b> {_e(', '.join(tutorial.kernel))}</p>",
            f"<details><summary>The tutorial's text</summary><pre class=\"text\">{_e(tutorial.text)}</pre>"
            "</details>"]
    for index, step in enumerate(session.steps, start=1):
        body.append(f"<h2>Step {index}: {_e(step.title)}</h2>")
        if step.observed:
            body.append("<h3>What happened</h3>")
            body += [f"<pre>{_e(line)}</pre>" if "\n" in line else f'<p class="observed">{_e(line)}</p>'
                     for line in step.observed]
        if step.checks:
            body.append("<table><tr><th>check</th><th>verdict</th><th>measured</th></tr>")
            for check in step.checks:
                state = "passed" if check.passed else "failed"
                word = "PASS" if check.passed else "FAIL"
                body.append(f'<tr><td>{_e(check.name)}</td><td class="{state}">{word}</td>'
                            f"<td>{_e(check.detail)}</td></tr>")
            body.append("</table>")
        sequences = [s for s in session.state_sequences if s.step == step.title]
        if sequences:
            body.append("<h3>State sequences, both sides</h3>" + states_table(sequences))
        body += [inline_figure(figure) for figure in session.figures if figure.step == step.title]
    steps = {step.title for step in session.steps}
    others = [figure for figure in session.figures if figure.step not in steps]
    if others:
        body.append("<h2>Ladder diagrams of the captures</h2>")
        body += [inline_figure(figure) for figure in others]
    body.append("<h2>Files of this run</h2><ul>")
    for kind, paths in session.artifacts.items():
        body += [f"<li>{_e(kind)}: <code>{_e(path.name)}</code></li>" for path in paths]
    body.append("</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>nslab tutorial {tutorial.number}: {_e(tutorial.title)}</title><style>{_STYLE}</style>"
            "</head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(session: Session, tutorial: Tutorial) -> Path:
    """Write `report.html` into the run's folder and list it as the run's report; captures no step
    drew get their ladder diagrams first."""
    draw_missing_ladders(session)
    path = session.path("report.html")
    session.artifact("report", path)  # listed before it is written, so the report names itself
    path.write_text(report_html(session, tutorial, lab=session.lab.name), encoding="utf-8")
    return path
