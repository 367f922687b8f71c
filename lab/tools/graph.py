"""Drawing a lab: its plan as a Mermaid flowchart or a Graphviz graph (``lab graph``).

Nodes show their name and kind (and a pystack node its apps); a point-to-point link is an edge
labelled with both interfaces and addresses, the subnet, the MTU and any impairment per direction;
a LAN (three or more endpoints) is drawn as a small node of its own, as the bridge it is built as.
The drawing is made from the resolved `LabPlan`, so it shows assigned addresses, not the file's
shorthand: a topology file's, or a running lab's as its state directory holds it (`plan_to_draw`).
Mermaid ids are prefixed (``node_h1``) because a bare ``end`` would close a subgraph. `render_image`
has Graphviz lay the dot text out as SVG or PNG.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path
from typing import Literal

from lab.build.state import LabError, LabState
from lab.topology import find_topology, load_topology
from lab.topology.impairments import describe_impairment
from lab.topology.names import lab_name_problem
from lab.topology.plan import InterfacePlan, LabPlan, LinkPlan, NodePlan, plan_from_json

Format = Literal["mermaid", "dot"]
FORMATS: tuple[Format, ...] = ("mermaid", "dot")
KERNEL_FILL = "#f2f2f2"  # a kernel node's table in a picture
PYSTACK_FILL = "#dbe8ff"  # a pystack node's: the stack a student can read


ImageFormat = Literal["svg", "png"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("svg", "png")
DOT_TIMEOUT_SECONDS = 60.0


def plan_to_draw(target: str, name: str | None = None) -> LabPlan:
    """What `lab graph TARGET` draws: a topology file when TARGET is a path, else the lab of that name
    when it is up (its plan as built), else the shipped topology of that name."""
    path = Path(target)
    if not (path.exists() or path.suffix or len(path.parts) > 1) and not lab_name_problem(target):
        record = LabState.for_lab(target).read_plan()
        if record is not None and "plan" in record:
            return plan_from_json(record["plan"])
    return load_topology(find_topology(target), name=name)


def render_image(plan: LabPlan, fmt: ImageFormat) -> bytes:
    """The lab drawn by Graphviz as an SVG or PNG image (LabError, exit 2, when `dot` is missing)."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"expected an image format ({', '.join(IMAGE_FORMATS)}), got {fmt!r}")
    if shutil.which("dot") is None:
        raise LabError("graph: Graphviz `dot` is not installed (Debian: apt-get install graphviz; "
                       "`make venv` installs it)")
    result = subprocess.run(["dot", f"-T{fmt}"], input=render(plan, "dot").encode(), capture_output=True,
                            timeout=DOT_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        last = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise LabError(f"graph: dot failed: {last[0][:200]}")
    return result.stdout


def render(plan: LabPlan, fmt: Format) -> str:
    """The lab drawn in ``fmt`` ("mermaid" or "dot"), as text ending in a newline."""
    if fmt == "mermaid":
        return _draw(plan, Mermaid())
    if fmt == "dot":
        return _draw(plan, Dot())
    raise ValueError(f"expected a graph format ({', '.join(FORMATS)}), got {fmt!r}")


def _directions(interfaces: list[InterfacePlan]) -> list[str]:
    """``h1->s1: delay 20ms`` lines, one per impaired direction, whichever end records it."""
    if len(interfaces) != 2:
        return []
    lines: list[str] = []
    for me, peer in (interfaces, interfaces[::-1]):
        # A direction is recorded once: on the sender's egress or on the receiver's ingress.
        impairment = me.egress if not me.egress.is_clean else peer.ingress
        text = describe_impairment(impairment)
        if text:
            lines.append(f"{me.node}->{peer.node}: {text}")
    return lines


def _link_ends(plan: LabPlan) -> dict[int, list[InterfacePlan]]:
    """Each link's interfaces in endpoint order (one pass, so large chains draw in linear time)."""
    by_name = {(i.node, i.name): i for node in plan.nodes for i in node.interfaces}
    return {link.index: [by_name[endpoint] for endpoint in link.endpoints] for link in plan.links}


def _node_lines(node: NodePlan) -> list[str]:
    lines = [node.name, node.kind]
    if node.apps:
        lines.append(" ".join(f"{app.app}:{app.port}" for app in node.apps))
    return lines


def _link_lines(link: LinkPlan) -> list[str]:
    return [f"{link.subnet} mtu {link.mtu}"]


def _draw(plan: LabPlan, style: Mermaid | Dot) -> str:
    """The one walk over a plan both formats share: nodes, then each link as an edge or a LAN."""
    out = style.header(plan)
    out += [style.node(node) for node in plan.nodes]
    ends = _link_ends(plan)
    for link in plan.links:
        interfaces = ends[link.index]
        if len(interfaces) == 2:
            out.append(style.wire(link, interfaces[0], interfaces[1], _directions(interfaces)))
        else:
            out += style.lan(link, interfaces)
    return "\n".join(out + style.footer()) + "\n"


# --- Mermaid -----------------------------------------------------------------------------------------


class Mermaid:
    """Mermaid flowchart text: a pystack node is a stadium, a LAN a hexagon."""

    def header(self, plan: LabPlan) -> list[str]:
        source = (f" from {plan.source}" if plan.source else "").replace("\n", " ")
        return ["graph LR", f"  %% lab {plan.name}{source}"]

    def node(self, node: NodePlan) -> str:
        label = _mermaid_text(_node_lines(node))
        shape = f'(["{label}"])' if node.kind == "pystack" else f'["{label}"]'
        return f"  {_mermaid_id(node.name)}{shape}"

    def wire(self, link: LinkPlan, a: InterfacePlan, b: InterfacePlan, directions: list[str]) -> str:
        text = [f"{a.name} {a.address} — {b.name} {b.address}", *_link_lines(link), *directions]
        return f'  {_mermaid_id(a.node)} ---|"{_mermaid_text(text)}"| {_mermaid_id(b.node)}'

    def lan(self, link: LinkPlan, interfaces: list[InterfacePlan]) -> list[str]:
        lan = f"lan_{link.index}"
        lines = [f'  {lan}{{{{"{_mermaid_text(["LAN", *_link_lines(link)])}"}}}}']
        for interface in interfaces:
            label = _mermaid_text([f"{interface.name} {interface.address}"])
            lines.append(f'  {_mermaid_id(interface.node)} ---|"{label}"| {lan}')
        return lines

    def footer(self) -> list[str]:
        return []


def _mermaid_id(node: str) -> str:
    return f"node_{node}"


def _mermaid_text(lines: list[str]) -> str:
    """Quoted Mermaid label text: entity codes for the characters its parser treats specially."""
    escaped = [
        line.replace("->", "→")
        .replace("#", "#35;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        for line in lines
    ]
    return "<br/>".join(escaped)


# --- Graphviz ----------------------------------------------------------------------------------------


class Dot:
    """A Graphviz undirected graph: each node a table (name, kind, apps, then a row per interface with
    its address), a pystack node's tinted blue, a LAN an ellipse.

    Interfaces and addresses sit inside their node's table, and each edge leaves from its interface's
    row (a port), so no label floats beside an edge end: dot's head and tail labels are placed without
    regard for anything else and overlap on the smallest topology. What remains on an edge (subnet,
    MTU, impairments) is an edge label, which dot lays out as a box of its own that nothing overlaps.
    """

    def header(self, plan: LabPlan) -> list[str]:
        return [f"graph {_dot_quote(plan.name)} {{", "  rankdir=LR;", "  nodesep=0.4;", "  ranksep=0.9;",
                '  node [fontname="Helvetica", fontsize=12, shape=plaintext];',
                '  edge [fontname="Helvetica", fontsize=10];']

    def node(self, node: NodePlan) -> str:
        colour = PYSTACK_FILL if node.kind == "pystack" else KERNEL_FILL
        name, *about = _node_lines(node)
        rows = [f'<TR><TD BORDER="0"><B>{_html(name)}</B></TD></TR>']
        rows += [f'<TR><TD BORDER="0">{_html(line)}</TD></TR>' for line in about]
        rows += [f'<TR><TD PORT={_dot_quote(i.name)} BGCOLOR="white">{_html(i.name)} {_html(str(i.address))}'
                 f"</TD></TR>" for i in node.interfaces]
        table = (f'<TABLE BORDER="1" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4" BGCOLOR="{colour}">'
                 f'{"".join(rows)}</TABLE>')
        return f"  {_dot_quote(node.name)} [label=<{table}>];"

    def wire(self, link: LinkPlan, a: InterfacePlan, b: InterfacePlan, directions: list[str]) -> str:
        return (f"  {_dot_port(a)} -- {_dot_port(b)} "
                f"[label={_dot_label([*_link_lines(link), *directions])}];")

    def lan(self, link: LinkPlan, interfaces: list[InterfacePlan]) -> list[str]:
        lan = _dot_quote(f"lan{link.index}")
        lines = [f"  {lan} [shape=ellipse, label={_dot_label(['LAN', *_link_lines(link)])}];"]
        lines += [f"  {_dot_port(interface)} -- {lan};" for interface in interfaces]
        return lines

    def footer(self) -> list[str]:
        return ["}"]


def _dot_port(interface: InterfacePlan) -> str:
    return f"{_dot_quote(interface.node)}:{_dot_quote(interface.name)}"


def _html(text: str) -> str:
    return html.escape(text, quote=True)


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_label(lines: list[str]) -> str:
    """A quoted dot label with one line per entry (``\\n`` is dot's centred line break)."""
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines) + '"'
