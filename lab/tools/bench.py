"""`lab bench`: the stack's goodput and accept rate next to the kernel's, measured in one run;
`lab bench up`: the times of `lab up` and `lab down` for chains of kernel nodes (`bench_chains`).

Three labs, each up only while it is measured (and always taken down):
- `<name>o`: the pair topology (kernel h1, stack s1 with TAP offload: 64 KB TSO segments);
- `<name>p`: the same with `offload: false` (plain TAP: 1514-byte frames, merged per read
  batch and cut from super-segments in Python: software GRO and GSO);
- `<name>ok`: two kernel nodes on a veth link of the same MTU, for kernel-to-kernel figures
  (made by `lab.experiments.bulk.kernel_to_kernel`).

Goodput: one bulk transfer per direction, sized from a short calibration so it lasts about
`seconds`, SHA-256 checked (a wrong digest fails the bench rather than reporting a speed).
Accept rate: C client threads (`build/connload`, see `lab.tools.accept_rate`) in a kernel namespace
open and close connections (connect, close: handshake plus FIN exchange) for `seconds` against the
stack's `discard` listener, then the same clients against a C kernel listener in the kernel pair; each
rate comes with the CPU share of both sides and the side that was CPU-bound.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from statistics import median
from typing import Any, NamedTuple

from lab.build import builder
from lab.build.pids import (
    machine_busy_seconds,
    process_cpu_seconds,
    process_peak_rss_bytes,
    thread_cpu_seconds,
)
from lab.experiments.base import ExperimentError
from lab.experiments.bulk import kernel_pair, kernel_to_stack, kernel_transfer, stack_to_kernel
from lab.experiments.running import ProgressFn, RunningLab, lab_for_experiment
from lab.kernel.sysctls import read_sysctl
from lab.kernel.transfers import pattern_sha256
from lab.tools.accept_rate import bound_by, kernel_accept_figures, stack_accept_figures
from lab.topology import DEFAULT_TOPOLOGY, plan_from_data
from lab.topology.chain import chain_plan
from lab.topology.plan import LabPlan

BENCH_TARGETS = {  # the project's targets on the reference machine (2 cores): (comparison, value)
    "kernel_to_stack_ratio": (">=", 0.3), "stack_to_kernel_ratio": (">=", 0.4),
    "kernel_to_stack_gbps_no_offload": (">=", 0.3), "stack_to_kernel_gbps_no_offload": (">=", 0.3),
    "stack_accept_cps": (">=", 6000.0), "stack_accept_ratio": (">=", 0.2),
    "stack_cpu_us_per_connection": ("<=", 150.0),
}
CALIBRATION_BYTES = 32 << 20
MAX_TRANSFER_BYTES = 4 << 30
ACCEPT_CLIENTS = 4
ACCEPT_PORT = 7500
PYPY_WARMUP_SECONDS = 6.0  # the accept rate of a PyPy node levels off after about 6 s of load
BULK_PORT = 7510


def _no_progress(step: str) -> None:
    return None


class BenchFailed(ExperimentError):
    """A measurement went wrong (a digest differed, a transfer failed): no figure is reported."""

    exit_code = 1


def bench_name() -> str:
    return f"bn{os.getpid() % 100000}"


def pair_plan(name: str, *, offload: bool, python: str = "cpython") -> LabPlan:
    """The default topology named `name`, its stack node with or without TAP offload, under `python`."""
    import yaml

    document = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    document["name"] = name
    for node in document["nodes"].values():
        if node.get("kind") == "pystack":
            node["offload"] = offload
            node["python"] = python
    return plan_from_data(document, source=str(DEFAULT_TOPOLOGY))


def warmup_seconds(python: str) -> float:
    """How long a load runs unmeasured before its measurement: PyPy's JIT compiles the stack's hot paths
    in the first seconds of a load (its connection rate doubles from the first 3 s to the next), CPython
    has nothing to warm."""
    return PYPY_WARMUP_SECONDS if python == "pypy" else 0.0


def measure_goodput(lab: RunningLab, seconds: float, congestion: str, stack_pid: int, *,
                    warmup: bool = False, label: str = "") -> dict[str, Any]:
    """`kernel_to_stack_gbps<label>` and `stack_to_kernel_gbps<label>`, each from a transfer sized to
    last about `seconds`; the kernel sender uses `congestion` (the stack's algorithm: like with like).
    `warmup`: one unmeasured transfer of the same size first (a JIT's warm-up). Each direction also
    says who used the CPU during its measured transfer, the stack being process `stack_pid`
    (`<direction><label>_` and the keys of `transfer_cpu_figures`)."""
    kernel, stack = lab.kernel_and_stack()

    def to_stack(total: int) -> dict[str, Any]:
        return kernel_to_stack(lab, kernel, stack, BULK_PORT, total, congestion=congestion)

    def from_stack(total: int) -> dict[str, Any]:
        return stack_to_kernel(lab, kernel, stack, BULK_PORT + 1, total)

    figures: dict[str, Any] = {}
    for direction, transfer in (("kernel_to_stack", to_stack), ("stack_to_kernel", from_stack)):
        probe = _checked(transfer(CALIBRATION_BYTES), CALIBRATION_BYTES)
        rate = CALIBRATION_BYTES / max(probe["seconds"], 1e-3)
        total = int(min(MAX_TRANSFER_BYTES, max(CALIBRATION_BYTES, rate * seconds)))
        if warmup:
            _checked(transfer(total), total)
        before = CpuSnapshot.now(stack_pid)
        figures[f"{direction}_gbps{label}"] = _checked(transfer(total), total)["goodput_gbps"]
        cpu = transfer_cpu_figures(before, CpuSnapshot.now(stack_pid))
        figures.update({f"{direction}{label}_{key}": value for key, value in cpu.items()})
    return figures


class CpuSnapshot(NamedTuple):
    """CPU seconds used so far, read together at one moment of a transfer."""

    wall: float
    stack_thread: float  # the stack process's main thread: the stack itself
    stack_process: float  # every thread of it, its hashers included
    lab: float  # this process, which holds the kernel's end of the transfer
    machine: float  # every core's busy time, the kernel's packet work included

    @classmethod
    def now(cls, stack_pid: int) -> CpuSnapshot:
        stack_thread, stack_process = thread_cpu_seconds(stack_pid), process_cpu_seconds(stack_pid)
        if stack_thread is None or stack_process is None:
            raise BenchFailed(f"bench: the stack process (pid {stack_pid}) is gone")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(time.monotonic(), stack_thread, stack_process, usage.ru_utime + usage.ru_stime,
                   machine_busy_seconds())


def transfer_cpu_figures(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float | str]:
    """Who used the CPU during one transfer, in cores: the stack's own thread (`stack_cpu_share`), its
    process's other threads, which hash what it sends or receives (`hasher_cpu_share`), this lab
    process, which holds the kernel's end of the transfer, its socket calls and its SHA-256
    (`lab_cpu_share`), and the whole machine (`machine_cpu_share`, the kernel's packet work included);
    then which of them set the pace (`bound_by`: the stack, hasher or lab when one was busy alone,
    `machine` when every core was, `none`)."""
    wall = max(after.wall - before.wall, 1e-6)
    stack_thread = (after.stack_thread - before.stack_thread) / wall
    hasher = max(0.0, (after.stack_process - before.stack_process) / wall - stack_thread)
    lab_side = (after.lab - before.lab) / wall
    machine = (after.machine - before.machine) / wall
    verdict = bound_by({"stack": (stack_thread, 1), "hasher": (hasher, 1), "lab": (lab_side, 1)},
                       machine=machine)
    return {"stack_cpu_share": round(stack_thread, 3), "hasher_cpu_share": round(hasher, 3),
            "lab_cpu_share": round(lab_side, 3), "machine_cpu_share": round(machine, 3),
            "bound_by": verdict}


def congestion_controls(lab: RunningLab) -> dict[str, str]:
    """The algorithms in play: the stack's (which every kernel sender of the bench is set to), and the
    machine's default, which a kernel socket would otherwise get."""
    kernel, stack = lab.kernel_and_stack()
    with lab.stack(stack) as control:
        stack_algorithm = str(control.config()["tcp"]["congestion"])
    default = read_sysctl(lab.node(kernel).namespace, "net.ipv4.tcp_congestion_control") or "unknown"
    return {"stack": stack_algorithm, "kernel_senders": stack_algorithm, "machine_default": default}


def _checked(figures: dict[str, Any], total: int) -> dict[str, Any]:
    if figures["error"] or figures["received"] != total or figures["sha256"] != pattern_sha256(total):
        raise BenchFailed(f"bench: transfer of {total} B failed: received {figures['received']} B, "
                          f"error {figures['error']}")
    return figures


def run_bench(seconds: float = 3.0, name: str | None = None, python: str = "cpython",
              progress: ProgressFn | None = None) -> dict[str, Any]:
    """Every figure of `lab bench --json` (keys documented in the README), from one run.

    `name` prefixes the labs it brings up (`<name>o`, `<name>p`, `<name>ok`); default `bn<pid>`.
    `python` is the stack's interpreter (cpython or pypy: then each load runs `warmup_seconds` before it
    is measured). `progress` hears each step (`lab bench` shows it on a terminal)."""
    name = name or bench_name()
    report = progress or _no_progress
    warmup = warmup_seconds(python)
    figures: dict[str, Any] = {"stack_warmup_seconds": warmup}
    with lab_for_experiment(pair_plan(f"{name}o", offload=True, python=python), None,
                            progress=report) as lab:
        kernel, stack = lab.kernel_and_stack()
        congestion = congestion_controls(lab)
        algorithm = congestion["stack"]
        with lab.stack(stack) as control:
            control.listen(ACCEPT_PORT, "discard", backlog=4096)
            hello = control.hello()
        stack_pid = int(hello["pid"])
        figures["stack_workers"] = int(hello.get("workers", 1))  # `lab bench workers` compares 1 and 2
        figures["stack_python"] = str(hello.get("python", "CPython"))
        report("goodput with TAP offload, each way")
        figures.update(measure_goodput(lab, seconds, algorithm, stack_pid, warmup=warmup > 0))
        report("the stack's accept rate (C clients)")
        figures.update(stack_accept_figures(lab.node(kernel).namespace, (lab.address(stack), ACCEPT_PORT),
                                            stack_pid, seconds, ACCEPT_CLIENTS, warmup_seconds=warmup))
        peak = process_peak_rss_bytes(stack_pid)  # after both transfers and the accept run
        if peak is not None:
            figures["stack_peak_rss_mb"] = round(peak / 2**20, 1)
        report("kernel-to-kernel goodput and accept rate")
        with kernel_pair(lab) as pair:
            figures["kernel_to_kernel_gbps"] = _kernel_goodput(pair, seconds, algorithm)
            figures["kernel_to_kernel_hashed_gbps"] = _kernel_goodput(pair, seconds, algorithm, verify=True)
            client, server = pair.node("n1"), pair.node("n2")
            figures.update(kernel_accept_figures(client.namespace, server.namespace,
                                                 str(server.interfaces[0].address.ip), ACCEPT_PORT,
                                                 seconds, ACCEPT_CLIENTS))
    with lab_for_experiment(pair_plan(f"{name}p", offload=False, python=python), None,
                            progress=report) as lab:
        report("goodput with a plain TAP, each way")
        with lab.stack(lab.kernel_and_stack()[1]) as control:
            plain_pid = int(control.hello()["pid"])  # another node: the plain TAP lab's
        figures.update(measure_goodput(lab, seconds, algorithm, plain_pid, warmup=warmup > 0,
                                       label="_no_offload"))
    figures["congestion_control"] = congestion
    return with_ratios(figures)


def _kernel_goodput(pair: LabPlan, seconds: float, congestion: str, *, verify: bool = False) -> float:
    """Kernel-to-kernel Gbit/s, byte count checked; unhashed (see `send_pattern`) unless `verify`.

    The hashed figure is the like-for-like reference of the stack's transfers, which are SHA-256
    checked where they are received (what a sender sends is the pattern, whose digest is known): on
    two cores the hasher takes a core that the kernel-to-kernel transfer otherwise has for itself."""
    probe = kernel_transfer(pair, CALIBRATION_BYTES * 8, verify=verify, congestion=congestion)
    rate = probe["received"] / max(probe["seconds"], 1e-3)
    total = int(min(MAX_TRANSFER_BYTES * 4, max(CALIBRATION_BYTES, rate * seconds)))
    figures = kernel_transfer(pair, total, verify=verify, congestion=congestion)
    if figures["received"] != total or (verify and figures["sha256"] != pattern_sha256(total)):
        raise BenchFailed(f"bench: kernel-to-kernel transfer received {figures['received']} of {total} B")
    return figures["goodput_gbps"]


def with_ratios(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures in a fixed order, rounded, each stack figure followed by its ratio to the kernel's;
    the accept run's CPU figures and verdicts after them."""
    kernel_gbps, kernel_cps = figures["kernel_to_kernel_gbps"], figures["kernel_accept_cps"]

    def ratio(value: float, reference: float) -> float:
        return round(value / reference, 4) if reference else 0.0

    hashed_gbps = figures.get("kernel_to_kernel_hashed_gbps")
    ordered: dict[str, Any] = {"kernel_to_kernel_gbps": round(kernel_gbps, 3)}
    if hashed_gbps is not None:
        ordered["kernel_to_kernel_hashed_gbps"] = round(hashed_gbps, 3)
    for key in ("kernel_to_stack_gbps", "stack_to_kernel_gbps", "kernel_to_stack_gbps_no_offload",
                "stack_to_kernel_gbps_no_offload"):
        ordered[key] = round(figures[key], 3)
        ordered[key.replace("_gbps", "") + "_ratio"] = ratio(figures[key], kernel_gbps)
        if hashed_gbps is not None:  # against the kernel doing the same SHA-256 work where it receives
            ordered[key.replace("_gbps", "") + "_hashed_ratio"] = ratio(figures[key], hashed_gbps)
    ordered["kernel_accept_cps"] = round(kernel_cps, 1)
    ordered["stack_accept_cps"] = round(figures["stack_accept_cps"], 1)
    ordered["stack_accept_ratio"] = ratio(figures["stack_accept_cps"], kernel_cps)
    for key, value in figures.items():
        if key not in ordered:
            ordered[key] = round(value, 3) if isinstance(value, float) else value
    return ordered


# --- lab bench up: chains of kernel nodes -------------------------------------------------------

UP_TARGET_SECONDS = {100: 1.5}  # the project's targets for a 100-node chain on a 2-core machine
DOWN_TARGET_SECONDS = {100: 1.0}


def chain_bench_name(count: int) -> str:
    """The lab name of the chain of `count` nodes that `bench_chains` times (this process's own)."""
    return f"b{os.getpid() % 100000}n{count}"


def bench_chains(counts: list[int], *, repeat: int = 3, root: Path | None = None,
                 progress: ProgressFn | None = None) -> list[dict]:
    """Time `up` and `down` of a chain of N kernel nodes for each N (what `lab bench up` prints).

    Each size runs `repeat` times; the median is reported with the best and worst. Every chain
    has a lab name of its own (with this process's pid) and is always taken down.
    """
    report = progress or _no_progress
    rows = []
    for count in counts:
        name = chain_bench_name(count)
        plan = chain_plan(count, name=name)
        ups, downs = [], []
        for run in range(repeat):
            report(f"chain of {count} nodes, run {run + 1} of {repeat}")
            try:
                ups.append(builder.up(plan, root=root).seconds)
            finally:
                started = time.perf_counter()
                builder.down(name, root=root)
                downs.append(time.perf_counter() - started)
        rows.append({
            "nodes": count, "links": len(plan.links),
            "up_seconds": round(median(ups), 4), "up_min": round(min(ups), 4), "up_max": round(max(ups), 4),
            "down_seconds": round(median(downs), 4), "down_min": round(min(downs), 4),
            "down_max": round(max(downs), 4), "runs": repeat,
            "up_target": UP_TARGET_SECONDS.get(count), "down_target": DOWN_TARGET_SECONDS.get(count),
        })
    return rows
