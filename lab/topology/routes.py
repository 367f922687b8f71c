"""Routes of a node: the ``gateway`` shorthand and ``routes`` list, checked against the whole lab.

A route is only useful if its gateway answers: ``via`` must be the address of *another* node on a
subnet this node is on (so ARP finds it). A route to a subnet the node is already on would clash
with the kernel's connected route (``RTNETLINK: File exists``), so it is refused here, early.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from lab.topology.addresses import parse_host
from lab.topology.errors import FieldPath, format_value
from lab.topology.plan import InterfacePlan, RoutePlan
from lab.topology.schema import NodeSpec
from lab.topology.yaml_lines import SourceMap

DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")


AddressOwners = dict[IPv4Address, tuple[str, str]]  # address -> (node, interface), for the whole lab


def node_routes(
    name: str, node: NodeSpec, interfaces: tuple[InterfacePlan, ...], owners: AddressOwners, lines: SourceMap
) -> tuple[RoutePlan, ...]:
    """The node's routes, ``gateway`` first (as the default route), each checked against the lab."""
    path: FieldPath = ("nodes", name)
    # (to, via, path of `to`, path of `via`); the shorthand has one path for both.
    wanted: list[tuple[str, str, FieldPath, FieldPath]] = [
        (route.to, route.via, (*path, "routes", i, "to"), (*path, "routes", i, "via"))
        for i, route in enumerate(node.routes)
    ]
    if node.gateway is not None:
        wanted.insert(0, ("default", node.gateway, (*path, "gateway"), (*path, "gateway")))
    routes: list[RoutePlan] = []
    seen: dict[IPv4Network, FieldPath] = {}
    for to, via, to_path, via_path in wanted:
        destination = _route_destination(to, interfaces, lines, to_path)
        if destination in seen:
            problem = (
                "expected either gateway or a default route in routes, got both"
                if destination == DEFAULT_ROUTE and seen[destination][-1] == "gateway"
                else f"expected each destination once, got a second route to {_route_name(destination)}"
            )
            raise lines.error(to_path, problem)
        seen[destination] = to_path
        gateway = _gateway(name, via, interfaces, owners, lines, via_path)
        routes.append(RoutePlan(destination=destination, gateway=gateway))
    return tuple(routes)


def _route_destination(
    text: str, interfaces: tuple[InterfacePlan, ...], lines: SourceMap, path: FieldPath
) -> IPv4Network:
    if text == "default":
        return DEFAULT_ROUTE
    try:
        destination = IPv4Network(text)
    except ValueError:
        raise lines.error(
            path, f"expected default or a subnet like 10.0.2.0/24 (host bits zero), got {format_value(text)}"
        ) from None
    for interface in interfaces:
        if destination == interface.address.network:
            raise lines.error(
                path,
                f"expected a subnet the node is not on ({interface.name} is on it already), "
                f"got {destination}",
            )
    return destination


def _gateway(
    name: str,
    via: str,
    interfaces: tuple[InterfacePlan, ...],
    owners: AddressOwners,
    lines: SourceMap,
    path: FieldPath,
) -> IPv4Address:
    """``via`` as an address, if it belongs to another node on one of this node's subnets."""
    gateway = parse_host(via, lines, path)
    subnets = [interface.address.network for interface in interfaces]
    owner = owners.get(gateway)
    if owner is not None and owner[0] != name and any(gateway in subnet for subnet in subnets):
        return gateway
    neighbours = sorted(
        (address, node)
        for address, (node, _) in owners.items()
        if node != name and any(address in subnet for subnet in subnets)
    )
    choices = ", ".join(f"{node} at {address}" for address, node in neighbours[:6]) or "there is none"
    if len(neighbours) > 6:
        choices += ", ..."
    raise lines.error(
        path,
        f"expected the address of another node on a subnet of {name} ({choices}), got {format_value(via)}",
    )


def _route_name(destination: IPv4Network) -> str:
    return "default" if destination == DEFAULT_ROUTE else str(destination)
