"""An unmodified Python program on the stack against the same program on the kernel, in one run.

One lab: a LAN (one bridge) joining kernel client h1 (10.0.0.1), pystack s1 (10.0.0.2) and kernel k1
(10.0.0.3). The same programs run on s1 (through `lab exec`, their sockets on the node's stack via its
socket service) and on k1 (kernel sockets); the same clients in h1 measure both, over the same path:

  - download: curl of a file from `python3 -m http.server` (MB/s, curl's own figure, best of --repeat);
  - upload: a socketserver sink, bytes sent by a Python client until the sink answers their count;
  - rtt: one byte to a socketserver echo and back (TCP_NODELAY), the median of --rounds;
  - crr: connect + `GET /small` + close with http.client against http.server, the median.

The node's own apps (echo, http: Python on the stack, no socket service, no second process) are measured
the same way (`app_*`): the difference between an app and a program is the service's cost.

Each stack figure is printed with the kernel's and their ratio (for latencies, kernel / stack, so 1.0 is
parity and smaller is slower). The machine is shared: run it alone for stable figures.

Usage: python benchmarks/bench_programs.py [--bytes N] [--repeat R] [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.experiments.running import lab_for_experiment
from lab.topology import plan_from_text

HERE = Path(__file__).resolve().parent
ECHO = HERE.parent / "tests" / "interop" / "programs" / "echo_socketserver.py"
TOPOLOGY = """
name: programs
nodes:
  h1: {kind: kernel}
  s1:
    kind: pystack
    apps: [{app: echo, port: 7}, {app: http, port: 80}]
  k1: {kind: kernel}
links:
  - endpoints: [h1:eth0, s1:eth0, k1:eth0]
    subnet: 10.0.0.0/24
"""
SERVERS = {"s1": "10.0.0.2", "k1": "10.0.0.3"}
HTTP_PORT, ECHO_PORT, SINK_PORT = 8080, 7007, 7009


def lab_exec(lab: str, node: str, *argv: str) -> list[str]:
    return [sys.executable, "-m", "lab", "exec", lab, node, "--", *argv]


def start(lab: str, node: str, *argv: str, ready: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(lab_exec(lab, node, *argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if ready.encode() in line:
            return process
        if not line and process.poll() is not None:
            break
    process.kill()
    raise SystemExit(f"bench_programs: {' '.join(argv)} on {node} did not start")


def download(lab: str, url: str, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        out = subprocess.run(lab_exec(lab, "h1", "curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}",
                                      "--max-time", "120", url),
                             capture_output=True, text=True, check=True, timeout=150)
        best = max(best, float(out.stdout) / 1e6)
    return best


def client(lab: str, address: str, size: int, rounds: int, *, echo: int = ECHO_PORT, crr: bool = True
           ) -> dict[str, float]:
    out = subprocess.run(lab_exec(lab, "h1", "python3", str(HERE / "programs" / "client.py"), address,
                                  str(HTTP_PORT), str(echo), str(SINK_PORT), str(size), str(rounds),
                                  str(max(1, rounds // 4) if crr else 0)),
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)


def measure(size: int, repeat: int, rounds: int) -> dict[str, float]:
    plan = plan_from_text(TOPOLOGY, source="<bench_programs>", name=f"spb{uuid.uuid4().hex[:6]}")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as files, lab_for_experiment(plan, None) as lab:
        (Path(files) / "file.bin").write_bytes(os.urandom(size))
        (Path(files) / "small").write_bytes(b"x" * 100)
        servers: list[subprocess.Popen[bytes]] = []
        try:
            for node, address in SERVERS.items():
                servers.append(start(lab.name, node, "python3", "-m", "http.server", "--bind", address,
                                     str(HTTP_PORT), "--directory", files, ready="Serving HTTP"))
                servers.append(start(lab.name, node, "python3", str(ECHO), address, str(ECHO_PORT),
                                     ready="serving"))
                servers.append(start(lab.name, node, "python3", str(HERE / "programs" / "sink.py"), address,
                                     str(SINK_PORT), ready="serving"))
            for node, address in SERVERS.items():
                side = "stack" if node == "s1" else "kernel"
                url = f"http://{address}:{HTTP_PORT}/file.bin"
                figures[f"{side}_download_mb_s"] = download(lab.name, url, repeat)
                for name, value in client(lab.name, address, size, rounds).items():
                    figures[f"{side}_{name}"] = value
            app = SERVERS["s1"]
            figures["app_download_mb_s"] = download(lab.name, f"http://{app}/bytes/{size}", repeat)
            figures["app_rtt_us"] = client(lab.name, app, 0, rounds, echo=7, crr=False)["rtt_us"]
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(10)
    for name in ("download_mb_s", "upload_mb_s"):
        figures[f"{name.removesuffix('_mb_s')}_ratio"] = figures[f"stack_{name}"] / figures[f"kernel_{name}"]
    for name in ("rtt_us", "crr_ms"):
        figures[f"{name.split('_')[0]}_ratio"] = figures[f"kernel_{name}"] / figures[f"stack_{name}"]
    figures["app_download_ratio"] = figures["app_download_mb_s"] / figures["kernel_download_mb_s"]
    figures["app_rtt_ratio"] = figures["kernel_rtt_us"] / figures["app_rtt_us"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=int, default=50_000_000, help="download and upload size")
    parser.add_argument("--repeat", type=int, default=3, help="downloads per side (the best counts)")
    parser.add_argument("--rounds", type=int, default=400, help="RTT rounds (a quarter as many crr)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.bytes, args.repeat, args.rounds)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    rows = [("download MB/s", "download_mb_s", "download_ratio"),
            ("upload MB/s", "upload_mb_s", "upload_ratio"),
            ("echo RTT us", "rtt_us", "rtt_ratio"), ("connect+GET+close ms", "crr_ms", "crr_ratio")]
    print(f"{'':24}{'stack':>12}{'kernel':>12}{'ratio':>8}")
    for label, key, ratio in rows:
        print(f"{label:24}{figures['stack_' + key]:12.1f}{figures['kernel_' + key]:12.1f}"
              f"{figures[ratio]:8.3f}")
    for label, key in (("app download MB/s", "download"), ("app echo RTT us", "rtt")):
        unit = "mb_s" if key == "download" else "us"
        print(f"{label:24}{figures[f'app_{key}_{unit}']:12.1f}{figures[f'kernel_{key}_{unit}']:12.1f}"
              f"{figures[f'app_{key}_ratio']:8.3f}")
    print("ratio: stack/kernel for rates, kernel/stack for latencies (1.0 = parity)")


if __name__ == "__main__":
    main()
