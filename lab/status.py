"""`lab status`: what a lab is made of right now, and where reality drifted from the journal.

Two kinds of drift:
- missing: journaled, but no longer there (someone deleted an interface by hand, a namespace
  vanished);
- untracked: carries the lab's tag, but no journal entry names it (made by hand with the tag,
  or by a run whose journal was lost).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.journal import JournalEntry, read_journal
from lab.netlink import LinkInfo, Netlink, NetlinkOpError, is_mounted_namespace, lab_tag, list_namespaces
from lab.processes import namespace_pids, process_start_ticks
from lab.state import LabError, LabState, list_labs
from lab.wiring import lan_namespace


@dataclass
class Drift:
    missing: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.untracked)


def _namespace_present(nl: Netlink, namespace: str | None, tag: str) -> bool:
    return namespace is None or (is_mounted_namespace(namespace) and nl.namespace_marker(namespace) == tag)


def _link_present(nl: Netlink, namespace: str | None, name: str | None, tag: str) -> bool:
    if name is None or not _namespace_present(nl, namespace, tag):
        return False
    try:
        return nl.index(namespace, name) is not None
    except NetlinkOpError:
        return False


def entry_present(nl: Netlink, entry: JournalEntry, tag: str) -> bool:
    """Does the object a journal entry describes exist right now?"""
    if entry.kind == "namespace":
        return _namespace_present(nl, entry.namespace, tag)
    if entry.kind == "veth":
        return _link_present(nl, entry.namespace, entry.name, tag) and _link_present(
            nl, entry.peer_namespace, entry.peer_name, tag)
    if entry.kind in ("bridge", "tap"):
        return _link_present(nl, entry.namespace, entry.name, tag)
    if entry.kind == "qdisc":
        if not _link_present(nl, entry.namespace, entry.name, tag) or entry.namespace is None:
            return False
        return entry.qdisc in nl.qdisc_kinds(entry.namespace, entry.name or "")
    if entry.kind == "process":
        return entry.pid is not None and process_start_ticks(entry.pid) == entry.start_ticks
    return entry.name is not None and os.path.lexists(entry.name)


def journal_drift(nl: Netlink, state: LabState) -> Drift:
    tag = lab_tag(state.name)
    entries = read_journal(state.journal_path).entries
    drift = Drift()
    known: set[tuple[str | None, str | None]] = set()
    namespaces: set[str] = set()
    for entry in entries:
        if entry.kind == "namespace" and entry.namespace:
            namespaces.add(entry.namespace)
        known.add((entry.namespace, entry.name))
        if entry.kind == "veth":
            known.add((entry.peer_namespace, entry.peer_name))
        if not entry_present(nl, entry, tag):
            drift.missing.append(entry.describe())
    marked = {ns for ns in list_namespaces()
              if ns.startswith(f"{state.name}-") and nl.namespace_marker(ns) == tag}
    drift.untracked += [f"namespace {ns}" for ns in sorted(marked - namespaces)]
    for namespace in sorted(marked):
        for link in nl.links(namespace):
            if link.alias == tag and link.name != "lo" and (namespace, link.name) not in known:
                drift.untracked.append(f"interface {namespace}:{link.name}")
    drift.untracked += [f"interface root:{link.name}" for link in nl.links(None) if link.alias == tag]
    return drift


def _interfaces(nl: Netlink, namespace: str, tag: str) -> list[dict]:
    if not _namespace_present(nl, namespace, tag):
        return []
    links: list[LinkInfo] = nl.links(namespace)
    names = {link.index: link.name for link in links}
    return [
        {"name": link.name, "kind": link.kind or "", "addresses": link.addresses, "mac": link.mac,
         "mtu": link.mtu, "state": "up" if link.up else "down", "operstate": link.operstate,
         "bridge": names.get(link.master) if link.master else None}
        for link in links if link.name != "lo"
    ]


def _stack_settings(state: LabState, node: str) -> dict | None:
    """What the stack of a pystack node owns (its address and MAC are not the kernel's)."""
    path = state.node_settings_path(node)
    try:
        settings = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    iface = settings["interface"]
    return {"tap": settings["tap"], "address": iface["address"], "mac": iface["mac"], "mtu": iface["mtu"],
            "offload": settings["offload"], "settings": str(path)}


def lab_status(name: str, *, root: Path | None = None) -> dict:
    """A JSON-ready description of one lab. Raises LabError when the lab has no state."""
    state = LabState.for_lab(name, root)
    if not state.exists():
        raise LabError(f"lab {name} is not up (no state in {state.directory})")
    tag = lab_tag(name)
    record = state.read_plan() or {}
    plan = record.get("plan") or {}
    contents = read_journal(state.journal_path)
    with Netlink() as nl:
        drift = journal_drift(nl, state)
        namespaces = [e.namespace for e in contents.entries if e.kind == "namespace" and e.namespace]
        pids = namespace_pids({ns for ns in namespaces if _namespace_present(nl, ns, tag)})
        nodes = []
        for node in plan.get("nodes", []):
            namespace = node["namespace"]
            nodes.append({
                "name": node["name"], "kind": node["kind"], "namespace": namespace,
                "present": _namespace_present(nl, namespace, tag),
                "interfaces": _interfaces(nl, namespace, tag),
                "processes": sorted(pids.get(namespace, [])),
                "stack": _stack_settings(state, node["name"]) if node["kind"] == "pystack" else None,
            })
        lans = []
        for link in plan.get("links", []):
            if len(link["endpoints"]) > 2:
                namespace = lan_namespace(name, link["index"])
                lans.append({"link": link["index"], "namespace": namespace, "subnet": link["subnet"],
                             "present": _namespace_present(nl, namespace, tag),
                             "interfaces": _interfaces(nl, namespace, tag)})
    processes = [
        {"pid": e.pid, "namespace": e.namespace, "running": e.pid is not None
         and process_start_ticks(e.pid) == e.start_ticks}
        for e in contents.entries if e.kind == "process"
    ]
    return {
        "lab": name,
        "phase": record.get("phase", "unknown"),
        "digest": record.get("digest"),
        "source": plan.get("source"),
        "state_dir": str(state.directory),
        "nodes": nodes,
        "lans": lans,
        "processes": processes,
        "drift": asdict(drift),
        "skipped_journal_lines": list(contents.skipped_lines),
    }


def labs_summary(*, root: Path | None = None) -> list[dict]:
    """One line per lab with state: name, phase, node count, drift counts."""
    rows = []
    for name in list_labs(root):
        status = lab_status(name, root=root)
        rows.append({"lab": name, "phase": status["phase"], "nodes": len(status["nodes"]),
                     "source": status["source"], "missing": len(status["drift"]["missing"]),
                     "untracked": len(status["drift"]["untracked"])})
    return rows
