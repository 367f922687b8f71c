"""Loss recovery under loss and reordering: the stack as a sender against a Linux sender, same path.

Root only. For each profile (1 % and 5 % loss, each without and with 5 % reordering, 1 ms delay) one lab:

    s1 (pystack, source app) --impaired s1->h1-- h1 (kernel, receiver) --impaired h2->h1-- h2 (kernel sender)

The stack applies its link's impairment on its TAP path, the kernel link gets netem (or the lab's
forwarder, which runs the same impairment model); both directions toward h1 get the same profile and the
ACK directions stay clean.  h1 reads from each sender in turn for `--seconds` (the stack's source app, then
a kernel socket in h2 set to cubic with TCP_CONGESTION, as the stack's default is cubic while the machine's
may be BBR).  Printed per profile: each sender's goodput, the ratio stack/Linux, and each sender's RTO count
(the stack's TCPTimeouts from its node, the kernel's from h2's /proc/net/netstat), with the loss probes.

`--compare` runs every profile twice in the same lab, RACK-TLP off (`TcpConfig.rack/tlp` set on the node
through its control socket: DupThresh recovery only) and on, so the before/after come from one sitting.

    .venv/bin/python benchmarks/bench_recovery.py [--seconds 8] [--compare] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.build import builder
from lab.build.control import StackClient
from lab.kernel.sockets import kernel_netstat, namespace_socket
from lab.topology import load_topology

STACK_IP = "10.0.1.2"
KERNEL_SENDER_IP = "10.0.2.2"
KERNEL_PORT = 5019
CONGESTION = "cubic"
PROFILES = (
    ("loss 1%", {"loss": "1%"}),
    ("loss 1% reorder 5%", {"loss": "1%", "reorder": "5%"}),
    ("loss 5%", {"loss": "5%"}),
    ("loss 5% reorder 5%", {"loss": "5%", "reorder": "5%"}),
)
DELAY = "1ms"
TOPOLOGY = """
name: {name}
nodes:
  h1: {{kind: kernel}}
  h2: {{kind: kernel}}
  s1:
    kind: pystack
    apps: [{{app: source, port: 19}}]
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.1.0/24
    impair:
      s1->h1: {impair}
  - endpoints: [h1:eth1, h2:eth0]
    subnet: 10.0.2.0/24
    impair:
      h2->h1: {impair}
"""
STACK_COUNTERS = ("TCPTimeouts", "TCPLossProbes", "TCPLossProbeRecovery", "TCPDSACKRecv", "TCPDSACKUndo",
                  "TCPSACKReorder", "RetransSegs")


def receive(namespace: str, address: tuple[str, int], seconds: float) -> float:
    """Connect from h1 and read for `seconds`; goodput in Mbit/s."""
    with namespace_socket(namespace, congestion=CONGESTION) as sock:
        sock.settimeout(10)
        sock.connect(address)
        buffer = bytearray(1 << 20)
        received, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            got = sock.recv_into(buffer)
            if not got:
                break
            received += got
        elapsed = time.monotonic() - start
    return received * 8 / elapsed / 1e6


def kernel_sender(namespace: str, ready: threading.Event, stop: threading.Event) -> None:
    """A cubic kernel sender in h2: accept connections and stream zeros into each until it closes."""
    block = bytes(1 << 16)
    with namespace_socket(namespace, congestion=CONGESTION) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((KERNEL_SENDER_IP, KERNEL_PORT))
        listener.listen(4)
        listener.settimeout(0.5)
        ready.set()
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                try:
                    while not stop.is_set():
                        conn.sendall(block)
                except OSError:
                    pass  # the receiver closed: this run is over


def stack_counters(client: StackClient) -> dict[str, int]:
    stats = client.stats()
    flat: dict[str, int] = {}
    for name, value in stats.items():
        if isinstance(value, int):
            flat[name.removeprefix("TcpExt").removeprefix("Tcp")] = value
    return flat


def deltas(before: dict[str, int], after: dict[str, int], names: tuple[str, ...]) -> dict[str, int]:
    return {name: after.get(name, 0) - before.get(name, 0) for name in names}


def measure_profile(label: str, impair: dict[str, str], seconds: float, modes: tuple[bool, ...],
                    root: Path) -> list[dict[str, Any]]:
    name = f"rk{uuid.uuid4().hex[:7]}"
    spec = "{" + ", ".join(f"{k}: {v}" for k, v in {"delay": DELAY, **impair}.items()) + "}"
    topology = root / f"{name}.yaml"
    topology.write_text(TOPOLOGY.format(name=name, impair=spec))
    plan = load_topology(topology)
    builder.up(plan, root=root)
    stop = threading.Event()
    try:
        h1, h2 = plan.node("h1").namespace, plan.node("h2").namespace
        ready = threading.Event()
        server = threading.Thread(target=kernel_sender, args=(h2, ready, stop), daemon=True)
        server.start()
        if not ready.wait(10):
            raise RuntimeError("the kernel sender in h2 did not start listening")
        rows = []
        with StackClient.for_node(name, "s1", root=root) as client:
            for rack in modes:
                client.config(rack=rack, tlp=rack)
                before = stack_counters(client)
                stack_mbps = receive(h1, (STACK_IP, 19), seconds)
                stack = deltas(before, stack_counters(client), STACK_COUNTERS)
                kbefore = kernel_netstat(h2)
                kernel_mbps = receive(h1, (KERNEL_SENDER_IP, KERNEL_PORT), seconds)
                kafter = kernel_netstat(h2)
                kernel = {n: kafter.get(f"TcpExt{n}", 0) - kbefore.get(f"TcpExt{n}", 0)
                          for n in ("TCPTimeouts", "TCPLossProbes", "TCPLossProbeRecovery")}
                rows.append({
                    "profile": label, "rack_tlp": rack, "seconds": seconds,
                    "stack_mbps": round(stack_mbps, 2), "kernel_mbps": round(kernel_mbps, 2),
                    "ratio": round(stack_mbps / kernel_mbps, 3) if kernel_mbps else None,
                    "stack_rto": stack["TCPTimeouts"], "kernel_rto": kernel["TCPTimeouts"],
                    "stack_probes": stack["TCPLossProbes"], "kernel_probes": kernel["TCPLossProbes"],
                    "stack": stack,
                })
        return rows
    finally:
        stop.set()
        builder.down(name, root=root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="each transfer's length (1-60 s)")
    parser.add_argument("--compare", action="store_true", help="also measure with RACK-TLP off")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 60:
        print(f"--seconds={args.seconds}: expected 1 to 60", file=sys.stderr)
        return 2
    modes = (False, True) if args.compare else (True,)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nslab-bench-") as tmp:
        for label, impair in PROFILES:
            rows += measure_profile(label, impair, args.seconds, modes, Path(tmp))
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"delay {DELAY} each way toward h1, {CONGESTION} on both senders, {args.seconds:g} s a transfer")
    print(f"{'profile':20} {'RACK-TLP':8} {'stack Mbit/s':>12} {'Linux Mbit/s':>12} {'ratio':>6} "
          f"{'stack RTOs':>10} {'Linux RTOs':>10} {'stack TLPs':>10} {'Linux TLPs':>10}")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(f"{r['profile']:20} {'on' if r['rack_tlp'] else 'off':8} {r['stack_mbps']:12.1f} "
              f"{r['kernel_mbps']:12.1f} {ratio:>6} {r['stack_rto']:10} {r['kernel_rto']:10} "
              f"{r['stack_probes']:10} {r['kernel_probes']:10}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
