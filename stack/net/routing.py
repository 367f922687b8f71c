"""The IPv4 routing table: connected subnet, static routes, default gateway; longest prefix wins.

Like Linux's main table: a route either reaches its destination directly on the link (``gateway`` None:
ARP for the destination itself) or through a gateway (ARP for the gateway). Among routes of equal
prefix length the lowest metric wins. Lookups are cached per destination because the TCP data path asks
for every segment; the cache is dropped whenever the table changes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from stack.compat import SLOTS


@dataclass(frozen=True, **SLOTS)
class Route:
    network: ipaddress.IPv4Network
    gateway: str | None = None  # None: the destination is on the link
    metric: int = 0
    mtu: int | None = None  # a per-route MTU (``ip route ... mtu N``); None = the interface's

    def __str__(self) -> str:
        via = f" via {self.gateway}" if self.gateway else " scope link"
        mtu = f" mtu {self.mtu}" if self.mtu else ""
        return f"{'default' if self.network.prefixlen == 0 else self.network}{via} metric {self.metric}{mtu}"


class RoutingTable:
    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._cache: dict[str, Route | None] = {}

    def add(self, destination: str, gateway: str | None = None, *, metric: int = 0,
            mtu: int | None = None) -> Route:
        """Add a route; ``destination`` is "a.b.c.d/len" or "default". Raises ValueError on bad input."""
        try:
            network = ipaddress.IPv4Network("0.0.0.0/0" if destination == "default" else destination,
                                            strict=True)
        except ValueError as exc:
            raise ValueError(f"route: destination {destination!r}: {exc}") from None
        if gateway is not None:
            try:
                ipaddress.IPv4Address(gateway)
            except ValueError:
                raise ValueError(f"route {destination}: gateway {gateway!r} is not an IPv4 address") from None
            gateway_address = ipaddress.IPv4Address(gateway)
            if not any(r.gateway is None and gateway_address in r.network for r in self._routes):
                # Linux: "Nexthop has invalid gateway" unless the gateway is reachable on the link.
                raise ValueError(f"route {destination}: gateway {gateway} is not on a connected subnet")
        if mtu is not None and not 68 <= mtu <= 65535:
            raise ValueError(f"route {destination}: mtu {mtu} is outside 68..65535")
        route = Route(network, gateway, metric, mtu)
        if any(r.network == network and r.metric == metric for r in self._routes):
            raise ValueError(f"route {route}: a route to {network} with metric {metric} exists (EEXIST)")
        self._routes.append(route)
        self._routes.sort(key=lambda r: (-r.network.prefixlen, r.metric))
        self._cache.clear()
        return route

    def remove(self, destination: str, metric: int = 0) -> None:
        network = ipaddress.IPv4Network("0.0.0.0/0" if destination == "default" else destination)
        before = len(self._routes)
        self._routes = [r for r in self._routes if not (r.network == network and r.metric == metric)]
        if len(self._routes) == before:
            raise ValueError(f"route {destination} metric {metric}: no such route (ESRCH)")
        self._cache.clear()

    def lookup(self, destination: str) -> Route | None:
        """The route for ``destination`` (dotted string), or None when unreachable."""
        cache = self._cache
        if destination in cache:
            return cache[destination]
        address = ipaddress.IPv4Address(destination)
        found = next((r for r in self._routes if address in r.network), None)
        if len(cache) > 4096:
            cache.clear()
        cache[destination] = found
        return found

    def routes(self) -> list[Route]:
        return list(self._routes)
