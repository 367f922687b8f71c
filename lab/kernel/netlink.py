"""Kernel operations for the lab, over netlink and a few namespace syscalls (no `ip`, no `tc`).

Speed comes from not forking and not waiting: pyroute2's `IPRoute(netns=...)` starts a child
process per socket. Instead the calling thread briefly enters a namespace (`stack.devices.namespace`
`setns`, on descriptors the session keeps open), opens a netlink socket there (a socket stays bound
to the namespace it was created in) and comes back. New namespaces come from unshare(2) plus a bind
mount (`lab.kernel.namespaces`). veth pairs are created with both ends born in their namespaces, in
one request. The bulk requests of `lab up` (veths, bridges, addresses, links up, routes) go out
batched per namespace (`lab.kernel.rtnl.RtnlBatch`); pyroute2's `IPRoute` drives the rest (TAPs,
qdiscs, dumps) over the same kind of per-namespace socket.

All namespace switching happens on the thread that owns the `Netlink` session, and every switch
returns, in a `finally`, to the namespace the thread came from.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from lab.kernel.errors import NetlinkOpError
from lab.kernel.namespaces import (
    ensure_netns_dir,
    is_mounted_namespace,
    publish_thread_namespace,
    switch_to,
    unpublish,
    unshare_network,
)
from lab.kernel.rtnl import IFF_UP, NETLINK_ROUTE, RtnlBatch, raw_rtnl_socket
from lab.kernel.sysctls import write_sysctls
from stack.devices.namespace import THREAD_NAMESPACE, namespace_path, open_namespace


@dataclass
class LinkInfo:
    """What `links()` reports about one interface."""

    index: int
    name: str
    kind: str | None
    alias: str | None
    mac: str | None
    mtu: int
    up: bool
    operstate: str
    master: int | None
    addresses: list[str] = field(default_factory=list)


class Netlink:
    """One session: a netlink socket per namespace, opened on first use and kept open."""

    def __init__(self) -> None:
        self._root_fd = os.open(THREAD_NAMESPACE, os.O_RDONLY)
        self._thread = threading.get_ident()
        self._sockets: dict[str | None, IPRoute] = {}
        self._ns_fds: dict[str, int] = {}
        self._indexes: dict[tuple[str | None, str], int] = {}
        self._raw: dict[str | None, socket.socket] = {}
        self._next_index: dict[str, int] = {}  # namespaces this session created: ifindex to hand out
        self._current: str | None = None  # the namespace this thread is in (None: root)
        self._markers: dict[str, str | None] = {}  # loopback ifalias by namespace, as read or set

    # --- session lifetime -------------------------------------------------------------------
    def close(self) -> None:
        for ipr in self._sockets.values():
            with suppress(Exception):
                ipr.close()
        self._sockets.clear()
        for sock in self._raw.values():
            sock.close()
        self._raw.clear()
        for fd in self._ns_fds.values():
            os.close(fd)
        self._ns_fds.clear()
        os.close(self._root_fd)

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- namespaces -------------------------------------------------------------------------
    def ns_fd(self, namespace: str) -> int:
        fd = self._ns_fds.get(namespace)
        if fd is None:
            try:
                fd = open_namespace(namespace_path(namespace))
            except FileNotFoundError:
                raise NetlinkOpError(f"namespace {namespace} does not exist") from None
            self._ns_fds[namespace] = fd
        return fd

    @contextmanager
    def inside(self, namespace: str | None) -> Iterator[None]:
        """Run the block with this thread in `namespace` (None: the root namespace).

        Nests: leaving a block returns to the namespace the thread was in when it entered, so
        a helper that enters a namespace for a moment never drops its caller into another one
        (an ioctl such as TAP creation lands wherever the thread is).
        """
        if threading.get_ident() != self._thread:
            raise RuntimeError("a Netlink session must stay on the thread that opened it")
        previous = self._current
        if namespace == previous:
            yield
            return
        target = self._root_fd if namespace is None else self.ns_fd(namespace)
        switch_to(target, f"enter namespace {namespace or 'root'}")
        self._current = namespace
        try:
            yield
        finally:
            back = self._root_fd if previous is None else self.ns_fd(previous)
            switch_to(back, f"return to namespace {previous or 'root'}")
            self._current = previous

    def ipr(self, namespace: str | None = None) -> IPRoute:
        """The session's netlink socket for `namespace` (None: root)."""
        ipr = self._sockets.get(namespace)
        if ipr is None:
            with self.inside(namespace):
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
            ipr = IPRoute(fileno=sock.detach())
            self._sockets[namespace] = ipr
        return ipr

    def batch(self, namespace: str | None) -> RtnlBatch:
        """An empty batch of requests for `namespace` over the session's raw socket there."""
        sock = self._raw.get(namespace)
        if sock is None:
            with self.inside(namespace):
                sock = raw_rtnl_socket()
            self._raw[namespace] = sock
        return RtnlBatch(sock, namespace)

    def assign_index(self, namespace: str, ifname: str) -> int:
        """Choose the ifindex of an interface about to be created in a namespace this session made.

        Knowing indexes in advance lets addresses, bridge ports and routes be batched with no
        lookups. Interfaces created without one (TAPs) are looked up afterwards instead.
        """
        if namespace not in self._next_index:
            raise RuntimeError(f"namespace {namespace} was not created by this session")
        index = self._next_index[namespace]
        self._next_index[namespace] = index + 1
        self._indexes[(namespace, ifname)] = index
        return index

    def create_namespace(self, name: str, marker: str) -> None:
        """Create a named namespace whose loopback already carries `marker` when the name appears.

        The marker is set before the bind mount publishes the name, so any named namespace
        without it was not made by the lab and is never removed by it. A crash between
        creating the mount point and mounting leaves an empty stub file (see `remove_namespace`).
        """
        if self._current is not None:
            raise RuntimeError("create_namespace must be called from the root namespace")
        ensure_netns_dir()
        path = namespace_path(name)
        if os.path.lexists(path):
            raise NetlinkOpError(f"namespace {name} already exists")
        unshare_network(f"create namespace {name}")
        try:
            sock = raw_rtnl_socket()
            loopback = RtnlBatch(sock, name)
            loopback.set_link(1, alias=marker, master=None, up=True, what="mark and raise lo")
            try:
                loopback.commit()
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
            except (FileExistsError, NetlinkOpError) as error:
                sock.close()
                if isinstance(error, NetlinkOpError):
                    raise
                raise NetlinkOpError(f"namespace {name} already exists") from None
            os.close(fd)
            publish_thread_namespace(path, f"mount namespace {name}")
            self._ns_fds[name] = os.open(THREAD_NAMESPACE, os.O_RDONLY)
            self._raw[name] = sock
            self._next_index[name] = 2  # lo is 1
            self._markers[name] = marker
        finally:
            switch_to(self._root_fd, "return to the root namespace")

    def namespace_marker(self, name: str) -> str | None:
        """The loopback ifalias of a namespace (the lab's ownership marker), None if unmarked/absent."""
        if not is_mounted_namespace(name):
            self._markers.pop(name, None)
            return None
        if name in self._markers:  # a marker never changes while the namespace lives
            return self._markers[name]
        try:
            marker = self.batch(name).link_alias(1)
        except (NetlinkOpError, OSError):
            return None
        self._markers[name] = marker
        return marker

    def remove_namespace(self, name: str) -> bool:
        """Unmount and unlink a namespace name; the kernel then destroys it and every interface in it.

        Returns False when there was nothing to remove.
        """
        self._indexes = {k: v for k, v in self._indexes.items() if k[0] != name}
        ipr = self._sockets.pop(name, None)
        if ipr is not None:
            ipr.close()
        raw = self._raw.pop(name, None)
        if raw is not None:
            raw.close()
        self._next_index.pop(name, None)
        self._markers.pop(name, None)
        fd = self._ns_fds.pop(name, None)
        if fd is not None:
            os.close(fd)
        path = namespace_path(name)
        if not os.path.lexists(path):
            return False
        unpublish(path)
        return True

    # --- links ------------------------------------------------------------------------------
    def index(self, namespace: str | None, ifname: str) -> int | None:
        """The interface's index (remembered: names in lab namespaces do not move)."""
        key = (namespace, ifname)
        if key not in self._indexes:
            found = self.ipr(namespace).link_lookup(ifname=ifname)
            if not found:
                return None
            self._indexes[key] = found[0]
        return self._indexes[key]

    def _require_index(self, namespace: str | None, ifname: str) -> int:
        index = self.index(namespace, ifname)
        if index is None:
            raise NetlinkOpError(f"interface {namespace or 'root'}:{ifname} does not exist")
        return index

    def add_tap(self, namespace: str, ifname: str, *, vnet_hdr: bool, mtu: int | None = None,
                multi_queue: bool = False) -> None:
        """A persistent TAP (no packet-info header) the stack opens later by name; `multi_queue`: each
        descriptor opened on it is a queue of its own (a pystack node with several workers).

        TAP creation is an ioctl on /dev/net/tun that lands in the caller's namespace, which is
        why pyroute2 is called from inside the node's namespace here.
        """
        flags = {"no_pi": True, "one_queue": False, "vnet_hdr": vnet_hdr, "multi_queue": multi_queue}
        ipr = self.ipr(namespace)
        with self.inside(namespace):
            self._run(f"create tap {namespace}:{ifname}", ipr.link, "add",
                      ifname=ifname, kind="tuntap", mode="tap", ifr=flags)
        if mtu:
            self.set_link(namespace, ifname, mtu=mtu)

    def set_link(
        self,
        namespace: str | None,
        ifname: str,
        *,
        alias: str | None = None,
        up: bool | None = None,
        master: str | None = None,
        mtu: int | None = None,
    ) -> None:
        index = self._require_index(namespace, ifname)
        spec: dict = {}
        if alias is not None:
            spec["ifalias"] = alias
        if mtu is not None:
            spec["mtu"] = mtu
        if master is not None:
            spec["master"] = self._require_index(namespace, master)
        if up is not None:
            spec["state"] = "up" if up else "down"
        self._run(f"configure {namespace or 'root'}:{ifname}", self.ipr(namespace).link, "set",
                  index=index, **spec)

    def delete_link(self, namespace: str | None, ifname: str) -> bool:
        """Delete an interface; False when it (or its namespace) is already gone."""
        if namespace is not None and not is_mounted_namespace(namespace):
            return False
        index = self.index(namespace, ifname)
        if index is None:
            return False
        self._indexes.pop((namespace, ifname), None)
        try:
            self.ipr(namespace).link("del", index=index)
        except NetlinkError as error:
            if error.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise NetlinkOpError(f"delete {namespace or 'root'}:{ifname}: {error}") from error
        return True

    def links(self, namespace: str | None) -> list[LinkInfo]:
        """Every interface in a namespace with its IPv4 addresses (two dumps)."""
        ipr = self.ipr(namespace)
        infos: dict[int, LinkInfo] = {}
        for msg in ipr.get_links():
            linkinfo = msg.get("IFLA_LINKINFO")
            kind = linkinfo.get("IFLA_INFO_KIND") if linkinfo else None
            infos[msg["index"]] = LinkInfo(
                index=msg["index"], name=msg.get("ifname"), kind=kind, alias=msg.get("ifalias"),
                mac=msg.get("address"), mtu=msg.get("mtu") or 0, up=bool(msg["flags"] & IFF_UP),
                operstate=msg.get("operstate") or "UNKNOWN", master=msg.get("master"),
            )
        for msg in ipr.get_addr(family=socket.AF_INET):
            info = infos.get(msg["index"])
            if info is not None:
                info.addresses.append(f"{msg.get('address')}/{msg['prefixlen']}")
        return sorted(infos.values(), key=lambda i: i.index)

    # --- sysctls and qdiscs -----------------------------------------------------------------
    def write_sysctls(self, namespace: str, settings: list[tuple[str, str]], *,
                      skip_missing: bool = False) -> None:
        """Write /proc/sys/<name> as seen from inside `namespace` (net.* sysctls are per namespace).

        `skip_missing` passes over sysctls that do not exist instead of failing (an interface
        below IPv6's minimum MTU of 1280 has no net.ipv6.conf.<name>: its IPv6 is off already).
        """
        if not settings:
            return
        with self.inside(namespace):
            write_sysctls(settings, where=namespace, skip_missing=skip_missing)

    def add_qdisc(self, namespace: str, ifname: str, kind: str, **params: object) -> None:
        index = self._require_index(namespace, ifname)
        self._run(f"add {kind} qdisc on {namespace}:{ifname}", self.ipr(namespace).tc, "add", kind,
                  index=index, **params)

    def replace_qdisc(self, namespace: str, ifname: str, kind: str, **params: object) -> None:
        """Make `kind` the interface's root qdisc (added, or put in place of the one there)."""
        index = self._require_index(namespace, ifname)
        self._run(f"replace the root qdisc of {namespace}:{ifname} by {kind}", self.ipr(namespace).tc,
                  "replace", kind, index=index, **params)

    def delete_root_qdisc(self, namespace: str, ifname: str) -> bool:
        if not is_mounted_namespace(namespace):
            return False
        index = self.index(namespace, ifname)
        if index is None:
            return False
        try:
            self.ipr(namespace).tc("del", index=index, root=True)
        except NetlinkError:
            return False
        return True

    def qdisc_kinds(self, namespace: str, ifname: str) -> list[str]:
        index = self._require_index(namespace, ifname)
        return [msg.get("TCA_KIND") for msg in self.ipr(namespace).get_qdiscs(index=index)]

    @staticmethod
    def _run(what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except NetlinkError as error:
            raise NetlinkOpError(f"{what}: {error.args[1] if len(error.args) > 1 else error}") from error
        except OSError as error:
            raise NetlinkOpError(f"{what}: {error.strerror or error}") from error
