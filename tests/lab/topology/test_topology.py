"""Topology files -> LabPlan: shipped files, address assignment, impairments, routes, and every error."""

from __future__ import annotations

import textwrap
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import lab.topology
from lab.topology import (
    DEFAULT_TOPOLOGY,
    TOPOLOGY_DIR,
    TopologyError,
    find_topology,
    load_topology,
    plan_from_data,
    plan_from_text,
    shipped_topologies,
)
from lab.topology.plan import Impairment, RoutePlan, interface_mac
from lab.topology.sysctls import check_sysctl_name
from lab.topology.units import format_duration, format_rate, parse_duration_ms, parse_percent, parse_rate_mbit

DATA = Path(__file__).parent / "data"
BAD = DATA / "bad"
GOOD = DATA / "good"



def documented_example() -> str:
    """The smallest useful file as `lab.topology`'s docstring shows it: the tests keep that example true."""
    block = lab.topology.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    return textwrap.dedent(block) + "\n"


MINIMAL = documented_example()


def _expected_errors() -> dict[str, str]:
    table: dict[str, str] = {}
    for line in (DATA / "bad_errors.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            table[line.split(":", 1)[0]] = line
    return table


EXPECTED_ERRORS = _expected_errors()


def _error(text: str) -> str:
    with pytest.raises(TopologyError) as caught:
        plan_from_text(text, "t.yaml")
    return str(caught.value)


def _interface(plan, node: str, name: str = "eth0"):
    return next(i for i in plan.node(node).interfaces if i.name == name)


# --- the minimal form and the shipped files ----------------------------------------------------------


def test_minimal_form_is_accepted_exactly_as_written() -> None:
    plan = plan_from_text(MINIMAL, "pair.yaml")
    assert plan.name == "pair"
    assert [n.name for n in plan.nodes] == ["h1", "s1"]
    h1, s1 = plan.nodes
    assert (h1.kind, s1.kind) == ("kernel", "pystack")
    assert (h1.namespace, s1.namespace) == ("pair-h1", "pair-s1")
    assert h1.interfaces[0].address == IPv4Interface("10.0.0.1/24")
    assert s1.interfaces[0].address == IPv4Interface("10.0.0.2/24")
    assert s1.interfaces[0].mac == interface_mac("pair", "s1", "eth0")
    assert h1.interfaces[0].mac != s1.interfaces[0].mac
    assert {i.mtu for n in plan.nodes for i in n.interfaces} == {1500}
    assert s1.gateway is None and s1.routes == () and h1.routes == ()
    assert s1.offload is True
    assert [(a.app, a.port, a.bytes) for a in s1.apps] == [("echo", 7, None)]
    (link,) = plan.links
    assert link.endpoints == (("h1", "eth0"), ("s1", "eth0"))
    assert link.subnet == IPv4Network("10.0.0.0/24") and link.mtu == 1500
    assert all(i.egress.is_clean and i.ingress.is_clean for n in plan.nodes for i in n.interfaces)


def test_shipped_topologies_are_the_expected_set() -> None:
    assert set(shipped_topologies()) >= {"pair", "router", "dumbbell", "lossy"}
    assert DEFAULT_TOPOLOGY == TOPOLOGY_DIR / "pair.yaml"
    assert find_topology("router") == TOPOLOGY_DIR / "router.yaml"
    assert find_topology("no/such.yaml") == Path("no/such.yaml")


@pytest.mark.parametrize(
    "path", sorted(TOPOLOGY_DIR.glob("*.yaml")) + sorted(GOOD.glob("*.yaml")), ids=lambda p: p.name
)
def test_good_files_load_with_stable_digest(path: Path) -> None:
    first, second = load_topology(path), load_topology(path)
    assert first == second and first.digest() == second.digest()
    assert first.source == str(path.resolve())
    if path.parent == TOPOLOGY_DIR:
        assert first.name == path.stem
    names = [i.name for n in first.nodes for i in n.interfaces]
    assert all(len(name) <= 15 for name in names)
    addresses = [i.address.ip for n in first.nodes for i in n.interfaces]
    assert len(addresses) == len(set(addresses))


def test_pair_file_is_the_minimal_form_plus_apps() -> None:
    plan = load_topology(DEFAULT_TOPOLOGY)
    minimal = plan_from_text(MINIMAL)
    assert [(a.app, a.port) for a in plan.node("s1").apps] == [
        ("echo", 7),
        ("discard", 9),
        ("source", 19),
        ("http", 80),
    ]
    assert plan.node("h1") == minimal.node("h1")
    assert plan.links == minimal.links


def test_router_file() -> None:
    plan = load_topology(TOPOLOGY_DIR / "router.yaml")
    lan, wan = plan.links
    assert len(lan.endpoints) == 3 and lan.subnet == IPv4Network("10.0.1.0/24")
    assert wan.endpoints == (("r1", "eth1"), ("h2", "eth0"))
    r1 = plan.node("r1")
    assert [str(i.address) for i in r1.interfaces] == ["10.0.1.1/24", "10.0.2.1/24"]
    assert dict(r1.sysctls) == {"net.ipv4.ip_forward": "1"}
    assert plan.node("h1").gateway == IPv4Address("10.0.1.1")
    assert plan.node("s1").gateway == IPv4Address("10.0.1.1")
    assert plan.node("h2").gateway == IPv4Address("10.0.2.1")
    assert plan.node("s1").kind == "pystack" and plan.node("h2").kind == "kernel"


def test_dumbbell_bottleneck_is_rate_only_and_delay_sits_on_the_pystack_link() -> None:
    plan = load_topology(TOPOLOGY_DIR / "dumbbell.yaml")
    kernel_pairs = [
        (i, plan.node(peer))
        for link in plan.links
        if len(link.endpoints) == 2
        for (node, name), (peer, _) in (link.endpoints, link.endpoints[::-1])
        for i in plan.node(node).interfaces
        if i.name == name and plan.node(node).kind == "kernel"
    ]
    # Every impairment between two kernel nodes is rate alone: tbf does it, no sch_netem needed.
    for interface, peer in kernel_pairs:
        if peer.kind == "kernel":
            assert not interface.egress.needs_netem and interface.ingress.is_clean
    assert _interface(plan, "r1", "eth2").egress == Impairment(rate_mbit=100.0)
    assert _interface(plan, "r2", "eth0").egress == Impairment(rate_mbit=100.0)
    s1 = _interface(plan, "s1")
    assert s1.egress == s1.ingress == Impairment(delay_ms=20.0)
    assert _interface(plan, "r1", "eth1").egress.is_clean
    assert len(plan.links[-1].endpoints) == 3  # the receivers' LAN


def test_lossy_impairments_are_applied_by_the_stack() -> None:
    plan = load_topology(TOPOLOGY_DIR / "lossy.yaml")
    s1, h1 = _interface(plan, "s1"), _interface(plan, "h1")
    assert s1.ingress == Impairment(delay_ms=20.0, jitter_ms=5.0, loss_pct=1.0, reorder_pct=2.0)
    assert s1.egress == Impairment(delay_ms=20.0)
    assert h1.egress.is_clean and h1.ingress.is_clean


# --- errors ---------------------------------------------------------------------------------------------


def test_every_bad_file_has_an_expected_error() -> None:
    assert {p.name for p in BAD.glob("*.yaml")} == set(EXPECTED_ERRORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_bad_file_gives_its_exact_one_line_error(name: str) -> None:
    with pytest.raises(TopologyError) as caught:
        load_topology(BAD / name)
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"{BAD / name}:{EXPECTED_ERRORS[name].split(':', 1)[1]}"


def test_error_fields_are_available_to_callers() -> None:
    with pytest.raises(TopologyError) as caught:
        load_topology(BAD / "bad_kind.yaml")
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.source, error.line, error.field) == (str(BAD / "bad_kind.yaml"), 3, "nodes.h1.kind")
    assert error.message == "expected kernel or pystack, got 'docker'"


def test_several_schema_errors_report_the_first_by_line_and_keep_the_rest() -> None:
    text = MINIMAL.replace("port: 7", "port: 70000").replace("kind: kernel", "kind: kernl")
    with pytest.raises(TopologyError) as caught:
        plan_from_text(text, "t.yaml")
    assert str(caught.value).startswith("t.yaml:3: nodes.h1.kind:")
    assert caught.value.more == (
        "t.yaml:4: nodes.s1.apps[0].port: expected a port number from 1 to 65535, got 70000",
    )


@pytest.mark.parametrize(
    ("where", "old", "new", "expected"),
    [
        (
            "top",
            "name: pair",
            "name: pair\nversion: 2",
            "t.yaml:2: version: expected one of links, name, nodes, got unknown key 'version'",
        ),
        (
            "node",
            "kind: kernel",
            "kind: kernel, gatway: 10.0.0.2",
            "t.yaml:3: nodes.h1.gatway: expected one of apps, gateway, kind, offload, process, python, "
            "routes, sysctls, workers, got unknown key 'gatway' (did you mean 'gateway'?)",
        ),
        (
            "app",
            "port: 7}",
            "port: 7, tls: true}",
            "t.yaml:4: nodes.s1.apps[0].tls: expected one of app, bytes, port, got unknown key 'tls'",
        ),
        (
            "endpoint",
            "[h1:eth0, s1:eth0]",
            "[h1:eth0, {node: s1, iface: eth0}]",
            "t.yaml:6: links[0].endpoints[1].iface: expected one of addr, interface, node, "
            "got unknown key 'iface' (did you mean 'interface'?)",
        ),
        (
            "link",
            "subnet: 10.0.0.0/24",
            "subnet: 10.0.0.0/24\n    vlan: 5",
            "t.yaml:8: links[0].vlan: expected one of endpoints, impair, impairable, mtu, subnet, "
            "got unknown key 'vlan'",
        ),
    ],
)
def test_unknown_keys_are_errors_at_every_level(where: str, old: str, new: str, expected: str) -> None:
    assert _error(MINIMAL.replace(old, new, 1)) == expected


def test_user_names_that_look_like_fields_get_no_field_hints() -> None:
    text = MINIMAL.replace("h1: {kind: kernel}", "port: kernel").replace("h1:eth0", "port:eth0")
    assert _error(text) == "t.yaml:3: nodes.port: expected a mapping, got 'kernel'"


def test_missing_file_and_name_override_errors() -> None:
    with pytest.raises(
        TopologyError, match=r"^/no/such\.yaml: expected a readable topology file, got No such"
    ):
        load_topology("/no/such.yaml")
    with pytest.raises(TopologyError, match=r"^--name: expected a lab name .*, got 'Bad_Name'$"):
        plan_from_text(MINIMAL, name="Bad_Name")


def test_data_without_yaml_has_errors_without_line() -> None:
    with pytest.raises(TopologyError) as caught:
        plan_from_data({"name": "x", "nodes": {"h1": {"kind": "vm"}}, "links": []}, source="api")
    assert str(caught.value) == "api: nodes.h1.kind: expected kernel or pystack, got 'vm'"


# --- names, digest ---------------------------------------------------------------------------------------


def test_name_override_renames_namespaces_and_macs() -> None:
    plan = plan_from_text(MINIMAL, name="t42")
    assert plan.name == "t42"
    assert [n.namespace for n in plan.nodes] == ["t42-h1", "t42-s1"]
    assert _interface(plan, "h1").mac == interface_mac("t42", "h1", "eth0")
    assert plan.digest() != plan_from_text(MINIMAL).digest()


def test_digest_ignores_file_location_and_comments_but_not_content() -> None:
    base = plan_from_text(MINIMAL, "a.yaml").digest()
    assert plan_from_text("# a comment\n" + MINIMAL, "elsewhere/b.yaml").digest() == base
    flow = (
        "{name: pair, nodes: {h1: {kind: kernel}, s1: {kind: pystack, apps: [{app: echo, port: 7}]}}, "
        "links: [{endpoints: [h1:eth0, s1:eth0], subnet: 10.0.0.0/24, mtu: 1500}]}"
    )
    assert plan_from_text(flow).digest() == base  # same lab, other spelling, explicit default
    changed = [
        MINIMAL.replace("subnet: 10.0.0.0/24", "subnet: 10.0.0.0/24\n    mtu: 1400"),
        MINIMAL.replace("port: 7", "port: 8"),
        MINIMAL.replace("10.0.0.0/24", "10.0.1.0/24"),
        MINIMAL.replace("subnet: 10.0.0.0/24", "subnet: 10.0.0.0/24\n    impair: {loss: 0.1%}"),
        MINIMAL.replace("kind: pystack,", "kind: pystack, offload: false,"),
    ]
    digests = {plan_from_text(text).digest() for text in changed}
    assert base not in digests and len(digests) == len(changed)


# --- addresses -------------------------------------------------------------------------------------------


def _lan(endpoints: str, subnet: str = "10.0.0.0/24", nodes: str = "a b c d") -> str:
    declared = "".join(f"  {n}: {{kind: kernel}}\n" for n in nodes.split())
    return f"name: lan\nnodes:\n{declared}links:\n  - endpoints: {endpoints}\n    subnet: {subnet}\n"


def _addresses(text: str) -> dict[str, str]:
    plan = plan_from_text(text)
    return {n.name: str(n.interfaces[0].address) for n in plan.nodes}


def test_lan_addresses_follow_endpoint_order() -> None:
    assert _addresses(_lan("[c:eth0, a:eth0, d:eth0, b:eth0]")) == {
        "c": "10.0.0.1/24",
        "a": "10.0.0.2/24",
        "d": "10.0.0.3/24",
        "b": "10.0.0.4/24",
    }


def test_assignment_skips_explicit_addresses_wherever_they_are() -> None:
    text = _lan(
        "[a:eth0, b:eth0, {node: c, interface: eth0, addr: 10.0.0.2}, {node: d, interface: eth0, "
        "addr: 10.0.0.1/24}]"
    )
    assert _addresses(text) == {
        "a": "10.0.0.3/24",
        "b": "10.0.0.4/24",
        "c": "10.0.0.2/24",
        "d": "10.0.0.1/24",
    }


def test_slash_31_uses_both_addresses_and_slash_30_skips_network_and_broadcast() -> None:
    assert _addresses(_lan("[a:eth0, b:eth0]", "10.0.0.0/31", "a b")) == {
        "a": "10.0.0.0/31",
        "b": "10.0.0.1/31",
    }
    assert _addresses(_lan("[a:eth0, b:eth0]", "10.0.0.4/30", "a b")) == {
        "a": "10.0.0.5/30",
        "b": "10.0.0.6/30",
    }
    assert _error(_lan("[a:eth0, b:eth0, c:eth0]", "10.0.0.4/30", "a b c")) == (
        "t.yaml:8: links[0].subnet: expected room for 3 addresses, got 10.0.0.4/30 (2 usable)"
    )


def test_a_full_subnet_is_usable_to_the_last_host() -> None:
    nodes = " ".join(f"n{i}" for i in range(1, 15))
    endpoints = "[" + ", ".join(f"n{i}:eth0" for i in range(1, 15)) + "]"
    addresses = _addresses(_lan(endpoints, "10.0.0.16/28", nodes))
    assert addresses["n1"] == "10.0.0.17/28" and addresses["n14"] == "10.0.0.30/28"
    assert _error(_lan(endpoints, "10.0.0.16/29", nodes)).endswith("got 10.0.0.16/29 (6 usable)")


@given(
    st.integers(min_value=2, max_value=40),
    st.integers(min_value=24, max_value=26),
    st.sets(st.integers(min_value=0, max_value=39), max_size=10),
)
def test_assigned_addresses_are_unique_hosts_of_the_subnet(count: int, prefix: int, fixed: set[int]) -> None:
    subnet = IPv4Network(f"10.7.0.0/{prefix}")
    hosts = list(subnet.hosts())
    endpoints = []
    for i in range(count):
        if i in fixed:  # pin this endpoint to a host counted from the top, to collide with assignment
            endpoints.append(f"{{node: n{i}, interface: eth0, addr: {hosts[-1 - i]}}}")
        else:
            endpoints.append(f"n{i}:eth0")
    text = _lan("[" + ", ".join(endpoints) + "]", str(subnet), " ".join(f"n{i}" for i in range(count)))
    plan = plan_from_text(text)
    got = [plan.node(f"n{i}").interfaces[0].address for i in range(count)]
    assert len({a.ip for a in got}) == count
    assert all(
        a.network == subnet and a.ip not in (subnet.network_address, subnet.broadcast_address) for a in got
    )
    for i in range(count):
        if i in fixed:
            assert got[i].ip == hosts[-1 - i]
    free = [a.ip for i, a in enumerate(got) if i not in fixed]
    assert free == sorted(free)  # in endpoint order, lowest first


# --- impairments -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("20ms", 20.0),
        ("1s", 1000.0),
        ("500us", 0.5),
        ("1.5ms", 1.5),
        ("0ms", 0.0),
        ("2 s", 2000.0),
        ("100MS", 100.0),
    ],
)
def test_durations(text: str, ms: float) -> None:
    assert parse_duration_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize(
    "text", ["20", 20, "20 min", "-5ms", "ms", "", None, "1e3ms", True, "60.001s", "60001ms", "99999999999s"]
)
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match=r"^expected a duration from 0 to 60s like 20ms, 1s or 500us$"):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    ("text", "pct"), [("1%", 1.0), ("0.5%", 0.5), ("100%", 100.0), ("0%", 0.0), (".1%", 0.1)]
)
def test_percentages(text: str, pct: float) -> None:
    assert parse_percent(text) == pytest.approx(pct)


