"""What one TCP exchange costs the stack, in CPU time and in machine instructions, next to the kernel's.

Two exchanges, each between two Hosts of the stack in one process on the memory wire (checksums offloaded,
as on a TAP with virtio_net_hdr), driven by the deterministic runner:

* connect_close: connect, accept, the client closes, the server reads the end and closes: the six frames
  of `lab bench`'s connection rate, both ends' work;
* request_response: a 40-byte request and a 1223-byte answer on a kept-alive connection (the sizes of
  `GET /bytes/1000` and its response): two frames, both ends' work.

The stack's figure is process CPU per exchange (median of `--rounds`). With `--instructions` it is also
counted in machine instructions under valgrind (callgrind), the one figure here that does not move with
the machine's load: a change to the stack's per-frame path shows in it when wall-clock runs are too noisy
to tell. The stack's figure has no device, no system call and no event loop in it: `lab bench` and `lab
bench tools` measure those, over a TAP.

The kernel's figure, from the same run: the same exchange between two kernel sockets over loopback, both
ends C (`build/connload`: client/server, request/respond), CPU time of both processes per exchange. It
includes the system calls and the wakeups of the two processes that the stack's in-memory figure does
not, so the ratio (kernel CPU / stack CPU: the stack's speed as a fraction of the kernel's) flatters the
stack; `lab bench` gives the like-for-like connection rate.

    .venv/bin/python benchmarks/bench_exchanges.py [--count N] [--rounds R] [--instructions] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.runner import Runner
from stack.tcp.config import TcpConfig

ROOT = Path(__file__).resolve().parents[1]
CONNLOAD = ROOT / "build" / "connload"
REQUEST = b"GET /bytes/1000 HTTP/1.1\r\nHost: 10.0.0.2\r\n\r\n"[:40]
RESPONSE = bytes(1223)
SERVER = ("10.0.0.2", 80)
KERNEL_SECONDS = 2.0
KERNEL_THREADS = 2  # two client threads keep the kernel's two ends busy on this machine's cores
CASES = ("connect_close", "request_response")
INSTRUCTION_COUNT = 500  # exchanges counted under valgrind (about 50 times slower than without)


def pair() -> tuple[Runner, Host, Host]:
    config = TcpConfig(time_wait=0.001)  # the client's TIME_WAIT ends at once, so ports never run out
    client = Host("10.0.0.1/24", "02:00:00:00:00:01", seed=1, secret=b"c" * 32, tx_checksum="partial",
                  tcp=config)
    server = Host("10.0.0.2/24", "02:00:00:00:00:02", seed=2, secret=b"s" * 32, tx_checksum="partial",
                  tcp=config)
    wire = MemoryWire(client, server, checksum_offload=True)
    return Runner([client, server], [wire]), client, server


def connect_close(count: int) -> Callable[[], None]:
    """`count` connect+close exchanges, ready to run (the hosts and the listener are set up first)."""
    runner, client, server = pair()
    listener = server.socket()
    listener.bind(SERVER)
    listener.listen(128)

    def run() -> None:
        for _ in range(count):
            active = client.socket()
            active.connect(SERVER)
            passive, _ = listener.accept()
            active.close()
            runner.run_until(lambda passive=passive: passive.readable, timeout=5.0)
            if passive.recv(16) != b"":
                raise RuntimeError("connect_close: the server read data where the client's FIN was due")
            passive.close()
            runner.run_until(lambda: False, timeout=0.002)  # the last ACK, and TIME_WAIT's end

    return run


def request_response(count: int) -> Callable[[], None]:
    """`count` request/response exchanges on one kept-alive connection, ready to run."""
    runner, client, server = pair()
    listener = server.socket()
    listener.bind(SERVER)
    listener.listen()
    active = client.socket()
    active.connect(SERVER)
    passive, _ = listener.accept()
    active.setblocking(False)
    passive.setblocking(False)

    def run() -> None:
        for _ in range(count):
            active.send(REQUEST)
            runner.run_until(lambda: passive.readable, timeout=5.0)
            if len(passive.recv(65536)) != len(REQUEST):
                raise RuntimeError("request_response: the request did not arrive whole")
            passive.send(RESPONSE)
            got = 0
            while got < len(RESPONSE):
                runner.run_until(lambda: active.readable, timeout=5.0)
                got += len(active.recv(65536))

    return run


BUILDERS = {"connect_close": connect_close, "request_response": request_response}


def stack_us(case: str, count: int, rounds: int) -> float:
    """Process CPU per exchange, microseconds, median of `rounds`."""
    figures = []
    for _ in range(rounds):
        run = BUILDERS[case](count)
        began = time.process_time()
        run()
        figures.append((time.process_time() - began) / count * 1e6)
    return statistics.median(figures)


def stack_instructions(case: str, count: int) -> int:
    """Machine instructions per exchange: callgrind's total for `count` exchanges less that for one."""
    totals = []
    for n in (1, count):
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                   __file__, "--only", case, "--count", str(n)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"valgrind {case}: exit {done.returncode}, {done.stderr.strip()[-200:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) // (count - 1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kernel_us(case: str) -> dict[str, float]:
    """The kernel's CPU per exchange over loopback, both ends C: client and server processes' CPU."""
    client_mode, server_mode = ("client", "server") if case == "connect_close" else ("request", "respond")
    port = str(free_port())
    seconds = str(KERNEL_SECONDS)
    server = subprocess.Popen([str(CONNLOAD), server_mode, "127.0.0.1", port, str(KERNEL_SECONDS + 2),
                               str(KERNEL_THREADS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdin is not None
        if "listening" not in server.stdout.readline():
            raise RuntimeError(f"connload {server_mode} did not listen")
        client = subprocess.run([str(CONNLOAD), client_mode, "127.0.0.1", port, seconds, str(KERNEL_THREADS)],
                                capture_output=True, text=True, timeout=KERNEL_SECONDS + 30, check=True)
        server.stdin.close()  # the server stops at end of input and reports
        server_report = json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
    client_report = json.loads(client.stdout)
    count = client_report["count"]
    if count <= 0 or client_report["errors"]:
        raise RuntimeError(f"connload {client_mode}: {client_report}")
    cpu = client_report["cpu_seconds"] + server_report["cpu_seconds"]
    return {"us": cpu / count * 1e6, "per_second": count / client_report["seconds"],
            "client_cpu_share": client_report["cpu_seconds"] / client_report["seconds"],
            "server_cpu_share": server_report["cpu_seconds"] / client_report["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="exchanges per round (at least 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instructions", action="store_true", help="also count instructions (valgrind)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=CASES, help=argparse.SUPPRESS)  # one bare run, for valgrind
    args = parser.parse_args()
    if args.only:  # one bare run under valgrind: one exchange is the baseline
        BUILDERS[args.only](max(1, min(args.count, 1_000_000)))()
        return
    if not 2 <= args.count <= 1_000_000 or not 1 <= args.rounds <= 100:
        parser.error("--count takes 2 to 1000000 and --rounds 1 to 100")
    if not CONNLOAD.exists():
        sys.exit("bench_exchanges: build/connload is missing (make build/connload)")
    if args.instructions and shutil.which("valgrind") is None:
        sys.exit("bench_exchanges: --instructions needs valgrind (apt-get install valgrind)")
    results = {}
    for case in CASES:
        row: dict[str, object] = {"stack_us": stack_us(case, args.count, args.rounds)}
        kernel = kernel_us(case)
        row.update({"kernel_us": kernel["us"], "ratio": kernel["us"] / float(row["stack_us"]),  # type: ignore[arg-type]
                    "kernel_per_second": kernel["per_second"],
                    "kernel_client_cpu_share": kernel["client_cpu_share"],
                    "kernel_server_cpu_share": kernel["server_cpu_share"]})
        if args.instructions:
            row["stack_instructions"] = stack_instructions(case, min(args.count, INSTRUCTION_COUNT))
        results[case] = row
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for case, row in results.items():
        counted = f", {row['stack_instructions']:,} instructions" if "stack_instructions" in row else ""
        print(f"{case}: stack {row['stack_us']:.1f} us CPU per exchange (both ends, in memory{counted}); "
              f"kernel {row['kernel_us']:.1f} us (both ends, loopback, C; {row['kernel_per_second']:.0f}/s); "
              f"ratio {row['ratio']:.3f}")


if __name__ == "__main__":
    main()
