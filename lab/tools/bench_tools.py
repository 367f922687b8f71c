"""`lab bench tools`: the stack measured with the tools everyone knows, each next to the kernel's figure
from the same run, as a ratio, with the side that was CPU-bound.

Two labs, each up only while it is measured: `<name>t`, the pair topology (kernel h1, stack s1 with TAP
offload, its http app on port 80 and the iperf3 app on 5201), and its kernel pair `<name>tk` (n1, n2 on a
veth link of the same MTU), where the same clients measure a kernel `iperf3 -s` and nginx.

- iperf3: `iperf3 -c` in the kernel node against the stack's iperf3 app, each way (`-R`: the stack
  sends), next to `iperf3 -c` between the kernel pair; CPU shares from iperf3's own report (`-J`).
- HTTP keep-alive: wrk (2 threads, 10 connections) GETs `HTTP_PATH` for `seconds`, against the stack's
  http app and against nginx serving a file of the same bytes at the same path.
- The same with `IDLE_CONNECTIONS` more connections open to the same server, idle (a holder process in the
  client's namespace opens them first): a server must not pay for what does not move.
- 50 clients, one connection per request: `ab -c 50` without -k, on the same path.
- curl 100 MB: one GET of /bytes/104857600, the receiver's speed (`speed_download`).

Every CPU share is CPU seconds per wall second of the process (1.0: one core busy): the stack process
and nginx (one process, `master_process off`) from /proc, the clients from their rusage. `bound_by` names
the side that used (nearly) all the cores it can, "machine" when the two together kept every core busy.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab.build.pids import process_cpu_seconds
from lab.experiments.base import ExperimentError
from lab.experiments.bulk import kernel_pair
from lab.experiments.http import wait_for_listener
from lab.experiments.running import ProgressFn, lab_for_experiment
from lab.kernel.namespaces import popen_inside, run_inside
from lab.tools.accept_rate import bound_by
from lab.tools.bench import bench_name, pair_plan, warmup_seconds
from lab.tools.iperf3_report import kernel_report_figures
from stack.node.apps.content import chunks

IPERF3_PORT = 5201
HTTP_PORT = 80  # the pair topology's http app
NGINX_PORT = 8080
HTTP_BYTES = 1000
HTTP_PATH = f"/bytes/{HTTP_BYTES}"
CURL_BYTES = 100 * 1024 * 1024
WRK_THREADS, WRK_CONNECTIONS = 2, 10
AB_CLIENTS = 50
IDLE_CONNECTIONS = 1000
TOOLS = ("iperf3", "wrk", "ab", "curl", "nginx")
MEASUREMENTS = ("iperf3_kernel_to_stack", "iperf3_stack_to_kernel", "http_keepalive", "http_keepalive_idle",
                "http_connection_per_request", "curl_100mb")
# Run in the client's namespace: open the connections, say how many, hold them until stdin closes.
IDLE_HOLDER = """
import resource, socket, sys
address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
wanted = count + 64 if hard == resource.RLIM_INFINITY else min(count + 64, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
held = [socket.create_connection((address, port), timeout=10) for _ in range(count)]
print(len(held), flush=True)
sys.stdin.read()
"""


class ToolFailed(ExperimentError):
    """A tool failed or printed no figure: nothing is reported for it."""

    exit_code = 1


class ToolMissing(ExperimentError):
    """A tool the bench needs is not installed (`make bench-peers`)."""

    exit_code = 2


def _no_progress(step: str) -> None:
    return None


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


# -- running a client and reading its figure -------------------------------------------------------------


def run_client(namespace: str, argv: Sequence[str], timeout: float) -> tuple[str, float, float]:
    """Run a client in `namespace`: (its stdout, wall seconds, its CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = run_inside(namespace, argv, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise ToolFailed(f"{argv[0]} exited {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, wall, cpu


def figure_after(text: str, label: str, tool: str) -> float:
    """The number after `label` on its line ("Requests/sec:   3042.11" gives 3042.11)."""
    for line in text.splitlines():
        if line.strip().startswith(label):
            try:
                return float(line.split(label, 1)[1].split()[0])
            except (IndexError, ValueError):
                break
    raise ToolFailed(f"{tool}: no {label!r} figure in its output: {text.strip()[-300:]!r}")


@contextmanager
def server_cpu(pid: int) -> Iterator[Callable[[], float]]:
    """The CPU seconds process `pid` uses during the block: call the yielded function after it."""
    before = process_cpu_seconds(pid) or 0.0
    used: list[float] = []
    yield lambda: used[0] if used else 0.0
    used.append((process_cpu_seconds(pid) or 0.0) - before)


def measure(namespace: str, argv: Sequence[str], server_pid: int, timeout: float, server: str,
            client_threads: int = 1) -> tuple[str, dict[str, Any]]:
    """Run a client against a server process: its output and both sides' CPU shares and verdict."""
    with server_cpu(server_pid) as server_seconds:
        text, wall, client_cpu = run_client(namespace, argv, timeout)
    shares = {server: round(server_seconds() / wall, 3), "client": round(client_cpu / wall, 3)}
    return text, {"cpu_share": shares, "bound_by": bound_by({server: (shares[server], 1),
                                                             "client": (shares["client"], client_threads)})}


# -- the clients ------------------------------------------------------------------------------------------


def iperf3_json(text: str) -> dict[str, Any]:
    """iperf3 -J's report. iperf3 may print a warning line before it ("WARNING: Size of data read does
    not correspond to offered length", its sign of a peer's short message); a run without a report is
    ToolFailed, in one line."""
    start = text.find("{")
    try:
        report = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, dict):
        first = text.strip().splitlines()[0][:200] if text.strip() else "no output"
        raise ToolFailed(f"iperf3 gave no JSON report ({first})")
    return report


def iperf3_run(namespace: str, address: str, port: int, seconds: float, *, reverse: bool,
               server: str) -> dict[str, Any]:
    argv = ["iperf3", "-c", address, "-p", str(port), "-t", str(max(1, round(seconds))), "-J"]
    text, _, _ = run_client(namespace, [*argv, "-R"] if reverse else argv, seconds + 60)
    report = iperf3_json(text)
    if "error" in report:
        raise ToolFailed(f"iperf3: {report['error']}")
    figures = kernel_report_figures(report)
    client, remote = figures["cpu_util_local"] / 100, figures["cpu_util_remote"] / 100
    shares = {server: round(remote, 3), "client": round(client, 3)}
    return {"value": figures["received_bps"] / 1e9, "sent_bytes": figures["sent_bytes"],
            "received_bytes": figures["received_bytes"], "cpu_share": shares,
            "bound_by": bound_by({server: (remote, 1), "client": (client, 1)})}


def wrk_run(namespace: str, url: str, seconds: float, server_pid: int, server: str) -> dict[str, Any]:
    duration = f"{max(1, round(seconds))}s"
    argv = ["wrk", "-t", str(WRK_THREADS), "-c", str(WRK_CONNECTIONS), "-d", duration, url]
    text, figures = measure(namespace, argv, server_pid, seconds + 60, server, WRK_THREADS)
    return {"value": figure_after(text, "Requests/sec:", "wrk"), **figures}


def ab_run(namespace: str, url: str, seconds: float, server_pid: int, server: str) -> dict[str, Any]:
    argv = ["ab", "-q", "-r", "-c", str(AB_CLIENTS), "-t", str(max(1, round(seconds))), "-n", "10000000", url]
    text, figures = measure(namespace, argv, server_pid, seconds + 60, server)
    failed = figure_after(text, "Failed requests:", "ab")
    return {"value": figure_after(text, "Requests per second:", "ab"), "failed_requests": int(failed),
            **figures}


def curl_run(namespace: str, url: str, server_pid: int, server: str) -> dict[str, Any]:
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}\n", url]
    text, figures = measure(namespace, argv, server_pid, 120, server)
    status, size, speed = text.split()
    if status != "200" or int(size) != CURL_BYTES:
        raise ToolFailed(f"curl {url}: status {status}, {size} of {CURL_BYTES} bytes")
    return {"value": float(speed) / 1e6, **figures}


@contextmanager
def idle_connections(namespace: str, address: str, port: int,
                     count: int = IDLE_CONNECTIONS) -> Iterator[None]:
    """`count` connections to `address:port` from `namespace`, open and idle while the block runs."""
    process = popen_inside(namespace, [sys.executable, "-c", IDLE_HOLDER, address, str(port), str(count)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60.0)
        line = process.stdout.readline().strip() if ready else b""
        if line != str(count).encode():
            _stop(process)
            assert process.stderr is not None
            why = process.stderr.read().decode(errors="replace").strip().splitlines()
            raise ToolFailed(f"could not hold {count} idle connections to {address}:{port}"
                             + (f": {why[-1][:200]}" if why else ""))
        yield
    finally:
        if process.stdin is not None:
            process.stdin.close()
        _stop(process)


# -- kernel servers ---------------------------------------------------------------------------------------


@contextmanager
def nginx_server(namespace: str, address: str) -> Iterator[int]:
    """nginx in `namespace` serving the bench's paths from a temporary directory; yields its pid."""
    with tempfile.TemporaryDirectory(prefix="nslab-nginx-") as directory:
        root = Path(directory)
        (root / "www" / "bytes").mkdir(parents=True)
        for size in (HTTP_BYTES, CURL_BYTES):
            with open(root / "www" / "bytes" / str(size), "wb") as body:
                for piece in chunks(size):
                    body.write(piece)
        temp_paths = "\n".join(f"    {kind}_temp_path {root}/{kind};" for kind in
                               ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (root / "nginx.conf").write_text(f"""daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
{temp_paths}
    server {{
        listen {address}:{NGINX_PORT} backlog=4096;
        root {root}/www;
    }}
}}
""")
        process = popen_inside(namespace, ["nginx", "-p", str(root), "-e", f"{root}/error.log",
                                           "-c", str(root / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if not wait_for_listener(namespace, NGINX_PORT, process, timeout=10.0):
                log = (root / "error.log").read_text() if (root / "error.log").exists() else ""
                raise ToolFailed(f"nginx did not listen on {address}:{NGINX_PORT}: {log.strip()[-300:]}")
            yield process.pid
        finally:
            _stop(process)


@contextmanager
def iperf3_server(namespace: str, address: str) -> Iterator[int]:
    process = popen_inside(namespace, ["iperf3", "-s", "-B", address, "-p", str(IPERF3_PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for_listener(namespace, IPERF3_PORT, process, timeout=10.0):
            raise ToolFailed(f"iperf3 -s did not listen on {address}:{IPERF3_PORT}")
        yield process.pid
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# -- the bench --------------------------------------------------------------------------------------------


def run_bench_tools(seconds: float = 3.0, name: str | None = None, python: str = "cpython",
                    progress: ProgressFn | None = None) -> dict[str, Any]:
    """Every figure of `lab bench tools --json`, from one run (see the module docstring)."""
    missing = missing_tools()
    if missing:
        raise ToolMissing(f"bench tools: {', '.join(missing)} not installed (make bench-peers)")
    name = f"{name or bench_name()}t"
    report = progress or _no_progress
    stack_side: dict[str, dict[str, Any]] = {}
    kernel_side: dict[str, dict[str, Any]] = {}
    with lab_for_experiment(pair_plan(name, offload=True, python=python), None, progress=report) as lab:
        kernel, stack = lab.kernel_and_stack()
        client = lab.node(kernel).namespace
        address = lab.address(stack)
        with lab.stack(stack) as control:
            control.listen(IPERF3_PORT, "iperf3")
            hello = control.hello()
        pid, stack_python = int(hello["pid"]), str(hello.get("python", "CPython"))
        warmup = warmup_seconds(python)
        if warmup > 0:
            report(f"warming up the stack for about {warmup:g} s (each load once, unmeasured)")
            _warm_up(client, address, warmup, pid)
        report("iperf3 into the stack and out of it")
        for key, reverse in (("iperf3_kernel_to_stack", False), ("iperf3_stack_to_kernel", True)):
            stack_side[key] = iperf3_run(client, address, IPERF3_PORT, seconds, reverse=reverse,
                                         server="stack")
        stack_side.update(_http_runs(client, address, HTTP_PORT, seconds, pid, "stack", report))
        with kernel_pair(lab) as pair:
            n1, n2 = pair.node("n1"), pair.node("n2")
            server_address = str(n2.interfaces[0].address.ip)
            report("iperf3 kernel to kernel")
            with iperf3_server(n2.namespace, server_address):
                kernel_side["iperf3"] = iperf3_run(n1.namespace, server_address, IPERF3_PORT, seconds,
                                                   reverse=False, server="server")
            with nginx_server(n2.namespace, server_address) as nginx:
                kernel_side.update(_http_runs(n1.namespace, server_address, NGINX_PORT, seconds, nginx,
                                              "server", report))
    kernel_side["iperf3_kernel_to_stack"] = kernel_side["iperf3_stack_to_kernel"] = kernel_side.pop("iperf3")
    return {**with_tool_ratios(stack_side, kernel_side, seconds), "stack_python": stack_python,
            "stack_warmup_seconds": warmup}


def _warm_up(namespace: str, address: str, seconds: float, pid: int) -> None:
    """Every load the stack is measured under, once, unmeasured: a JIT compiles the paths of each load
    while it runs (iperf3's receive path is not HTTP's), so a load it had not seen would be measured
    half compiled."""
    base = f"http://{address}:{HTTP_PORT}"
    wrk_run(namespace, base + HTTP_PATH, seconds / 3, pid, "stack")
    ab_run(namespace, base + HTTP_PATH, seconds / 6, pid, "stack")
    for reverse in (False, True):
        iperf3_run(namespace, address, IPERF3_PORT, seconds / 6, reverse=reverse, server="stack")
    deadline = time.monotonic() + seconds / 3  # a PyPy node's first 100 MB ran at 100, 210, 340, 860 MB/s
    while time.monotonic() < deadline:
        curl_run(namespace, f"{base}/bytes/{CURL_BYTES}", pid, "stack")


def _http_runs(namespace: str, address: str, port: int, seconds: float, pid: int, server: str,
               report: ProgressFn) -> dict[str, dict[str, Any]]:
    base = f"http://{address}:{port}"
    report(f"wrk keep-alive (then beside {IDLE_CONNECTIONS} idle connections), ab -c {AB_CLIENTS} and "
           f"curl 100 MB against {base}")
    runs = {"http_keepalive": wrk_run(namespace, base + HTTP_PATH, seconds, pid, server)}
    with idle_connections(namespace, address, port):
        runs["http_keepalive_idle"] = wrk_run(namespace, base + HTTP_PATH, seconds, pid, server)
    return {**runs, "http_connection_per_request": ab_run(namespace, base + HTTP_PATH, seconds, pid, server),
            "curl_100mb": curl_run(namespace, f"{base}/bytes/{CURL_BYTES}", pid, server)}


UNITS = {"iperf3_kernel_to_stack": "Gbit/s", "iperf3_stack_to_kernel": "Gbit/s", "http_keepalive": "req/s",
         "http_keepalive_idle": "req/s", "http_connection_per_request": "req/s", "curl_100mb": "MB/s"}
WHAT = {"iperf3_kernel_to_stack": "iperf3 -c (kernel) -> stack iperf3 app; kernel: iperf3 kernel -> kernel",
        "iperf3_stack_to_kernel": "iperf3 -c -R: stack iperf3 app -> kernel; kernel: iperf3 kernel -> kernel",
        "http_keepalive": f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} GET {HTTP_PATH}: stack http app vs nginx",
        "http_keepalive_idle": f"the same with {IDLE_CONNECTIONS} more connections open and idle",
        "http_connection_per_request": f"ab -c {AB_CLIENTS} (no keep-alive) GET {HTTP_PATH}: stack vs nginx",
        "curl_100mb": f"curl GET /bytes/{CURL_BYTES}: stack http app vs nginx"}


def with_tool_ratios(stack_side: dict[str, dict[str, Any]], kernel_side: dict[str, dict[str, Any]],
                     seconds: float) -> dict[str, Any]:
    """The JSON of `lab bench tools`: per measurement the stack's figure, the kernel's, their ratio, and
    each run's CPU shares and verdict."""
    measurements = {}
    for key in MEASUREMENTS:
        ours, theirs = stack_side[key], kernel_side[key]
        measurements[key] = {
            "what": WHAT[key], "unit": UNITS[key], "stack": round(ours["value"], 3),
            "kernel": round(theirs["value"], 3),
            "ratio": round(ours["value"] / theirs["value"], 4) if theirs["value"] else 0.0,
            "stack_bound_by": ours["bound_by"], "kernel_bound_by": theirs["bound_by"],
            "stack_cpu_share": ours["cpu_share"], "kernel_cpu_share": theirs["cpu_share"],
        }
        for extra in ("sent_bytes", "received_bytes", "failed_requests"):
            if extra in ours:
                measurements[key][f"stack_{extra}"] = ours[extra]
    return {"seconds": seconds, "http_path": HTTP_PATH, "cores": os.cpu_count(), "measurements": measurements}