@pytest.mark.parametrize("text", ["1", 1, 0.5, "101%", "-1%", "%", "1 percent"])
def test_bad_percentages(text: object) -> None:
    with pytest.raises(ValueError, match=r"^expected a percentage"):
        parse_percent(text)


@pytest.mark.parametrize(
    ("text", "mbit"),
    [
        ("100mbit", 100.0),
        ("1gbit", 1000.0),
        ("500kbit", 0.5),
        ("1.5Gbit", 1500.0),
        ("64000bit", 0.064),
        ("1kbit", 0.001),
        ("32gbit", 32_000.0),
    ],
)
def test_rates(text: str, mbit: float) -> None:
    assert parse_rate_mbit(text) == pytest.approx(mbit)


@pytest.mark.parametrize(
    "text",
    ["100", "100mbps", "100MB", "0mbit", "0.0kbit", "fast", 100, "1bit", "999bit", "100000gbit", "1tbit",
     "32.001gbit"],
)
def test_bad_rates(text: object) -> None:
    with pytest.raises(ValueError, match=r"^expected a rate from 1kbit to 32gbit like "):
        parse_rate_mbit(text)


@given(st.integers(min_value=1, max_value=10_000_000))
def test_duration_and_rate_formats_round_trip(micros: int) -> None:
    ms = micros / 1000
    assert parse_duration_ms(format_duration(ms)) == pytest.approx(ms)
    assert parse_rate_mbit(format_rate(ms)) == pytest.approx(ms)


