"""Kernel operations for the lab, over netlink and a few namespace syscalls (no `ip`, no `tc`).

Speed comes from not forking and not waiting: pyroute2's `IPRoute(netns=...)` starts a child
process per socket. Instead the calling thread briefly enters a namespace with setns(2), opens a
netlink socket there (a socket stays bound to the namespace it was created in) and comes back.
New namespaces come from unshare(2) plus a bind mount, the way iproute2 makes them. veth pairs are
created with both ends born in their namespaces, in one request. The bulk requests of `lab up`
(veths, bridges, addresses, links up, routes) go out batched per namespace (`RtnlBatch`); pyroute2
drives the rest (TAPs, qdiscs, dumps) over the same kind of per-namespace socket.

All namespace switching happens on the thread that owns the `Netlink` session, and every switch
returns, in a `finally`, to the namespace the thread came from.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from stack.devices.namespace import NETNS_DIR, namespace_path

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0
IFF_UP = 1

TAG_PREFIX = "nslab:"


def lab_tag(lab: str) -> str:
    """The ifalias every lab interface carries (and the namespace marker on its loopback)."""
    return f"{TAG_PREFIX}{lab}"


class NetlinkOpError(Exception):
    """A kernel operation failed; the message names the object and the kernel's reason."""


_LIBC = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise NetlinkOpError(f"{what}: {os.strerror(code)}")


def list_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def is_mounted_namespace(name: str) -> bool:
    """True when /var/run/netns/<name> is a live namespace (an nsfs bind mount), not a stub file."""
    try:
        st = os.stat(namespace_path(name))
        parent = os.stat(NETNS_DIR)
    except FileNotFoundError:
        return False
    return st.st_dev != parent.st_dev


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
        self._root_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._thread = threading.get_ident()
        self._sockets: dict[str | None, IPRoute] = {}
        self._ns_fds: dict[str, int] = {}
        self._indexes: dict[tuple[str | None, str], int] = {}
        self._raw: dict[str | None, socket.socket] = {}
        self._next_index: dict[str, int] = {}  # namespaces this session created: ifindex to hand out
        self._current: str | None = None  # the namespace this thread is in (None: root)

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
                fd = os.open(namespace_path(namespace), os.O_RDONLY)
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
        _check(_LIBC.setns(target, CLONE_NEWNET), f"enter namespace {namespace or 'root'}")
        self._current = namespace
        try:
            yield
        finally:
            back = self._root_fd if previous is None else self.ns_fd(previous)
            _check(_LIBC.setns(back, CLONE_NEWNET), f"return to namespace {previous or 'root'}")
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
        _ensure_netns_dir()
        path = namespace_path(name)
        if os.path.lexists(path):
            raise NetlinkOpError(f"namespace {name} already exists")
        _check(_LIBC.unshare(CLONE_NEWNET), f"create namespace {name}")
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
            source = b"/proc/thread-self/ns/net"
            _check(_LIBC.mount(source, path.encode(), b"none", MS_BIND, None), f"mount namespace {name}")
            self._ns_fds[name] = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            self._raw[name] = sock
            self._next_index[name] = 2  # lo is 1
        finally:
            _check(_LIBC.setns(self._root_fd, CLONE_NEWNET), "return to the root namespace")

    def namespace_marker(self, name: str) -> str | None:
        """The loopback ifalias of a namespace (the lab's ownership marker), None if unmarked/absent."""
        if not is_mounted_namespace(name):
            return None
        try:
            return self.batch(name).link_alias(1)
        except (NetlinkOpError, OSError):
            return None

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
        fd = self._ns_fds.pop(name, None)
        if fd is not None:
            os.close(fd)
        path = namespace_path(name)
        if not os.path.lexists(path):
            return False
        _LIBC.umount2(path.encode(), MNT_DETACH)
        with suppress(FileNotFoundError):
            os.unlink(path)
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

    def add_tap(self, namespace: str, ifname: str, *, vnet_hdr: bool, mtu: int | None = None) -> None:
        """A persistent TAP (no packet-info header) the stack opens later by name.

        TAP creation is an ioctl on /dev/net/tun that lands in the caller's namespace, which is
        why pyroute2 is called from inside the node's namespace here.
        """
        flags = {"no_pi": True, "one_queue": False, "vnet_hdr": vnet_hdr, "multi_queue": False}
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
            for name, value in settings:
                path = "/proc/sys/" + name.replace(".", "/")
                try:
                    with open(path, "w") as handle:
                        handle.write(f"{value}\n")
                except FileNotFoundError:
                    if skip_missing:
                        continue
                    raise NetlinkOpError(f"sysctl {name} does not exist (in {namespace})") from None
                except OSError as error:
                    raise NetlinkOpError(f"sysctl {name}={value} in {namespace}: {error.strerror}") from None

    def add_qdisc(self, namespace: str, ifname: str, kind: str, **params: object) -> None:
        index = self._require_index(namespace, ifname)
        self._run(f"add {kind} qdisc on {namespace}:{ifname}", self.ipr(namespace).tc, "add", kind,
                  index=index, **params)

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


