"""Drift: where the kernel no longer matches a lab's journal.

Three kinds:
- missing: journaled, but no longer there (someone deleted an interface by hand, a namespace
  vanished);
- untracked: carries the lab's tag, but no journal entry names it (made by hand with the tag,
  or by a run whose journal was lost);
- dead: a node's stack process (its latest journaled one) no longer runs. A process is not an
  object the lab is built of: a dead one is started again by the next `lab up`, so it never counts
  as missing; other journaled processes (servers of experiments) end when their work is done.

A repeated `lab up` refuses a lab with missing objects and restarts dead nodes; `lab status` shows
all three kinds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lab.build.journal import JournalEntry, read_journal
from lab.build.pids import is_running
from lab.build.processes import journaled_processes, process_label
from lab.build.state import LabState, lab_tag
from lab.kernel.errors import NetlinkOpError
from lab.kernel.namespaces import is_mounted_namespace, list_namespaces
from lab.kernel.netlink import Netlink


@dataclass
class Drift:
    missing: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.untracked or self.dead)


def namespace_present(nl: Netlink, namespace: str | None, tag: str) -> bool:
    """The namespace exists and carries the lab's marker (None, the root namespace, always does)."""
    return namespace is None or (is_mounted_namespace(namespace) and nl.namespace_marker(namespace) == tag)


def link_present(nl: Netlink, namespace: str | None, name: str | None, tag: str) -> bool:
    if name is None or not namespace_present(nl, namespace, tag):
        return False
    try:
        return nl.index(namespace, name) is not None
    except NetlinkOpError:
        return False


def entry_present(nl: Netlink, entry: JournalEntry, tag: str) -> bool:
    """Does the object a journal entry describes exist right now? (Not for processes: `dead_nodes`.)"""
    if entry.kind == "namespace":
        return namespace_present(nl, entry.namespace, tag)
    if entry.kind == "veth":
        return link_present(nl, entry.namespace, entry.name, tag) and link_present(
            nl, entry.peer_namespace, entry.peer_name, tag)
    if entry.kind in ("bridge", "tap"):
        return link_present(nl, entry.namespace, entry.name, tag)
    if entry.kind == "qdisc":
        if not link_present(nl, entry.namespace, entry.name, tag) or entry.namespace is None:
            return False
        return entry.qdisc in nl.qdisc_kinds(entry.namespace, entry.name or "")
    return entry.name is not None and os.path.lexists(entry.name)


def dead_processes(state: LabState) -> list[str]:
    """The nodes whose latest journaled stack process is no longer that running process."""
    latest = journaled_processes(state)
    return [f"{process_label(node)} ({entry.describe()})" for node, entry in latest.items()
            if entry.pid is None or not is_running(entry.pid, entry.start_ticks)]


def journal_drift(nl: Netlink, state: LabState) -> Drift:
    """Where the kernel differs from the lab's journal: what is missing, and what is tagged but untracked."""
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
        if entry.kind not in ("lab", "process") and not entry_present(nl, entry, tag):
            drift.missing.append(entry.describe())
    drift.dead = dead_processes(state)
    marked = {ns for ns in list_namespaces()
              if ns.startswith(f"{state.name}-") and nl.namespace_marker(ns) == tag}
    drift.untracked += [f"namespace {ns}" for ns in sorted(marked - namespaces)]
    for namespace in sorted(marked):
        for link in nl.links(namespace):
            if link.alias == tag and link.name != "lo" and (namespace, link.name) not in known:
                drift.untracked.append(f"interface {namespace}:{link.name}")
    drift.untracked += [f"interface root:{link.name}" for link in nl.links(None) if link.alias == tag]
    return drift