def _impaired(kinds: tuple[str, str], impair: str):
    a, b = ("k1" if kinds[0] == "kernel" else "p1"), ("k2" if kinds[1] == "kernel" else "p2")
    text = (
        f"name: imp\nnodes:\n  {a}: {{kind: {kinds[0]}}}\n  {b}: {{kind: {kinds[1]}}}\nlinks:\n"
        f"  - endpoints: [{a}:eth0, {b}:eth0]\n    subnet: 10.0.0.0/24\n"
        f"    impair: {impair.format(a=a, b=b)}\n"
    )
    plan = plan_from_text(text)
    ia, ib = plan.node(a).interfaces[0], plan.node(b).interfaces[0]
    return (ia.egress, ia.ingress), (ib.egress, ib.ingress)


A_TO_B = Impairment(delay_ms=10.0, loss_pct=1.0)
B_TO_A = Impairment(rate_mbit=50.0)
CLEAN = Impairment()


@pytest.mark.parametrize(
    ("kinds", "a_side", "b_side"),
    [
        # (egress, ingress) of each end: each direction recorded once, where it will be applied.
        (("kernel", "kernel"), (A_TO_B, CLEAN), (B_TO_A, CLEAN)),
        (("kernel", "pystack"), (CLEAN, CLEAN), (B_TO_A, A_TO_B)),
        (("pystack", "kernel"), (A_TO_B, B_TO_A), (CLEAN, CLEAN)),
        (("pystack", "pystack"), (A_TO_B, CLEAN), (B_TO_A, CLEAN)),
    ],
)
def test_each_direction_is_placed_once(kinds, a_side, b_side) -> None:
    assert _impaired(kinds, "{{{a}->{b}: {{delay: 10ms, loss: 1%}}, {b}->{a}: {{rate: 50mbit}}}}") == (
        a_side,
        b_side,
    )


