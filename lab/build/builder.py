"""`lab up` / `lab down`: from a `LabPlan` to kernel objects and back, crash-safe.

First the pure step `lab.build.wiring.plan_wiring()` lists every kernel object the plan needs, so `up`
checks everything it will need (netem, TAP support, free names) before creating anything. Then `up`
journals each batch of objects before creating it and starts the stack processes
(`lab.build.processes`); `down` stops the lab's processes, replays the journal in reverse and sweeps
tagged leftovers, so it works after a crash of `up` at any point. The journal only says where to look:
`down` removes nothing that does not carry the lab's tag (see `_teardown`). A repeated `up` of a lab
that is up restarts its dead stack processes. Both hold SIGINT and SIGTERM
(`lab.build.signals`): a lab is built whole or rolled back, and taken down whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from lab.build.drift import journal_drift
from lab.build.interpreters import InterpreterMissing, check_pypy
from lab.build.journal import Journal, read_journal, removal_order
from lab.build.processes import (
    ELSEWHERE,
    STOPPED,
    node_module,
    process_nodes,
    reap,
    restart_dead_forwarders,
    restart_dead_nodes,
    start_forwarders,
    start_nodes,
    stop_journaled_process,
    stop_namespace_processes,
)
from lab.build.signals import forget_undo, held_signals, note_cleanup, raise_if_stopping, undo_on_stop
from lab.build.state import (
    PHASE_BUILDING,
    PHASE_UP,
    TAG_PREFIX,
    LabError,
    LabState,
    lab_lock,
    lab_tag,
    list_labs,
    remove_lock_file,
)
from lab.build.statefiles import remove_inside, write_json_atomic
from lab.build.wiring import (
    SILENT_PORT_SYSCTLS,
    Port,
    Wiring,
    forwarder_settings,
    journal_entries,
    plan_wiring,
    pystack_settings,
    qdisc_parameters,
)
from lab.kernel.capabilities import (
    check_privileges,
    check_tun_device,
    namespace_congestion_problem,
    netem_available,
)
from lab.kernel.errors import NetlinkOpError
from lab.kernel.namespaces import is_mounted_namespace, is_stub_file, list_namespaces
from lab.kernel.netlink import LinkInfo, Netlink
from lab.kernel.rtnl import RtnlBatch
from lab.topology.impairments import describe_impairment
from lab.topology.plan import PYSTACK_TAP, LabPlan, plan_json_digest
from stack.devices.namespace import namespace_path

ProgressFn = Callable[[str, int, int], None]


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
    had_state: bool = True  # the lab had a state directory of its own
    refused: tuple[str, ...] = ()  # journaled objects left alone: they do not carry the lab's tag

    @property
    def was_up(self) -> bool:
        """Anything of the lab existed: its state, or objects tagged as its own."""
        return self.had_state or bool(self.removed or self.swept)


def _no_progress(step: str, done: int, total: int) -> None:
    return None


def up(plan: LabPlan, *, root: Path | None = None, progress: ProgressFn | None = None) -> UpResult:
    """Build the lab, or do nothing if the identical lab is up; never leaves half a lab behind.

    A second `up` with the same plan digest changes nothing; with a different digest it is refused.
    Any failure rolls back everything the journal recorded, then re-raises. Ctrl-C and SIGTERM are
    held while the lab is built (`lab.build.signals`) and take effect at the next safe point between
    kernel requests, so the rollback starts from a consistent netlink session, within a second.
    """
    started = time.perf_counter()
    state = LabState.for_lab(plan.name, root)
    plan_wiring(plan)  # refuse an unbuildable plan before asking the kernel anything
    with lab_lock(state), held_signals():  # the lock's wait stays interruptible; the build is whole or undone
        if state.owned():  # a directory that is not the lab's raises here: never adopted
            return _up_again(state, plan, state.read_plan(), started)
        _check_privileges(plan)
        wiring = plan_wiring(plan, netem=netem_available())
        _check_capabilities(plan, wiring)
        plan_json = plan.to_json()
        digest = plan_json_digest(plan_json)
        with Netlink() as nl:
            _check_names_free(nl, plan.name, wiring)
            try:
                state.create()  # ForeignState when a directory that is not the lab's has its name
                state.write_plan(plan_json, digest, PHASE_BUILDING, netem=wiring.netem)
                count = _build(nl, state, Journal(state.journal_path), plan, wiring, progress or _no_progress)
                state.write_plan(plan_json, digest, PHASE_UP, netem=wiring.netem)
                raise_if_stopping()  # a signal held until the very end still undoes the build
            except BaseException as error:
                if not state.belongs():  # nothing was made (under the lock, only this call makes it)
                    raise
                try:
                    teardown = _teardown(nl, state)
                except Exception as rollback_error:  # keep the original error; say what is left
                    error.add_note(f"rollback incomplete ({rollback_error}); run `lab down {plan.name}`")
                    note_cleanup(f"rollback of lab {plan.name} incomplete ({rollback_error}); "
                                 f"run `lab down {plan.name}`")
                    raise
                state.remove()
                remove_lock_file(state)
                note_cleanup(f"rolled back lab {plan.name} "
                             f"({len(teardown.removed) + len(teardown.swept)} objects removed)")
                raise
            undo_on_stop(undo_key(plan.name), lambda: _down_if_up(plan.name, root))
    stacks = sum(1 for node in plan.nodes if node.kind == "pystack" and node.process)
    running = f", {stacks} stack process{'es' if stacks > 1 else ''} answering" if stacks else ""
    if wiring.forwarders:
        links = len(wiring.forwarders)
        running += f", {links} link{'s' if links > 1 else ''} impaired by the lab's forwarder (no sch_netem)"
    return UpResult(plan.name, True, f"lab {plan.name} is up ({len(plan.nodes)} nodes{running})",
                    time.perf_counter() - started, count)


def _up_again(state: LabState, plan: LabPlan, existing: dict | None, started: float) -> UpResult:
    if existing is None or existing.get("phase") != PHASE_UP:
        raise LabError(f"lab {plan.name} was left half-built by an interrupted `lab up`; "
                       f"run `lab down {plan.name}` first")
    if existing.get("digest") != plan.digest():
        raise LabError(f"lab {plan.name} is up with a different topology; run `lab down {plan.name}` first")
    with Netlink() as nl:
        missing = journal_drift(nl, state).missing  # a dead stack process is not missing: it restarts
    if missing:
        raise LabError(f"lab {plan.name} is up but {len(missing)} of its objects are gone "
                       f"(first: {missing[0]}); run `lab down {plan.name}` first")
    forwarders = plan_wiring(plan, netem=bool(existing.get("netem", True))).forwarders
    restarted = tuple(restart_dead_nodes(state, plan) + restart_dead_forwarders(state, forwarders))
    if restarted:
        return UpResult(plan.name, False, f"lab {plan.name} is already up with this topology; "
                        + "; ".join(restarted), time.perf_counter() - started, 0, restarted)
    return UpResult(plan.name, False, f"lab {plan.name} is already up with this topology; nothing changed",
                    time.perf_counter() - started, 0)


CONGESTION_SYSCTL = "net.ipv4.tcp_congestion_control"


def _check_privileges(plan: LabPlan) -> None:
    privileges = check_privileges()
    if not privileges.ok:
        raise CapabilityMissing(f"lab {plan.name}: {privileges.detail}")


def _check_capabilities(plan: LabPlan, wiring: Wiring) -> None:
    for node in plan.nodes:
        for name, value in node.sysctls:
            problem = namespace_congestion_problem(value) if name == CONGESTION_SYSCTL else None
            if problem:
                raise CapabilityMissing(f"lab {plan.name}: node {node.name}: {name}={value}: {problem}")
    if any(node.kind == "pystack" and node.process for node in plan.nodes):
        from importlib.util import find_spec

        try:
            found = find_spec(node_module()) is not None
        except ModuleNotFoundError:  # the parent package is missing too
            found = False
        if not found:
            raise CapabilityMissing(f"lab {plan.name}: the stack node program (python -m {node_module()}) "
                                    "is not installed; give the pystack nodes `process: false`")
    pypy_node = next((node for node in plan.nodes
                      if node.kind == "pystack" and node.process and node.python == "pypy"), None)
    if pypy_node is not None:
        try:
            check_pypy()
        except InterpreterMissing as error:
            raise CapabilityMissing(f"lab {plan.name}: node {pypy_node.name}: {error}") from None
    if wiring.needs_tun:
        tun = check_tun_device()
        if not tun.ok:
            raise CapabilityMissing(f"lab {plan.name}: /dev/net/tun {tun.detail}")
    netem_links = wiring.needs_netem
    if netem_links and not netem_available():
        first = netem_links[0]
        raise CapabilityMissing(
            f"lab {plan.name}: link {first.link} asks for {describe_impairment(first.impairment)} on a LAN, "
            "which needs sch_netem, and this kernel has no sch_netem (the lab's forwarder impairs "
            "point-to-point links only); drop the impairment, keep only `rate` (tbf), or make the link "
            "point-to-point"
        )


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

    Requests are batched per namespace (see `lab.kernel.rtnl.RtnlBatch`) and interface indexes are
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
        raise_if_stopping()

    journal.record(batches["namespaces"])
    for namespace in wiring.namespaces:
        nl.create_namespace(namespace, tag)
        raise_if_stopping()
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
    _create_bridges(nl, wiring)
    for namespace, name, vnet_hdr, mtu, multi_queue in wiring.taps:  # TAPs last: they take any free index
        nl.add_tap(namespace, name, vnet_hdr=vnet_hdr, mtu=mtu, multi_queue=multi_queue)
        raise_if_stopping()
    step("bridges and TAPs")

    sysctls: dict[str, list[tuple[str, str]]] = {}
    for port in wiring.ports:
        if port.silent:
            sysctls.setdefault(port.namespace, []).extend(
                (f"net.ipv6.conf.{port.name}.{key}", value) for key, value in SILENT_PORT_SYSCTLS)
    for namespace, settings in sysctls.items():
        nl.write_sysctls(namespace, settings, skip_missing=True)  # no IPv6 at all below MTU 1280
    _configure_ports(nl, wiring.ports, tag)
    step(f"{len(wiring.ports)} interfaces")

    for node in plan.nodes:
        nl.write_sysctls(node.namespace, list(node.sysctls))
    step("sysctls")

    _add_routes(nl, plan)
    step("routes")

    journal.record(batches["qdiscs"])
    for qdisc in wiring.qdiscs:
        nl.add_qdisc(qdisc.namespace, qdisc.ifname, qdisc.kind, **qdisc_parameters(qdisc))
    for node in plan.nodes:
        if node.kind == "pystack":
            settings_json = pystack_settings(plan, node, str(state.directory))
            write_json_atomic(state.node_settings_path(node.name), settings_json, indent=1)
    for forwarder in wiring.forwarders:
        socket_path = str(state.control_socket_path(forwarder.name))
        settings_json = forwarder_settings(plan.name, forwarder, socket_path)
        write_json_atomic(state.node_settings_path(forwarder.name), settings_json, indent=1)
    step("impairments and settings")

    start_forwarders(state, wiring.forwarders, journal)  # journaled one by one before each runs
    start_nodes(state, plan, journal)
    _wait_bridge_ports_up(nl, wiring)
    step(f"{len(process_nodes(plan))} stack processes")
    return sum(len(batch) for batch in batches.values()) + len(process_nodes(plan)) + len(wiring.forwarders)


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
        raise_if_stopping()
        if time.monotonic() > deadline:
            namespace, names = next(iter(waiting.items()))
            raise LabError(f"bridge port {namespace}:{sorted(names)[0]} is still not up after "
                           f"{BRIDGE_PORT_WAIT_SECONDS:g} s")
        time.sleep(0.02)


def _create_bridges(nl: Netlink, wiring: Wiring) -> None:
    """Every bridge, one batch per namespace, each with the index assigned to it up front."""
    batches: dict[str, RtnlBatch] = {}
    for namespace, name, mtu in wiring.bridges:
        batch = batches.setdefault(namespace, nl.batch(namespace))
        batch.new_bridge(nl.assign_index(namespace, name), name, mtu, f"create bridge {namespace}:{name}")
    for batch in batches.values():
        batch.commit()


def _configure_ports(nl: Netlink, ports: list[Port], tag: str) -> None:
    """Address, tag, bridge and raise every interface, one batch per namespace."""
    batches: dict[str, RtnlBatch] = {}
    for port in ports:
        namespace = port.namespace
        batch = batches.setdefault(namespace, nl.batch(namespace))
        index = nl.index(namespace, port.name)
        if index is None:
            raise NetlinkOpError(f"interface {namespace}:{port.name} does not exist")
        if port.address:
            batch.add_address(index, port.address, f"add address {port.address} to {namespace}:{port.name}")
        master = nl.index(namespace, port.master) if port.master else None
        batch.set_link(index, alias=tag, master=master, up=True, what=f"configure {namespace}:{port.name}")
    for batch in batches.values():
        batch.commit()


def _add_routes(nl: Netlink, plan: LabPlan) -> None:
    """The routes of every kernel node, one batch per node (a pystack node's routes are the stack's)."""
    for node in plan.nodes:
        if node.kind != "kernel" or not node.routes:
            continue
        batch = nl.batch(node.namespace)
        for route in node.routes:
            batch.add_route(route.destination, str(route.gateway),
                            f"add route {route.destination} via {route.gateway} in {node.namespace}")
        batch.commit()


def down(name: str, *, root: Path | None = None) -> DownResult:
    """Remove everything lab `name` created, from its journal and by its tags; then its state.

    Works without the topology file, after a crash of `up` at any point, and when parts are
    already gone; a lab that is not up at all is no error (`was_up` is False). Only what carries
    the lab's tag, lies inside its own namespaces or inside its own state directory is removed:
    a journal entry naming anything else is left alone and reported in `refused`. A directory
    under the state root that `lab up` did not make raises ForeignState and is left as it is.
    """
    started = time.perf_counter()
    state = LabState.for_lab(name, root)
    with lab_lock(state), held_signals():  # a lab is taken down whole, signal or not
        forget_undo(undo_key(name))
        had_state = state.owned()
        state.remove_unfinished()
        with Netlink() as nl:
            teardown = _teardown(nl, state, journal=had_state)
        if had_state:
            state.remove()
        remove_lock_file(state)
        result = DownResult(name, tuple(teardown.removed), tuple(teardown.swept), teardown.skipped_lines,
                            time.perf_counter() - started, had_state, tuple(teardown.refused))
        if result.was_up:  # noted before the hold ends: a held signal is raised there
            note_cleanup(f"took down lab {name} ({len(result.removed) + len(result.swept)} objects removed)")
    return result


def undo_key(name: str) -> str:
    """The key under which `up` registers taking lab `name` down if its command stops (see
    `lab.build.signals.undo_on_stop`); `keep_on_stop` forgets it for a lab meant to stay up."""
    return f"lab {name}"


def keep_on_stop(name: str) -> None:
    """Lab `name` stays up even if this command is stopped from now on (what `lab up` is for)."""
    forget_undo(undo_key(name))


def _down_if_up(name: str, root: Path | None) -> None:
    with suppress(LabError):  # already gone: nothing to undo
        down(name, root=root)


def labs_to_take_down(root: Path | None = None) -> list[str]:
    """Labs with state, plus labs whose marked namespaces outlived their state directory."""
    names = set(list_labs(root))
    with Netlink() as nl:
        for namespace in list_namespaces():
            marker = nl.namespace_marker(namespace)
            if marker and marker.startswith(TAG_PREFIX):
                names.add(marker[len(TAG_PREFIX):])
    return sorted(names)


@dataclass
class Teardown:
    """What a teardown did: removed (journaled), swept (tagged, unjournaled), refused (not the lab's)."""

    removed: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    skipped_lines: tuple[int, ...] = ()


def _teardown(nl: Netlink, state: LabState, *, journal: bool = True) -> Teardown:
    """Replay the journal in reverse (when `journal`), then sweep what still carries the lab's tag.

    The journal is a list of what to look for, not an authority: an object is removed only when it
    carries the lab's tag (a marked namespace named `<lab>-...`, an interface whose ifalias is the
    tag), lies inside one of the lab's own namespaces, or (a file) lies inside the lab's state
    directory. Anything else a journal names is left alone and reported as refused.
    """
    tag = lab_tag(state.name)
    contents = read_journal(state.journal_path) if journal else None
    entries = contents.entries if contents else ()
    result = Teardown(skipped_lines=contents.skipped_lines if contents else ())
    own = _own_namespaces(nl, state.name, tag)
    ordered = removal_order(entries)
    # First the processes the journal names (pid + start time: a reused pid is never signalled;
    # only inside the lab's namespaces), then anything else still running in those namespaces.
    for entry in ordered:
        if entry.kind == "process":
            outcome = stop_journaled_process(entry.pid, entry.start_ticks, own)
            if outcome == STOPPED:
                result.removed.append(entry.describe())
            elif outcome == ELSEWHERE:
                result.refused.append(entry.describe())
            if entry.name and entry.pid is not None:  # a node's stack, started by `up` (maybe this process)
                reap(entry.pid)
    stop_namespace_processes(nl, state.name, own)
    for entry in ordered:
        if entry.kind in ("process", "lab"):
            continue
        if entry.kind == "namespace":
            if _remove_own_namespace(nl, state.name, entry.namespace, tag):
                result.removed.append(entry.describe())
            elif entry.namespace and os.path.lexists(namespace_path(entry.namespace)):
                result.refused.append(entry.describe())
        elif entry.kind == "file":
            if entry.name and remove_inside(state.directory, entry.name):
                result.removed.append(entry.describe())
            elif entry.name and os.path.lexists(entry.name):
                result.refused.append(entry.describe())
        elif entry.namespace in own:
            continue  # goes with its namespace
        else:  # an interface (or its qdisc) outside the lab's namespaces: only if it carries the tag
            link = _find_link(nl, entry.namespace, entry.name)
            if link is None:
                continue
            if link.alias != tag:
                result.refused.append(entry.describe())
            elif entry.kind == "qdisc":
                if entry.namespace is not None and nl.delete_root_qdisc(entry.namespace, link.name):
                    result.removed.append(entry.describe())
            elif nl.delete_link(entry.namespace, link.name):
                result.removed.append(entry.describe())
    result.swept = _sweep(nl, state.name, tag)
    return result


def _own_namespaces(nl: Netlink, lab: str, tag: str) -> set[str]:
    """The namespaces that are the lab's: named `<lab>-...` and marked with its tag (`create_namespace`)."""
    return {ns for ns in list_namespaces() if ns.startswith(f"{lab}-") and nl.namespace_marker(ns) == tag}


def _find_link(nl: Netlink, namespace: str | None, name: str | None) -> LinkInfo | None:
    """Interface `name` in `namespace` (None: root) with its ifalias, or None when there is none."""
    if name is None or (namespace is not None and not is_mounted_namespace(namespace)):
        return None
    return next((link for link in nl.links(namespace) if link.name == name), None)


def _remove_own_namespace(nl: Netlink, lab: str, namespace: str | None, tag: str) -> bool:
    """Remove a namespace only if it is named as the lab's and carries its marker (or is a stub of an
    interrupted create: an empty file under the lab's name, never mounted)."""
    if not namespace or not namespace.startswith(f"{lab}-"):
        return False
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
            stop_namespace_processes(nl, lab, {namespace})
            nl.remove_namespace(namespace)
            swept.append(f"namespace {namespace}")
    return swept
