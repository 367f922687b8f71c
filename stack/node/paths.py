"""Where a lab keeps its state on disk, as the lab (which writes it) and a stack node (which reads it) see it.

    <root>/<lab>/nodes/<node>.json   a pystack node's settings, written by `lab up`
    <root>/<lab>/nodes/<node>.sock   the node's control socket, opened by the node process
    <root>/<lab>/nodes/<node>.programs.sock   its socket service, for programs run by `lab exec`

The root is `/run/nslab` (a tmpfs: the state goes with the namespaces at reboot) unless the environment
variable `NSLAB_STATE_DIR` names another.  This module is the one place that says so: the lab's state
directory (`lab.build.state`) and `stack.attach` both ask it.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STATE_ROOT = Path("/run/nslab")
STATE_ROOT_ENV = "NSLAB_STATE_DIR"


def state_root() -> Path:
    """The directory holding every lab's state directory."""
    return Path(os.environ.get(STATE_ROOT_ENV) or DEFAULT_STATE_ROOT)


def nodes_dir(lab_dir: Path) -> Path:
    """The folder of a lab's node files, given the lab's state directory (`<root>/<lab>`)."""
    return lab_dir / "nodes"


def node_settings_path(lab_dir: Path, node: str) -> Path:
    return nodes_dir(lab_dir) / f"{node}.json"


def control_socket_path(lab_dir: Path, node: str) -> Path:
    return nodes_dir(lab_dir) / f"{node}.sock"


def programs_socket_path(lab_dir: Path, node: str) -> Path:
    """The node's socket service (`stack.node.sockets`): programs' sockets on the node's stack."""
    return nodes_dir(lab_dir) / f"{node}.programs.sock"