def test_one_impairment_for_both_directions_and_omitted_directions_are_clean() -> None:
    both = Impairment(delay_ms=5.0, jitter_ms=1.0, duplicate_pct=0.5, corrupt_pct=0.1, reorder_pct=3.0)
    spelled = "{{delay: 5ms, jitter: 1ms, duplicate: 0.5%, corrupt: 0.1%, reorder: 3%}}"
    assert _impaired(("kernel", "kernel"), spelled) == ((both, CLEAN), (both, CLEAN))
    assert _impaired(("kernel", "kernel"), "{{{b}->{a}: {{loss: 2%}}}}") == (
        (CLEAN, CLEAN),
        (Impairment(loss_pct=2.0), CLEAN),
    )
    assert _impaired(("kernel", "kernel"), "{{}}") == ((CLEAN, CLEAN), (CLEAN, CLEAN))


def test_impairment_errors_point_at_the_direction() -> None:
    text = MINIMAL + "    impair:\n      s1->h1: {delay: 5ms}\n      h1->s1: {jitter: 5ms}\n"
    assert _error(text) == (
        't.yaml:10: links[0].impair["h1->s1"].jitter: expected a delay for the jitter to '
        "vary (netem varies delay; jitter alone means nothing), got jitter 5ms with no delay"
    )
    spaced = MINIMAL + "    impair:\n      h1 -> s1: {delay: 5ms}\n      h1->s1: {delay: 6ms}\n"
    assert (
        _error(spaced)
        == "t.yaml:10: links[0].impair[\"h1->s1\"]: expected each direction once, got 'h1->s1' again"
    )


