"""From a `LabPlan` to the list of kernel objects that realise it: pure, no kernel touched.

`plan_wiring()` lists every namespace, veth pair, bridge, TAP, interface setting and qdisc a plan
needs, in creation order. Being pure, it is unit-tested without root, and it lets `lab up` check
everything the lab will need (netem, TAP support, free names) before it creates anything.

How each part of a plan is wired:
- a node is a namespace `<lab>-<node>`;
- a two-endpoint link is one veth pair, each end born in its node's namespace under the plan's
  interface name;
- a LAN (three or more endpoints) is a bridge `br0` in a namespace of its own, `<lab>-lan<index>`,
  with one veth pair per endpoint;
- a pystack node holds its veth end, the TAP `tap0` and a bridge `br0` joining them, with no
  kernel address and IPv6 off, so the namespace's own kernel stays silent;
- impairments on links between kernel nodes become root qdiscs where the kernel has sch_netem
  (tbf for a pure rate limit, netem otherwise). Where it has none, such a link (or one marked
  `impairable`) is cut in two: a namespace `<lab>-link<index>` sits in the middle, each node's veth
  ends there (`<node>-<if>`), and the lab's forwarder process (`python -m stack.node.forwarder`)
  carries frames between the two ends through the stack's impairment model, per direction
  (`Forwarder`, `forwarder_settings`). A rate alone on a link not kept impairable stays a tbf;
- impairments on links touching a pystack node go to the node's settings file
  (`pystack_settings`) for the stack to apply in userspace.

`link_impairment_sites` says, for each link, who applies each direction's impairment: "netem" or
"tbf" (a qdisc), "forwarder", "stack", or None (nothing: a clean direct link).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from typing import Any

from lab.build.journal import JournalEntry
from lab.build.state import LabError
from lab.topology.plan import (
    PYSTACK_BRIDGE,
    PYSTACK_TAP,
    Impairment,
    InterfacePlan,
    LabPlan,
    LinkPlan,
    NodePlan,
    impairment_json,
)

LAN_BRIDGE = "br0"
MAX_IFNAME = 15
# The kernel stays out of IPv6 on ports it must not speak on (pystack and LAN namespaces).
SILENT_PORT_SYSCTLS = (("disable_ipv6", "1"), ("accept_ra", "0"))


class PlanNotBuildable(LabError):
    """The plan asks for something this builder cannot realise (exit 2, nothing created)."""


@dataclass(frozen=True)
class Veth:
    a: tuple[str, str]  # (namespace, interface name)
    b: tuple[str, str]
    mac_a: str | None
    mac_b: str | None
    mtu: int

    def journal_entry(self) -> JournalEntry:
        return JournalEntry("veth", namespace=self.a[0], name=self.a[1],
                            peer_namespace=self.b[0], peer_name=self.b[1])


@dataclass(frozen=True)
class Port:
    """A kernel interface to configure after creation."""

    namespace: str
    name: str
    address: IPv4Interface | None = None  # None for bridge ports and pystack wiring
    master: str | None = None  # bridge to join
    silent: bool = False  # IPv6 off, no router advertisements accepted


@dataclass(frozen=True)
class Qdisc:
    namespace: str
    ifname: str
    kind: str  # "tbf" or "netem"
    impairment: Impairment
    mtu: int
    link: str  # for messages: "h1:eth0 -> r1:eth0"


@dataclass(frozen=True)
class Forwarder:
    """A link between two kernel nodes that the lab's forwarder process impairs in userspace."""

    link: int  # index into LabPlan.links
    name: str  # "link<index>": its settings, control socket and log in the lab's nodes/ directory
    namespace: str  # "<lab>-link<index>", holding the forwarder's two veth ends
    ports: tuple[str, str]  # those ends, facing endpoint 0 and endpoint 1 of the link
    endpoints: tuple[str, str]  # ("h1:eth0", "h2:eth0")
    directions: tuple[str, str]  # ("h1->h2", "h2->h1"): frames read on ports[0], on ports[1]
    impairments: tuple[Impairment, Impairment]  # of each direction, as the plan says


