"""Subnets and addresses of a link: explicit ones checked, the rest assigned in endpoint order.

Assignment rule: endpoints without an ``addr`` take the subnet's usable hosts in order, starting
at ``.1`` and skipping addresses written explicitly on the same link. So ``[h1:eth0, s1:eth0]`` on
10.0.0.0/24 gives h1 10.0.0.1 and s1 10.0.0.2, and listing a router first makes it ``.1``.
The network and broadcast addresses are never assigned (a /31 has neither, RFC 3021).
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import AddressValueError, IPv4Address, IPv4Interface, IPv4Network, NetmaskValueError

from lab.topology.errors import FieldPath, format_value
from lab.topology.schema import EndpointSpec
from lab.topology.yaml_lines import SourceMap

# Ranges a lab link may not use: they mean something special to every IPv4 host.
_FORBIDDEN = (
    (IPv4Network("0.0.0.0/8"), "'this network'"),
    (IPv4Network("127.0.0.0/8"), "loopback"),
    (IPv4Network("169.254.0.0/16"), "link-local"),
    (IPv4Network("224.0.0.0/4"), "multicast"),
    (IPv4Network("240.0.0.0/4"), "reserved"),
)


def parse_subnet(text: str, lines: SourceMap, path: FieldPath) -> IPv4Network:
    """A link subnet: written as its network address, with room for at least two hosts."""
    try:
        subnet = IPv4Network(text, strict=False)
    except (AddressValueError, NetmaskValueError, ValueError):
        raise lines.error(path, f"expected a subnet like 10.0.0.0/24, got {format_value(text)}") from None
    if "/" not in text:
        raise lines.error(
            path, f"expected a subnet with a prefix length like 10.0.0.0/24, got {format_value(text)}"
        )
    if subnet.network_address != IPv4Interface(text).ip:
        raise lines.error(
            path, f"expected the network address {subnet} (host bits zero), got {format_value(text)}"
        )
    if subnet.prefixlen > 31:
        raise lines.error(
            path, f"expected a prefix of /31 or shorter (room for two hosts), got {format_value(text)}"
        )
    for forbidden, what in _FORBIDDEN:
        if subnet.overlaps(forbidden):
            raise lines.error(
                path, f"expected a subnet outside {forbidden} ({what}), got {format_value(text)}"
            )
    return subnet


def parse_host(text: str, lines: SourceMap, path: FieldPath) -> IPv4Address:
    """A plain host address such as a route's ``via``."""
    try:
        return IPv4Address(text)
    except (AddressValueError, ValueError):
        raise lines.error(path, f"expected an address like 10.0.1.1, got {format_value(text)}") from None


def usable_hosts(subnet: IPv4Network) -> Iterator[IPv4Address]:
    """Hosts in order, without network and broadcast addresses (a /31 has neither)."""
    if subnet.prefixlen == 31:
        yield from subnet
    else:
        yield from subnet.hosts()


def usable_count(subnet: IPv4Network) -> int:
    return 2 if subnet.prefixlen == 31 else subnet.num_addresses - 2


def assign_addresses(
    endpoints: list[EndpointSpec], subnet: IPv4Network, lines: SourceMap, link_path: FieldPath
) -> list[IPv4Interface]:
    """One interface address per endpoint: explicit ones checked, the others assigned in order."""
    explicit: dict[int, IPv4Address] = {}
    owner: dict[IPv4Address, int] = {}
    for index, endpoint in enumerate(endpoints):
        if endpoint.addr is None:
            continue
        path = (*link_path, "endpoints", index, "addr")
        address = _parse_explicit(endpoint.addr, subnet, lines, path)
        if address in owner:
            raise lines.error(
                path,
                f"expected an address no other endpoint has (endpoints[{owner[address]}] "
                f"has it), got {format_value(endpoint.addr)}",
            )
        owner[address] = index
        explicit[index] = address
    wanted = len(endpoints) - len(explicit)
    free = (host for host in usable_hosts(subnet) if host not in owner)
    assigned: list[IPv4Interface] = []
    for index in range(len(endpoints)):
        address = explicit[index] if index in explicit else next(free, None)
        if address is None:
            besides = f" besides the {len(explicit)} written explicitly" if explicit else ""
            raise lines.error(
                (*link_path, "subnet"),
                f"expected room for {wanted} addresses{besides}, got {subnet} "
                f"({usable_count(subnet)} usable)",
            )
        assigned.append(IPv4Interface(f"{address}/{subnet.prefixlen}"))
    return assigned


def _parse_explicit(text: str, subnet: IPv4Network, lines: SourceMap, path: FieldPath) -> IPv4Address:
    try:
        written = IPv4Interface(text)
    except (AddressValueError, NetmaskValueError, ValueError):
        raise lines.error(
            path,
            f"expected an address like {next(usable_hosts(subnet))}/{subnet.prefixlen}, "
            f"got {format_value(text)}",
        ) from None
    if "/" in text and written.network.prefixlen != subnet.prefixlen:
        raise lines.error(
            path, f"expected the link's prefix length /{subnet.prefixlen}, got {format_value(text)}"
        )
    address = written.ip
    if address not in subnet:
        raise lines.error(
            path, f"expected an address inside the link's subnet {subnet}, got {format_value(text)}"
        )
    if subnet.prefixlen < 31 and address in (subnet.network_address, subnet.broadcast_address):
        what = "network" if address == subnet.network_address else "broadcast"
        raise lines.error(path, f"expected a host address of {subnet}, got its {what} address {address}")
    return address
