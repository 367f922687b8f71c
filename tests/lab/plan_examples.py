"""Plans built field by field (no topology file), shared by the wiring and plan tests."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network

from lab.topology.plan import Impairment, InterfacePlan, LabPlan, LinkPlan, NodePlan, interface_mac


def interface(lab: str, node: str, name: str, address: str, link: int, **kw: Impairment) -> InterfacePlan:
    return InterfacePlan(node=node, name=name, address=IPv4Interface(address),
                         mac=interface_mac(lab, node, name), mtu=1500, link=link, **kw)


def router_plan(lab: str = "r") -> LabPlan:
    """Like topologies/router.yaml: LAN [r1, h1, s1], link [r1, h2]."""
    nodes = (
        NodePlan("r1", "kernel", f"{lab}-r1", (interface(lab, "r1", "eth0", "10.0.1.1/24", 0),
                                              interface(lab, "r1", "eth1", "10.0.2.1/24", 1)),
                 sysctls=(("net.ipv4.ip_forward", "1"),)),
        NodePlan("h1", "kernel", f"{lab}-h1", (interface(lab, "h1", "eth0", "10.0.1.2/24", 0),)),
        NodePlan("s1", "pystack", f"{lab}-s1", (interface(lab, "s1", "eth0", "10.0.1.3/24", 0),)),
        NodePlan("h2", "kernel", f"{lab}-h2", (interface(lab, "h2", "eth0", "10.0.2.2/24", 1),)),
    )
    links = (LinkPlan(0, (("r1", "eth0"), ("h1", "eth0"), ("s1", "eth0")), IPv4Network("10.0.1.0/24"), 1500),
             LinkPlan(1, (("r1", "eth1"), ("h2", "eth0")), IPv4Network("10.0.2.0/24"), 1500))
    return LabPlan(lab, "", nodes, links)


def pair_plan(lab: str, egress: Impairment) -> LabPlan:
    h1 = interface(lab, "h1", "eth0", "10.0.0.1/24", 0, egress=egress)
    h2 = interface(lab, "h2", "eth0", "10.0.0.2/24", 0, ingress=egress)
    nodes = (NodePlan("h1", "kernel", f"{lab}-h1", (h1,)), NodePlan("h2", "kernel", f"{lab}-h2", (h2,)))
    link = LinkPlan(0, (("h1", "eth0"), ("h2", "eth0")), IPv4Network("10.0.0.0/24"), 1500)
    return LabPlan(lab, "", nodes, (link,))