@dataclass
class Wiring:
    """Everything `up` creates, in creation order."""

    namespaces: list[str] = field(default_factory=list)
    silent_namespaces: list[str] = field(default_factory=list)  # default IPv6 off before links appear
    veths: list[Veth] = field(default_factory=list)
    bridges: list[tuple[str, str, int]] = field(default_factory=list)  # (namespace, name, mtu)
    # (namespace, name, vnet_hdr, mtu, multi_queue)
    taps: list[tuple[str, str, bool, int, bool]] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    qdiscs: list[Qdisc] = field(default_factory=list)
    forwarders: list[Forwarder] = field(default_factory=list)
    netem: bool = True  # whether the kernel it was wired for has sch_netem

    @property
    def needs_netem(self) -> list[Qdisc]:
        return [q for q in self.qdiscs if q.kind == "netem"]

    @property
    def needs_tun(self) -> bool:
        return bool(self.taps)


def lan_namespace(lab: str, link_index: int) -> str:
    """The namespace holding the bridge of LAN link `link_index`."""
    return f"{lab}-lan{link_index}"


def lan_port_name(node: str, interface: str, position: int) -> str:
    """The LAN-side veth end facing one endpoint: `<node>-<if>` when it fits in 15 characters."""
    name = f"{node}-{interface}"
    return name if len(name) <= MAX_IFNAME else f"port{position}"


def link_namespace(lab: str, link_index: int) -> str:
    """The namespace of the forwarder of point-to-point link `link_index`."""
    return f"{lab}-link{link_index}"


def plan_wiring(plan: LabPlan, *, netem: bool = True) -> Wiring:
    """Every kernel object `plan` needs, in creation order (PlanNotBuildable if it cannot be wired).

    `netem` says whether the kernel has sch_netem (`lab.kernel.capabilities.netem_available`): without
    it, impaired links between kernel nodes get a forwarder instead of a qdisc.
    """
    wiring = Wiring(netem=netem)
    interfaces = {(i.node, i.name): i for n in plan.nodes for i in n.interfaces}
    nodes = {n.name: n for n in plan.nodes}
    for node in plan.nodes:
        wiring.namespaces.append(node.namespace)
        if node.kind == "pystack":
            _check_pystack_node(node)
            wiring.silent_namespaces.append(node.namespace)
    for link in plan.links:
        endpoints = [interfaces[end] for end in link.endpoints]
        if len(endpoints) == 2:
            _wire_point_to_point(wiring, plan.name, nodes, link, endpoints[0], endpoints[1])
        else:
            _wire_lan(wiring, plan.name, nodes, link, endpoints)
    for node in plan.nodes:
        if node.kind == "pystack":
            _wire_pystack_node(wiring, node)
        else:
            for iface in node.interfaces:
                wiring.ports.append(Port(node.namespace, iface.name, address=iface.address))
    return wiring


def _check_pystack_node(node: NodePlan) -> None:
    if len(node.interfaces) != 1:
        raise PlanNotBuildable(
            f"node {node.name}: a pystack node has exactly one interface (one TAP), "
            f"got {len(node.interfaces)}"
        )


def _wire_pystack_node(wiring: Wiring, node: NodePlan) -> None:
    iface = node.interfaces[0]
    wiring.taps.append((node.namespace, PYSTACK_TAP, node.offload, iface.mtu, node.workers > 1))
    wiring.bridges.append((node.namespace, PYSTACK_BRIDGE, iface.mtu))
    for name in (iface.name, PYSTACK_TAP):
        wiring.ports.append(Port(node.namespace, name, master=PYSTACK_BRIDGE, silent=True))
    wiring.ports.append(Port(node.namespace, PYSTACK_BRIDGE, silent=True))


def _veth_mac(node: NodePlan, iface: InterfacePlan) -> str | None:
    """A kernel node's interface wears the plan's MAC; a pystack node's MAC belongs to the stack.

    (A bridge port wearing the stack's MAC would make the bridge keep frames for that MAC to itself.)
    """
    return iface.mac if node.kind == "kernel" else None


