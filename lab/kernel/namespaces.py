"""Named network namespaces: where they live, making and removing them, and running code inside one.

Entering a namespace is `stack.devices.namespace` (`entered`, `setns`): the one implementation the
stack and the lab share. This module adds what only the lab does: a new namespace comes from
unshare(2) plus a bind mount of the thread's namespace under /var/run/netns, the way iproute2 makes
them, and goes away by unmounting that name (the kernel destroys it once nothing holds it).
"""

from __future__ import annotations

import ctypes
import os
import socket
import stat
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

from pyroute2 import IPRoute

from lab.kernel.errors import NetlinkOpError
from stack.devices.namespace import NETNS_DIR, THREAD_NAMESPACE, entered, move_to, namespace_path, setns

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0
_LIBC = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        raise NetlinkOpError(f"{what}: {os.strerror(ctypes.get_errno())}")


def switch_to(fd: int, what: str) -> None:
    """Move the calling thread into the namespace open as `fd` (NetlinkOpError if refused)."""
    try:
        setns(fd, what)
    except OSError as error:
        raise NetlinkOpError(error.strerror or str(error)) from None


def unshare_network(what: str) -> None:
    """Move the calling thread into a new, empty network namespace."""
    _check(_LIBC.unshare(CLONE_NEWNET), what)


def mount(source: str, target: str, fstype: str, flags: int, what: str) -> None:
    """mount(2); NetlinkOpError names `what` and the kernel's reason."""
    _check(_LIBC.mount(source.encode(), target.encode(), fstype.encode(), flags, None), what)


def publish_thread_namespace(path: str, what: str) -> None:
    """Bind-mount the calling thread's namespace at `path` (an existing empty file): it gets a name."""
    mount(THREAD_NAMESPACE, path, "none", MS_BIND, what)


def unpublish(path: str) -> None:
    """Unmount and unlink a namespace name (a missing one is no error)."""
    _LIBC.umount2(path.encode(), MNT_DETACH)
    with suppress(FileNotFoundError):
        os.unlink(path)


def ensure_netns_dir() -> None:
    """Make /var/run/netns a shared mount, as iproute2 does, so the names are seen everywhere."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    if _LIBC.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    mount(NETNS_DIR, NETNS_DIR, "none", MS_BIND | MS_REC, f"bind-mount {NETNS_DIR}")
    mount("", NETNS_DIR, "none", MS_SHARED | MS_REC, f"share {NETNS_DIR}")


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


def is_stub_file(path: str) -> bool:
    """An empty regular file left where a namespace mount was about to go (crash mid-create)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and not is_mounted_namespace(os.path.basename(path))


@contextmanager
def inside_namespace(namespace: str) -> Iterator[None]:
    """Run the block with the calling thread in `namespace`, then return it where it was."""
    with entered(namespace_path(namespace)):
        yield


def popen_inside(namespace: str, argv: Sequence[str], **popen_options: object) -> subprocess.Popen:
    """Start a program inside `namespace` (the child enters it between fork and exec)."""
    path = namespace_path(namespace)
    return subprocess.Popen(list(argv), preexec_fn=lambda: move_to(path), **popen_options)  # type: ignore[call-overload]


def run_inside(namespace: str, argv: Sequence[str], **run_options: object) -> subprocess.CompletedProcess:
    """Run a program inside `namespace` and wait for it (`subprocess.run`'s options, check off)."""
    path = namespace_path(namespace)
    return subprocess.run(list(argv), preexec_fn=lambda: move_to(path), check=False,  # type: ignore[call-overload]
                          **run_options)


@contextmanager
def scratch_namespace() -> Iterator[IPRoute]:
    """Run the block inside a fresh anonymous namespace, with a netlink socket in it.

    Probes use it: nothing they create is visible outside, and the namespace vanishes once the
    thread has left it and the socket is closed. (TAP creation, an ioctl, lands here too.)
    """
    home = os.open(THREAD_NAMESPACE, os.O_RDONLY)
    try:
        unshare_network("create a scratch namespace")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
            ipr = IPRoute(fileno=sock.detach())
            try:
                yield ipr
            finally:
                ipr.close()
        finally:
            switch_to(home, "return to the root namespace")
    finally:
        os.close(home)
