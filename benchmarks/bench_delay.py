"""Goodput over a delayed path (5 ms each way, 10 ms RTT, no loss): the stack each way next to the kernel.

Root only. Two labs, each up only while it is measured:

    <name>s:  h1 (kernel) --5 ms each way, on the stack's TAP path-- s1 (pystack, TAP offload)
    <name>k:  n1 (kernel) --5 ms each way, the lab's link forwarder-- n2 (kernel)

A delay-only profile carries TSO super-segments whole (`stack.devices.impaired_tap`), so the stack's
figure is what its TCP does at 10 ms RTT, not the cost of cutting 64 KB segments into packets in Python.
Each stack transfer is SHA-256 checked at both ends; the kernel-to-kernel reference is hashed the same
way. Every kernel sender uses CUBIC like the stack. Both kernel ends of the reference sit behind the
lab's forwarder (this kernel has no netem), itself Python: its CPU share is printed, so a reader sees
when the reference was bound by it.

    .venv/bin/python benchmarks/bench_delay.py [--bytes N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.build.pids import process_cpu_seconds
from lab.experiments.bulk import kernel_to_stack, kernel_transfer, stack_to_kernel
from lab.experiments.running import lab_for_experiment
from lab.kernel.transfers import pattern_sha256
from lab.topology import plan_from_text

STACK_LAB = """
name: x
nodes:
  h1: {kind: kernel}
  s1: {kind: pystack, apps: [{app: discard, port: 9}]}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
    impair: {h1->s1: {delay: 5ms}, s1->h1: {delay: 5ms}}
"""
KERNEL_LAB = """
name: x
nodes:
  n1: {kind: kernel}
  n2: {kind: kernel}
links:
  - endpoints: [n1:eth0, n2:eth0]
    subnet: 10.0.0.0/24
    impair: {n1->n2: {delay: 5ms}, n2->n1: {delay: 5ms}}
"""
CONGESTION = "cubic"


def checked(figures: dict, total: int, what: str) -> float:
    if figures.get("error") or figures["received"] != total or figures["sha256"] != pattern_sha256(total):
        raise SystemExit(f"bench_delay: {what}: transfer of {total} B failed ({figures.get('error')})")
    return float(figures["goodput_gbps"])


def cpu_share(pid: int, before: float, moved: dict) -> float:
    """The stack process's CPU during a transfer, as a share of one core."""
    return ((process_cpu_seconds(pid) or 0.0) - before) / max(float(moved["seconds"]), 1e-3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=400 << 20, help="bytes per transfer (default 400 MiB)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    parser.add_argument("--name", default=f"bd{os.getpid() % 100000}", help="prefix of the labs")
    args = parser.parse_args()
    if not 1 << 20 <= args.bytes <= 4 << 30:
        print(f"bench_delay: --bytes: expected 1048576 to 4294967296, got {args.bytes}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench_delay: needs root (namespaces, TAP)", file=sys.stderr)
        return 2
    total = args.bytes
    figures: dict[str, float] = {}
    plan = plan_from_text(STACK_LAB, source="<bench_delay stack lab>", name=f"{args.name}s")
    with lab_for_experiment(plan, None) as lab:
        with lab.stack("s1") as control:
            pid = int(control.hello()["pid"])
        before = process_cpu_seconds(pid) or 0.0
        moved = kernel_to_stack(lab, "h1", "s1", 7611, total, congestion=CONGESTION)
        figures["kernel_to_stack_gbps"] = checked(moved, total, "kernel->stack")
        figures["kernel_to_stack_stack_cpu_share"] = cpu_share(pid, before, moved)
        before = process_cpu_seconds(pid) or 0.0
        moved = stack_to_kernel(lab, "h1", "s1", 7612, total)
        figures["stack_to_kernel_gbps"] = checked(moved, total, "stack->kernel")
        figures["stack_to_kernel_stack_cpu_share"] = cpu_share(pid, before, moved)
        with lab.stack("s1") as control:
            counters = control.stats()["counters"]
        figures["stack_segmented_in_software"] = counters.get("TapTxSegmentedInSoftware", 0)
        figures["stack_queue_drops"] = (counters.get("ImpairEgressQueueDrops", 0)
                                        + counters.get("ImpairIngressQueueDrops", 0))
    plan = plan_from_text(KERNEL_LAB, source="<bench_delay kernel lab>", name=f"{args.name}k")
    with lab_for_experiment(plan, None) as lab:
        moved = kernel_transfer(lab.plan, total, congestion=CONGESTION)
        figures["kernel_to_kernel_gbps"] = checked(moved, total, "kernel->kernel")
    reference = figures["kernel_to_kernel_gbps"]
    for key in ("kernel_to_stack", "stack_to_kernel"):
        figures[f"{key}_ratio"] = round(figures[f"{key}_gbps"] / reference, 3) if reference else 0.0
    if args.json:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))
        return 0
    print(f"delay 5 ms each way (10 ms RTT), {total >> 20} MiB per transfer, cubic, SHA-256 checked")
    print(f"kernel->kernel (via the lab's forwarder): {reference:.3f} Gbit/s")
    for key in ("kernel_to_stack", "stack_to_kernel"):
        print(f"{key.replace('_', ' ').replace(' to ', '->'):16} {figures[key + '_gbps']:.3f} Gbit/s "
              f"ratio {figures[key + '_ratio']:.3f}  stack CPU {figures[key + '_stack_cpu_share']:.2f} core")
    print(f"frames cut in software {figures['stack_segmented_in_software']}, queue drops "
          f"{figures['stack_queue_drops']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
