"""`lab exec` on a pystack node: the environment that puts a Python program's sockets on the node's stack.

A pystack node's namespace holds no address of its kernel's: the node's address is the stack's. So a
program run there reaches the network only through the node's socket service (`stack.node.sockets`): the
environment below makes Python load the socket shim at start (`sitecustomize` first on PYTHONPATH) and names
the service's Unix socket. Programs that are not Python (curl, nc) run in the bare namespace; `exec_plan`
says so in a note when the node is a pystack one.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from lab.build.state import LabState
from stack.node.sockets import SITE_DIR
from stack.node.sockets.wire import SERVICE_ENV


@dataclass(frozen=True)
class ExecPlan:
    """Where and how `lab exec` runs a command: the node's kind, the environment, a note for stderr."""

    kind: str
    env: dict[str, str] | None
    note: str | None


def exec_plan(lab: str, node: str, *, bare: bool = False) -> ExecPlan:
    """The environment of a command run on `node` (None: inherit lab exec's own unchanged)."""
    state = LabState.for_lab(lab)
    record = state.read_plan() or {}
    nodes = {n["name"]: n for n in record.get("plan", {}).get("nodes", [])}
    entry = nodes.get(node, {})
    kind = str(entry.get("kind", "kernel"))
    if kind != "pystack" or bare:
        return ExecPlan(kind, None, None)
    path = state.programs_socket_path(node)
    if not _is_socket(path):
        why = "its topology starts no stack process (process: false)" if entry.get("process") is False \
            else "its stack process is not running (see `lab status`)"
        return ExecPlan(kind, None, f"lab: {node} is a pystack node without a socket service: {why}; the "
                                    "command runs in its namespace, whose kernel has no address")
    env = dict(os.environ)
    env[SERVICE_ENV] = str(path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SITE_DIR, os.environ.get("PYTHONPATH")) if p)
    env.pop("PYTHONNOUSERSITE", None)
    return ExecPlan(kind, env, None)


def _is_socket(path: os.PathLike[str]) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