def _wire_point_to_point(
    wiring: Wiring, lab: str, nodes: dict[str, NodePlan], link: LinkPlan, a: InterfacePlan, b: InterfacePlan
) -> None:
    node_a, node_b = nodes[a.node], nodes[b.node]
    if node_a.kind == "pystack" or node_b.kind == "pystack":
        wiring.veths.append(Veth((node_a.namespace, a.name), (node_b.namespace, b.name),
                                 _veth_mac(node_a, a), _veth_mac(node_b, b), link.mtu))
        return  # the stack impairs in userspace, from its settings file
    impairments = (direction_impairment(a, b), direction_impairment(b, a))
    if not wiring.netem and (link.impairable or any(imp.needs_netem for imp in impairments)):
        _wire_forwarder(wiring, lab, nodes, link, a, b, impairments)
        return
    wiring.veths.append(Veth((node_a.namespace, a.name), (node_b.namespace, b.name),
                             _veth_mac(node_a, a), _veth_mac(node_b, b), link.mtu))
    for (sender, receiver, sender_node), impairment in zip(((a, b, node_a), (b, a, node_b)), impairments,
                                                           strict=True):
        if not impairment.is_clean:
            wiring.qdiscs.append(Qdisc(sender_node.namespace, sender.name, _qdisc_kind(impairment),
                                       impairment, link.mtu, f"{sender.node}:{sender.name} -> "
                                       f"{receiver.node}:{receiver.name}"))


def direction_impairment(sender: InterfacePlan, receiver: InterfacePlan) -> Impairment:
    """What the plan does to packets from `sender` to `receiver` (recorded once, on either end)."""
    return sender.egress if not sender.egress.is_clean else receiver.ingress


def _wire_forwarder(wiring: Wiring, lab: str, nodes: dict[str, NodePlan], link: LinkPlan, a: InterfacePlan,
                    b: InterfacePlan, impairments: tuple[Impairment, Impairment]) -> None:
    namespace = link_namespace(lab, link.index)
    ports = (lan_port_name(a.node, a.name, 0), lan_port_name(b.node, b.name, 1))
    if ports[0] == ports[1]:
        ports = ("port0", "port1")
    wiring.namespaces.append(namespace)
    wiring.silent_namespaces.append(namespace)
    for iface, port in zip((a, b), ports, strict=True):
        node = nodes[iface.node]
        wiring.veths.append(Veth((node.namespace, iface.name), (namespace, port), _veth_mac(node, iface),
                                 None, link.mtu))
        wiring.ports.append(Port(namespace, port, silent=True))
    wiring.forwarders.append(Forwarder(
        link.index, f"link{link.index}", namespace, ports, (f"{a.node}:{a.name}", f"{b.node}:{b.name}"),
        (f"{a.node}->{b.node}", f"{b.node}->{a.node}"), impairments))


def _wire_lan(
    wiring: Wiring, lab: str, nodes: dict[str, NodePlan], link: LinkPlan, endpoints: list[InterfacePlan]
) -> None:
    lan_ns = lan_namespace(lab, link.index)
    wiring.namespaces.append(lan_ns)
    wiring.silent_namespaces.append(lan_ns)
    wiring.bridges.append((lan_ns, LAN_BRIDGE, link.mtu))
    has_pystack = any(nodes[e.node].kind == "pystack" for e in endpoints)
    for position, iface in enumerate(endpoints):
        node = nodes[iface.node]
        port = lan_port_name(iface.node, iface.name, position)
        wiring.veths.append(Veth((node.namespace, iface.name), (lan_ns, port), _veth_mac(node, iface), None,
                                 link.mtu))
        wiring.ports.append(Port(lan_ns, port, master=LAN_BRIDGE, silent=True))
        if node.kind == "pystack":
            continue
        for impairment, namespace, ifname, direction in (
            (iface.egress, node.namespace, iface.name, f"{iface.node}:{iface.name} -> lan{link.index}"),
            (iface.ingress, lan_ns, port, f"lan{link.index} -> {iface.node}:{iface.name}"),
        ):
            if impairment.is_clean:
                continue
            if has_pystack:
                raise PlanNotBuildable(
                    f"link {link.index} ({direction}): impairments on a kernel node's side of a LAN that "
                    "includes a pystack node are not supported; put them on the pystack node's interface"
                )
            wiring.qdiscs.append(Qdisc(namespace, ifname, _qdisc_kind(impairment), impairment, link.mtu,
                                       direction))
    wiring.ports.append(Port(lan_ns, LAN_BRIDGE, silent=True))


def _qdisc_kind(impairment: Impairment) -> str:
    return "netem" if impairment.needs_netem else "tbf"


