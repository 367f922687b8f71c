"""The resolved form of a topology: what `lab up` builds.

A topology file (see `lab.topology`) is what a person writes: short, with defaults and
addresses left to assign. A `LabPlan` is that file with every default filled in and every
address assigned, so the builder never has to guess and two plans can be compared to tell
whether a running lab already matches a file (idempotent `up`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, Literal

NodeKind = Literal["kernel", "pystack"]

# Interface names inside a pystack node's namespace (the stack opens TAP_NAME).
PYSTACK_TAP = "tap0"
PYSTACK_BRIDGE = "br0"


@dataclass(frozen=True)
class Impairment:
    """What one direction of a link does to packets (all zero: a clean link)."""

    delay_ms: float = 0.0  # added to each packet's travel time
    jitter_ms: float = 0.0  # each packet's delay varies by up to this around delay_ms
    loss_pct: float = 0.0  # percent of packets dropped
    duplicate_pct: float = 0.0  # percent of packets sent twice
    reorder_pct: float = 0.0  # percent of packets sent at once, overtaking the delayed ones
    corrupt_pct: float = 0.0  # percent of packets with one bit flipped
    rate_mbit: float | None = None  # the direction's rate limit (None: the link's own speed)

    @property
    def is_clean(self) -> bool:
        return self == Impairment()

    @property
    def needs_netem(self) -> bool:
        """True when a kernel link needs sch_netem for this (rate alone is done by tbf)."""
        return any(
            (self.delay_ms, self.jitter_ms, self.loss_pct, self.duplicate_pct, self.reorder_pct,
             self.corrupt_pct)
        )


@dataclass(frozen=True)
class AppPlan:
    """An application the stack process serves on a pystack node (echo, discard, source, http)."""

    app: str
    port: int
    bytes: int | None = None  # for `source`: how many bytes to send (None: without end)


@dataclass(frozen=True)
class RoutePlan:
    destination: IPv4Network  # 0.0.0.0/0 for the default route
    gateway: IPv4Address


@dataclass(frozen=True)
class InterfacePlan:
    """One end of a link, inside one node's namespace."""

    node: str
    name: str  # e.g. "eth0"; the name inside the namespace
    address: IPv4Interface
    mac: str  # "02:..." locally administered, derived from lab/node/interface
    mtu: int
    link: int  # index into LabPlan.links
    egress: Impairment = field(default_factory=Impairment)  # applied to packets leaving here
    ingress: Impairment = field(default_factory=Impairment)  # applied to packets arriving here


