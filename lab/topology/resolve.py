"""From a shape-checked topology to a `LabPlan`: names, addresses, impairments, routes, sysctls.

Everything here needs more than one part of the file at once (an endpoint must name a node that
exists, a gateway must be another node's address on a shared subnet), so it runs after the schema
and reports errors through the same `SourceMap`, pointing at the line of the part that is wrong.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from lab.topology.addresses import assign_addresses, parse_subnet
from lab.topology.errors import FieldPath, TopologyError, format_value
from lab.topology.impairments import link_impairments
from lab.topology.names import LAB_NAME_EXPECTED, NODE_NAME_EXPECTED, is_plain_name, lab_name_problem
from lab.topology.plan import (
    PYSTACK_BRIDGE,
    PYSTACK_TAP,
    AppPlan,
    Impairment,
    InterfacePlan,
    LabPlan,
    LinkPlan,
    NodePlan,
    interface_mac,
    namespace_name,
)
from lab.topology.routes import node_routes
from lab.topology.schema import LinkSpec, NodeSpec, TopologySpec
from lab.topology.sysctls import check_sysctl_name
from lab.topology.yaml_lines import SourceMap

# The runtime names a LAN's bridge namespace <lab>-lan<index>, a link forwarder's <lab>-link<index>.
_LAN_NAMESPACE = re.compile(r"(lan|link)[0-9]+")
_INTERFACE = re.compile(r"[a-z][a-z0-9_-]{0,14}")  # Linux IFNAMSIZ: at most 15 characters


@dataclass
class _Wiring:
    """Per-node facts gathered from the links, before the node plans are frozen."""

    interfaces: dict[str, list[InterfacePlan]] = field(default_factory=dict)
    interface_paths: dict[tuple[str, str], FieldPath] = field(default_factory=dict)
    address_owner: dict[IPv4Address, tuple[str, str]] = field(default_factory=dict)


def resolve(spec: TopologySpec, lines: SourceMap, source: str, name: str | None) -> LabPlan:
    lab = _lab_name(spec, lines, name)
    for node_name in spec.nodes:
        _check_node_name(node_name, lines)
    links, wiring = _resolve_links(spec, lines, lab)
    nodes = tuple(
        _resolve_node(lab, node_name, node, wiring, lines) for node_name, node in spec.nodes.items()
    )
    return LabPlan(name=lab, source=source, nodes=nodes, links=tuple(links))


def _lab_name(spec: TopologySpec, lines: SourceMap, override: str | None) -> str:
    if override is not None:
        if lab_name_problem(override):
            raise TopologyError("--name", None, "", f"{LAB_NAME_EXPECTED}, got {format_value(override)}")
        return override
    if lab_name_problem(spec.name):
        raise lines.error(("name",), f"{LAB_NAME_EXPECTED}, got {format_value(spec.name)}")
    return spec.name


def _check_node_name(name: str, lines: SourceMap) -> None:
    path = ("nodes", name)
    if not is_plain_name(name):
        raise lines.error(path, f"{NODE_NAME_EXPECTED}, got {format_value(name)}", key=True)
    if _LAN_NAMESPACE.fullmatch(name):
        raise lines.error(
            path,
            f"expected a node name not of the form lan<N> or link<N> (reserved for LAN bridges "
            f"and link forwarders), "
            f"got {format_value(name)}",
            key=True,
        )


def _resolve_links(spec: TopologySpec, lines: SourceMap, lab: str) -> tuple[list[LinkPlan], _Wiring]:
    wiring = _Wiring({node_name: [] for node_name in spec.nodes})
    subnets = SubnetSet()
    links: list[LinkPlan] = []
    for index, link in enumerate(spec.links):
        path: FieldPath = ("links", index)
        subnet = parse_subnet(link.subnet, lines, (*path, "subnet"))
        clash = subnets.add(subnet, index)
        if clash is not None:
            raise lines.error(
                (*path, "subnet"),
                f"expected a subnet apart from links[{clash[1]}]'s {clash[0]}, got {subnet}",
            )
        endpoints = _check_endpoints(spec, link, lines, path, wiring)
        addresses = assign_addresses(link.endpoints, subnet, lines, path)
        impaired = link_impairments(link, lines, path)
        if link.impairable and len(link.endpoints) != 2:
            raise lines.error((*path, "impairable"), f"expected impairable only on a point-to-point link "
                              f"(2 endpoints), got a LAN of {len(link.endpoints)} endpoints", key=True)
        for (node_name, interface), address in zip(endpoints, addresses, strict=True):
            egress, ingress = _placed_impairments(spec, node_name, endpoints, impaired)
            wiring.interfaces[node_name].append(
                InterfacePlan(
                    node=node_name,
                    name=interface,
                    address=address,
                    mac=interface_mac(lab, node_name, interface),
                    mtu=link.mtu,
                    link=index,
                    egress=egress,
                    ingress=ingress,
                )
            )
            wiring.address_owner[address.ip] = (node_name, interface)
        links.append(LinkPlan(index=index, endpoints=tuple(endpoints), subnet=subnet, mtu=link.mtu,
                              impairable=link.impairable))
    return links, wiring


class SubnetSet:
    """Link subnets kept sorted, so an overlap check costs a bisect, not a scan (chains of 1000s)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.entries: list[tuple[IPv4Network, int]] = []

    def add(self, subnet: IPv4Network, index: int) -> tuple[IPv4Network, int] | None:
        """Insert ``subnet`` unless it overlaps one already there; return that one then."""
        start = int(subnet.network_address)
        at = bisect.bisect_right(self.starts, start)
        for neighbour in self.entries[max(at - 1, 0) : at + 1]:
            if subnet.overlaps(neighbour[0]):
                return neighbour
        self.starts.insert(at, start)
        self.entries.insert(at, (subnet, index))
        return None


