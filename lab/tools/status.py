"""`lab status`: what a lab is made of right now, where reality drifted from the journal
(`lab.build.drift`), and which stack processes died, when and why (`lab.build.node_exits`)."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from lab.build.drift import journal_drift, namespace_present
from lab.build.journal import read_journal
from lab.build.node_exits import iso_time, observe_exit, recorded_exit
from lab.build.pids import is_running, started_at
from lab.build.processes import journaled_processes, namespace_pids
from lab.build.state import LabError, LabLocked, LabState, lab_lock, lab_tag, list_labs
from lab.build.statefiles import read_state_json
from lab.build.wiring import lan_namespace
from lab.kernel.netlink import LinkInfo, Netlink
from lab.tools.impair import show as show_impairments


def _interfaces(nl: Netlink, namespace: str, tag: str) -> list[dict]:
    if not namespace_present(nl, namespace, tag):
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
    settings = read_state_json(path)
    if not isinstance(settings, dict) or not isinstance(settings.get("interface"), dict):
        return None
    iface = settings["interface"]
    return {"tap": settings["tap"], "address": iface["address"], "mac": iface["mac"], "mtu": iface["mtu"],
            "offload": settings["offload"], "settings": str(path)}


def stack_processes(state: LabState, plan: dict) -> dict[str, dict]:
    """Each pystack node's stack process by node: its pid, whether it runs, since when, and how it
    (or, once restarted, its predecessor) last ended.

    A death seen here for the first time is recorded with this moment as "first seen gone" when the
    lab's lock is free; while a `lab up` or `lab down` holds it, it is shown without being recorded.
    """
    latest = journaled_processes(state)
    found: dict[str, dict] = {}
    for node in plan.get("nodes", []):
        if node.get("kind") != "pystack" or not node.get("process", True):
            continue
        entry = latest.get(node["name"])
        if entry is None or entry.pid is None:
            found[node["name"]] = {"pid": None, "running": False, "started": None, "exit": None}
            continue
        running = is_running(entry.pid, entry.start_ticks)
        if running:
            ended = recorded_exit(state, node["name"])
        else:
            try:
                with lab_lock(state, wait=False):
                    ended = observe_exit(state, node["name"], entry)
            except LabLocked:
                ended = observe_exit(state, node["name"], entry, record=False)
        found[node["name"]] = {"pid": entry.pid, "running": running,
                               "started": iso_time(started_at(entry.start_ticks)),
                               "exit": ended.report() if ended is not None else None}
    return found


def lab_status(name: str, *, root: Path | None = None) -> dict:
    """A JSON-ready description of one lab. Raises LabError when the lab has no state of its own."""
    state = LabState.for_lab(name, root)
    if not state.owned():
        raise LabError(f"lab {name} is not up (no state in {state.directory})")
    tag = lab_tag(name)
    record = state.read_plan() or {}
    plan = record.get("plan") or {}
    contents = read_journal(state.journal_path)
    stacks = stack_processes(state, plan)
    with Netlink() as nl:
        drift = journal_drift(nl, state)
        namespaces = [e.namespace for e in contents.entries if e.kind == "namespace" and e.namespace]
        pids = namespace_pids({ns for ns in namespaces if namespace_present(nl, ns, tag)})
        nodes = []
        for node in plan.get("nodes", []):
            namespace = node["namespace"]
            nodes.append({
                "name": node["name"], "kind": node["kind"], "namespace": namespace,
                "present": namespace_present(nl, namespace, tag),
                "interfaces": _interfaces(nl, namespace, tag),
                "processes": sorted(pids.get(namespace, [])),
                "stack": _stack_settings(state, node["name"]) if node["kind"] == "pystack" else None,
                "stack_process": stacks.get(node["name"]),
            })
        lans = []
        for link in plan.get("links", []):
            if len(link["endpoints"]) > 2:
                namespace = lan_namespace(name, link["index"])
                lans.append({"link": link["index"], "namespace": namespace, "subnet": link["subnet"],
                             "present": namespace_present(nl, namespace, tag),
                             "interfaces": _interfaces(nl, namespace, tag)})
    processes = [
        {"pid": e.pid, "namespace": e.namespace, "node": e.name,
         "running": e.pid is not None and is_running(e.pid, e.start_ticks)}
        for e in contents.entries if e.kind == "process"
    ]
    forwarders = [  # the processes that impair links between kernel nodes (`lab.build.wiring.Forwarder`)
        {"link": e.name, "pid": e.pid, "namespace": e.namespace,
         "running": e.pid is not None and is_running(e.pid, e.start_ticks)}
        for e in contents.entries if e.kind == "process" and e.name and re.fullmatch(r"link[0-9]+", e.name)
    ]
    impairments: list[dict] = []
    if record.get("phase") == "up":
        impairments = [row for row in show_impairments(name, root=root) if row["by"] or row["error"]]
    return {
        "lab": name,
        "phase": record.get("phase", "unknown"),
        "impairments": impairments,  # each impaired link direction: by netem, tbf, forwarder or stack
        "digest": record.get("digest"),
        "source": plan.get("source"),
        "state_dir": str(state.directory),
        "nodes": nodes,
        "lans": lans,
        "processes": processes,
        "forwarders": forwarders,
        "drift": asdict(drift),
        "skipped_journal_lines": list(contents.skipped_lines),
    }


def labs_summary(*, root: Path | None = None) -> list[dict]:
    """One line per lab with state: name, phase, node count, drift counts."""
    rows = []
    for name in list_labs(root):
        try:
            status = lab_status(name, root=root)
        except LabError:  # taken down since it was listed
            continue
        rows.append({"lab": name, "phase": status["phase"], "nodes": len(status["nodes"]),
                     "source": status["source"], "missing": len(status["drift"]["missing"]),
                     "untracked": len(status["drift"]["untracked"]), "dead": len(status["drift"]["dead"])})
    return rows
