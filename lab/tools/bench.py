"""`lab bench`: the stack's goodput and accept rate next to the kernel's, measured in one run;
`lab bench up`: the times of `lab up` and `lab down` for chains of kernel nodes (`bench_chains`).

Three labs, each up only while it is measured (and always taken down):
- `<name>o`: the pair topology (kernel h1, stack s1 with TAP offload: 64 KB TSO segments);
- `<name>p`: the same with `offload: false` (plain TAP, one frame per read and write);
- `<name>ok`: two kernel nodes on a veth link of the same MTU, for kernel-to-kernel figures
  (made by `lab.experiments.bulk.kernel_to_kernel`).

Goodput: one bulk transfer per direction, sized from a short calibration so it lasts about
`seconds`, SHA-256 checked (a wrong digest fails the bench rather than reporting a speed).
Accept rate: client threads in a kernel namespace open and close connections (connect, close:
handshake plus FIN exchange) for `seconds` against the stack's `discard` listener, then the same
clients against a kernel listener in the kernel pair.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

from lab.build import builder
from lab.experiments.base import ExperimentError
from lab.experiments.bulk import kernel_pair, kernel_to_stack, kernel_transfer, stack_to_kernel
from lab.experiments.running import ProgressFn, RunningLab, lab_for_experiment
from lab.kernel.namespaces import inside_namespace
from lab.kernel.sockets import listening_socket
from lab.kernel.transfers import BackgroundCall, pattern_sha256
from lab.topology import DEFAULT_TOPOLOGY, plan_from_data
from lab.topology.chain import chain_plan
from lab.topology.plan import LabPlan

BENCH_TARGETS = {  # the project's targets on the reference machine (2 cores)
    "kernel_to_stack_gbps": 1.0, "stack_to_kernel_gbps": 1.0,
    "kernel_to_stack_gbps_no_offload": 0.2, "stack_to_kernel_gbps_no_offload": 0.2,
    "stack_accept_cps": 2000.0,
}
CALIBRATION_BYTES = 32 << 20
MAX_TRANSFER_BYTES = 4 << 30
ACCEPT_CLIENTS = 4
ACCEPT_PORT = 7500
BULK_PORT = 7510


def _no_progress(step: str) -> None:
    return None


class BenchFailed(ExperimentError):
    """A measurement went wrong (a digest differed, a transfer failed): no figure is reported."""

    exit_code = 1


def bench_name() -> str:
    return f"bn{os.getpid() % 100000}"


def pair_plan(name: str, *, offload: bool) -> LabPlan:
    import yaml

    document = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    document["name"] = name
    for node in document["nodes"].values():
        if node.get("kind") == "pystack":
            node["offload"] = offload
    return plan_from_data(document, source=str(DEFAULT_TOPOLOGY))


def measure_goodput(lab: RunningLab, seconds: float) -> tuple[float, float]:
    """(kernel->stack, stack->kernel) Gbit/s, each from a transfer sized to last about `seconds`."""
    kernel, stack = lab.kernel_and_stack()
    figures = []
    for direction, port in ((kernel_to_stack, BULK_PORT), (stack_to_kernel, BULK_PORT + 1)):
        probe = _checked(direction(lab, kernel, stack, port, CALIBRATION_BYTES), CALIBRATION_BYTES)
        rate = CALIBRATION_BYTES / max(probe["seconds"], 1e-3)
        total = int(min(MAX_TRANSFER_BYTES, max(CALIBRATION_BYTES, rate * seconds)))
        figures.append(_checked(direction(lab, kernel, stack, port, total), total)["goodput_gbps"])
    return figures[0], figures[1]


def _checked(figures: dict[str, Any], total: int) -> dict[str, Any]:
    if figures["error"] or figures["received"] != total or figures["sha256"] != pattern_sha256(total):
        raise BenchFailed(f"bench: transfer of {total} B failed: received {figures['received']} B, "
                          f"error {figures['error']}")
    return figures


def connection_rate(namespace: str, server: tuple[str, int], seconds: float,
                    clients: int = ACCEPT_CLIENTS) -> float:
    """Connections per second that complete connect() and close(), from `clients` threads."""
    counts = [0] * clients
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(slot: int) -> None:
        with inside_namespace(namespace):  # this thread's sockets are born in the client's namespace
            start.wait()
            while time.monotonic() < stop_at[0]:
                sock = socket.socket()
                try:
                    sock.settimeout(5.0)
                    sock.connect(server)
                    counts[slot] += 1
                except OSError as error:
                    errors.append(str(error))
                    if len(errors) > 100:
                        return
                finally:
                    sock.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + seconds
    began = time.monotonic()
    start.wait()
    for thread in threads:
        thread.join(seconds + 10)
    elapsed = time.monotonic() - began
    if len(errors) > 100:
        raise BenchFailed(f"bench: connections to {server[0]}:{server[1]} keep failing: {errors[0]}")
    return sum(counts) / elapsed


def _accept_and_close(listener: socket.socket, until: Callable[[], bool]) -> int:
    accepted = 0
    listener.settimeout(0.2)
    while not until():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.close()
        accepted += 1
    return accepted


def kernel_accept_rate(client_namespace: str, server_namespace: str, address: str, seconds: float) -> float:
    listener = listening_socket(server_namespace, (address, ACCEPT_PORT), backlog=4096)
    finished = threading.Event()
    serving = BackgroundCall(_accept_and_close, listener, finished.is_set)
    serving.start()
    try:
        return connection_rate(client_namespace, (address, ACCEPT_PORT), seconds)
    finally:
        finished.set()
        serving.join(5)
        listener.close()


def run_bench(seconds: float = 3.0, name: str | None = None,
              progress: ProgressFn | None = None) -> dict[str, float]:
    """Every figure of `lab bench --json` (keys documented in the README), from one run.

    `name` prefixes the labs it brings up (`<name>o`, `<name>p`, `<name>ok`); default `bn<pid>`.
    `progress` hears each step (`lab bench` shows it on a terminal)."""
    name = name or bench_name()
    report = progress or _no_progress
    figures: dict[str, float] = {}
    with lab_for_experiment(pair_plan(f"{name}o", offload=True), None, progress=report) as lab:
        kernel, stack = lab.kernel_and_stack()
        report("goodput with TAP offload, each way")
        figures["kernel_to_stack_gbps"], figures["stack_to_kernel_gbps"] = measure_goodput(lab, seconds)
        with lab.stack(stack) as control:
            control.listen(ACCEPT_PORT, "discard", backlog=4096)
        report("the stack's accept rate")
        figures["stack_accept_cps"] = connection_rate(lab.node(kernel).namespace,
                                                      (lab.address(stack), ACCEPT_PORT), seconds)
        report("kernel-to-kernel goodput and accept rate")
        with kernel_pair(lab) as pair:
            figures["kernel_to_kernel_gbps"] = _kernel_goodput(pair, seconds)
            client, server = pair.node("n1"), pair.node("n2")
            figures["kernel_accept_cps"] = kernel_accept_rate(
                client.namespace, server.namespace, str(server.interfaces[0].address.ip), seconds)
    with lab_for_experiment(pair_plan(f"{name}p", offload=False), None, progress=report) as lab:
        report("goodput with a plain TAP, each way")
        no_offload = measure_goodput(lab, seconds)
        figures["kernel_to_stack_gbps_no_offload"], figures["stack_to_kernel_gbps_no_offload"] = no_offload
    return with_ratios(figures)


def _kernel_goodput(pair: LabPlan, seconds: float) -> float:
    """Kernel-to-kernel Gbit/s; unhashed (see `send_pattern`), byte count checked."""
    probe = kernel_transfer(pair, CALIBRATION_BYTES * 8, verify=False)
    rate = probe["received"] / max(probe["seconds"], 1e-3)
    total = int(min(MAX_TRANSFER_BYTES * 4, max(CALIBRATION_BYTES, rate * seconds)))
    figures = kernel_transfer(pair, total, verify=False)
    if figures["received"] != total:
        raise BenchFailed(f"bench: kernel-to-kernel transfer received {figures['received']} of {total} B")
    return figures["goodput_gbps"]


def with_ratios(figures: dict[str, float]) -> dict[str, float]:
    """The figures in a fixed order, rounded, each stack figure followed by its ratio to the kernel's."""
    kernel_gbps, kernel_cps = figures["kernel_to_kernel_gbps"], figures["kernel_accept_cps"]

    def ratio(value: float, reference: float) -> float:
        return round(value / reference, 4) if reference else 0.0

    ordered: dict[str, float] = {"kernel_to_kernel_gbps": round(kernel_gbps, 3)}
    for key in ("kernel_to_stack_gbps", "stack_to_kernel_gbps", "kernel_to_stack_gbps_no_offload",
                "stack_to_kernel_gbps_no_offload"):
        ordered[key] = round(figures[key], 3)
        ordered[key.replace("_gbps", "") + "_ratio"] = ratio(figures[key], kernel_gbps)
    ordered["kernel_accept_cps"] = round(kernel_cps, 1)
    ordered["stack_accept_cps"] = round(figures["stack_accept_cps"], 1)
    ordered["stack_accept_ratio"] = ratio(figures["stack_accept_cps"], kernel_cps)
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