def _check_endpoints(
    spec: TopologySpec, link: LinkSpec, lines: SourceMap, path: FieldPath, wiring: _Wiring
) -> list[tuple[str, str]]:
    endpoints: list[tuple[str, str]] = []
    on_link: set[str] = set()
    for position, endpoint in enumerate(link.endpoints):
        where = (*path, "endpoints", position)
        node = spec.nodes.get(endpoint.node)
        if node is None:
            known = ", ".join(spec.nodes)
            raise lines.error(
                where, f"expected a node defined under nodes ({known}), got {format_value(endpoint.node)}"
            )
        if endpoint.node in on_link:
            raise lines.error(where, f"expected each node once per link, got {endpoint.node} twice")
        on_link.add(endpoint.node)
        reserved = {"lo", PYSTACK_TAP, PYSTACK_BRIDGE} if node.kind == "pystack" else {"lo"}
        if not _INTERFACE.fullmatch(endpoint.interface) or endpoint.interface in reserved:
            raise lines.error(
                where,
                f"expected an interface name of at most 15 characters like eth0 "
                f"(not {', '.join(sorted(reserved))}), got {format_value(endpoint.interface)}",
            )
        key = (endpoint.node, endpoint.interface)
        if key in wiring.interface_paths:
            first = wiring.interface_paths[key]
            raise lines.error(
                where,
                f"expected an interface not used by another link (links[{first[1]}] uses "
                f"it), got {endpoint.node}:{endpoint.interface}",
            )
        wiring.interface_paths[key] = where
        endpoints.append(key)
    return endpoints


