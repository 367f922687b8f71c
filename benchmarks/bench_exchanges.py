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

`--python pypy` measures the stack's side under PyPy (`make pypy`'s .venv-pypy, or $NSLAB_PYPY), after
two unmeasured rounds that let its JIT compile the exchange; the kernel's side is the same.

    .venv/bin/python benchmarks/bench_exchanges.py [--count N] [--rounds R] [--instructions] [--json]
                                                  [--python cpython|pypy]
"""

from __future__ import annotations

import argparse
import json
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack.devices.memory import MemoryWire
from stack.host import Host
from stack.loops.runner import Runner
from stack.tcp.config import TcpConfig

REQUEST = b"q" * 40  # connload's REQUEST_BYTES: about a `GET /bytes/1000` with its Host field
RESPONSE = b"r" * 1223  # connload's RESPONSE_BYTES: that request's answer, head and 1000-byte body
SERVER = ("10.0.0.2", 80)
KERNEL_SECONDS = 2.0
KERNEL_THREADS = 2  # two client threads keep the kernel's two ends busy on this machine's cores
CASES = ("connect_close", "request_response")
PYPY_WARMUP_ROUNDS = 2  # unmeasured rounds under PyPy: its JIT compiles the exchange in the first ones
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
    """Process CPU per exchange, microseconds, median of `rounds` (under PyPy after its warm-up rounds)."""
    figures = []
    warmup = PYPY_WARMUP_ROUNDS if sys.implementation.name == "pypy" else 0
    for _ in range(warmup):
        BUILDERS[case](count)()
    for _ in range(rounds):
        run = BUILDERS[case](count)
        began = time.process_time()
        run()
        figures.append((time.process_time() - began) / count * 1e6)
    return statistics.median(figures)


def stack_us_under(python: str, count: int, rounds: int) -> dict[str, float]:
    """Every case's `stack_us`, measured in a process of `python` (this script with --stack-only)."""
    if python == "cpython":
        return {case: stack_us(case, count, rounds) for case in CASES}
    from lab.build.interpreters import check_pypy

    command = [check_pypy(), __file__, "--stack-only", "--count", str(count), "--rounds", str(rounds)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the stack under {python}: exit {done.returncode}, {done.stderr.strip()[-200:]}")
    return {case: float(value) for case, value in json.loads(done.stdout).items()}


def stack_instructions(case: str, count: int) -> int:
    """Machine instructions per exchange: callgrind's total for `count` exchanges less that for one."""
    totals = []
    for n in (1, count):
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                   __file__, "--only", case, "--count", str(n)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            from lab.tools.accept_rate import LoadFailed

            raise LoadFailed(f"valgrind {case}: exit {done.returncode}, {done.stderr.strip()[-200:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) // (count - 1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kernel_us(case: str) -> dict[str, float]:
    """The kernel's CPU per exchange over loopback, both ends C: client and server processes' CPU."""
    from lab.tools.accept_rate import LoadFailed, connload, parse_run

    client_mode, server_mode = ("client", "server") if case == "connect_close" else ("request", "respond")
    binary, port = str(connload()), str(free_port())
    server = subprocess.Popen([binary, server_mode, "127.0.0.1", port, f"{KERNEL_SECONDS + 2:g}",
                               str(KERNEL_THREADS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 5.0)
        if not ready or "listening" not in server.stdout.readline():
            raise LoadFailed(f"connload {server_mode} on 127.0.0.1:{port} did not start")
        client = subprocess.run([binary, client_mode, "127.0.0.1", port, f"{KERNEL_SECONDS:g}",
                                 str(KERNEL_THREADS)], capture_output=True, text=True,
                                timeout=KERNEL_SECONDS + 30, check=False)
        out, _ = server.communicate(input="", timeout=10)  # end of input: the server stops and reports
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    ran = parse_run(client.stdout, f"connload {client_mode}")
    answered = parse_run(out, f"connload {server_mode}")
    if ran.count <= 0 or ran.errors:
        raise LoadFailed(f"connload {client_mode}: {ran.count} exchanges, {ran.errors} errors "
                         f"({ran.first_error or 'none reported'})")
    return {"us": (ran.cpu_seconds + answered.cpu_seconds) / ran.count * 1e6, "per_second": ran.rate,
            "client_cpu_share": ran.cpu_share, "server_cpu_share": answered.cpu_seconds / ran.seconds}


def measure(case: str, stack: float, python: str, count: int,
            instructions: bool) -> dict[str, float | int | str]:
    """One exchange's figures: the stack's (`stack` us, measured under `python`), the kernel's from the
    same run, their ratio."""
    kernel = kernel_us(case)
    row: dict[str, float | int | str] = {
        "stack_us": stack, "stack_python": python, "kernel_us": kernel["us"], "ratio": kernel["us"] / stack,
        "kernel_per_second": kernel["per_second"], "kernel_client_cpu_share": kernel["client_cpu_share"],
        "kernel_server_cpu_share": kernel["server_cpu_share"]}
    if instructions:
        row["stack_instructions"] = stack_instructions(case, min(count, INSTRUCTION_COUNT))
    return row


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr; exit 2 for a missing capability, 1 for a measurement that failed."""
    print(f"bench_exchanges: {message}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="exchanges per round (at least 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instructions", action="store_true", help="also count instructions (valgrind)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--python", choices=("cpython", "pypy"), default="cpython",
                        help="the interpreter of the stack's side")
    parser.add_argument("--only", choices=CASES, help=argparse.SUPPRESS)  # one bare run, for valgrind
    parser.add_argument("--stack-only", action="store_true", help=argparse.SUPPRESS)  # the side under PyPy
    args = parser.parse_args()
    if args.only:  # one bare run under valgrind: one exchange is the baseline
        BUILDERS[args.only](max(1, min(args.count, 1_000_000)))()
        return
    if not 2 <= args.count <= 1_000_000 or not 1 <= args.rounds <= 100:
        parser.error("--count takes 2 to 1000000 and --rounds 1 to 100")
    if args.stack_only:
        print(json.dumps({case: stack_us(case, args.count, args.rounds) for case in CASES}))
        return
    if args.instructions and args.python != "cpython":
        fail("--instructions counts CPython's instructions; PyPy's JIT makes them depend on its warm-up")
    if args.instructions and shutil.which("valgrind") is None:
        fail("--instructions needs valgrind (apt-get install valgrind)")
    from lab.build.interpreters import InterpreterMissing
    from lab.tools.accept_rate import LoadFailed, LoadGeneratorMissing, connload

    results = {}
    try:
        connload()  # before any measurement: a missing yardstick is found at once
        stack = stack_us_under(args.python, args.count, args.rounds)
        for case in CASES:
            results[case] = measure(case, stack[case], args.python, args.count, args.instructions)
    except InterpreterMissing as error:
        fail(str(error))
    except (LoadGeneratorMissing, LoadFailed) as error:  # exit 2 and 1, as `lab bench` gives them
        fail(str(error), error.exit_code)
    except RuntimeError as error:
        fail(str(error), 1)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for case, row in results.items():
        counted = f", {row['stack_instructions']:,} instructions" if "stack_instructions" in row else ""
        print(f"{case}: stack {row['stack_us']:.1f} us CPU per exchange (both ends, in memory, "
              f"{row['stack_python']}{counted}); "
              f"kernel {row['kernel_us']:.1f} us (both ends, loopback, C; {row['kernel_per_second']:.0f}/s); "
              f"ratio {row['ratio']:.3f}")


if __name__ == "__main__":
    main()
