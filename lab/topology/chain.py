"""A chain of N kernel nodes, for benchmarks of `lab up`/`lab down` and of multi-hop paths.

    n1 -eth1--eth0- n2 -eth1--eth0- n3 ... nN

Link k joins n<k> (``.1``, its eth1) and n<k+1> (``.2``, its eth0) on 10.<k div 256>.<k mod 256>.0/24,
so link subnets are consecutive /24s and every node can reach every other: n1 and nN route by
default toward the middle, and each inner node routes by default toward nN and sends everything
on the n1 side (links 1..k-2) by a handful of summarized routes toward n1 (`summarize_address_range`
turns the consecutive /24s into at most ~2 log2(N) prefixes, so a 250-node chain has no quadratic
route table). Inner nodes forward (``net.ipv4.ip_forward: 1``).

`chain_plan` builds the plan directly; `chain_yaml` writes the same topology as a file, and
loading that file gives a plan with the same digest.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, summarize_address_range

import yaml

from lab.topology import TopologyError, lab_name_problem, plan_from_data
from lab.topology.limits import MAX_NODES
from lab.topology.plan import LabPlan

# A topology holds at most MAX_NODES nodes (`lab.topology.limits`); the addressing would allow 65536.
MAX_CHAIN = MAX_NODES
_BASE = int(IPv4Address("10.0.0.0"))
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's emitter when present: same text, faster


def chain_plan(count: int, name: str = "chain") -> LabPlan:
    """The plan of a chain of ``count`` kernel nodes named n1..n<count>."""
    return plan_from_data(chain_document(count, name), source="", name=None)


def chain_yaml(count: int, name: str = "chain") -> str:
    """The same chain as a topology file (loads to a plan with `chain_plan`'s digest)."""
    header = (
        f"# A chain of {count} kernel nodes, n1 to n{count}, "
        f"written by lab.topology.chain.chain_yaml({count}).\n"
        f"# Link k joins n<k> (.1) and n<k+1> (.2) on 10.<k div 256>.<k mod 256>.0/24.\n"
    )
    body = yaml.dump(
        chain_document(count, name), Dumper=_DUMPER, sort_keys=False, default_flow_style=None, width=110
    )
    return header + body


def chain_document(count: int, name: str = "chain") -> dict[str, object]:
    """The chain as topology data (what the YAML file holds)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= MAX_CHAIN:
        raise TopologyError(
            "chain", None, "count", f"expected a node count from 2 to {MAX_CHAIN}, got {count!r}"
        )
    problem = lab_name_problem(name)
    if problem:
        raise TopologyError("chain", None, "name", f"{problem}, got {name!r}")
    last_link = count - 1
    nodes: dict[str, dict[str, object]] = {}
    for k in range(1, count + 1):
        node: dict[str, object] = {"kind": "kernel"}
        if k == 1 and count > 2:
            node["gateway"] = _host(1, 2)
        elif k == count and count > 2:
            node["gateway"] = _host(last_link, 1)
        elif 1 < k < count:
            node["sysctls"] = {"net.ipv4.ip_forward": 1}
            routes = [{"to": str(prefix), "via": _host(k - 1, 1)} for prefix in _links_before(k - 1)]
            if k < count - 1:
                routes.insert(0, {"to": "default", "via": _host(k, 2)})
            if routes:
                node["routes"] = routes
        nodes[f"n{k}"] = node
    links = [
        {"endpoints": [f"n{k}:eth1", f"n{k + 1}:eth0"], "subnet": str(_subnet(k))} for k in range(1, count)
    ]
    return {"name": name, "nodes": nodes, "links": links}


def _subnet(link: int) -> IPv4Network:
    return IPv4Network((_BASE + link * 256, 24))


def _host(link: int, host: int) -> str:
    return str(_subnet(link).network_address + host)


def _links_before(link: int) -> list[IPv4Network]:
    """Summarized prefixes covering links 1..link-1: the far side, for a node whose left link is ``link``."""
    if link < 2:
        return []
    first = _subnet(1).network_address
    last = _subnet(link - 1).broadcast_address
    return list(summarize_address_range(first, last))