# --- routes, sysctls, yaml details -------------------------------------------------------------------------


def test_gateway_shorthand_and_routes() -> None:
    text = load_topology(GOOD / "explicit.yaml")
    assert text.node("h1").routes == (RoutePlan(IPv4Network("10.9.0.0/16"), IPv4Address("10.0.0.1")),)
    router = MINIMAL.replace(
        "h1: {kind: kernel}",
        "h1: {kind: kernel, gateway: 10.0.0.2, routes: [{to: 192.168.0.0/16, via: 10.0.0.2}]}",
    )
    plan = plan_from_text(router)
    assert plan.node("h1").routes == (
        RoutePlan(IPv4Network("0.0.0.0/0"), IPv4Address("10.0.0.2")),
        RoutePlan(IPv4Network("192.168.0.0/16"), IPv4Address("10.0.0.2")),
    )
    assert plan.node("h1").gateway == IPv4Address("10.0.0.2")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("net.ipv4.ip_forward", True),
        ("net.ipv4.tcp_congestion_control", True),
        ("net.core.somaxconn", True),
        ("net.ipv4.conf.all.rp_filter", True),
        ("net.ipv4.conf.eth0.forwarding", True),
        ("net.ipv6.conf.eth0.disable_ipv6", True),
        ("net.ipv4.neigh.default.gc_thresh1", True),
        ("net.ipv4.tcp_rmem", True),
        ("net.netfilter.nf_conntrack_tcp_loose", True),
        ("net.ipv4.conf.eth7.forwarding", False),
        ("net.core.netdev_max_backlog", False),
        ("net.ipv4.tcp_mem", False),
        ("net.ipv4.route.gc_timeout", False),
        ("kernel.pid_max", False),
        ("net", False),
        ("net..x", False),
        ("net.ipv4", False),
        ("vm.swappiness", False),
    ],
)
def test_sysctl_names(name: str, ok: bool) -> None:
    assert (check_sysctl_name(name, ("eth0",)) is None) == ok


