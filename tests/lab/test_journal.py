"""The journal (no root): append/fsync, torn lines, replay order; and what a plan journals."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from lab.build.journal import Journal, JournalEntry, read_journal, removal_order
from lab.build.wiring import (
    PlanNotBuildable,
    journal_entries,
    lan_port_name,
    plan_wiring,
    pystack_settings,
    qdisc_parameters,
)
from lab.topology import TOPOLOGY_DIR, load_topology
from lab.topology.chain import chain_plan
from lab.topology.plan import (
    Impairment,
    InterfacePlan,
    LabPlan,
    LinkPlan,
    NodePlan,
    interface_mac,
    plan_from_json,
    plan_json_digest,
)


def test_record_then_read_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    entries = [
        JournalEntry("namespace", namespace="lab-h1"),
        JournalEntry("veth", namespace="lab-h1", name="eth0", peer_namespace="lab-h2", peer_name="eth0"),
        JournalEntry("process", namespace="lab-s1", pid=1234, start_ticks=99),
    ]
    journal.record(entries[:2])
    journal.record(entries[2:])
    contents = read_journal(journal.path)
    assert contents.entries == tuple(entries)
    assert contents.skipped_lines == ()


def test_torn_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path).record([JournalEntry("namespace", namespace="lab-h1")])
    with open(path, "a") as handle:
        handle.write('{"kind": "namespace", "namesp')  # what SIGKILL mid-write leaves
    contents = read_journal(path)
    assert contents.entries == (JournalEntry("namespace", namespace="lab-h1"),)
    assert contents.skipped_lines == (2,)


def test_record_after_a_torn_tail_starts_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"kind": "namespace", "namespace": "lab-h1"}\n{"kind": "ve')
    Journal(path).record([JournalEntry("namespace", namespace="lab-h2")])
    contents = read_journal(path)
    assert [e.namespace for e in contents.entries] == ["lab-h1", "lab-h2"]
    assert contents.skipped_lines == (2,)


def test_garbage_and_unknown_kinds_are_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text("\n".join([
        json.dumps({"kind": "namespace", "namespace": "a-h1"}),
        "not json",
        json.dumps({"kind": "spaceship", "name": "x"}),
        json.dumps({"kind": "tap", "namespace": "a-s1", "name": "tap0", "colour": "red"}),
        json.dumps(["a", "list"]),
        json.dumps({"kind": "tap", "namespace": "a-s1", "name": "tap0"}),
    ]) + "\n")
    contents = read_journal(path)
    assert [e.kind for e in contents.entries] == ["namespace", "tap"]
    assert contents.skipped_lines == (2, 3, 4, 5)


def test_missing_journal_reads_as_empty(tmp_path: Path) -> None:
    assert read_journal(tmp_path / "absent.jsonl").entries == ()


def test_removal_order_is_reverse_creation_with_processes_first_and_no_duplicates() -> None:
    ns1 = JournalEntry("namespace", namespace="a-h1")
    ns2 = JournalEntry("namespace", namespace="a-h2")
    veth = JournalEntry("veth", namespace="a-h1", name="eth0", peer_namespace="a-h2", peer_name="eth0")
    qdisc = JournalEntry("qdisc", namespace="a-h1", name="eth0", qdisc="tbf")
    proc = JournalEntry("process", namespace="a-h1", pid=10, start_ticks=5)
    order = removal_order([ns1, ns2, veth, qdisc, proc, ns2])
    assert order == [proc, ns2, qdisc, veth, ns1]


def test_entry_json_omits_unset_fields_and_describes_itself() -> None:
    entry = JournalEntry("bridge", namespace="a-s1", name="br0")
    assert entry.to_json() == {"kind": "bridge", "namespace": "a-s1", "name": "br0"}
    assert JournalEntry.from_json(entry.to_json()) == entry
    assert entry.describe() == "bridge a-s1:br0"


# --- what a plan journals (plan_wiring is pure) --------------------------------------------------

def _iface(lab: str, node: str, name: str, address: str, link: int, **kw: Impairment) -> InterfacePlan:
    return InterfacePlan(node=node, name=name, address=IPv4Interface(address),
                         mac=interface_mac(lab, node, name), mtu=1500, link=link, **kw)


def router_plan(lab: str = "r") -> LabPlan:
    """Like topologies/router.yaml: LAN [r1, h1, s1], link [r1, h2]."""
    nodes = (
        NodePlan("r1", "kernel", f"{lab}-r1", (_iface(lab, "r1", "eth0", "10.0.1.1/24", 0),
                                              _iface(lab, "r1", "eth1", "10.0.2.1/24", 1)),
                 sysctls=(("net.ipv4.ip_forward", "1"),)),
        NodePlan("h1", "kernel", f"{lab}-h1", (_iface(lab, "h1", "eth0", "10.0.1.2/24", 0),)),
        NodePlan("s1", "pystack", f"{lab}-s1", (_iface(lab, "s1", "eth0", "10.0.1.3/24", 0),)),
        NodePlan("h2", "kernel", f"{lab}-h2", (_iface(lab, "h2", "eth0", "10.0.2.2/24", 1),)),
    )
    links = (LinkPlan(0, (("r1", "eth0"), ("h1", "eth0"), ("s1", "eth0")), IPv4Network("10.0.1.0/24"), 1500),
             LinkPlan(1, (("r1", "eth1"), ("h2", "eth0")), IPv4Network("10.0.2.0/24"), 1500))
    return LabPlan(lab, "", nodes, links)


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


def _pair(lab: str, egress: Impairment) -> LabPlan:
    h1 = _iface(lab, "h1", "eth0", "10.0.0.1/24", 0, egress=egress)
    h2 = _iface(lab, "h2", "eth0", "10.0.0.2/24", 0, ingress=egress)
    nodes = (NodePlan("h1", "kernel", f"{lab}-h1", (h1,)), NodePlan("h2", "kernel", f"{lab}-h2", (h2,)))
    link = LinkPlan(0, (("h1", "eth0"), ("h2", "eth0")), IPv4Network("10.0.0.0/24"), 1500)
    return LabPlan(lab, "", nodes, (link,))


def test_kernel_link_rate_is_tbf_and_delay_is_netem_applied_once() -> None:
    rate = plan_wiring(_pair("p", Impairment(rate_mbit=20)))
    assert [(q.namespace, q.ifname, q.kind) for q in rate.qdiscs] == [("p-h1", "eth0", "tbf")]
    params = qdisc_parameters(rate.qdiscs[0])
    assert params["rate"] == "20000kbit" and params["burst"] >= 1514
    delay = plan_wiring(_pair("p", Impairment(delay_ms=10, loss_pct=1)))
    assert [q.kind for q in delay.qdiscs] == ["netem"]
    assert [q.link for q in delay.needs_netem] == ["h1:eth0 -> h2:eth0"]
    assert qdisc_parameters(delay.qdiscs[0])["delay"] == 10_000


def test_pystack_link_impairments_go_to_settings_not_kernel() -> None:
    plan = _pair("p", Impairment(delay_ms=10))
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


def test_the_builders_digest_is_the_plans_digest() -> None:
    for plan in (router_plan(), _pair("p", Impairment(rate_mbit=20)), _pair("q", Impairment(delay_ms=1))):
        assert plan_json_digest(plan.to_json()) == plan.digest()


def test_the_digest_is_stable_across_versions() -> None:
    # A lab that is up keeps its digest in plan.json: a repeated `up` must still recognise it.
    assert router_plan().digest() == "827b493c343e5542"
    assert _pair("p", Impairment(rate_mbit=20)).digest() == "bd20cabd916b2a88"
    assert _pair("q", Impairment(delay_ms=1)).digest() == "6120a4ba881087f5"
    assert chain_plan(100, name="x").digest() == "fb28ba8eacfedb0f"


def test_the_plans_json_is_the_generic_dataclass_form() -> None:
    # to_json is written field by field for speed; it must give what asdict + a JSON round trip gives.
    plans = [router_plan(), _pair("p", Impairment(delay_ms=5, loss_pct=1.5, rate_mbit=20)), chain_plan(5),
             *(load_topology(path) for path in sorted(TOPOLOGY_DIR.glob("*.yaml")))]
    for plan in plans:
        assert plan.to_json() == json.loads(json.dumps(asdict(plan), default=str)), plan.name
        assert plan_from_json(plan.to_json()) == plan
