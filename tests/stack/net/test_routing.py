"""The routing table: longest prefix, metrics, gateways that must be on a connected subnet."""

from __future__ import annotations

import pytest

from stack.net.routing import RoutingTable


def table() -> RoutingTable:
    routes = RoutingTable()
    routes.add("10.0.0.0/24")
    routes.add("default", "10.0.0.1")
    return routes


def test_connected_subnet_is_on_link_and_default_goes_via_gateway() -> None:
    routes = table()
    assert routes.lookup("10.0.0.7").gateway is None
    assert routes.lookup("192.0.2.1").gateway == "10.0.0.1"


def test_longest_prefix_then_lowest_metric_wins() -> None:
    routes = table()
    routes.add("10.0.0.0/24", "10.0.0.254", metric=10)  # same prefix, worse metric: ignored
    routes.add("172.16.0.0/12", "10.0.0.2")
    routes.add("172.16.5.0/24", "10.0.0.3")
    assert routes.lookup("10.0.0.9").gateway is None
    assert routes.lookup("172.16.5.1").gateway == "10.0.0.3"
    assert routes.lookup("172.17.0.1").gateway == "10.0.0.2"
    routes.remove("172.16.5.0/24")
    assert routes.lookup("172.16.5.1").gateway == "10.0.0.2"  # the cache was dropped


def test_no_default_means_unreachable() -> None:
    routes = RoutingTable()
    routes.add("10.0.0.0/24")
    assert routes.lookup("192.0.2.1") is None


@pytest.mark.parametrize(("args", "message"), [
    (("10.0.0.1/24",), "host bits set"),
    (("default", "192.0.2.1"), "not on a connected subnet"),
    (("default", "nonsense"), "not an IPv4 address"),
    (("10.0.0.0/24",), "exists"),
])
def test_bad_routes_are_clear_errors(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        table().add(*args)
