"""Drawing a lab: its plan as a Mermaid flowchart or a Graphviz graph (``lab graph``).

Nodes show their name and kind (and a pystack node its apps); a point-to-point link is an edge
labelled with both interfaces and addresses, the subnet, the MTU and any impairment per direction;
a LAN (three or more endpoints) is drawn as a small node of its own, as the bridge it is built as.
The drawing is made from the resolved `LabPlan`, so it shows assigned addresses, not the file's
shorthand. Mermaid ids are prefixed (``node_h1``) because a bare ``end`` would close a subgraph.
"""

from __future__ import annotations

from typing import Literal

from lab.topology.impairments import describe_impairment
from lab.topology.plan import InterfacePlan, LabPlan, LinkPlan, NodePlan

Format = Literal["mermaid", "dot"]
FORMATS: tuple[Format, ...] = ("mermaid", "dot")


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
    """A Graphviz undirected graph: a pystack node is a rounded box, a LAN an ellipse."""

    def header(self, plan: LabPlan) -> list[str]:
        return [f"graph {_dot_quote(plan.name)} {{", "  rankdir=LR;", '  node [fontname="Helvetica"];',
                '  edge [fontname="Helvetica", fontsize=10];']

    def node(self, node: NodePlan) -> str:
        style = ", style=rounded" if node.kind == "pystack" else ""
        return f"  {_dot_quote(node.name)} [shape=box{style}, label={_dot_label(_node_lines(node))}];"

    def wire(self, link: LinkPlan, a: InterfacePlan, b: InterfacePlan, directions: list[str]) -> str:
        attrs = (f"label={_dot_label([*_link_lines(link), *directions])}, "
                 f"taillabel={_dot_label([a.name, str(a.address)])}, "
                 f"headlabel={_dot_label([b.name, str(b.address)])}")
        return f"  {_dot_quote(a.node)} -- {_dot_quote(b.node)} [{attrs}];"

    def lan(self, link: LinkPlan, interfaces: list[InterfacePlan]) -> list[str]:
        lan = _dot_quote(f"lan{link.index}")
        lines = [f"  {lan} [shape=ellipse, label={_dot_label(['LAN', *_link_lines(link)])}];"]
        for interface in interfaces:
            lines.append(f"  {_dot_quote(interface.node)} -- {lan} "
                         f"[taillabel={_dot_label([interface.name, str(interface.address)])}];")
        return lines

    def footer(self) -> list[str]:
        return ["}"]


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_label(lines: list[str]) -> str:
    """A quoted dot label with one line per entry (``\\n`` is dot's centred line break)."""
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines) + '"'
