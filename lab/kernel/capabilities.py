"""What this machine's kernel and this process can do for a lab: each check says ok or missing, and why.

Probes are real where that is cheap: a scratch namespace (anonymous, gone when its socket closes)
is asked to hold a veth pair, a bridge, a TAP, a tbf and a netem qdisc, exactly what `lab up` would
ask. `lab up` asks for the checks it needs before it creates anything; `lab doctor` shows them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from lab.kernel.errors import NetlinkOpError
from lab.kernel.namespaces import scratch_namespace

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
MIN_PYROUTE2 = (0, 9)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    required: bool  # a missing required capability makes `lab up` impossible (exit 2)
    detail: str  # what was found, or what is missing and what that means

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "missing" if self.required else "warning"


def _capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges() -> Check:
    caps = _capabilities()
    admin = bool(caps & (1 << CAP_NET_ADMIN)) and bool(caps & (1 << CAP_SYS_ADMIN))
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    if admin:
        return Check("privileges", True, True, f"{who} with CAP_NET_ADMIN and CAP_SYS_ADMIN")
    return Check("privileges", False, True,
                 f"{who} lacks CAP_NET_ADMIN/CAP_SYS_ADMIN: namespaces and links cannot be created "
                 "(run as root)")


def check_tun_device() -> Check:
    path = "/dev/net/tun"
    if not os.path.exists(path):
        return Check("/dev/net/tun", False, True, "absent: pystack nodes need a TAP device (modprobe tun)")
    try:
        os.close(os.open(path, os.O_RDWR))
    except OSError as error:
        return Check("/dev/net/tun", False, True, f"cannot open: {error.strerror}; pystack nodes need it")
    return Check("/dev/net/tun", True, True, "opens read-write")


def probe(name: str, required: bool, meaning: str, action: Callable[[IPRoute], str]) -> Check:
    try:
        with scratch_namespace() as ipr:
            detail = action(ipr)
    except (NetlinkError, NetlinkOpError, OSError) as error:
        reason = error.args[1] if isinstance(error, NetlinkError) and len(error.args) > 1 else error
        return Check(name, False, required, f"unavailable ({reason}): {meaning}")
    return Check(name, True, required, detail)


def make_veth(ipr: IPRoute) -> str:
    ipr.link("add", ifname="probe0", kind="veth", peer="probe1")
    return "veth pairs can be created"


def make_bridge(ipr: IPRoute) -> str:
    ipr.link("add", ifname="probebr", kind="bridge")
    return "bridges can be created"


def make_tap(ipr: IPRoute) -> str:
    flags = {"no_pi": True, "one_queue": False, "vnet_hdr": True, "multi_queue": False}
    ipr.link("add", ifname="probetap", kind="tuntap", mode="tap", ifr=flags)
    if not ipr.link_lookup(ifname="probetap"):
        raise OSError("the TAP did not appear in its namespace")
    return "persistent TAP devices (with IFF_VNET_HDR) can be created"


def make_multi_queue_tap(ipr: IPRoute) -> str:
    flags = {"no_pi": True, "one_queue": False, "vnet_hdr": True, "multi_queue": True}
    ipr.link("add", ifname="probemq", kind="tuntap", mode="tap", ifr=flags)
    if not ipr.link_lookup(ifname="probemq"):
        raise OSError("the multi-queue TAP did not appear in its namespace")
    return "multi-queue TAP devices (IFF_MULTI_QUEUE) can be created"


def qdisc_probe(kind: str, params: dict) -> Callable[[IPRoute], str]:
    def action(ipr: IPRoute) -> str:
        ipr.link("add", ifname="probe0", kind="veth", peer="probe1")
        index = ipr.link_lookup(ifname="probe0")[0]
        ipr.tc("add", kind, index=index, **params)
        return f"sch_{kind} qdisc can be attached"
    return action


def netem_check() -> Check:
    """sch_netem: kernel-side impairment of links between kernel nodes (optional: the lab impairs in
    userspace without it)."""
    found = probe("sch_netem", False, "", qdisc_probe("netem", {"delay": 1000}))
    if found.ok:
        return Check("sch_netem", True, False, "sch_netem qdisc can be attached: links between kernel nodes "
                     "are impaired by netem; links to pystack nodes by the stack")
    reason = found.detail.split(":", 1)[0]
    return Check("sch_netem", False, False,
                 f"{reason}: links between kernel nodes are impaired by the lab's forwarder (a userspace "
                 "process in the link's own namespace), links to pystack nodes by the stack")


def netem_available() -> bool:
    if Path("/sys/module/sch_netem").exists():
        return True
    return netem_check().ok


ALLOWED_CONGESTION = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
AVAILABLE_CONGESTION = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")


def namespace_congestion_problem(algorithm: str) -> str | None:
    """Why a new namespace cannot default to `algorithm` (net.ipv4.tcp_congestion_control), or None.

    Outside the host's own namespace the kernel lets the default be only an algorithm the host lists in
    net.ipv4.tcp_allowed_congestion_control (it answers EPERM otherwise), a list only the host changes.
    A socket of a process with CAP_NET_ADMIN may still pick any available one with TCP_CONGESTION."""
    available = AVAILABLE_CONGESTION.read_text().split() if AVAILABLE_CONGESTION.exists() else []
    allowed = ALLOWED_CONGESTION.read_text().split() if ALLOWED_CONGESTION.exists() else []
    if algorithm in allowed:
        return None
    if algorithm not in available:
        return (f"{algorithm!r} is not available in this kernel (available: {' '.join(available) or 'none'}; "
                f"a module may need loading: modprobe tcp_{algorithm})")
    return (f"a namespace may only default to an algorithm the host allows "
            f"(net.ipv4.tcp_allowed_congestion_control: {' '.join(allowed)}); allow {algorithm} on the host "
            f"(sysctl -w net.ipv4.tcp_allowed_congestion_control='{' '.join([*allowed, algorithm])}'), "
            f"or set it per socket with TCP_CONGESTION (as `lab bench` does)")


def check_pyroute2() -> Check:
    try:
        found = version("pyroute2")
    except PackageNotFoundError:
        return Check("pyroute2", False, True, "not installed: the lab talks netlink through it")
    parts = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    if parts < MIN_PYROUTE2:
        return Check("pyroute2", False, True, f"{found} is older than 0.9 (IPRoute(fileno=...) is needed)")
    return Check("pyroute2", True, True, found)


def check_tracefs() -> Check:
    for path in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if Path(path, "events").is_dir():
            return Check("tracefs", True, False, f"mounted at {path}")
    filesystems = Path("/proc/filesystems").read_text()
    if "tracefs" in filesystems:
        return Check("tracefs", True, False,
                     "supported, not mounted (mount -t tracefs nodev /sys/kernel/tracing to trace "
                     "kernel TCP)")
    return Check("tracefs", False, False, "not in this kernel: kernel-side TCP tracepoints are unavailable")
