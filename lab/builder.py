"""`lab up` / `lab down`: from a `LabPlan` to kernel objects and back, crash-safe.

First a pure step, `plan_wiring()`, lists every kernel object the plan needs (unit-testable, and it
lets `up` check everything it will need: netem, TAP support, free names, before creating anything).
Then `up` journals each batch of objects before creating it, and `down` replays the journal in
reverse and sweeps tagged leftovers.

How each part of a plan is built:
- a node is a namespace `<lab>-<node>`;
- a two-endpoint link is one veth pair, each end born in its node's namespace under the plan's
  interface name;
- a LAN (three or more endpoints) is a bridge `br0` in a namespace of its own, `<lab>-lan<index>`,
  with one veth pair per endpoint;
- a pystack node holds its veth end, the TAP `tap0` and a bridge `br0` joining them, with no
  kernel address and IPv6 off, so the namespace's own kernel stays silent;
- impairments on links between kernel nodes become root qdiscs (tbf for a pure rate limit,
  netem otherwise); impairments on links touching a pystack node go to the node's settings file
  for the stack to apply in userspace.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

from lab.doctor import check_privileges, check_tun_device, netem_available
from lab.journal import Journal, JournalEntry, read_journal, removal_order
from lab.netlink import (
    TAG_PREFIX,
    Netlink,
    NetlinkOpError,
    is_mounted_namespace,
    is_stub_file,
    lab_tag,
    list_namespaces,
    namespace_path,
)
from lab.plan import PYSTACK_BRIDGE, PYSTACK_TAP, Impairment, InterfacePlan, LabPlan, LinkPlan, NodePlan
from lab.state import (
    PHASE_BUILDING,
    PHASE_UP,
    LabError,
    LabState,
    lab_lock,
    list_labs,
    remove_lock_file,
    write_json_atomic,
)

LAN_BRIDGE = "br0"
MAX_IFNAME = 15
# The kernel stays out of IPv6 on ports it must not speak on (pystack and LAN namespaces).
SILENT_PORT_SYSCTLS = (("disable_ipv6", "1"), ("accept_ra", "0"))


class PlanNotBuildable(LabError):
    """The plan asks for something this builder cannot realise (exit 2, nothing created)."""


@dataclass(frozen=True)
class Veth:
    a: tuple[str, str]  # (namespace, interface name)
    b: tuple[str, str]
    mac_a: str | None
    mac_b: str | None
    mtu: int

    def journal_entry(self) -> JournalEntry:
        return JournalEntry("veth", namespace=self.a[0], name=self.a[1],
                            peer_namespace=self.b[0], peer_name=self.b[1])


@dataclass(frozen=True)
class Port:
    """A kernel interface to configure after creation."""

    namespace: str
    name: str
    address: IPv4Interface | None = None  # None for bridge ports and pystack wiring
    master: str | None = None  # bridge to join
    silent: bool = False  # IPv6 off, no router advertisements accepted


@dataclass(frozen=True)
class Qdisc:
    namespace: str
    ifname: str
    kind: str  # "tbf" or "netem"
    impairment: Impairment
    mtu: int
    link: str  # for messages: "h1:eth0 -> r1:eth0"


@dataclass
class Wiring:
    """Everything `up` creates, in creation order."""

    namespaces: list[str] = field(default_factory=list)
    silent_namespaces: list[str] = field(default_factory=list)  # default IPv6 off before links appear
    veths: list[Veth] = field(default_factory=list)
    bridges: list[tuple[str, str, int]] = field(default_factory=list)  # (namespace, name, mtu)
    taps: list[tuple[str, str, bool, int]] = field(default_factory=list)  # (namespace, name, vnet_hdr, mtu)
    ports: list[Port] = field(default_factory=list)
    qdiscs: list[Qdisc] = field(default_factory=list)

    @property
    def needs_netem(self) -> list[Qdisc]:
        return [q for q in self.qdiscs if q.kind == "netem"]

    @property
    def needs_tun(self) -> bool:
        return bool(self.taps)


def lan_namespace(lab: str, link_index: int) -> str:
    return f"{lab}-lan{link_index}"


def lan_port_name(node: str, interface: str, position: int) -> str:
    """The LAN-side veth end facing one endpoint: `<node>-<if>` when it fits in 15 characters."""
    name = f"{node}-{interface}"
    return name if len(name) <= MAX_IFNAME else f"port{position}"


def plan_wiring(plan: LabPlan) -> Wiring:
    wiring = Wiring()
    interfaces = {(i.node, i.name): i for n in plan.nodes for i in n.interfaces}
    nodes = {n.name: n for n in plan.nodes}
    for node in plan.nodes:
        wiring.namespaces.append(node.namespace)
        if node.kind == "pystack":
            _check_pystack_node(node)
            wiring.silent_namespaces.append(node.namespace)
    for link in plan.links:
        endpoints = [interfaces[end] for end in link.endpoints]
        if len(endpoints) == 2:
            _wire_point_to_point(wiring, nodes, link, endpoints[0], endpoints[1])
        else:
            _wire_lan(wiring, plan.name, nodes, link, endpoints)
    for node in plan.nodes:
        if node.kind == "pystack":
            _wire_pystack_node(wiring, node)
        else:
            for iface in node.interfaces:
                wiring.ports.append(Port(node.namespace, iface.name, address=iface.address))
    return wiring


def _check_pystack_node(node: NodePlan) -> None:
    if len(node.interfaces) != 1:
        raise PlanNotBuildable(
            f"node {node.name}: a pystack node has exactly one interface (one TAP), "
            f"got {len(node.interfaces)}"
        )


def _wire_pystack_node(wiring: Wiring, node: NodePlan) -> None:
    iface = node.interfaces[0]
    wiring.taps.append((node.namespace, PYSTACK_TAP, node.offload, iface.mtu))
    wiring.bridges.append((node.namespace, PYSTACK_BRIDGE, iface.mtu))
    for name in (iface.name, PYSTACK_TAP):
        wiring.ports.append(Port(node.namespace, name, master=PYSTACK_BRIDGE, silent=True))
    wiring.ports.append(Port(node.namespace, PYSTACK_BRIDGE, silent=True))


def _veth_mac(node: NodePlan, iface: InterfacePlan) -> str | None:
    """A kernel node's interface wears the plan's MAC; a pystack node's MAC belongs to the stack.

    (A bridge port wearing the stack's MAC would make the bridge keep frames for that MAC to itself.)
    """
    return iface.mac if node.kind == "kernel" else None


def _wire_point_to_point(
    wiring: Wiring, nodes: dict[str, NodePlan], link: LinkPlan, a: InterfacePlan, b: InterfacePlan
) -> None:
    node_a, node_b = nodes[a.node], nodes[b.node]
    wiring.veths.append(Veth((node_a.namespace, a.name), (node_b.namespace, b.name),
                             _veth_mac(node_a, a), _veth_mac(node_b, b), link.mtu))
    if node_a.kind == "pystack" or node_b.kind == "pystack":
        return  # the stack impairs in userspace, from its settings file
    for sender, receiver, sender_node in ((a, b, node_a), (b, a, node_b)):
        impairment = sender.egress if not sender.egress.is_clean else receiver.ingress
        if not impairment.is_clean:
            wiring.qdiscs.append(Qdisc(sender_node.namespace, sender.name, _qdisc_kind(impairment),
                                       impairment, link.mtu, f"{sender.node}:{sender.name} -> "
                                       f"{receiver.node}:{receiver.name}"))


def _wire_lan(
    wiring: Wiring, lab: str, nodes: dict[str, NodePlan], link: LinkPlan, endpoints: list[InterfacePlan]
) -> None:
    lan_ns = lan_namespace(lab, link.index)
    wiring.namespaces.append(lan_ns)
    wiring.silent_namespaces.append(lan_ns)
    wiring.bridges.append((lan_ns, LAN_BRIDGE, link.mtu))
    has_pystack = any(nodes[e.node].kind == "pystack" for e in endpoints)
    for position, iface in enumerate(endpoints):
        node = nodes[iface.node]
        port = lan_port_name(iface.node, iface.name, position)
        wiring.veths.append(Veth((node.namespace, iface.name), (lan_ns, port), _veth_mac(node, iface), None,
                                 link.mtu))
        wiring.ports.append(Port(lan_ns, port, master=LAN_BRIDGE, silent=True))
        if node.kind == "pystack":
            continue
        for impairment, namespace, ifname, direction in (
            (iface.egress, node.namespace, iface.name, f"{iface.node}:{iface.name} -> lan{link.index}"),
            (iface.ingress, lan_ns, port, f"lan{link.index} -> {iface.node}:{iface.name}"),
        ):
            if impairment.is_clean:
                continue
            if has_pystack:
                raise PlanNotBuildable(
                    f"link {link.index} ({direction}): impairments on a kernel node's side of a LAN that "
                    "includes a pystack node are not supported; put them on the pystack node's interface"
                )
            wiring.qdiscs.append(Qdisc(namespace, ifname, _qdisc_kind(impairment), impairment, link.mtu,
                                       direction))
    wiring.ports.append(Port(lan_ns, LAN_BRIDGE, silent=True))


def _qdisc_kind(impairment: Impairment) -> str:
    return "netem" if impairment.needs_netem else "tbf"


def qdisc_parameters(qdisc: Qdisc) -> dict:
    """pyroute2 `tc('add', kind, ...)` keyword arguments for an impairment."""
    imp = qdisc.impairment
    if qdisc.kind == "tbf":
        assert imp.rate_mbit is not None
        rate_bytes = imp.rate_mbit * 1_000_000 / 8
        # Burst: at least one full frame, and about 4 ms worth of the rate so high rates still reach it.
        burst = int(max(qdisc.mtu + 14, rate_bytes / 250, 3000))
        return {"rate": f"{int(imp.rate_mbit * 1000)}kbit", "burst": burst, "latency": "50ms"}
    params: dict = {
        "delay": int(imp.delay_ms * 1000),  # microseconds
        "jitter": int(imp.jitter_ms * 1000),
        "loss": imp.loss_pct,
        "duplicate": imp.duplicate_pct,
        "limit": 10000,
    }
    if imp.reorder_pct:
        params["prob_reorder"] = imp.reorder_pct
    if imp.corrupt_pct:
        params["prob_corrupt"] = imp.corrupt_pct
    if imp.rate_mbit:
        params["rate"] = f"{int(imp.rate_mbit * 1000)}kbit"
    return params


def journal_entries(wiring: Wiring) -> dict[str, list[JournalEntry]]:
    """The journal batches, one per creation phase (each written before its phase runs)."""
    return {
        "namespaces": [JournalEntry("namespace", namespace=ns) for ns in wiring.namespaces],
        "veths": [veth.journal_entry() for veth in wiring.veths],
        "devices": [JournalEntry("tap", namespace=ns, name=name) for ns, name, _, _ in wiring.taps]
        + [JournalEntry("bridge", namespace=ns, name=name) for ns, name, _ in wiring.bridges],
        "qdiscs": [JournalEntry("qdisc", namespace=q.namespace, name=q.ifname, qdisc=q.kind)
                   for q in wiring.qdiscs],
    }


def impairment_json(impairment: Impairment) -> dict:
    return {
        "delay_ms": impairment.delay_ms, "jitter_ms": impairment.jitter_ms, "loss_pct": impairment.loss_pct,
        "duplicate_pct": impairment.duplicate_pct, "reorder_pct": impairment.reorder_pct,
        "corrupt_pct": impairment.corrupt_pct, "rate_mbit": impairment.rate_mbit,
    }


def pystack_settings(plan: LabPlan, node: NodePlan, state_dir: str) -> dict:
    """The settings file a pystack node's stack process reads (`<state dir>/nodes/<node>.json`).

    Schema (version 1): lab, node, namespace, tap, bridge, offload (open the TAP with
    IFF_VNET_HDR), process (false: `lab up` starts no stack process),
    interface {name, address "a.b.c.d/len", mac, mtu, egress, ingress}
    (impairments as in `lab.plan.Impairment`, in ms / percent / Mbit/s), gateway (the
    default route's next hop, or null), routes [{destination, gateway}] (the other routes: the
    default is never repeated here), apps [{app, port, bytes}], state_dir.
    """
    iface = node.interfaces[0]
    return {
        "version": 1,
        "lab": plan.name,
        "node": node.name,
        "namespace": node.namespace,
        "tap": PYSTACK_TAP,
        "bridge": PYSTACK_BRIDGE,
        "offload": node.offload,
        "process": node.process,
        "interface": {
            "name": iface.name, "address": str(iface.address), "mac": iface.mac, "mtu": iface.mtu,
            "egress": impairment_json(iface.egress), "ingress": impairment_json(iface.ingress),
        },
        "gateway": str(node.gateway) if node.gateway else None,
        "routes": [{"destination": str(r.destination), "gateway": str(r.gateway)}
                   for r in node.routes if r.destination.prefixlen > 0],  # the default is `gateway`
        "apps": [{"app": a.app, "port": a.port, "bytes": a.bytes} for a in node.apps],
        "state_dir": state_dir,
    }


# --------------------------------------------------------------------------------------------
# up / down
# --------------------------------------------------------------------------------------------

ProgressFn = Callable[[str, int, int], None]
STOP_GRACE_SECONDS = 1.0


class CapabilityMissing(LabError):
    """The kernel or the process lacks something the plan needs (exit 2, nothing created)."""


@dataclass(frozen=True)
class UpResult:
    lab: str
    changed: bool  # False: the identical lab was already up
    message: str
    seconds: float
    objects: int  # objects journaled (namespaces, veths, bridges, taps, qdiscs, processes)
    restarted: tuple[str, ...] = ()  # stack processes a repeated `up` found dead and started again


@dataclass(frozen=True)
class DownResult:
    lab: str
    removed: tuple[str, ...]  # journaled objects that existed and were removed
    swept: tuple[str, ...]  # tagged leftovers found without a journal entry
    skipped_journal_lines: tuple[int, ...]
    seconds: float

    @property
    def found_anything(self) -> bool:
        return bool(self.removed or self.swept)


def _no_progress(step: str, done: int, total: int) -> None:
    return None


def up(plan: LabPlan, *, root: Path | None = None, progress: ProgressFn | None = None) -> UpResult:
    """Build the lab, or do nothing if the identical lab is up; never leaves half a lab behind.

    A second `up` with the same plan digest changes nothing; with a different digest it is refused.
    Any failure (including Ctrl-C) rolls back everything the journal recorded, then re-raises.
    """
    started = time.perf_counter()
    state = LabState.for_lab(plan.name, root)
    wiring = plan_wiring(plan)
    with lab_lock(state):
        existing = state.read_plan()
        if existing is not None or state.exists():
            return _up_again(state, plan, existing, started)
        _check_capabilities(plan, wiring)
        plan_json = plan.to_json()
        digest = plan_digest(plan_json)
        with Netlink() as nl:
            _check_names_free(nl, plan.name, wiring)
            state.create()
            state.write_plan(plan_json, digest, PHASE_BUILDING)
            journal = Journal(state.journal_path)
            try:
                count = _build(nl, state, journal, plan, wiring, progress or _no_progress)
            except BaseException as error:
                try:
                    _teardown(nl, state)
                except Exception as rollback_error:  # keep the original error; say what is left
                    error.add_note(f"rollback incomplete ({rollback_error}); run `lab down {plan.name}`")
                    raise
                state.remove()
                remove_lock_file(state)
                raise
            state.write_plan(plan_json, digest, PHASE_UP)
    stacks = sum(1 for node in plan.nodes if node.kind == "pystack" and node.process)
    running = f", {stacks} stack process{'es' if stacks > 1 else ''} answering" if stacks else ""
    return UpResult(plan.name, True, f"lab {plan.name} is up ({len(plan.nodes)} nodes{running})",
                    time.perf_counter() - started, count)


def plan_digest(plan_json: dict) -> str:
    """`LabPlan.digest()` computed from an already serialized plan (serializing a 100-node plan is
    a third of `up`'s time, so it is done once). A unit test keeps the two in step."""
    data = {key: value for key, value in plan_json.items() if key != "source"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _up_again(state: LabState, plan: LabPlan, existing: dict | None, started: float) -> UpResult:
    if existing is None or existing.get("phase") != PHASE_UP:
        raise LabError(f"lab {plan.name} was left half-built by an interrupted `lab up`; "
                       f"run `lab down {plan.name}` first")
    if existing.get("digest") != plan.digest():
        raise LabError(f"lab {plan.name} is up with a different topology; run `lab down {plan.name}` first")
    from lab.status import journal_drift  # status imports builder helpers; import here to avoid a cycle

    with Netlink() as nl:
        missing = journal_drift(nl, state).missing
    if missing:
        raise LabError(f"lab {plan.name} is up but {len(missing)} of its objects are gone "
                       f"(first: {missing[0]}); run `lab down {plan.name}` first")
    from lab.processes import restart_dead_nodes

    restarted = tuple(restart_dead_nodes(state, plan))
    if restarted:
        return UpResult(plan.name, False, f"lab {plan.name} is already up with this topology; "
                        + "; ".join(restarted), time.perf_counter() - started, 0, restarted)
    return UpResult(plan.name, False, f"lab {plan.name} is already up with this topology; nothing changed",
                    time.perf_counter() - started, 0)


def _check_capabilities(plan: LabPlan, wiring: Wiring) -> None:
    privileges = check_privileges()
    if not privileges.ok:
        raise CapabilityMissing(f"lab {plan.name}: {privileges.detail}")
    if any(node.kind == "pystack" and node.process for node in plan.nodes):
        from importlib.util import find_spec

        from lab.processes import node_module

        try:
            found = find_spec(node_module()) is not None
        except ModuleNotFoundError:  # the parent package is missing too
            found = False
        if not found:
            raise CapabilityMissing(f"lab {plan.name}: the stack node program (python -m {node_module()}) "
                                    "is not installed; give the pystack nodes `process: false`")
    if wiring.needs_tun:
        tun = check_tun_device()
        if not tun.ok:
            raise CapabilityMissing(f"lab {plan.name}: /dev/net/tun {tun.detail}")
    netem_links = wiring.needs_netem
    if netem_links and not netem_available():
        first = netem_links[0]
        raise CapabilityMissing(
            f"lab {plan.name}: link {first.link} asks for {describe_impairment(first.impairment)}, "
            "which needs sch_netem, and this kernel has no sch_netem; drop the impairment, keep only "
            "`rate` (tbf), or put it on a link to a pystack node (the stack impairs in userspace)"
        )


def describe_impairment(impairment: Impairment) -> str:
    parts = [
        f"delay {impairment.delay_ms:g}ms" if impairment.delay_ms else "",
        f"jitter {impairment.jitter_ms:g}ms" if impairment.jitter_ms else "",
        f"loss {impairment.loss_pct:g}%" if impairment.loss_pct else "",
        f"duplicate {impairment.duplicate_pct:g}%" if impairment.duplicate_pct else "",
        f"reorder {impairment.reorder_pct:g}%" if impairment.reorder_pct else "",
        f"corrupt {impairment.corrupt_pct:g}%" if impairment.corrupt_pct else "",
        f"rate {impairment.rate_mbit:g}mbit" if impairment.rate_mbit else "",
    ]
    return " ".join(p for p in parts if p) or "nothing"


def _check_names_free(nl: Netlink, lab: str, wiring: Wiring) -> None:
    for namespace in wiring.namespaces:
        if not os.path.lexists(namespace_path(namespace)):
            continue
        owner = nl.namespace_marker(namespace)
        if owner == lab_tag(lab):
            raise LabError(f"namespace {namespace} is left over from an earlier run of lab {lab}; "
                           f"run `lab down {lab}` first")
        raise LabError(f"namespace {namespace} already exists and does not belong to lab {lab}; "
                       "choose another lab name with --name")


def _build(
    nl: Netlink, state: LabState, journal: Journal, plan: LabPlan, wiring: Wiring, progress: ProgressFn
) -> int:
    """Create everything in phases; each phase's objects are journaled before the phase runs.

    Requests are batched per namespace (see `lab.netlink.RtnlBatch`) and interface indexes are
    chosen up front, so a phase costs one round trip per namespace, not one per object.
    """
    tag = lab_tag(plan.name)
    batches = journal_entries(wiring)
    phases = 8
    done = 0

    def step(what: str) -> None:
        nonlocal done
        done += 1
        progress(what, done, phases)

    journal.record(batches["namespaces"])
    for namespace in wiring.namespaces:
        nl.create_namespace(namespace, tag)
    for namespace in wiring.silent_namespaces:
        nl.write_sysctls(namespace, [(f"net.ipv6.conf.{scope}.{key}", value)
                                     for scope in ("default", "all") for key, value in SILENT_PORT_SYSCTLS])
    step(f"{len(wiring.namespaces)} namespaces")

    journal.record(batches["veths"])
    root = nl.batch(None)
    for veth in wiring.veths:
        (ns_a, name_a), (ns_b, name_b) = veth.a, veth.b
        root.new_veth((nl.assign_index(ns_a, name_a), name_a, nl.ns_fd(ns_a)),
                      (nl.assign_index(ns_b, name_b), name_b, nl.ns_fd(ns_b)),
                      mtu=veth.mtu, mac_a=veth.mac_a, mac_b=veth.mac_b,
                      what=f"create veth {ns_a}:{name_a} <-> {ns_b}:{name_b}")
    root.commit()
    step(f"{len(wiring.veths)} veth pairs")

    journal.record(batches["devices"])
    _commit_all(nl, {ns: [("bridge", ns, name, mtu)] for ns, name, mtu in wiring.bridges})
    for namespace, name, vnet_hdr, mtu in wiring.taps:  # after every assigned index: TAPs take any free one
        nl.add_tap(namespace, name, vnet_hdr=vnet_hdr, mtu=mtu)
    step("bridges and TAPs")

    sysctls: dict[str, list[tuple[str, str]]] = {}
    for port in wiring.ports:
        if port.silent:
            sysctls.setdefault(port.namespace, []).extend(
                (f"net.ipv6.conf.{port.name}.{key}", value) for key, value in SILENT_PORT_SYSCTLS)
    for namespace, settings in sysctls.items():
        nl.write_sysctls(namespace, settings, skip_missing=True)  # no IPv6 at all below MTU 1280
    requests: dict[str, list[tuple]] = {}
    for port in wiring.ports:
        requests.setdefault(port.namespace, []).append(("port", port, tag))
    _commit_all(nl, requests)
    step(f"{len(wiring.ports)} interfaces")

    for node in plan.nodes:
        nl.write_sysctls(node.namespace, list(node.sysctls))
    step("sysctls")

    _commit_all(nl, {node.namespace: [("route", route) for route in node.routes]
                     for node in plan.nodes if node.kind == "kernel" and node.routes})
    step("routes")

    journal.record(batches["qdiscs"])
    for qdisc in wiring.qdiscs:
        nl.add_qdisc(qdisc.namespace, qdisc.ifname, qdisc.kind, **qdisc_parameters(qdisc))
    for node in plan.nodes:
        if node.kind == "pystack":
            settings_json = pystack_settings(plan, node, str(state.directory))
            write_json_atomic(state.node_settings_path(node.name), settings_json, indent=1)
    step("impairments and settings")

    from lab.processes import process_nodes, start_nodes

    start_nodes(state, plan, journal)  # journaled one by one before each runs
    _wait_bridge_ports_up(nl, wiring)
    step(f"{len(process_nodes(plan))} stack processes")
    return sum(len(batch) for batch in batches.values()) + len(process_nodes(plan))


BRIDGE_PORT_WAIT_SECONDS = 5.0


def _wait_bridge_ports_up(nl: Netlink, wiring: Wiring) -> None:
    """Wait until every veth enslaved to a bridge is operationally up.

    The kernel applies a new veth's carrier through linkwatch, up to a second later, and until then
    the bridge keeps the port disabled and drops what arrives on it: the first ARP exchange with a
    stack (or across a LAN) would cost a one-second retry. A TAP is left out: it comes up when its
    program opens it, which for a `process: false` node is after `up`.
    """
    waiting: dict[str, set[str]] = {}
    for port in wiring.ports:
        if port.master and port.name != PYSTACK_TAP:
            waiting.setdefault(port.namespace, set()).add(port.name)
    deadline = time.monotonic() + BRIDGE_PORT_WAIT_SECONDS
    while waiting:
        for namespace in list(waiting):
            up = {link.name for link in nl.links(namespace) if link.operstate == "UP"}
            waiting[namespace] -= up
            if not waiting[namespace]:
                del waiting[namespace]
        if not waiting:
            return
        if time.monotonic() > deadline:
            namespace, names = next(iter(waiting.items()))
            raise LabError(f"bridge port {namespace}:{sorted(names)[0]} is still not up after "
                           f"{BRIDGE_PORT_WAIT_SECONDS:g} s")
        time.sleep(0.02)


def _commit_all(nl: Netlink, requests: dict[str, list[tuple]]) -> None:
    """Fill one batch per namespace from (kind, ...) tuples and commit them."""
    for namespace, items in requests.items():
        batch = nl.batch(namespace)
        for kind, *args in items:
            if kind == "bridge":
                _, name, mtu = args
                index = nl.assign_index(namespace, name)
                batch.new_bridge(index, name, mtu, f"create bridge {namespace}:{name}")
            elif kind == "port":
                port, tag = args
                index = nl.index(namespace, port.name)
                if index is None:
                    raise NetlinkOpError(f"interface {namespace}:{port.name} does not exist")
                if port.address:
                    batch.add_address(index, port.address,
                                      f"add address {port.address} to {namespace}:{port.name}")
                master = nl.index(namespace, port.master) if port.master else None
                batch.set_link(index, alias=tag, master=master, up=True,
                               what=f"configure {namespace}:{port.name}")
            elif kind == "route":
                (route,) = args
                batch.add_route(route.destination, str(route.gateway),
                                f"add route {route.destination} via {route.gateway} in {namespace}")
        batch.commit()


def down(name: str, *, root: Path | None = None) -> DownResult:
    """Remove everything lab `name` created, from its journal and by its tags; then its state.

    Works without the topology file, after a crash of `up` at any point, and when parts are
    already gone. Raises LabError when there is no such lab at all.
    """
    started = time.perf_counter()
    state = LabState.for_lab(name, root)
    with lab_lock(state), Netlink() as nl:
        had_state = state.exists()
        removed, swept, skipped = _teardown(nl, state)
        state.remove()
        remove_lock_file(state)
    result = DownResult(name, tuple(removed), tuple(swept), skipped, time.perf_counter() - started)
    if not had_state and not result.found_anything:
        raise LabError(f"lab {name} is not up (no state in {state.directory} and no tagged objects)")
    return result


def labs_to_take_down(root: Path | None = None) -> list[str]:
    """Labs with state, plus labs whose marked namespaces outlived their state directory."""
    names = set(list_labs(root))
    with Netlink() as nl:
        for namespace in list_namespaces():
            marker = nl.namespace_marker(namespace)
            if marker and marker.startswith(TAG_PREFIX):
                names.add(marker[len(TAG_PREFIX):])
    return sorted(names)


def _teardown(nl: Netlink, state: LabState) -> tuple[list[str], list[str], tuple[int, ...]]:
    tag = lab_tag(state.name)
    contents = read_journal(state.journal_path)
    journaled_namespaces = {e.namespace for e in contents.entries if e.kind == "namespace"}
    removed: list[str] = []
    ordered = removal_order(contents.entries)
    # First the processes the journal names (pid + start time: a reused pid is never signalled),
    # then anything else still running in the lab's namespaces (`lab exec` servers, strays).
    for entry in ordered:
        if entry.kind == "process":
            if _stop_process(entry.pid, entry.start_ticks):
                removed.append(entry.describe())
            if entry.name and entry.pid is not None:  # a node's stack, started by `up` (maybe this process)
                _reap(entry.pid)
    _stop_namespace_processes(nl, state.name, journaled_namespaces)
    for entry in ordered:
        if entry.kind == "process":
            continue
        if entry.kind == "namespace":
            if _remove_own_namespace(nl, entry.namespace, tag):
                removed.append(entry.describe())
        elif entry.kind == "file":
            if entry.name and os.path.lexists(entry.name):
                os.unlink(entry.name)
                removed.append(entry.describe())
        elif entry.namespace in journaled_namespaces:
            continue  # goes with its namespace
        elif entry.kind == "qdisc":
            if nl.delete_root_qdisc(entry.namespace, entry.name):
                removed.append(entry.describe())
        elif nl.delete_link(entry.namespace, entry.name):
            removed.append(entry.describe())
    swept = _sweep(nl, state.name, tag)
    return removed, swept, contents.skipped_lines


def _remove_own_namespace(nl: Netlink, namespace: str, tag: str) -> bool:
    """Remove a namespace only if it carries the lab's marker (or is a stub of an interrupted create)."""
    path = namespace_path(namespace)
    if is_stub_file(path):
        os.unlink(path)
        return True
    if nl.namespace_marker(namespace) != tag:
        return False
    return nl.remove_namespace(namespace)


def _sweep(nl: Netlink, lab: str, tag: str) -> list[str]:
    """Tagged objects no journal entry accounted for: root-namespace interfaces, marked namespaces."""
    swept: list[str] = []
    for link in nl.links(None):
        if link.alias == tag and link.name != "lo" and nl.delete_link(None, link.name):
            swept.append(f"interface root:{link.name}")
    for namespace in list_namespaces():
        if namespace.startswith(f"{lab}-") and nl.namespace_marker(namespace) == tag:
            _stop_namespace_processes(nl, lab, {namespace})
            nl.remove_namespace(namespace)
            swept.append(f"namespace {namespace}")
    return swept


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: with the pid, it names one process for its whole life."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def record_process(name: str, namespace: str, pid: int, *, root: Path | None = None) -> None:
    """Journal a process the lab started in one of its namespaces, so `down` stops it.

    Call it right after the process is spawned (its pid exists only then), before it serves.
    """
    state = LabState.for_lab(name, root)
    Journal(state.journal_path).record(
        [JournalEntry("process", namespace=namespace, pid=pid, start_ticks=process_start_ticks(pid))]
    )


def _stop_process(pid: int | None, start_ticks: int | None) -> bool:
    if pid is None or process_start_ticks(pid) is None or process_start_ticks(pid) != start_ticks:
        return False
    return bool(_terminate([pid]))


def _reap(pid: int) -> None:
    """Collect a stopped child's exit status (a stack this process started), else leave it to init."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def namespace_pids(namespaces: set[str]) -> dict[str, list[int]]:
    """Processes whose network namespace is one of `namespaces` (matched by nsfs inode)."""
    inodes: dict[tuple[int, int], str] = {}
    for namespace in namespaces:
        if is_mounted_namespace(namespace):
            st = os.stat(namespace_path(namespace))
            inodes[(st.st_dev, st.st_ino)] = namespace
    found: dict[str, list[int]] = {}
    if not inodes:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        namespace = inodes.get((st.st_dev, st.st_ino))
        if namespace is not None:
            found.setdefault(namespace, []).append(int(entry))
    return found


def _stop_namespace_processes(nl: Netlink, lab: str, namespaces: set[str]) -> None:
    """Stop processes left in the lab's namespaces (servers from `lab exec`, stacks): they pin them."""
    tag = lab_tag(lab)
    own = {ns for ns in namespaces if nl.namespace_marker(ns) == tag}
    pids = [pid for group in namespace_pids(own).values() for pid in group if pid != os.getpid()]
    _terminate(pids)


def _terminate(pids: list[int]) -> list[int]:
    """SIGTERM, a bounded grace period, then SIGKILL. Returns the pids that were signalled."""
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    alive = list(signalled)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        if alive:
            time.sleep(0.01)
    for pid in alive:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return signalled


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie no longer pins a namespace).

    Never reaps: the process may be the caller's child, whose exit status is the caller's to read.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


UP_TARGET_SECONDS = {100: 1.5}  # the project's targets for a 100-node chain on a 2-core machine
DOWN_TARGET_SECONDS = {100: 1.0}


def bench_chains(counts: list[int], *, repeat: int = 3, root: Path | None = None) -> list[dict]:
    """Time `up` and `down` of a chain of N kernel nodes for each N (what `lab bench up` prints).

    Each size runs `repeat` times; the median is reported with the best and worst. Every chain
    has a lab name of its own (with this process's pid) and is always taken down.
    """
    from statistics import median

    from lab.chain import chain_plan

    rows = []
    for count in counts:
        name = f"b{os.getpid() % 100000}n{count}"
        plan = chain_plan(count, name=name)
        ups, downs = [], []
        for _ in range(repeat):
            try:
                ups.append(up(plan, root=root).seconds)
            finally:
                started = time.perf_counter()
                down(name, root=root)
                downs.append(time.perf_counter() - started)
        rows.append({
            "nodes": count, "links": len(plan.links),
            "up_seconds": round(median(ups), 4), "up_min": round(min(ups), 4), "up_max": round(max(ups), 4),
            "down_seconds": round(median(downs), 4), "down_min": round(min(downs), 4),
            "down_max": round(max(downs), 4), "runs": repeat,
            "up_target": UP_TARGET_SECONDS.get(count), "down_target": DOWN_TARGET_SECONDS.get(count),
        })
    return rows
