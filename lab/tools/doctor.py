"""`lab doctor`: can this machine run a lab? The checks of `lab.kernel.capabilities`, in one report."""

from __future__ import annotations

from dataclasses import asdict

from lab.kernel.capabilities import (
    Check,
    check_privileges,
    check_pyroute2,
    check_tracefs,
    check_tun_device,
    make_bridge,
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
            probe("sch_tbf", False, "links with a `rate` between kernel nodes are refused",
                  qdisc_probe("tbf", {"rate": "10mbit", "burst": 16000, "latency": "50ms"})),
            netem_check(),
        ]
    checks.append(check_tracefs())
    return checks


def report(checks: list[Check]) -> dict:
    return {"ok": all(c.ok for c in checks if c.required),
            "checks": [asdict(c) | {"status": c.status} for c in checks]}