def _ensure_netns_dir() -> None:
    """Make /var/run/netns a shared mount, as iproute2 does, so the names are seen everywhere."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    if _LIBC.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(_LIBC.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC, None),
           f"bind-mount {NETNS_DIR}")
    _check(_LIBC.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None), f"share {NETNS_DIR}")


def is_stub_file(path: str) -> bool:
    """An empty regular file left where a namespace mount was about to go (crash mid-create)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and not is_mounted_namespace(os.path.basename(path))


@contextmanager
def scratch_namespace() -> Iterator[IPRoute]:
    """Run the block inside a fresh anonymous namespace, with a netlink socket in it.

    Probes use it: nothing they create is visible outside, and the namespace vanishes once the
    thread has left it and the socket is closed. (TAP creation, an ioctl, lands here too.)
    """
    root_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_LIBC.unshare(CLONE_NEWNET), "create a scratch namespace")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
            ipr = IPRoute(fileno=sock.detach())
            try:
                yield ipr
            finally:
                ipr.close()
        finally:
            _check(_LIBC.setns(root_fd, CLONE_NEWNET), "return to the root namespace")
    finally:
        os.close(root_fd)


# --------------------------------------------------------------------------------------------
# Batched rtnetlink: the hot path of `lab up`
# --------------------------------------------------------------------------------------------
# pyroute2 spends about half a millisecond encoding each request through its generic attribute
# machinery, and one more round trip per request. A 100-node lab makes ~1000 requests (links,
# addresses, routes), so the builder packs these few fixed message shapes itself and sends each
# namespace's requests in one datagram, then reads the acknowledgements back. Rare and varied
# requests (TAPs, qdiscs, dumps) keep going through pyroute2.

NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_GATEWAY = 1, 5
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
BATCH_MESSAGES = 256  # per datagram: keeps the acknowledgements well inside the receive buffer
SOCKET_BUFFER = 4 * 1024 * 1024


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + b"\0" * (-length % 4)


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def _ifinfomsg(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def _link_attrs(name: str | None, mtu: int | None, mac: str | None, ns_fd: int | None) -> bytes:
    attrs = b""
    if name is not None:
        attrs += _attr(IFLA_IFNAME, name.encode() + b"\0")
    if mtu is not None:
        attrs += _attr(IFLA_MTU, struct.pack("I", mtu))
    if mac is not None:
        attrs += _attr(IFLA_ADDRESS, _mac(mac))
    if ns_fd is not None:
        attrs += _attr(IFLA_NET_NS_FD, struct.pack("I", ns_fd))
    return attrs


@dataclass
class _Request:
    kind: int
    flags: int
    body: bytes
    what: str  # names the object in an error message


class RtnlBatch:
    """Requests for one namespace, sent together; `commit()` raises on the first refused one."""

    def __init__(self, sock: socket.socket, namespace: str | None) -> None:
        self.sock = sock
        self.namespace = namespace
        self.requests: list[_Request] = []

    def __len__(self) -> int:
        return len(self.requests)

    def new_veth(self, a: tuple[int, str, int | None], b: tuple[int, str, int | None], *, mtu: int,
                 mac_a: str | None, mac_b: str | None, what: str) -> None:
        """a, b: (ifindex to assign, name, namespace fd or None for here)."""
        peer = _ifinfomsg(b[0]) + _link_attrs(b[1], mtu, mac_b, b[2])
        info = _attr(IFLA_INFO_KIND, b"veth\0") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer))
        body = _ifinfomsg(a[0]) + _link_attrs(a[1], mtu, mac_a, a[2]) + _attr(IFLA_LINKINFO, info)
        self.requests.append(_Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, what))

    def new_bridge(self, index: int, name: str, mtu: int | None, what: str) -> None:
        """STP off and forward delay 0: ports forward the moment they are up."""
        data = _attr(IFLA_BR_STP_STATE, struct.pack("I", 0))
        data += _attr(IFLA_BR_FORWARD_DELAY, struct.pack("I", 0))
        info = _attr(IFLA_INFO_KIND, b"bridge\0") + _attr(IFLA_INFO_DATA, data)
        body = _ifinfomsg(index) + _link_attrs(name, mtu, None, None) + _attr(IFLA_LINKINFO, info)
        self.requests.append(_Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, what))

    def set_link(self, index: int, *, alias: str | None, master: int | None, up: bool, what: str) -> None:
        attrs = b""
        if alias is not None:
            attrs += _attr(IFLA_IFALIAS, alias.encode())
        if master is not None:
            attrs += _attr(IFLA_MASTER, struct.pack("I", master))
        body = _ifinfomsg(index, IFF_UP if up else 0, IFF_UP) + attrs
        self.requests.append(_Request(RTM_NEWLINK, 0, body, what))

    def add_address(self, index: int, address: IPv4Interface, what: str) -> None:
        packed = address.ip.packed
        body = struct.pack("BBBBI", socket.AF_INET, address.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
        self.requests.append(_Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, what))

    def add_route(self, destination: IPv4Network, gateway: str, what: str) -> None:
        body = struct.pack("BBBBBBBBI", socket.AF_INET, destination.prefixlen, 0, 0, RT_TABLE_MAIN,
                           RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        if destination.prefixlen:
            body += _attr(RTA_DST, destination.network_address.packed)
        body += _attr(RTA_GATEWAY, socket.inet_aton(gateway))
        self.requests.append(_Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, what))

    def link_alias(self, index: int) -> str | None:
        """The ifalias of one interface (a single RTM_GETLINK, answered at once)."""
        self.sock.send(struct.pack("IHHII", 16 + 16, RTM_GETLINK, NLM_F_REQUEST, 1, 0) + _ifinfomsg(index))
        data = self.sock.recv(SOCKET_BUFFER)
        length, kind = struct.unpack_from("IH", data)
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("i", data, 16)
            where = self.namespace or "root"
            raise NetlinkOpError(f"read interface {index} (in {where}): {os.strerror(-code)}")
        offset = 32  # header + ifinfomsg
        while offset + 4 <= length:
            size, attr = struct.unpack_from("HH", data, offset)
            if size < 4:
                break
            if attr == IFLA_IFALIAS:
                return data[offset + 4:offset + size].rstrip(b"\0").decode(errors="replace")
            offset += (size + 3) & ~3
        return None

    def commit(self) -> None:
        requests, self.requests = self.requests, []
        for start in range(0, len(requests), BATCH_MESSAGES):
            self._send_and_check(requests[start:start + BATCH_MESSAGES])

    def _send_and_check(self, requests: list[_Request]) -> None:
        datagram = bytearray()
        for seq, request in enumerate(requests, start=1):
            datagram += struct.pack("IHHII", 16 + len(request.body), request.kind,
                                    NLM_F_REQUEST | NLM_F_ACK | request.flags, seq, 0)
            datagram += request.body
        self.sock.send(datagram)
        pending = len(requests)
        first_error: tuple[int, int] | None = None
        while pending:
            data = self.sock.recv(SOCKET_BUFFER)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, seq, _ = struct.unpack_from("IHHII", data, offset)
                if kind == NLMSG_ERROR:
                    pending -= 1
                    (code,) = struct.unpack_from("i", data, offset + 16)
                    if code and (first_error is None or seq < first_error[0]):
                        first_error = (seq, -code)
                offset += max((length + 3) & ~3, 16)
        if first_error is not None:
            seq, code = first_error
            where = self.namespace or "root"
            raise NetlinkOpError(f"{requests[seq - 1].what} (in {where}): {os.strerror(code)}")


def raw_rtnl_socket() -> socket.socket:
    """A bare rtnetlink socket in the calling thread's current namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    sock.bind((0, 0))
    return sock
