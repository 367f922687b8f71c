"""Chains of kernel nodes: structure, file round-trip, and that the routes really join n1 to nN."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from lab.topology import TopologyError, plan_from_text
from lab.topology.chain import MAX_CHAIN, chain_document, chain_plan, chain_yaml
from lab.topology.plan import LabPlan


class _Routing:
    """Longest-prefix-match forwarding over a plan, as each node's kernel would do it."""

    def __init__(self, plan: LabPlan) -> None:
        self.owner = {i.address.ip: n.name for n in plan.nodes for i in n.interfaces}
        self.tables: dict[str, list[tuple[IPv4Network, IPv4Address | None]]] = {}
        for node in plan.nodes:
            table: list[tuple[IPv4Network, IPv4Address | None]] = [
                (i.address.network, None) for i in node.interfaces
            ]
            table += [(route.destination, route.gateway) for route in node.routes]
            self.tables[node.name] = sorted(table, key=lambda entry: -entry[0].prefixlen)
        self.limit = len(plan.nodes)

    def next_hop(self, node: str, destination: IPv4Address) -> str | None:
        """The node a packet for ``destination`` goes to next; None when ``node`` owns the address."""
        if self.owner.get(destination) == node:
            return None
        match = next(((net, via) for net, via in self.tables[node] if destination in net), None)
        assert match is not None, f"{node} has no route to {destination}"
        target = destination if match[1] is None else match[1]
        assert target in self.owner, f"{node} sends {destination} to {target}, which no node has"
        return self.owner[target]

    def path(self, start: str, destination: IPv4Address) -> list[str]:
        hops = [start]
        while (following := self.next_hop(hops[-1], destination)) is not None:
            hops.append(following)
            assert len(hops) <= self.limit, f"routing loop: {hops[:8]}..."
        return hops


def _path(plan: LabPlan, start: str, destination: IPv4Address) -> list[str]:
    return _Routing(plan).path(start, destination)


@pytest.mark.parametrize("count", [2, 3, 4, 5, 9, 40])
def test_every_node_reaches_every_address_along_the_chain(count: int) -> None:
    plan = chain_plan(count)
    routing = _Routing(plan)
    for source in plan.nodes:
        for target in plan.nodes:
            for interface in target.interfaces:
                hops = routing.path(source.name, interface.address.ip)
                low, high = sorted((int(source.name[1:]), int(target.name[1:])))
                assert len(hops) == high - low + 1  # the shortest path: no detours


@pytest.mark.parametrize("count", [250, 700])
def test_long_chain_ends_reach_each_other_both_ways(count: int) -> None:
    plan = chain_plan(count)
    first, last = plan.node("n1"), plan.node(f"n{count}")
    assert _path(plan, "n1", last.interfaces[0].address.ip) == [f"n{k}" for k in range(1, count + 1)]
    assert _path(plan, f"n{count}", first.interfaces[0].address.ip) == [f"n{k}" for k in range(count, 0, -1)]
    middle = plan.node(f"n{count // 2}")
    assert _path(plan, middle.name, first.interfaces[0].address.ip)[-1] == "n1"
    # Summarized routes keep tables small: a few prefixes per node, not one per distant link.
    assert max(len(node.routes) for node in plan.nodes) <= 2 * count.bit_length() + 1


def test_chain_shape() -> None:
    plan = chain_plan(4, name="bench")
    assert plan.name == "bench" and plan.source == ""
    assert [n.name for n in plan.nodes] == ["n1", "n2", "n3", "n4"]
    assert [n.namespace for n in plan.nodes] == ["bench-n1", "bench-n2", "bench-n3", "bench-n4"]
    assert {n.kind for n in plan.nodes} == {"kernel"}
    assert [link.endpoints for link in plan.links] == [
        (("n1", "eth1"), ("n2", "eth0")),
        (("n2", "eth1"), ("n3", "eth0")),
        (("n3", "eth1"), ("n4", "eth0")),
    ]
    assert [str(link.subnet) for link in plan.links] == ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]
    assert [str(i.address) for i in plan.node("n2").interfaces] == ["10.0.1.2/24", "10.0.2.1/24"]
    forwarding = [n.name for n in plan.nodes if ("net.ipv4.ip_forward", "1") in n.sysctls]
    assert forwarding == ["n2", "n3"]
    assert plan.node("n1").gateway == IPv4Address("10.0.1.2")
    assert plan.node("n4").gateway == IPv4Address("10.0.3.1")


def test_two_nodes_need_no_routes() -> None:
    plan = chain_plan(2)
    assert all(node.routes == () and node.sysctls == () for node in plan.nodes)


def test_subnets_cross_the_third_octet_cleanly() -> None:
    plan = chain_plan(300)
    assert str(plan.links[254].subnet) == "10.0.255.0/24"
    assert str(plan.links[255].subnet) == "10.1.0.0/24"
    assert len({link.subnet for link in plan.links}) == 299


@pytest.mark.parametrize("count", [2, 3, 7, 250])
def test_chain_yaml_round_trips_through_the_loader(count: int) -> None:
    text = chain_yaml(count, name="rt")
    assert text.startswith(f"# A chain of {count} kernel nodes")
    loaded = plan_from_text(text, "chain.yaml")
    built = chain_plan(count, name="rt")
    assert loaded.digest() == built.digest()
    assert loaded.nodes == built.nodes and loaded.links == built.links


@pytest.mark.parametrize("count", [0, 1, -3, MAX_CHAIN + 1, 2.5, True, "10"])
def test_bad_counts(count: object) -> None:
    with pytest.raises(
        TopologyError, match=rf"^chain: count: expected a node count from 2 to {MAX_CHAIN}, got "
    ):
        chain_document(count)  # type: ignore[arg-type]


def test_bad_chain_name() -> None:
    with pytest.raises(TopologyError, match=r"^chain: name: expected a lab name .*, got 'Chain-1'$"):
        chain_plan(3, name="Chain-1")