def test_sysctl_values_are_text_in_file_order() -> None:
    text = MINIMAL.replace(
        "h1: {kind: kernel}",
        "h1:\n    kind: kernel\n    sysctls:\n"
        "      net.ipv4.tcp_rmem: 4096 131072 6291456\n      net.ipv4.ip_forward: 1\n",
    )
    assert plan_from_text(text).node("h1").sysctls == (
        ("net.ipv4.tcp_rmem", "4096 131072 6291456"),
        ("net.ipv4.ip_forward", "1"),
    )


def test_anchors_and_merge_keys() -> None:
    plan = load_topology(GOOD / "anchors.yaml")
    assert dict(plan.node("r1").sysctls) == {"net.ipv4.ip_forward": "1"}
    assert dict(plan.node("r2").sysctls)["net.ipv4.tcp_congestion_control"] == "reno"
    assert _interface(plan, "r1", "eth1").egress == Impairment(delay_ms=50.0, rate_mbit=10.0)


def test_yaml_keys_keep_their_text_and_duplicates_are_refused() -> None:
    # YAML 1.1 reads a bare `on` key as True; a node called "on" must stay "on".
    plan = plan_from_text(MINIMAL.replace("h1", "on"))
    assert plan.nodes[0].name == "on"
    assert _error(MINIMAL + "name: again\n") == (
        "t.yaml:8: name: expected each key once, got a duplicate (first at line 1)"
    )