def qdisc_parameters(qdisc: Qdisc) -> dict[str, Any]:
    """pyroute2 `tc('add', kind, ...)` keyword arguments for an impairment."""
    imp = qdisc.impairment
    if qdisc.kind == "tbf":
        assert imp.rate_mbit is not None
        rate_bytes = imp.rate_mbit * 1_000_000 / 8
        # Burst: at least one full frame, and about 4 ms worth of the rate so high rates still reach it.
        burst = int(max(qdisc.mtu + 14, rate_bytes / 250, 3000))
        return {"rate": f"{int(imp.rate_mbit * 1000)}kbit", "burst": burst, "latency": "50ms"}
    params: dict[str, Any] = {
        "delay": int(imp.delay_ms * 1000),  # microseconds
        "jitter": int(imp.jitter_ms * 1000),
        "loss": imp.loss_pct,
        "duplicate": imp.duplicate_pct,
        "limit": 10000,
    }
    if imp.reorder_pct:
        params["prob_reorder"] = imp.reorder_pct
    if imp.corrupt_pct:
        params["prob_corrupt"] = imp.corrupt_pct
    if imp.rate_mbit:
        params["rate"] = f"{int(imp.rate_mbit * 1000)}kbit"
    return params


def journal_entries(wiring: Wiring) -> dict[str, list[JournalEntry]]:
    """The journal batches, one per creation phase (each written before its phase runs)."""
    return {
        "namespaces": [JournalEntry("namespace", namespace=ns) for ns in wiring.namespaces],
        "veths": [veth.journal_entry() for veth in wiring.veths],
        "devices": [JournalEntry("tap", namespace=ns, name=name) for ns, name, *_ in wiring.taps]
        + [JournalEntry("bridge", namespace=ns, name=name) for ns, name, _ in wiring.bridges],
        "qdiscs": [JournalEntry("qdisc", namespace=q.namespace, name=q.ifname, qdisc=q.kind)
                   for q in wiring.qdiscs],
    }


def forwarder_settings(lab: str, forwarder: Forwarder, control_socket: str,
                       impairments: tuple[Impairment, Impairment] | None = None) -> dict[str, Any]:
    """The settings file of a link's forwarder process (`<state dir>/nodes/link<index>.json`).

    Schema (version 1, read by `stack.node.forwarder`): lab, link, namespace, ports [the forwarder's
    two veth ends], directions ["h1->h2" for frames read on the first port, "h2->h1"], impairments
    {direction: impairment in ms / percent / Mbit/s}, control_socket, seed (null: random).
    `impairments` overrides the plan's (what `lab impair` set, kept across a restart).
    """
    current = impairments if impairments is not None else forwarder.impairments
    return {"version": 1, "lab": lab, "link": forwarder.name, "namespace": forwarder.namespace,
            "ports": list(forwarder.ports), "directions": list(forwarder.directions),
            "impairments": {name: impairment_json(imp) for name, imp in zip(forwarder.directions, current,
                                                                            strict=True)},
            "control_socket": control_socket, "seed": None}


def pystack_settings(plan: LabPlan, node: NodePlan, state_dir: str) -> dict[str, Any]:
    """The settings file a pystack node's stack process reads (`<state dir>/nodes/<node>.json`).

    Schema (version 1): lab, node, namespace, tap, bridge, offload (open the TAP with
    IFF_VNET_HDR), process (false: `lab up` starts no stack process), workers (stack processes, each
    on its own queue of the TAP, created multi-queue when more than 1),
    interface {name, address "a.b.c.d/len", mac, mtu, egress, ingress}
    (impairments as in `lab.topology.plan.Impairment`, in ms / percent / Mbit/s), gateway (the
    default route's next hop, or null), routes [{destination, gateway}] (the other routes: the
    default is never repeated here), apps [{app, port, bytes}], state_dir.
    """
    iface = node.interfaces[0]
    return {
        "version": 1,
        "lab": plan.name,
        "node": node.name,
        "namespace": node.namespace,
        "tap": PYSTACK_TAP,
        "bridge": PYSTACK_BRIDGE,
        "offload": node.offload,
        "process": node.process,
        "workers": node.workers,
        "interface": {
            "name": iface.name, "address": str(iface.address), "mac": iface.mac, "mtu": iface.mtu,
            "egress": impairment_json(iface.egress), "ingress": impairment_json(iface.ingress),
        },
        "gateway": str(node.gateway) if node.gateway else None,
        "routes": [{"destination": str(r.destination), "gateway": str(r.gateway)}
                   for r in node.routes if r.destination.prefixlen > 0],  # the default is `gateway`
        "apps": [{"app": a.app, "port": a.port, "bytes": a.bytes} for a in node.apps],
        "state_dir": state_dir,
    }


