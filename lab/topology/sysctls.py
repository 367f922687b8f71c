"""Which sysctls a node may set: only those that live in its own network namespace.

A sysctl such as ``net.ipv4.tcp_mem`` is global: writing it from one namespace would change the
whole machine (or fail), so a lab must not touch it. The tables below were measured on this
machine's kernel (6.18) by listing ``/proc/sys/net`` in the initial namespace and in a fresh one
(``unshare -n``): the fresh one shows exactly the per-namespace sysctls. Subtrees are allowed
whole, minus the global leftovers inside them; ``conf.<if>`` and ``neigh.<if>`` must name an
interface the node has (or ``all``, ``default``, ``lo``).
"""

from __future__ import annotations

import re

_NAME = re.compile(r"net(\.[A-Za-z0-9_-]+)+")

# Subtrees of /proc/sys/net that exist per namespace.
_NAMESPACED_SUBTREES = ("ipv4", "ipv6", "netfilter", "mptcp", "unix", "bridge")
# Of net.core, only these are per namespace.
_NAMESPACED_CORE = frozenset(
    {
        "optmem_max",
        "rmem_default",
        "rmem_max",
        "rps_default_mask",
        "somaxconn",
        "tstamp_allow_data",
        "txrehash",
        "wmem_default",
        "wmem_max",
        "xfrm_acq_expires",
        "xfrm_aevent_etime",
        "xfrm_aevent_rseqth",
        "xfrm_larval_drop",
    }
)
# Global sysctls inside the otherwise per-namespace subtrees (prefix match on the dotted name).
_GLOBAL_PREFIXES = (
    "net.ipv4.cipso_",
    "net.ipv4.fib_sync_mem",
    "net.ipv4.inet_peer_",
    "net.ipv4.ipfrag_secret_interval",
    "net.ipv4.route.",
    "net.ipv4.tcp_available_ulp",
    "net.ipv4.tcp_low_latency",
    "net.ipv4.tcp_max_orphans",
    "net.ipv4.tcp_mem",
    "net.ipv4.udp_mem",
    "net.ipv6.calipso_",
    "net.ipv6.ip6frag_secret_interval",
    "net.ipv6.mld_max_msf",
    "net.ipv6.mld_qrv",
    "net.netfilter.nf_log_all_netns",
)
_PER_INTERFACE = frozenset({"conf", "neigh"})
_ALWAYS_PRESENT_INTERFACES = ("all", "default", "lo")


def check_sysctl_name(name: str, interfaces: tuple[str, ...]) -> str | None:
    """None when ``name`` may be set in a node with ``interfaces``; else what was expected."""
    if not _NAME.fullmatch(name):
        return "expected a dotted sysctl name under net., like net.ipv4.ip_forward"
    parts = name.split(".")
    subtree = parts[1]
    if subtree == "core":
        if len(parts) == 3 and parts[2] in _NAMESPACED_CORE:
            return None
        return f"expected a per-namespace net.core sysctl ({', '.join(sorted(_NAMESPACED_CORE))})"
    if subtree not in _NAMESPACED_SUBTREES or len(parts) < 3:
        allowed = ", ".join(f"net.{tree}." for tree in ("core", *_NAMESPACED_SUBTREES))
        return f"expected a sysctl that exists per network namespace (under {allowed})"
    if name.startswith(_GLOBAL_PREFIXES):
        return "expected a per-namespace sysctl (this one is global to the machine)"
    if subtree in ("ipv4", "ipv6") and parts[2] in _PER_INTERFACE:
        known = (*_ALWAYS_PRESENT_INTERFACES, *interfaces)
        if len(parts) < 5 or parts[3] not in known:
            return (
                f"expected net.{subtree}.{parts[2]}.<interface>.<setting> with an interface of this node "
                f"({', '.join(known)})"
            )
    return None
