"""Impaired links between kernel nodes, measured (root): delay and loss as ping sees them, a bulk transfer
under loss/reorder/duplicate/corrupt arriving intact, `lab impair` on a running lab, and the forwarder
taken down after a SIGKILL of `lab up`.

Where the kernel has sch_netem the links get netem qdiscs; where it has none (this machine) the lab's
forwarder. The measurements hold for both: they are what a user of the link sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pyroute2 import netns

from lab.build.journal import read_journal
from lab.build.processes import is_running
from lab.build.state import LabState
from lab.kernel.capabilities import netem_available
from stack.devices.namespace import move_to
from tests.lab.build.test_integration import NOTHING, PAIR_KERNEL, PROJECT_ROOT, run_lab, traces, write

EXPECTED_BY = "netem" if netem_available() else "forwarder"
PING_TIMEOUT = 60.0


def ping(lab: str, node: str, address: str, count: int, interval: float = 0.01) -> list[float]:
    """The round-trip times (ms) of the replies `count` pings from `node` got (lost ones are missing)."""
    path = f"/var/run/netns/{lab}-{node}"
    result = subprocess.run(["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", address],
                            preexec_fn=lambda: move_to(path), capture_output=True, text=True,
                            timeout=PING_TIMEOUT, check=False)
    return [float(value) for value in re.findall(r"time=([0-9.]+) ms", result.stdout)]


def up(lab: str, tmp_path: Path, text: str) -> None:
    result = run_lab("up", str(write(tmp_path, "t.yaml", text)), "--name", lab)
    assert result.returncode == 0, result.stderr


def impair(lab: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_lab("impair", lab, *args)


@pytest.mark.root
def test_twenty_ms_each_way_is_a_forty_ms_round_trip(lab_name: str, tmp_path: Path) -> None:
    up(lab_name, tmp_path, PAIR_KERNEL + "    impair: {delay: 20ms}\n")
    times = ping(lab_name, "h1", "10.0.0.2", 30, interval=0.05)
    assert len(times) == 30
    # 40 ms of delay, plus a timer's granularity and a loaded machine's scheduling: never less, a few ms more
    assert min(times) >= 39.5 and statistics.median(times) <= 46.0, times
    status = json.loads(run_lab("status", lab_name, "--json").stdout)
    assert {row["direction"]: row["by"] for row in status["impairments"]} == {
        "h1->h2": EXPECTED_BY, "h2->h1": EXPECTED_BY}
    assert status["drift"] == {"missing": [], "untracked": [], "dead": []}


@pytest.mark.root
def test_ten_percent_loss_is_what_ping_sees(lab_name: str, tmp_path: Path) -> None:
    """200 echo requests through a 10 % loss on the way there: the count lost is Binomial(200, 0.1),
    mean 20, standard deviation 4.2; 4 deviations either side (3..37) fail a correct link once in 10^4."""
    up(lab_name, tmp_path, PAIR_KERNEL + "    impair: {h1->h2: {loss: 10%}}\n")
    ping(lab_name, "h1", "10.0.0.2", 1, interval=0.2)  # ARP first: its loss is not the experiment's
    times = ping(lab_name, "h1", "10.0.0.2", 200)
    lost = 200 - len(times)
    assert 3 <= lost <= 37, f"{lost} of 200 lost"


def kernel_bulk(lab: str, size: int, *, port: int = 5001, timeout: float = 60.0) -> tuple[str, str, float]:
    """Kernel sockets: h1 sends `size` bytes to h2 (10.0.0.2); (sent sha256, received sha256, seconds)."""
    payload = os.urandom(size)
    server = netns.create_socket(f"{lab}-h2", flags=0)
    client = netns.create_socket(f"{lab}-h1", flags=0)
    received = hashlib.sha256()
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("10.0.0.2", port))
        server.listen(1)
        for sock in (server, client):
            sock.settimeout(timeout)
        client.connect(("10.0.0.2", port))
        conn, _ = server.accept()
        conn.settimeout(timeout)

        def send() -> None:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)

        started = time.perf_counter()
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        with conn:
            while chunk := conn.recv(1 << 20):
                received.update(chunk)
        seconds = time.perf_counter() - started
        sender.join(timeout)
    finally:
        client.close()
        server.close()
    return hashlib.sha256(payload).hexdigest(), received.hexdigest(), seconds


@pytest.mark.root
def test_a_bulk_transfer_under_loss_reorder_duplicate_and_corrupt_arrives_exact(lab_name: str,
                                                                                 tmp_path: Path) -> None:
    up(lab_name, tmp_path, PAIR_KERNEL
       + "    impair: {delay: 2ms, loss: 1%, reorder: 5%, duplicate: 2%, corrupt: 1%}\n")
    sent, received, _seconds = kernel_bulk(lab_name, 4 * 1024 * 1024)
    assert received == sent
    if EXPECTED_BY == "forwarder":  # the forwarder counts what it did: every effect really happened
        rows = json.loads(impair(lab_name, "--show", "--json").stdout)
        there = next(row for row in rows if row["direction"] == "h1->h2")["counters"]
        assert there["offered"] > 2000
        assert min(there["lost"], there["reordered"], there["duplicated"], there["corrupted"]) > 0, there


IMPAIRABLE_PAIR = PAIR_KERNEL + "    impairable: true\n"


@pytest.mark.root
def test_lab_impair_changes_a_running_link_and_clear_restores_it(lab_name: str, tmp_path: Path) -> None:
    up(lab_name, tmp_path, IMPAIRABLE_PAIR)
    ping(lab_name, "h1", "10.0.0.2", 1, interval=0.2)
    assert statistics.median(ping(lab_name, "h1", "10.0.0.2", 20, interval=0.02)) < 5.0
    changed = impair(lab_name, "h1:eth0", "--delay", "20ms")
    assert changed.returncode == 0, changed.stderr
    assert "h1->h2: delay 20ms" in changed.stdout and "h2->h1: delay 20ms" in changed.stdout
    slow = ping(lab_name, "h1", "10.0.0.2", 20, interval=0.05)
    assert len(slow) == 20 and min(slow) >= 39.5 and statistics.median(slow) <= 46.0, slow
    one_way = impair(lab_name, "h2:eth0", "--delay", "5ms", "--direction", "out")  # h2->h1 only
    assert one_way.returncode == 0, one_way.stderr
    assert 24.5 <= statistics.median(ping(lab_name, "h1", "10.0.0.2", 20, interval=0.05)) <= 31.0
    shown = {row["direction"]: row for row in json.loads(impair(lab_name, "--show", "--json").stdout)}
    assert shown["h1->h2"]["impairment"]["delay_ms"] == 20 and shown["h2->h1"]["impairment"]["delay_ms"] == 5
    assert impair(lab_name, "h1:eth0", "--clear").returncode == 0
    assert statistics.median(ping(lab_name, "h1", "10.0.0.2", 20, interval=0.02)) < 5.0
    assert json.loads(run_lab("status", lab_name, "--json").stdout)["impairments"] == []


@pytest.mark.root
@pytest.mark.parametrize(("args", "says"), [
    (["h1:eth0", "--delay", "20"], "lab impair: delay: expected a duration"),
    (["h1:eth0", "--loss", "101%"], "lab impair: loss: expected a percentage"),
    (["h1:eth0", "--jitter", "5ms"], "expected a delay for the jitter to vary"),
    (["h1:eth0", "--direction", "up", "--delay", "1ms"], "direction 'up'"),
    (["h9:eth0", "--delay", "1ms"], "no interface 'h9:eth0'"),
    (["h1:eth0"], "give at least one of --delay"),
    (["h1:eth0", "--clear", "--loss", "1%"], "--clear makes the direction clean"),
])
def test_bad_impair_input_is_one_line_and_exit_2(lab_name: str, tmp_path: Path, args: list[str],
                                                 says: str) -> None:
    up(lab_name, tmp_path, IMPAIRABLE_PAIR)
    result = impair(lab_name, *args)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("lab: ")


@pytest.mark.root
def test_a_direct_link_without_netem_says_how_to_make_it_impairable(lab_name: str, tmp_path: Path) -> None:
    if netem_available():
        pytest.skip("with sch_netem every kernel link takes a netem qdisc at run time")
    up(lab_name, tmp_path, PAIR_KERNEL)
    result = impair(lab_name, "h1:eth0", "--delay", "5ms")
    assert result.returncode == 2 and "impairable: true" in result.stderr, result.stderr


PYSTACK_PAIR = """\
name: ks
nodes:
  h1: {kind: kernel}
  s1: {kind: pystack}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
