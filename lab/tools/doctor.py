"""`lab doctor`: can this machine run a lab? The checks of `lab.kernel.capabilities`, in one report."""

from __future__ import annotations

from dataclasses import asdict

from lab.build.processes import FORWARDER_MODULE
from lab.kernel.capabilities import (
    Check,
    check_privileges,
    check_pyroute2,
    check_tracefs,
    check_tun_device,
    make_bridge,
    make_multi_queue_tap,
    make_tap,
    make_veth,
    netem_check,
    probe,
    qdisc_probe,
)


def run_checks() -> list[Check]:
    privileges = check_privileges()
    checks = [privileges, check_tun_device(), check_pyroute2()]
    if privileges.ok:
        checks += [
            probe("veth", True, "kernel nodes cannot be linked", make_veth),
            probe("bridge", True, "pystack nodes and LANs need a bridge", make_bridge),
            probe("tun/tap", True, "pystack nodes cannot get their TAP", make_tap),
            probe("multi-queue tap", False, "pystack nodes with `workers` above 1 cannot get their TAP",
                  make_multi_queue_tap),
            probe("sch_tbf", False, "links with a `rate` between kernel nodes are refused",
                  qdisc_probe("tbf", {"rate": "10mbit", "burst": 16000, "latency": "50ms"})),
        ]
        netem = netem_check()
        checks += [netem, impairment_in_use(netem)]
    checks.append(check_tracefs())
    return checks


def impairment_in_use(netem: Check) -> Check:
    """Which mechanism impairs a link between kernel nodes here (`lab up` makes the same choice)."""
    if netem.ok:
        return Check("kernel link impairment", True, False, "netem (sch_netem qdiscs)")
    return Check("kernel link impairment", True, False,
                 f"forwarder (python -m {FORWARDER_MODULE} in the link's namespace; no sch_netem)")


def report(checks: list[Check]) -> dict:
    return {"ok": all(c.ok for c in checks if c.required),
            "checks": [asdict(c) | {"status": c.status} for c in checks]}
