"""`lab status`: what a lab is made of right now, and where reality drifted from the journal
(`lab.build.drift`)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from lab.build.drift import journal_drift, namespace_present
from lab.build.journal import read_journal
from lab.build.processes import namespace_pids, process_start_ticks
from lab.build.state import LabError, LabState, lab_tag, list_labs
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
            })
        lans = []
        for link in plan.get("links", []):
            if len(link["endpoints"]) > 2:
                namespace = lan_namespace(name, link["index"])
                lans.append({"link": link["index"], "namespace": namespace, "subnet": link["subnet"],
                             "present": namespace_present(nl, namespace, tag),
                             "interfaces": _interfaces(nl, namespace, tag)})
    processes = [
        {"pid": e.pid, "namespace": e.namespace, "running": e.pid is not None
         and process_start_ticks(e.pid) == e.start_ticks}
        for e in contents.entries if e.kind == "process"
    ]
    forwarders = [  # the processes that impair links between kernel nodes (`lab.build.wiring.Forwarder`)
        {"link": e.name, "pid": e.pid, "namespace": e.namespace,
         "running": e.pid is not None and process_start_ticks(e.pid) == e.start_ticks}
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
        status = lab_status(name, root=root)
        rows.append({"lab": name, "phase": status["phase"], "nodes": len(status["nodes"]),
                     "source": status["source"], "missing": len(status["drift"]["missing"]),
                     "untracked": len(status["drift"]["untracked"])})
    return rows