@dataclass(frozen=True)
class ImpairmentSite:
    """Where one direction of one link is impaired, and by what (`lab status`, `lab impair`)."""

    link: int
    label: str  # "h1->h2" on a point-to-point link, "h1:eth0->lan0" / "lan0->h1:eth0" on a LAN
    by: str | None  # "netem", "tbf", "forwarder", "stack"; None: nothing can (a direct link, no sch_netem)
    impairment: Impairment  # what the plan says
    process: str | None = None  # the node (stack) or "link<N>" (forwarder) whose process applies it
    key: str | None = None  # the direction's name there: "egress"/"ingress" (stack), the label (forwarder)
    namespace: str | None = None  # the qdisc's interface (netem, tbf)
    ifname: str | None = None
    mtu: int = 1500


def impairment_sites(plan: LabPlan, wiring: Wiring) -> dict[tuple[str, str, str], ImpairmentSite]:
    """Each link direction's site, by (node, interface, "out" | "in") of every endpoint that sees it."""
    interfaces = {(i.node, i.name): i for n in plan.nodes for i in n.interfaces}
    kinds = {n.name: n.kind for n in plan.nodes}
    namespaces = {n.name: n.namespace for n in plan.nodes}
    forwarders = {f.link: f for f in wiring.forwarders}
    qdiscs = {(q.namespace, q.ifname): q.kind for q in wiring.qdiscs}
    runtime_qdisc = "netem" if wiring.netem else None
    sites: dict[tuple[str, str, str], ImpairmentSite] = {}

    def qdisc_site(link: LinkPlan, label: str, impairment: Impairment, namespace: str,
                   ifname: str) -> ImpairmentSite:
        return ImpairmentSite(link.index, label, qdiscs.get((namespace, ifname), runtime_qdisc), impairment,
                              namespace=namespace, ifname=ifname, mtu=link.mtu)

    for link in plan.links:
        ends = [interfaces[end] for end in link.endpoints]
        if len(ends) == 2:
            for sender, receiver in ((ends[0], ends[1]), (ends[1], ends[0])):
                label = f"{sender.node}->{receiver.node}"
                impairment = direction_impairment(sender, receiver)
                if kinds[sender.node] == "pystack" or kinds[receiver.node] == "pystack":
                    on_sender = kinds[sender.node] == "pystack"  # the placement of `lab.topology.impairments`
                    owner = sender if on_sender else receiver
                    site = ImpairmentSite(link.index, label, "stack", impairment, process=owner.node,
                                          key="egress" if on_sender else "ingress", mtu=link.mtu)
                elif link.index in forwarders:
                    site = ImpairmentSite(link.index, label, "forwarder", impairment,
                                          process=forwarders[link.index].name, key=label, mtu=link.mtu)
                else:
                    site = qdisc_site(link, label, impairment, namespaces[sender.node], sender.name)
                sites[(sender.node, sender.name, "out")] = site
                sites[(receiver.node, receiver.name, "in")] = site
            continue
        lan = lan_namespace(plan.name, link.index)
        for position, iface in enumerate(ends):
            where = f"{iface.node}:{iface.name}"
            for direction, label, impairment in (("out", f"{where}->lan{link.index}", iface.egress),
                                                 ("in", f"lan{link.index}->{where}", iface.ingress)):
                if kinds[iface.node] == "pystack":
                    site = ImpairmentSite(link.index, label, "stack", impairment, process=iface.node,
                                          key="egress" if direction == "out" else "ingress", mtu=link.mtu)
                elif direction == "out":
                    site = qdisc_site(link, label, impairment, namespaces[iface.node], iface.name)
                else:
                    port = lan_port_name(iface.node, iface.name, position)
                    site = qdisc_site(link, label, impairment, lan, port)
                sites[(iface.node, iface.name, direction)] = site
    return sites
