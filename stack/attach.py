"""Attach a script's own Host to a pystack node of a running lab (a node whose topology says
`process: false`, so `lab up` started no stack process and the TAP is free).

    from stack.attach import attach

    with attach("pair", "s1") as node:          # the Host on s1's TAP, driven by a background thread
        listener = node.socket()
        listener.bind(("10.0.0.2", 8080)); listener.listen()
        conn, peer = listener.accept()           # blocking socket calls, as with the kernel's API

The Host gets the node's address, MAC, MTU, gateway and routes from the settings `lab up` wrote, the TAP
is opened in the node's namespace (offload as the topology says) and the link's impairments apply, exactly
as for the node process. The calling thread stays in its own namespace.
"""

from __future__ import annotations

import os
from pathlib import Path

from stack.api.socket import Socket
from stack.devices.tap import TapDevice, TapMedium
from stack.host import Host
from stack.loops.threaded import ThreadedDriver
from stack.node import paths
from stack.node.daemon import build_host, build_medium
from stack.node.settings import NodeSettings, SettingsError, load_settings


class AttachError(RuntimeError):
    """The node cannot be attached to; the message says why in one line."""


class AttachedHost:
    """A Host on a node's TAP, run by a `ThreadedDriver`; close() releases the TAP (the lab keeps it)."""

    def __init__(self, settings: NodeSettings, host: Host, tap: TapDevice, medium: TapMedium) -> None:
        self.settings = settings
        self.host = host
        self.tap = tap
        self.medium = medium
        self.driver = ThreadedDriver([host], [medium], name=f"nslab-{settings.lab}-{settings.node}")

    def socket(self) -> Socket:
        """A blocking BSD-style socket on the attached Host."""
        return self.host.socket()

    @property
    def offload(self) -> bool:
        return self.tap.offload

    def close(self) -> None:
        self.driver.stop()
        self.tap.close()

    def __enter__(self) -> AttachedHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AttachedHost({self.settings.lab}/{self.settings.node}, {self.host!r})"


def settings_path(lab: str, node: str, state_root: str | os.PathLike[str] | None = None) -> Path:
    root = Path(state_root) if state_root is not None else paths.state_root()
    return paths.node_settings_path(root / lab, node)


def load_attachable(lab: str, node: str, state_root: str | os.PathLike[str] | None = None) -> NodeSettings:
    """The node's settings, refused when a stack process owns its TAP."""
    path = settings_path(lab, node, state_root)
    if not path.exists():
        raise AttachError(f"lab {lab!r} has no pystack node {node!r} (no {path}; is the lab up?)")
    try:
        settings = load_settings(path)
    except SettingsError as exc:
        raise AttachError(str(exc)) from None
    if settings.process:
        raise AttachError(f"node {node!r} of lab {lab!r} runs a stack process that owns its TAP: use its "
                          "control socket (`lab stack`), or give the node `process: false` in the topology")
    return settings


def attach(lab: str, node: str, *, state_root: str | os.PathLike[str] | None = None,
           offload: bool | None = None) -> AttachedHost:
    """A running Host on the TAP of `node` in lab `lab` (`offload` overrides the topology's choice)."""
    settings = load_attachable(lab, node, state_root)
    tap = TapDevice.open_in_namespace(settings.namespace, settings.tap,
                                      offload=settings.offload if offload is None else offload)
    try:
        host = build_host(settings)
        attached = AttachedHost(settings, host, tap, build_medium(settings, host, tap))
        attached.driver.start()
    except BaseException:
        tap.close()
        raise
    return attached