def test_recursive_alias_is_refused_not_looped() -> None:
    assert _error("name: x\nnodes: &n {h1: *n}\nlinks: []\n") == (
        "t.yaml:2:16: not a YAML topology: expected data, got an alias that contains itself"
    )


def test_empty_and_odd_documents() -> None:
    expected = "not a YAML topology: expected a mapping with name, nodes and links"
    assert _error("") == f"t.yaml:1: {expected}, got an empty file"
    assert _error("just text") == f"t.yaml:1: {expected}, got text"
    assert _error("- 1\n- 2\n") == f"t.yaml:1: {expected}, got a list"
    assert _error("42") == f"t.yaml:1: {expected}, got a number"
    assert _error("password: hunter2\n") == f"t.yaml:1: {expected}, got a mapping without any of them"
    assert _error("a: 1\n---\nb: 2\n").startswith(
        "t.yaml:2:1: not a YAML topology: expected a single document in the stream"
    )


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=255), st.integers(min_value=20, max_value=28)),
        max_size=30,
    )
)
def test_subnet_overlap_check_agrees_with_a_full_scan(raw: list[tuple[int, int]]) -> None:
    from lab.topology.resolve import SubnetSet

    accepted: list[IPv4Network] = []
    subnets = SubnetSet()
    for index, (third_octet, prefix) in enumerate(raw):
        subnet = IPv4Network(f"10.1.{third_octet}.0/{prefix}", strict=False)
        clash = subnets.add(subnet, index)
        overlapping = [other for other in accepted if other.overlaps(subnet)]
        assert (clash is None) == (not overlapping)
        if clash is None:
            accepted.append(subnet)
        else:
            assert clash[0] in overlapping


def test_the_readmes_topologies_load_as_documented() -> None:
    """Every whole topology in topologies/README.md is valid, and the `process: false` example says so."""
    readme = (TOPOLOGY_DIR / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in readme.split("```yaml\n")[1:]]
    plans = [plan_from_text(block, source="README.md") for block in blocks if block.startswith("name:")]
    assert len(plans) >= 2
    nodes = [node for plan in plans for node in plan.nodes]
    assert [node.name for node in nodes if node.kind == "pystack" and not node.process] == ["s1"]
