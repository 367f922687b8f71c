"""`lab bench workers`: a pystack node with 1 worker against the same node with 2, in one sitting.

Two figures per worker count, each next to the kernel's from the same run: the accept rate of C clients
(`build/connload`) against the stack's discard listener, with the CPU of all the node's processes per
connection; and the aggregate goodput of several kernel senders at once into the stack's discard app
(one connection each), next to the same senders into a kernel receiver. One connection is one flow, and
a flow stays on one worker, so only several connections at once can use a second worker.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from statistics import median
from typing import Any

from lab.build.pids import process_cpu_seconds
from lab.experiments.base import ExperimentError
from lab.experiments.bulk import kernel_pair
from lab.experiments.running import ProgressFn, RunningLab, lab_for_experiment
from lab.kernel.sockets import listening_socket, namespace_socket
from lab.tools.accept_rate import bound_by, kernel_accept_figures, run_clients
from lab.tools.bench import ACCEPT_PORT, bench_name, pair_plan, warmup_seconds

# Blocking connect+close clients keep one connection each in flight: with `lab bench`'s 4, two workers
# would see about two connections at a time each and wake for nearly every frame, so the figure would
# measure the loops' wake-ups, not what the workers can accept. 16 give each worker a batch to work on;
# the kernel's figure comes from the same 16.
ACCEPT_CLIENTS = 16

WORKER_COUNTS = (1, 2)
PARALLEL_STREAMS = 4
BULK_ROUNDS = 3
DISCARD_PORT = 9  # the pair topology's discard app
KERNEL_SINK_PORT = 7520
CHUNK = 1 << 20


class WorkersBenchFailed(ExperimentError):
    """A transfer of the workers bench failed: no figure is reported."""

    exit_code = 1


def _suffix(count: int) -> str:
    return f"{count}_worker" if count == 1 else f"{count}_workers"


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        seconds = process_cpu_seconds(pid)
        if seconds is None:
            raise WorkersBenchFailed(f"the stack process (pid {pid}) is gone")
        total += seconds
    return total


def parallel_bulk(namespace: str, address: tuple[str, int], seconds: float, streams: int) -> float:
    """`streams` kernel senders in `namespace` send to `address` for `seconds`, then close and wait for
    the receiver to have read everything (its close): the aggregate Gbit/s."""
    sent = [0] * streams
    errors: list[str] = []
    start = time.monotonic()
    deadline = start + seconds
    chunk = memoryview(bytes(CHUNK))

    def send(index: int) -> None:
        try:
            with contextlib.closing(namespace_socket(namespace)) as sock:
                sock.settimeout(seconds + 30)
                sock.connect(address)
                while time.monotonic() < deadline:
                    sock.sendall(chunk)
                    sent[index] += CHUNK
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
        except OSError as exc:
            errors.append(f"sender {index}: {exc}")

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    elapsed = time.monotonic() - start
    if errors or any(thread.is_alive() for thread in threads):
        raise WorkersBenchFailed(f"parallel transfer to {address[0]}:{address[1]}: "
                                 f"{errors[0] if errors else 'did not finish'}")
    return sum(sent) * 8 / elapsed / 1e9


def _kernel_sink(namespace: str, address: tuple[str, int], streams: int) -> threading.Thread:
    """A kernel receiver for `streams` connections: reads each to EOF, then closes it."""
    listener = listening_socket(namespace, address, timeout=30)

    def serve() -> None:
        def drain(conn: socket.socket) -> None:
            buffer = bytearray(CHUNK)
            with conn:
                while conn.recv_into(buffer):
                    pass

        readers = []
        with listener:
            for _ in range(streams):
                conn, _ = listener.accept()
                reader = threading.Thread(target=drain, args=(conn,), daemon=True)
                reader.start()
                readers.append(reader)
        for reader in readers:
            reader.join(120)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def _passive_opens(lab: RunningLab, stack: str) -> list[int]:
    """Each worker's passive opens so far (one entry with one worker)."""
    with lab.stack(stack) as control:
        stats = control.stats()
    rows = stats.get("workers") or [{"counters": stats["counters"]}]
    return [int(row["counters"].get("TcpPassiveOpens", 0)) for row in rows]


