"""`make demo`: the lab itself, end to end, on real namespaces.

1. `lab doctor`: what this machine offers;
2. the router topology up (h1 and the pystack node s1 on a LAN, r1 routing to h2's subnet);
3. its status;
4. a kernel-to-kernel TCP transfer from h1 through r1 to h2, checked by SHA-256, with r1's own
   forwarding counter as proof of the path;
5. everything down, also when a step fails.

Exit code: 0 when every step worked, 1 when the transfer failed, 2 when the machine lacks something.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from pathlib import Path

from pyroute2 import netns
from rich.console import Console
from rich.rule import Rule

from lab import builder, doctor
from lab.netlink import Netlink
from lab.plan import LabPlan
from lab.state import LabError
from lab.topology import TOPOLOGY_DIR, TopologyError, load_topology

DEMO_LAB = "nslabdemo"
TRANSFER_BYTES = 8 * 1024 * 1024
SERVER_PORT = 5201
SOCKET_TIMEOUT = 10.0


def forwarded_datagrams(nl: Netlink, namespace: str) -> int:
    """Ip ForwDatagrams from /proc/net/snmp as the router's own kernel counts it."""
    with nl.inside(namespace):
        lines = Path("/proc/thread-self/net/snmp").read_text().splitlines()
    header, values = (line.split() for line in lines if line.startswith("Ip:"))
    return int(values[header.index("ForwDatagrams")])


def transfer(client_ns: str, server_ns: str, server_ip: str, payload: bytes) -> tuple[bytes, float]:
    """Send `payload` from a kernel socket in one namespace to one in another; the server answers
    with the SHA-256 of what it received. Returns (that digest, seconds)."""
    listener = netns.create_socket(server_ns, flags=0)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((server_ip, SERVER_PORT))
    listener.listen(1)
    listener.settimeout(SOCKET_TIMEOUT)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(SOCKET_TIMEOUT)
                digest = hashlib.sha256()
                while chunk := conn.recv(1 << 16):
                    digest.update(chunk)
                conn.sendall(digest.digest())
        except OSError as error:
            failure.append(error)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = netns.create_socket(client_ns, flags=0)
    try:
        client.settimeout(SOCKET_TIMEOUT)
        started = time.perf_counter()
        client.connect((server_ip, SERVER_PORT))
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(64):
            answer += chunk
        seconds = time.perf_counter() - started
    finally:
        client.close()
        server.join(SOCKET_TIMEOUT)
        listener.close()
    if failure:
        raise failure[0]
    return answer, seconds


def main() -> int:
    console = Console(highlight=False)
    console.print(Rule("1. lab doctor"))
    checks = doctor.run_checks()
    for check in checks:
        colour = {"ok": "green", "warning": "yellow", "missing": "red"}[check.status]
        console.print(f"  [{colour}]{check.status:8}[/] {check.name:13} {check.detail}")
    if not doctor.report(checks)["ok"]:
        console.print("[red]this machine lacks something the lab needs (see above)[/]")
        return 2

    try:
        plan = load_topology(TOPOLOGY_DIR / "router.yaml", name=DEMO_LAB)
    except TopologyError as error:
        console.print(f"[red]{error}[/]")
        return 2
    try:
        return _run(console, plan)
    finally:
        console.print(Rule("5. lab down"))
        try:
            result = builder.down(DEMO_LAB)
            left = [n for n in os.listdir("/var/run/netns") if n.startswith(f"{DEMO_LAB}-")]
            console.print(f"  removed {len(result.removed)} objects in {result.seconds:.3f} s; "
                          f"namespaces left: {left or 'none'}")
        except LabError as error:
            console.print(f"  {error}")


def _run(console: Console, plan: LabPlan) -> int:
    from lab.cli import _plan_table, _print_status
    from lab.status import lab_status

    console.print(Rule(f"2. lab up {plan.source} --name {DEMO_LAB}"))
    try:
        result = builder.up(plan)
    except LabError as error:
        console.print(f"[red]{error}[/]")
        return 2
    console.print(f"  {result.message} in {result.seconds:.3f} s")
    console.print(_plan_table(plan))

    console.print(Rule(f"3. lab status {DEMO_LAB}"))
    _print_status(lab_status(DEMO_LAB))

    h1, r1, h2 = plan.node("h1"), plan.node("r1"), plan.node("h2")
    server_ip = str(h2.interfaces[0].address.ip)
    console.print(Rule(f"4. kernel TCP: h1 ({h1.interfaces[0].address.ip}) -> r1 -> h2 ({server_ip})"))
    payload = os.urandom(TRANSFER_BYTES)
    with Netlink() as nl:
        before = forwarded_datagrams(nl, r1.namespace)
        try:
            digest, seconds = transfer(h1.namespace, h2.namespace, server_ip, payload)
        except OSError as error:
            console.print(f"[red]  transfer failed: {error}[/]")
            return 1
        forwarded = forwarded_datagrams(nl, r1.namespace) - before
    expected = hashlib.sha256(payload).digest()
    ok = digest == expected
    verdict = "[green]matches[/]" if ok else "[red]DIFFERS[/]"
    console.print(f"  sent {TRANSFER_BYTES / 2**20:.0f} MiB in {seconds * 1000:.1f} ms "
                  f"({TRANSFER_BYTES * 8 / seconds / 1e9:.2f} Gbit/s); h2 received SHA-256 "
                  f"{digest.hex()[:16]}... {verdict}")
    console.print(f"  r1 forwarded {forwarded} IP datagrams on the way (Ip ForwDatagrams in {r1.namespace})")
    if forwarded == 0:
        console.print("[red]  r1 forwarded nothing: the traffic did not cross the router[/]")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