def _placed_impairments(
    spec: TopologySpec,
    node_name: str,
    endpoints: list[tuple[str, str]],
    impaired: dict[tuple[str, str], Impairment],
) -> tuple[Impairment, Impairment]:
    """(egress, ingress) of ``node_name``'s end; see `lab.topology.impairments` for the placement rule."""
    if not impaired:
        return Impairment(), Impairment()
    (peer,) = (other for other, _ in endpoints if other != node_name)
    me_kernel = spec.nodes[node_name].kind == "kernel"
    peer_kernel = spec.nodes[peer].kind == "kernel"
    outgoing = impaired.get((node_name, peer), Impairment())
    incoming = impaired.get((peer, node_name), Impairment())
    egress = Impairment() if me_kernel and not peer_kernel else outgoing
    ingress = incoming if peer_kernel and not me_kernel else Impairment()
    return egress, ingress


def _resolve_node(lab: str, name: str, node: NodeSpec, wiring: _Wiring, lines: SourceMap) -> NodePlan:
    path: FieldPath = ("nodes", name)
    interfaces = tuple(wiring.interfaces[name])
    if not interfaces:
        raise lines.error(path, "expected the node on at least one link, got a node no link names", key=True)
    if node.kind == "pystack":
        if len(interfaces) != 1:
            second = wiring.interface_paths[(name, interfaces[1].name)]
            raise lines.error(
                second,
                f"expected one interface on pystack node {name} (the stack owns one TAP), "
                f"got a second: {name}:{interfaces[1].name}",
            )
        if node.sysctls:
            raise lines.error(
                (*path, "sysctls"),
                "expected no sysctls on a pystack node (its kernel holds no "
                "address; the stack has its own settings), got "
                f"{format_value(node.sysctls)}",
                key=True,
            )
    else:
        for key in ("apps", "offload", "process", "workers", "python"):
            if key in node.model_fields_set:
                raise lines.error(
                    (*path, key),
                    f"expected no {key} on a kernel node (pystack nodes only; run "
                    f"programs on kernel nodes with `lab exec`), got "
                    f"{format_value(getattr(node, key))}",
                    key=True,
                )
    return NodePlan(
        name=name,
        kind=node.kind,
        namespace=namespace_name(lab, name),
        interfaces=interfaces,
        routes=node_routes(name, node, interfaces, wiring.address_owner, lines),
        sysctls=_sysctls(node, interfaces, lines, path),
        apps=_apps(node, lines, path),
        offload=True if node.offload is None else node.offload,
        process=True if node.process is None else node.process,
        workers=1 if node.workers is None else node.workers,
        python=node.python or "cpython",
    )


def _apps(node: NodeSpec, lines: SourceMap, path: FieldPath) -> tuple[AppPlan, ...]:
    by_port: dict[int, int] = {}
    for index, app in enumerate(node.apps):
        where = (*path, "apps", index)
        if app.bytes is not None and app.app != "source":
            raise lines.error(
                (*where, "bytes"), f"expected bytes only on a source app, got bytes on {app.app}", key=True
            )
        if app.port in by_port:
            first = node.apps[by_port[app.port]]
            raise lines.error(
                (*where, "port"),
                f"expected a port no other app uses (apps[{by_port[app.port]}] "
                f"{first.app} has it), got {app.port}",
            )
        if app.app == "iperf3" and (node.workers or 1) > 1:
            # Its data streams carry the session's cookie to any worker (docs/workers.md).
            raise lines.error(
                (*where, "app"), f"expected no iperf3 app on a node with {node.workers} workers (iperf3 "
                "sessions are one worker's; use workers: 1), got iperf3",
            )
        by_port[app.port] = index
    return tuple(AppPlan(app=app.app, port=app.port, bytes=app.bytes) for app in node.apps)


def _sysctls(
    node: NodeSpec, interfaces: tuple[InterfacePlan, ...], lines: SourceMap, path: FieldPath
) -> tuple[tuple[str, str], ...]:
    names = tuple(interface.name for interface in interfaces)
    for sysctl in node.sysctls:
        problem = check_sysctl_name(sysctl, names)
        if problem:
            raise lines.error((*path, "sysctls", sysctl), f"{problem}, got {format_value(sysctl)}", key=True)
    return tuple(node.sysctls.items())