def run_bench_workers(seconds: float = 3.0, name: str | None = None, python: str = "cpython",
                      progress: ProgressFn | None = None) -> dict[str, Any]:
    """Every figure of `lab bench workers --json` (keys in the README), from one sitting."""
    name = name or bench_name()
    report = progress or (lambda step: None)
    warmup = warmup_seconds(python)
    figures: dict[str, Any] = {"stack_workers": max(WORKER_COUNTS), "parallel_streams": PARALLEL_STREAMS,
                               "stack_warmup_seconds": warmup}
    for count in WORKER_COUNTS:
        plan = pair_plan(f"{name}w{count}", offload=True, python=python)
        plan = _with_workers(plan, count)
        with lab_for_experiment(plan, None, progress=report) as lab:
            kernel, stack = lab.kernel_and_stack()
            namespace = lab.node(kernel).namespace
            with lab.stack(stack) as control:
                control.listen(ACCEPT_PORT, "discard", backlog=4096)
                hello = control.hello()
            figures["stack_python"] = str(hello.get("python", "CPython"))
            pids = [int(pid) for pid in hello.get("pids", [hello["pid"]])]
            suffix = _suffix(count)
            report(f"accept rate, {count} worker(s)")
            if warmup > 0:  # a JIT's warm-up: the same load, unmeasured
                run_clients(namespace, (lab.address(stack), ACCEPT_PORT), warmup, ACCEPT_CLIENTS)
            before = _cpu(pids)
            run = run_clients(namespace, (lab.address(stack), ACCEPT_PORT), seconds, ACCEPT_CLIENTS)
            used = _cpu(pids) - before
            figures[f"stack_accept_cps_{suffix}"] = run.rate
            figures[f"stack_cpu_us_per_connection_{suffix}"] = used / run.count * 1e6
            figures[f"stack_accept_stack_cpu_share_{suffix}"] = used / run.seconds
            figures[f"stack_accept_client_cpu_share_{suffix}"] = run.cpu_share
            figures[f"stack_accept_bound_by_{suffix}"] = bound_by(
                {"stack": (used / run.seconds, count), "client": (run.cpu_share, ACCEPT_CLIENTS)})
            report(f"{PARALLEL_STREAMS} parallel transfers into the stack, {count} worker(s)")
            rates, shares, placements = [], [], []
            for _ in range(BULK_ROUNDS):  # the kernel places each flow by its hash: a new draw each round
                opened = _passive_opens(lab, stack)
                before = _cpu(pids)
                started = time.monotonic()
                rates.append(parallel_bulk(namespace, (lab.address(stack), DISCARD_PORT), seconds,
                                           PARALLEL_STREAMS))
                shares.append((_cpu(pids) - before) / (time.monotonic() - started))
                placements.append([now - then for now, then in zip(_passive_opens(lab, stack), opened,
                                                                    strict=True)])
            figures[f"parallel_bulk_gbps_{suffix}"] = median(rates)
            figures[f"parallel_bulk_rounds_gbps_{suffix}"] = [round(rate, 3) for rate in rates]
            figures[f"parallel_bulk_stack_cpu_share_{suffix}"] = median(shares)
            figures[f"parallel_bulk_flows_per_worker_{suffix}"] = placements
            if count == max(WORKER_COUNTS):
                report("the kernel's accept rate and parallel transfers (same run)")
                with kernel_pair(lab) as pair:
                    client, server = pair.node("n1"), pair.node("n2")
                    address = str(server.interfaces[0].address.ip)
                    figures.update(kernel_accept_figures(client.namespace, server.namespace, address,
                                                         ACCEPT_PORT, seconds, ACCEPT_CLIENTS))
                    sink = _kernel_sink(server.namespace, (address, KERNEL_SINK_PORT), PARALLEL_STREAMS)
                    figures["kernel_parallel_bulk_gbps"] = parallel_bulk(
                        client.namespace, (address, KERNEL_SINK_PORT), seconds, PARALLEL_STREAMS)
                    sink.join(30)
    return with_worker_ratios(figures)


def _with_workers(plan: Any, count: int) -> Any:
    import dataclasses

    nodes = tuple(dataclasses.replace(node, workers=count) if node.kind == "pystack" else node
                  for node in plan.nodes)
    return dataclasses.replace(plan, nodes=nodes)


def with_worker_ratios(figures: dict[str, Any]) -> dict[str, Any]:
    """The speed-ups (2 workers over 1) and each stack figure's ratio to the kernel's, rounded."""
    def ratio(value: float, reference: float) -> float:
        return round(value / reference, 4) if reference else 0.0

    one, two = _suffix(1), _suffix(2)
    figures["workers_accept_speedup"] = ratio(figures[f"stack_accept_cps_{two}"],
                                              figures[f"stack_accept_cps_{one}"])
    figures["workers_bulk_speedup"] = ratio(figures[f"parallel_bulk_gbps_{two}"],
                                            figures[f"parallel_bulk_gbps_{one}"])
    for suffix in (one, two):
        figures[f"stack_accept_ratio_{suffix}"] = ratio(figures[f"stack_accept_cps_{suffix}"],
                                                        figures["kernel_accept_cps"])
        figures[f"parallel_bulk_ratio_{suffix}"] = ratio(figures[f"parallel_bulk_gbps_{suffix}"],
                                                         figures["kernel_parallel_bulk_gbps"])
    exact = ("_ratio", "_speedup")  # already rounded to 4 digits, as `lab bench` gives its ratios
    return {key: round(value, 3) if isinstance(value, float) and not any(part in key for part in exact)
            else value for key, value in figures.items()}
