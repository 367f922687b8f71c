"""Sysctls as a namespace sees them: /proc/sys/net/* belongs to the calling thread's namespace."""

from __future__ import annotations

from pathlib import Path

from lab.kernel.errors import NetlinkOpError
from lab.kernel.namespaces import inside_namespace

PROC_SYS = Path("/proc/sys")


def sysctl_path(name: str) -> Path:
    """`net.ipv4.ip_forward` -> /proc/sys/net/ipv4/ip_forward."""
    return PROC_SYS / name.replace(".", "/")


def write_sysctls(settings: list[tuple[str, str]], *, where: str, skip_missing: bool = False) -> None:
    """Write each (name, value) in the calling thread's namespace; `where` names it in errors.

    `skip_missing` passes over sysctls that do not exist instead of failing (an interface
    below IPv6's minimum MTU of 1280 has no net.ipv6.conf.<name>: its IPv6 is off already).
    """
    for name, value in settings:
        try:
            with open(sysctl_path(name), "w") as handle:
                handle.write(f"{value}\n")
        except FileNotFoundError:
            if skip_missing:
                continue
            raise NetlinkOpError(f"sysctl {name} does not exist (in {where})") from None
        except OSError as error:
            raise NetlinkOpError(f"sysctl {name}={value} in {where}: {error.strerror}") from None


def read_sysctl(namespace: str, name: str) -> str | None:
    """A sysctl's value as `namespace` sees it, or None where the kernel lacks it."""
    with inside_namespace(namespace):
        try:
            return sysctl_path(name).read_text().strip()
        except FileNotFoundError:
            return None


def swap_sysctl(namespace: str, name: str, value: str) -> str | None:
    """Set a sysctl inside `namespace`; its previous value, or None (nothing written) where the kernel
    lacks it."""
    path = sysctl_path(name)
    with inside_namespace(namespace):
        try:
            previous = path.read_text().strip()
        except FileNotFoundError:
            return None
        path.write_text(value)
    return previous