"""


@pytest.mark.root
def test_lab_impair_swaps_a_running_stack_nodes_impairment(lab_name: str, tmp_path: Path) -> None:
    up(lab_name, tmp_path, PYSTACK_PAIR)
    ping(lab_name, "h1", "10.0.0.2", 1, interval=0.2)
    assert statistics.median(ping(lab_name, "h1", "10.0.0.2", 10, interval=0.02)) < 10.0
    changed = impair(lab_name, "s1:eth0", "--delay", "15ms", "--direction", "in")  # h1->s1, at the stack
    assert changed.returncode == 0 and "by stack" in changed.stdout, changed.stdout + changed.stderr
    assert min(ping(lab_name, "h1", "10.0.0.2", 10, interval=0.05)) >= 14.5
    settings = json.loads(LabState.for_lab(lab_name).node_settings_path("s1").read_text())
    assert settings["interface"]["ingress"]["delay_ms"] == 15  # a restarted stack keeps it
    assert impair(lab_name, "s1:eth0", "--clear").returncode == 0
    assert statistics.median(ping(lab_name, "h1", "10.0.0.2", 10, interval=0.02)) < 10.0


@pytest.mark.root
def test_the_forwarded_path_is_not_absurdly_slower_than_a_direct_veth(lab_name: str, tmp_path: Path) -> None:
    """Clean links, one direct and one through the forwarder, measured in the same run (figures printed)."""
    if netem_available():
        pytest.skip("with sch_netem no link goes through the forwarder")
    up(lab_name, tmp_path, PAIR_KERNEL + "  - endpoints: [h1:eth1, h2:eth1]\n    subnet: 10.0.1.0/24\n"
       "    impairable: true\n")
    size = 64 * 1024 * 1024
    sent, received, direct = kernel_bulk(lab_name, size)
    assert received == sent
    # The same transfer over the forwarded link: route 10.0.0.2 is the direct one, so use link 1's address.
    with netns_route_swap(lab_name):
        sent, received, forwarded = kernel_bulk(lab_name, size, port=5002)
    assert received == sent
    direct_gbps, forwarded_gbps = size * 8 / direct / 1e9, size * 8 / forwarded / 1e9
    print(f"direct veth {direct_gbps:.2f} Gbit/s, forwarded {forwarded_gbps:.2f} Gbit/s")
    assert forwarded_gbps >= direct_gbps / 20 and forwarded_gbps >= 0.2


class netns_route_swap:
    """Make h2's address 10.0.0.2 reachable from h1 over link 1 for the block (host routes via eth1)."""

    def __init__(self, lab: str) -> None:
        self.lab = lab

    def _routes(self, command: str) -> None:
        for node, address in (("h1", "10.0.0.2/32"), ("h2", "10.0.0.1/32")):
            code = (f"from pyroute2 import IPRoute\nwith IPRoute() as ipr:\n"
                    f"    ipr.route({command!r}, dst={address!r}, oif=ipr.link_lookup(ifname='eth1')[0])\n")
            path = f"/var/run/netns/{self.lab}-{node}"
            subprocess.run([sys.executable, "-c", code], preexec_fn=lambda p=path: move_to(p), check=True,
                           cwd=PROJECT_ROOT, timeout=30)

    def __enter__(self) -> None:
        self._routes("add")

    def __exit__(self, *exc: object) -> None:
        self._routes("del")


