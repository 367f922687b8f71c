"""Connection rates with a yardstick that is not the bottleneck: `build/connload` (benchmarks/connload.c).

A Python client (or accept loop) shares one interpreter lock across its threads and tops out near
5k connections per second here, well below what a kernel listener takes: a rate measured with it says
more about the client than about the listener. `connload` is C: its client threads connect and close
in a loop, and its server threads accept and close. Every run also reports the CPU each side used, as a
share of one core, so a figure says which side was CPU-bound.

The client's namespace gets the whole port range and TIME_WAIT reuse for the run (both are per
namespace, and restored afterwards): at tens of thousands of connections per second the default
ephemeral range would otherwise run out within a second, each closed port sitting in TIME_WAIT.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.build.pids import process_cpu_seconds
from lab.experiments.base import ExperimentError
from lab.kernel.namespaces import popen_inside
from lab.kernel.sysctls import swap_sysctl

CONNLOAD = Path(__file__).resolve().parents[2] / "build" / "connload"
CLIENT_SYSCTLS = (("net.ipv4.ip_local_port_range", "1024 65535"), ("net.ipv4.tcp_tw_reuse", "1"))
LISTENER_THREADS = 2
BUSY_SHARE = 0.8  # a side using this much of the cores it can use is taken to set the pace


class LoadFailed(ExperimentError):
    """connload failed or gave no figure: no rate is reported."""

    exit_code = 1


class LoadGeneratorMissing(ExperimentError):
    """build/connload is not built (a missing capability, exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class LoadRun:
    """One connload run: what it counted, in what wall time, using how much CPU (all its threads)."""

    count: int
    errors: int
    first_error: str
    slow_connects: int
    seconds: float
    cpu_seconds: float
    threads: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        """CPU used per second of wall time: 1.0 is one core busy for the whole run."""
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0


def connload() -> Path:
    if not os.access(CONNLOAD, os.X_OK):
        raise LoadGeneratorMissing(f"{CONNLOAD} is not built: run `make venv` (it compiles "
                                   f"benchmarks/connload.c with gcc)")
    return CONNLOAD


def parse_run(output: str, what: str) -> LoadRun:
    """connload's figures: the last line it printed, a JSON object."""
    lines = output.strip().splitlines()
    try:
        fields = json.loads(lines[-1] if lines else "")
        return LoadRun(int(fields["count"]), int(fields["errors"]), str(fields["first_error"]),
                       int(fields["slow_connects"]), float(fields["seconds"]),
                       float(fields["cpu_seconds"]), int(fields["threads"]))
    except (ValueError, KeyError, TypeError):
        raise LoadFailed(f"{what}: connload printed no figures") from None


@contextmanager
def ports_for_many_connections(namespace: str) -> Iterator[None]:
    """The whole ephemeral port range and TIME_WAIT reuse in `namespace` for the block."""
    previous = [(name, swap_sysctl(namespace, name, value)) for name, value in CLIENT_SYSCTLS]
    try:
        yield
    finally:
        for name, value in previous:
            if value is not None:
                swap_sysctl(namespace, name, value)


def run_clients(namespace: str, server: tuple[str, int], seconds: float, threads: int) -> LoadRun:
    """`threads` C clients in `namespace` connect to `server` and close, for `seconds`."""
    argv = [str(connload()), "client", server[0], str(server[1]), f"{seconds:g}", str(threads)]
    with ports_for_many_connections(namespace):
        process = popen_inside(namespace, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = process.communicate(timeout=seconds + 15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise LoadFailed(f"connload client to {server[0]}:{server[1]} did not finish") from None
    if process.returncode != 0:
        raise LoadFailed(f"connload client: {err.strip().splitlines()[-1] if err.strip() else 'failed'}")
    run = parse_run(out, "connload client")
    if run.count == 0:
        raise LoadFailed(f"connload client to {server[0]}:{server[1]}: no connection completed "
                         f"({run.first_error or 'no error reported'})")
    return run


class KernelListener:
    """A C accept-and-close listener in a kernel namespace, for as long as the `with` block runs."""

    def __init__(self, namespace: str, address: str, port: int, *, seconds: float,
                 threads: int = LISTENER_THREADS) -> None:
        argv = [str(connload()), "server", address, str(port), f"{seconds + 30:g}", str(threads)]
        self._process = popen_inside(namespace, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.run: LoadRun | None = None
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], 5.0)
        if not ready or "listening" not in self._process.stdout.readline():
            self._process.kill()
            _, err = self._process.communicate()
            raise LoadFailed(f"connload server on {address}:{port}: {err.strip() or 'did not start'}")

    def __enter__(self) -> KernelListener:
        return self

    def __exit__(self, *exc: object) -> None:
        """Close its stdin (its signal to stop), then read its figures."""
        try:
            out, _ = self._process.communicate(input="", timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            return
        self.run = parse_run(out, "connload server")


def bound_by(shares: dict[str, tuple[float, int]], cores: int | None = None, *,
             machine: float = 0.0) -> str:
    """Which side set the pace: the busiest one relative to the cores it can use (its threads, at most
    the machine's cores) when that is at least BUSY_SHARE; "machine" when no side is busy alone but
    together, or with what no side is charged for (`machine`: every core's busy time, in cores), they
    keep every core busy (both ends share this machine's cores); "none" when nothing was near busy (the
    rate was then set by waiting: timers, a queue, the wire)."""
    cores = cores or os.cpu_count() or 1
    load = {side: share / max(1, min(threads, cores)) for side, (share, threads) in shares.items()}
    busiest = max(load, key=load.__getitem__)
    if load[busiest] >= BUSY_SHARE:
        return busiest
    together = max(machine, sum(share for share, _ in shares.values()))
    return "machine" if together >= BUSY_SHARE * cores else "none"


def stack_accept_figures(namespace: str, server: tuple[str, int], stack_pid: int, seconds: float,
                         clients: int, *, warmup_seconds: float = 0.0) -> dict[str, float | str]:
    """C clients against the stack's listener: the rate, and the CPU both sides used for it, after
    `warmup_seconds` of the same load unmeasured (a JIT's warm-up)."""
    if warmup_seconds > 0:
        run_clients(namespace, server, warmup_seconds, clients)
    before = process_cpu_seconds(stack_pid)
    run = run_clients(namespace, server, seconds, clients)
    after = process_cpu_seconds(stack_pid)
    if before is None or after is None:
        raise LoadFailed(f"the stack process (pid {stack_pid}) is gone")
    stack_share = (after - before) / run.seconds
    return {
        "stack_accept_cps": run.rate,
        "stack_cpu_us_per_connection": (after - before) / run.count * 1e6,
        "stack_accept_stack_cpu_share": stack_share,
        "stack_accept_client_cpu_share": run.cpu_share,
        "stack_accept_slow_connects": run.slow_connects,
        "stack_accept_bound_by": bound_by({"stack": (stack_share, 1), "client": (run.cpu_share, clients)}),
    }


def kernel_accept_figures(client_namespace: str, server_namespace: str, address: str, port: int,
                          seconds: float, clients: int) -> dict[str, float | str]:
    """The same C clients against a C kernel listener: the kernel's rate and what bound it."""
    with KernelListener(server_namespace, address, port, seconds=seconds) as listener:
        run = run_clients(client_namespace, (address, port), seconds, clients)
    listener_share = listener.run.cpu_seconds / run.seconds if listener.run else 0.0
    return {
        "kernel_accept_cps": run.rate,
        "kernel_accept_listener_cpu_share": listener_share,
        "kernel_accept_client_cpu_share": run.cpu_share,
        "kernel_accept_bound_by": bound_by({"listener": (listener_share, LISTENER_THREADS),
                                            "client": (run.cpu_share, clients)}),
    }