@dataclass(frozen=True)
class NodePlan:
    name: str
    kind: NodeKind
    namespace: str  # "<lab>-<node>"
    interfaces: tuple[InterfacePlan, ...]
    routes: tuple[RoutePlan, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()  # (name, value) pairs, e.g. ("net.ipv4.ip_forward", "1")
    apps: tuple[AppPlan, ...] = ()  # pystack only
    offload: bool = True  # pystack only: open the TAP with IFF_VNET_HDR + TSO
    process: bool = True  # pystack only: `lab up` starts the stack process (False: a script attaches)
    workers: int = 1  # pystack only: worker processes, each on its own queue of a multi-queue TAP
    python: str = "cpython"  # pystack only: the interpreter of its stack, cpython or pypy

    @property
    def gateway(self) -> IPv4Address | None:
        for route in self.routes:
            if route.destination.prefixlen == 0:
                return route.gateway
        return None


@dataclass(frozen=True)
class LinkPlan:
    index: int
    endpoints: tuple[tuple[str, str], ...]  # ((node, interface), ...): two for a point-to-point link
    subnet: IPv4Network
    mtu: int
    # Kept ready for `lab impair` while clean: on a kernel without sch_netem, a link between kernel
    # nodes then goes through the lab's forwarder from `up` on (`lab.build.wiring`).
    impairable: bool = False


@dataclass(frozen=True)
class LabPlan:
    name: str
    source: str  # the topology file it came from ("" for a plan built in code, like a chain)
    nodes: tuple[NodePlan, ...]
    links: tuple[LinkPlan, ...]

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (addresses as strings): `plan.json` of a running lab, and the digest's input.

        Written out field by field: `dataclasses.asdict` plus a JSON round trip took a third of the
        time of `up` for 100 nodes. The shape is exactly what that gave (a test holds the two equal),
        so the digests of labs already up stay valid.
        """
        return {"name": self.name, "source": self.source,
                "nodes": [_node_json(node) for node in self.nodes],
                "links": [{"index": link.index, "endpoints": [list(end) for end in link.endpoints],
                           "subnet": str(link.subnet), "mtu": link.mtu, "impairable": link.impairable}
                          for link in self.links]}

    def digest(self) -> str:
        """A short fingerprint of everything the builder makes (not of where the file was)."""
        return plan_json_digest(self.to_json())


def plan_json_digest(plan_json: dict[str, Any]) -> str:
    """The digest of a plan from its `to_json()` form; `up` serialises the plan once and uses it twice."""
    data = {key: value for key, value in plan_json.items() if key != "source"}
    # A field added later enters the digest only when it is set, so labs up before it keep theirs.
    data["links"] = [{key: value for key, value in link.items() if key != "impairable" or value}
                     for link in data.get("links", ())]
    defaults = {"workers": 1, "python": "cpython"}
    data["nodes"] = [{key: value for key, value in node.items()
                      if key not in defaults or value != defaults[key]} for node in data.get("nodes", ())]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def impairment_json(impairment: Impairment) -> dict[str, Any]:
    """One direction's impairment as JSON (ms, percent, Mbit/s): in `plan.json` and in node settings."""
    return {"delay_ms": impairment.delay_ms, "jitter_ms": impairment.jitter_ms,
            "loss_pct": impairment.loss_pct, "duplicate_pct": impairment.duplicate_pct,
            "reorder_pct": impairment.reorder_pct, "corrupt_pct": impairment.corrupt_pct,
            "rate_mbit": impairment.rate_mbit}


def _node_json(node: NodePlan) -> dict[str, Any]:
    return {
        "name": node.name, "kind": node.kind, "namespace": node.namespace,
        "interfaces": [{"node": i.node, "name": i.name, "address": str(i.address), "mac": i.mac,
                        "mtu": i.mtu, "link": i.link, "egress": impairment_json(i.egress),
                        "ingress": impairment_json(i.ingress)} for i in node.interfaces],
        "routes": [{"destination": str(r.destination), "gateway": str(r.gateway)} for r in node.routes],
        "sysctls": [[name, value] for name, value in node.sysctls],
        "apps": [{"app": a.app, "port": a.port, "bytes": a.bytes} for a in node.apps],
        "offload": node.offload, "process": node.process, "workers": node.workers,
        "python": node.python,
    }


def namespace_name(lab: str, node: str) -> str:
    return f"{lab}-{node}"


def interface_mac(lab: str, node: str, interface: str) -> str:
    """A stable locally administered unicast MAC, so pcaps and ARP tables read the same each run."""
    digest = hashlib.sha256(f"{lab}/{node}/{interface}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def plan_from_json(data: dict) -> LabPlan:
    """The inverse of `LabPlan.to_json`: rebuild a plan from `plan.json` of a running lab.

    `lab run --lab NAME` and `lab stack` work on a lab that is already up; its plan file is the
    only description they have (the topology file may have changed or gone since).
    """
    def impairment(raw: dict | None) -> Impairment:
        return Impairment(**raw) if raw else Impairment()

    nodes = []
    for node in data["nodes"]:
        interfaces = tuple(
            InterfacePlan(
                node=i["node"], name=i["name"], address=IPv4Interface(i["address"]), mac=i["mac"],
                mtu=int(i["mtu"]), link=int(i["link"]), egress=impairment(i.get("egress")),
                ingress=impairment(i.get("ingress")),
            )
            for i in node["interfaces"]
        )
        nodes.append(NodePlan(
            name=node["name"], kind=node["kind"], namespace=node["namespace"], interfaces=interfaces,
            routes=tuple(RoutePlan(IPv4Network(r["destination"]), IPv4Address(r["gateway"]))
                         for r in node.get("routes", ())),
            sysctls=tuple((k, v) for k, v in node.get("sysctls", ())),
            apps=tuple(AppPlan(a["app"], int(a["port"]), a.get("bytes")) for a in node.get("apps", ())),
            offload=bool(node.get("offload", True)),
            process=bool(node.get("process", True)),
            workers=int(node.get("workers", 1)),
            python=str(node.get("python", "cpython")),
        ))
    links = tuple(
        LinkPlan(index=int(link["index"]), endpoints=tuple(tuple(e) for e in link["endpoints"]),
                 subnet=IPv4Network(link["subnet"]), mtu=int(link["mtu"]),
                 impairable=bool(link.get("impairable", False)))
        for link in data["links"]
    )
    return LabPlan(name=data["name"], source=data.get("source", ""), nodes=tuple(nodes), links=links)
