"""Entering a network namespace: the one implementation the stack and the lab share.

A device such as the lab's TAP lives in a node's namespace and must be opened there; a kernel socket or
netlink socket answers for the namespace it was created in.  `entered(path)` moves the calling thread into
the namespace at `path` for the body of a `with` block and back to where the thread was, so it nests and
is safe off the main thread (setns() changes only the calling thread; the way back is the thread's own
`/proc/thread-self/ns/net`, not the process's).  File descriptors opened inside stay bound to that
namespace after the block.  `move_to(path)` enters for good: a child process between fork and exec.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

NETNS_DIR = "/var/run/netns"  # where iproute2, pyroute2 and the lab bind-mount named namespaces
CLONE_NEWNET = 0x40000000
THREAD_NAMESPACE = "/proc/thread-self/ns/net"
_LIBC = ctypes.CDLL(None, use_errno=True)


def namespace_path(name: str) -> str:
    """The bind mount of the named namespace `name`."""
    return os.path.join(NETNS_DIR, name)


def setns(fd: int, what: str) -> None:
    """Move the calling thread into the network namespace open as `fd`; OSError names `what` failed."""
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def open_namespace(path: str) -> int:
    """A descriptor of the namespace at `path`; FileNotFoundError says which namespace is missing."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise FileNotFoundError(f"network namespace {path} does not exist") from None


@contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the body with this thread in the namespace at `path`, then return it where it was."""
    home = os.open(THREAD_NAMESPACE, os.O_RDONLY)
    try:
        target = open_namespace(path)
        try:
            setns(target, f"enter network namespace {path}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(home, f"return from network namespace {path}")  # a thread left inside would leak
    finally:
        os.close(home)


def move_to(path: str) -> None:
    """Move the calling thread into the namespace at `path` for good (a child process before exec)."""
    target = open_namespace(path)
    try:
        setns(target, f"enter network namespace {path}")
    finally:
        os.close(target)
