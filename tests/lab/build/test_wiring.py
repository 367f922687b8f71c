"""What a plan is wired into and journals (no root): `plan_wiring` is pure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lab.build.wiring import (
    PlanNotBuildable,
    forwarder_settings,
    impairment_sites,
    journal_entries,
    lan_port_name,
    plan_wiring,
    pystack_settings,
    qdisc_parameters,
)
from lab.topology import plan_from_text
from lab.topology.plan import Impairment, interface_mac
from tests.lab.plan_examples import pair_plan, router_plan


def test_router_plan_journals_namespaces_veths_and_pystack_devices() -> None:
    batches = journal_entries(plan_wiring(router_plan()))
    assert [e.namespace for e in batches["namespaces"]] == ["r-r1", "r-h1", "r-s1", "r-h2", "r-lan0"]
    veths = {(e.namespace, e.name, e.peer_namespace, e.peer_name) for e in batches["veths"]}
    assert veths == {
        ("r-r1", "eth0", "r-lan0", "r1-eth0"), ("r-h1", "eth0", "r-lan0", "h1-eth0"),
        ("r-s1", "eth0", "r-lan0", "s1-eth0"), ("r-r1", "eth1", "r-h2", "eth0"),
    }
    devices = {(e.kind, e.namespace, e.name) for e in batches["devices"]}
    assert devices == {("tap", "r-s1", "tap0"), ("bridge", "r-s1", "br0"), ("bridge", "r-lan0", "br0")}
    assert batches["qdiscs"] == []


def test_pystack_ports_get_no_address_and_no_plan_mac() -> None:
    wiring = plan_wiring(router_plan())
    s1_ports = [p for p in wiring.ports if p.namespace == "r-s1"]
    assert {(p.name, p.master, p.address, p.silent) for p in s1_ports} == {
        ("eth0", "br0", None, True), ("tap0", "br0", None, True), ("br0", None, None, True)}
    s1_veth = next(v for v in wiring.veths if v.a[0] == "r-s1")
    assert s1_veth.mac_a is None  # the stack's MAC must not sit on a bridge port
    h1_veth = next(v for v in wiring.veths if v.a[0] == "r-h1")
    assert h1_veth.mac_a == interface_mac("r", "h1", "eth0")
    assert "r-s1" in wiring.silent_namespaces and "r-lan0" in wiring.silent_namespaces


def test_kernel_link_rate_is_tbf_and_delay_is_netem_applied_once() -> None:
    rate = plan_wiring(pair_plan("p", Impairment(rate_mbit=20)))
    assert [(q.namespace, q.ifname, q.kind) for q in rate.qdiscs] == [("p-h1", "eth0", "tbf")]
    params = qdisc_parameters(rate.qdiscs[0])
    assert params["rate"] == "20000kbit" and params["burst"] >= 1514
    delay = plan_wiring(pair_plan("p", Impairment(delay_ms=10, loss_pct=1)))
    assert [q.kind for q in delay.qdiscs] == ["netem"]
    assert [q.link for q in delay.needs_netem] == ["h1:eth0 -> h2:eth0"]
    assert qdisc_parameters(delay.qdiscs[0])["delay"] == 10_000


def test_pystack_link_impairments_go_to_settings_not_kernel() -> None:
    plan = pair_plan("p", Impairment(delay_ms=10))
    plan = replace(plan, nodes=(plan.nodes[0], replace(plan.nodes[1], kind="pystack")))
    assert plan_wiring(plan).qdiscs == []
    settings = pystack_settings(plan, plan.nodes[1], "/run/nslab/p")
    assert settings["interface"]["ingress"]["delay_ms"] == 10
    assert settings["tap"] == "tap0" and settings["interface"]["address"] == "10.0.0.2/24"


def test_unbuildable_plans_are_refused_before_anything_exists() -> None:
    plan = router_plan()
    h1 = replace(plan.nodes[1], interfaces=(replace(plan.nodes[1].interfaces[0],
                                                    egress=Impairment(rate_mbit=5)),))
    with pytest.raises(PlanNotBuildable, match="LAN that includes a pystack node"):
        plan_wiring(replace(plan, nodes=(plan.nodes[0], h1, *plan.nodes[2:])))
    two = replace(plan.nodes[2], interfaces=plan.nodes[0].interfaces)
    with pytest.raises(PlanNotBuildable, match="exactly one interface"):
        plan_wiring(replace(plan, nodes=(plan.nodes[0], plan.nodes[1], two, plan.nodes[3])))


def test_lan_port_names_fit_the_kernel_limit() -> None:
    assert lan_port_name("h1", "eth0", 0) == "h1-eth0"
    assert lan_port_name("averyverylongnode", "eth0", 3) == "port3"


def test_node_settings_name_the_default_route_once() -> None:
    """The stack process adds `gateway` as its default route; `routes` holds only the others."""
    plan = plan_from_text(Path("topologies/router.yaml").read_text(), source="router.yaml", name="rt")
    node = next(n for n in plan.nodes if n.kind == "pystack")
    settings = pystack_settings(plan, node, "/run/nslab/rt")
    assert settings["gateway"] == str(node.gateway) and settings["process"] is True
    assert all(r["destination"] != "0.0.0.0/0" for r in settings["routes"])


def test_without_netem_an_impaired_kernel_link_goes_through_a_forwarder() -> None:
    wiring = plan_wiring(pair_plan("p", Impairment(delay_ms=10, loss_pct=1)), netem=False)
    assert wiring.qdiscs == [] and len(wiring.forwarders) == 1
    forwarder = wiring.forwarders[0]
    assert forwarder.namespace == "p-link0" and forwarder.ports == ("h1-eth0", "h2-eth0")
    assert forwarder.directions == ("h1->h2", "h2->h1")
    assert forwarder.impairments == (Impairment(delay_ms=10, loss_pct=1), Impairment())
    assert [(v.a, v.b) for v in wiring.veths] == [(("p-h1", "eth0"), ("p-link0", "h1-eth0")),
                                                  (("p-h2", "eth0"), ("p-link0", "h2-eth0"))]
    assert "p-link0" in wiring.namespaces and "p-link0" in wiring.silent_namespaces
    settings = forwarder_settings("p", forwarder, "/run/nslab/p/nodes/link0.sock")
    assert settings["impairments"]["h1->h2"]["delay_ms"] == 10 and settings["ports"] == ["h1-eth0", "h2-eth0"]
    sites = impairment_sites(pair_plan("p", Impairment(delay_ms=10)), wiring)
    assert sites[("h1", "eth0", "out")] == sites[("h2", "eth0", "in")]
    assert sites[("h1", "eth0", "out")].by == "forwarder" and sites[("h1", "eth0", "in")].label == "h2->h1"


def test_without_netem_a_rate_alone_stays_tbf_unless_the_link_is_impairable() -> None:
    rate = pair_plan("p", Impairment(rate_mbit=20))
    assert [q.kind for q in plan_wiring(rate, netem=False).qdiscs] == ["tbf"]
    impairable = replace(rate, links=(replace(rate.links[0], impairable=True),))
    assert plan_wiring(impairable, netem=False).qdiscs == []
    assert len(plan_wiring(impairable, netem=False).forwarders) == 1
    assert plan_wiring(impairable, netem=True).forwarders == []  # netem changes it at run time
    clean = pair_plan("p", Impairment())
    sites = impairment_sites(clean, plan_wiring(clean, netem=False))
    assert sites[("h1", "eth0", "out")].by is None  # nothing can impair a direct veth without netem