@pytest.mark.root
def test_a_sigkilled_up_leaves_no_forwarder_after_down(lab_name: str, tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", PAIR_KERNEL + "    impair: {delay: 5ms}\n")
    state = LabState.for_lab(lab_name)
    up_process = subprocess.Popen([sys.executable, "-m", "lab", "up", str(path), "--name", lab_name],
                                  cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    forwarders: list = []
    while not forwarders and time.monotonic() < deadline and up_process.poll() is None:
        forwarders = [e for e in read_journal(state.journal_path).entries if e.kind == "process"]
        time.sleep(0.001)
    up_process.send_signal(signal.SIGKILL)
    up_process.wait(10)
    if not forwarders:  # `up` finished first on a fast run: its process entries are there now
        forwarders = [e for e in read_journal(state.journal_path).entries if e.kind == "process"]
    assert forwarders, "the forwarder was never journaled"
    assert run_lab("down", lab_name).returncode == 0
    assert traces(lab_name) == NOTHING
    for entry in forwarders:
        assert entry.pid is not None and not is_running(entry.pid, entry.start_ticks)


@pytest.mark.root
@pytest.mark.skipif(netem_available(), reason="netem impairs the link here: there is no forwarder to kill")
def test_a_second_up_restarts_a_dead_forwarder_with_the_impairment_last_set(lab_name: str,
                                                                           tmp_path: Path) -> None:
    up(lab_name, tmp_path, PAIR_KERNEL + "    impair: {delay: 5ms}\n")
    assert impair(lab_name, "h1:eth0", "--delay", "20ms", "--direction", "out").returncode == 0
    [entry] = [e for e in read_journal(LabState.for_lab(lab_name).journal_path).entries
               if e.kind == "process" and e.name == "link0"]
    os.kill(entry.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{entry.pid}") and time.monotonic() < deadline:
        time.sleep(0.05)  # until it is reaped: a zombie would still look like a process
    again = run_lab("up", str(tmp_path / "t.yaml"), "--name", lab_name)
    assert again.returncode == 0, again.stderr
    assert f"restarted the forwarder of link 0 (pid {entry.pid} was gone" in again.stdout
    times = ping(lab_name, "h1", "10.0.0.2", 10, interval=0.05)
    assert len(times) == 10 and min(times) >= 24.5, times  # 20 ms out (as set by lab impair) + 5 ms back
