"""Integration tests (root): real namespaces, veths, bridges, TAPs and kernel TCP sockets.

Each test takes a fresh lab name from the `lab_name` fixture, which takes the lab down even when
the test fails; tests that check teardown compare the machine before and after.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from lab.build import builder
from lab.build.processes import record_process
from lab.build.state import LabError, LabState, lab_tag, state_root
from lab.kernel.errors import NetlinkOpError
from lab.kernel.namespaces import list_namespaces
from lab.kernel.netlink import Netlink
from lab.kernel.rtnl import RtnlBatch
from lab.tools.status import lab_status
from lab.topology import load_topology
from lab.topology.chain import chain_yaml
from lab.topology.plan import RoutePlan
from stack.devices.namespace import THREAD_NAMESPACE, move_to

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def run_lab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m lab ARGS` as a user would run it (its own process, the real exit code)."""
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def traces(lab: str) -> dict[str, list[str]]:
    """Everything on the machine that belongs to `lab`: empty lists mean it left nothing behind."""
    tag = lab_tag(lab)
    with IPRoute() as ipr:
        root_links = [link.get("ifname") for link in ipr.get_links() if link.get("ifalias") == tag]
    root = state_root()
    state = sorted(p.name for p in root.iterdir() if p.name.startswith(lab)) if root.exists() else []
    return {
        "namespaces": [ns for ns in list_namespaces() if ns.startswith(f"{lab}-")],
        "root_links": root_links,
        "state": state,
    }


NOTHING = {"namespaces": [], "root_links": [], "state": []}


def tcp_exchange(client_ns: str, server_ns: str, server_ip: str, port: int, payload: bytes) -> bytes:
    """Kernel sockets in two namespaces: the client sends `payload`, the server echoes it reversed."""
    server = netns.create_socket(server_ns, flags=0)
    client = netns.create_socket(client_ns, flags=0)
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((server_ip, port))
        server.listen(1)
        server.settimeout(5)
        client.settimeout(5)
        client.connect((server_ip, port))
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
            conn.sendall(received[::-1])
        reply = b""
        while chunk := client.recv(65536):
            reply += chunk
        return reply
    finally:
        client.close()
        server.close()


def sysctl_in(namespace: str, name: str) -> str:
    """Read a net.* sysctl as a process inside `namespace` sees it (a short child, no `ip netns exec`)."""
    path = "/proc/sys/" + name.replace(".", "/")
    code = (f"from stack.devices.namespace import move_to; move_to({f'/var/run/netns/{namespace}'!r}); "
            f"print(open({path!r}).read().strip())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PROJECT_ROOT, env=os.environ | {"PYTHONPATH": str(PROJECT_ROOT)})
    return result.stdout.strip()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


PAIR_KERNEL = """\
name: kk
nodes:
  h1: {kind: kernel}
  h2: {kind: kernel}
links:
  - endpoints: [h1:eth0, h2:eth0]
    subnet: 10.0.0.0/24
"""


# --- coming up ---------------------------------------------------------------------------------

def root_link_names() -> set[str]:
    with IPRoute() as ipr:
        return {link.get("ifname") for link in ipr.get_links()}


@pytest.mark.root
def test_pair_comes_up_with_silent_pystack_wiring(lab_name: str) -> None:
    plan = load_topology(PROJECT_ROOT / "topologies/pair.yaml", name=lab_name)
    root_before = root_link_names()
    result = builder.up(plan)
    assert result.changed
    assert not {"tap0", "br0", "eth0"} & (root_link_names() - root_before)  # all born in their namespaces
    with Netlink() as nl:
        s1 = {link.name: link for link in nl.links(f"{lab_name}-s1")}
        h1 = {link.name: link for link in nl.links(f"{lab_name}-h1")}
    assert set(s1) == {"lo", "eth0", "tap0", "br0"}
    assert s1["tap0"].kind == "tun" and s1["br0"].kind == "bridge"
    assert s1["eth0"].master == s1["br0"].index and s1["tap0"].master == s1["br0"].index
    assert all(not link.addresses for name, link in s1.items() if name != "lo")  # the stack owns the IP
    assert all(link.alias == lab_tag(lab_name) for link in s1.values())
    assert h1["eth0"].addresses == ["10.0.0.1/24"] and h1["eth0"].up
    assert h1["eth0"].mac == plan.node("h1").interfaces[0].mac
    for port in ("eth0", "tap0", "br0"):
        assert sysctl_in(f"{lab_name}-s1", f"net.ipv6.conf.{port}.disable_ipv6") == "1"
    assert _tap_has_vnet_hdr(f"{lab_name}-s1", "tap0")  # offload: the stack reads TSO super-segments
    settings = json.loads(LabState.for_lab(lab_name).node_settings_path("s1").read_text())
    assert settings["interface"]["address"] == "10.0.0.2/24" and settings["tap"] == "tap0"
    assert settings["interface"]["mac"] == plan.node("s1").interfaces[0].mac
    assert [a["app"] for a in settings["apps"]][:1] == ["echo"]


def _tap_has_vnet_hdr(namespace: str, ifname: str) -> bool:
    """The kernel's own account of the TAP (IFLA_TUN_VNET_HDR in the link's info data)."""
    with IPRoute(netns=namespace, flags=0) as ipr:
        data = ipr.get_links(ifname=ifname)[0].get("IFLA_LINKINFO").get("IFLA_INFO_DATA")
    return bool(data.get("IFLA_TUN_VNET_HDR")) and bool(data.get("IFLA_TUN_PERSIST"))


@pytest.mark.root
def test_router_carries_kernel_tcp_across_the_router_and_down_leaves_nothing(lab_name: str) -> None:
    assert traces(lab_name) == NOTHING
    result = run_lab("up", "router", "--name", lab_name)
    assert result.returncode == 0, result.stderr
    assert f"{lab_name}-h1" in result.stdout and "10.0.2.2/24" in result.stdout
    payload = os.urandom(200_000)
    reply = tcp_exchange(f"{lab_name}-h1", f"{lab_name}-h2", "10.0.2.2", 5001, payload)
    assert reply == payload[::-1]
    status = json.loads(run_lab("status", lab_name, "--json").stdout)
    assert status["drift"] == {"missing": [], "untracked": [], "dead": []}
    assert {n["name"] for n in status["nodes"]} == {"r1", "h1", "s1", "h2"}
    assert status["lans"][0]["namespace"] == f"{lab_name}-lan0"
    down = run_lab("down", lab_name)
    assert down.returncode == 0, down.stderr
    assert traces(lab_name) == NOTHING


@pytest.mark.root
def test_second_up_changes_nothing_and_a_changed_topology_is_refused(lab_name: str, tmp_path: Path) -> None:
    assert run_lab("up", "pair", "--name", lab_name).returncode == 0
    journal = LabState.for_lab(lab_name).journal_path.read_bytes()
    again = run_lab("up", "pair", "--name", lab_name)
    assert again.returncode == 0
    assert "already up with this topology; nothing changed" in again.stdout
    assert LabState.for_lab(lab_name).journal_path.read_bytes() == journal
    changed = run_lab("up", "router", "--name", lab_name)
    assert changed.returncode == 2
    assert changed.stderr.strip() == (f"lab: lab {lab_name} is up with a different topology; "
                                      f"run `lab down {lab_name}` first")
    assert f"{lab_name}-r1" not in list_namespaces()  # never half-applied
    assert run_lab("status", lab_name).returncode == 0  # and the running lab untouched


@pytest.mark.root
@pytest.mark.parametrize("text, field", [
    ("name: x\nnodes:\n  h1: {kind: kernel}\n  h2: {kind: kernel, speed: 3}\nlinks: []\n", "speed"),
    ("name: x\nnodes:\n  h1: {kind: kernel}\nlinks:\n  - endpoints: [h1:eth0, h9:eth0]\n"
     "    subnet: 10.0.0.0/24\n", "h9"),
    ("name: x\nnodes: [\n", ""),
])
def test_bad_files_exit_2_and_create_nothing(lab_name: str, tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    result = run_lab("up", str(path), "--name", lab_name)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"lab: {path}:") and field in line
    assert traces(lab_name) == NOTHING


@pytest.mark.root
def test_rate_on_a_kernel_link_is_a_tbf_qdisc(lab_name: str, tmp_path: Path) -> None:
    path = write(tmp_path, "rate.yaml", PAIR_KERNEL + "    impair: {rate: 50mbit}\n")
    assert run_lab("up", str(path), "--name", lab_name).returncode == 0
    with Netlink() as nl:
        assert "tbf" in nl.qdisc_kinds(f"{lab_name}-h1", "eth0")
        assert "tbf" in nl.qdisc_kinds(f"{lab_name}-h2", "eth0")
    status = json.loads(run_lab("status", lab_name, "--json").stdout)
    assert status["drift"]["missing"] == []


@pytest.mark.root
def test_two_labs_side_by_side_and_down_of_one_spares_the_other(lab_name: str) -> None:
    other = f"{lab_name}o"
    try:
        assert builder.up(load_topology(PROJECT_ROOT / "topologies/router.yaml", name=lab_name)).changed
        assert builder.up(load_topology(PROJECT_ROOT / "topologies/router.yaml", name=other)).changed
        builder.down(other)
        assert traces(other) == NOTHING
        reply = tcp_exchange(f"{lab_name}-h1", f"{lab_name}-h2", "10.0.2.2", 5002, b"still here")
        assert reply == b"ereh llits"
        assert json.loads(run_lab("status", lab_name, "--json").stdout)["drift"]["missing"] == []
    finally:
        with suppress(LabError):
            builder.down(other)


@pytest.mark.root
def test_exec_runs_inside_the_node_and_passes_the_exit_code(lab_name: str) -> None:
    assert run_lab("up", "pair", "--name", lab_name).returncode == 0
    assert run_lab("exec", lab_name, "h1", "--", "sh", "-c", "exit 7").returncode == 7
    inside = run_lab("exec", lab_name, "h1", "--", "cat", "/proc/net/dev")
    assert inside.returncode == 0 and "eth0" in inside.stdout
    bind = run_lab("exec", lab_name, "h1", "--", sys.executable, "-c",
                   "import socket; socket.socket().bind(('10.0.0.1', 0))")
    assert bind.returncode == 0, bind.stderr  # 10.0.0.1 exists only in h1's namespace
    assert run_lab("exec", lab_name, "h9", "--", "true").returncode == 2
    assert run_lab("exec", lab_name, "h1", "--", "no-such-command-here").returncode == 127


@pytest.mark.root
def test_status_json_shows_drift_both_ways(lab_name: str) -> None:
    assert run_lab("up", "router", "--name", lab_name).returncode == 0
    with IPRoute(netns=f"{lab_name}-h2", flags=0) as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname="eth0")[0])  # a journaled veth, deleted by hand
    with IPRoute(netns=f"{lab_name}-h1", flags=0) as ipr:  # a tagged interface no journal knows
        ipr.link("add", ifname="extra0", kind="veth", peer="extra1")
        ipr.link("set", index=ipr.link_lookup(ifname="extra0")[0], ifalias=lab_tag(lab_name))
    result = run_lab("status", lab_name, "--json")
    assert result.returncode == 1
    drift = json.loads(result.stdout)["drift"]
    assert drift["missing"] == [f"veth {lab_name}-r1:eth1 <-> {lab_name}-h2:eth0"]
    assert drift["untracked"] == [f"interface {lab_name}-h1:extra0"]
    again = run_lab("up", "router", "--name", lab_name)
    assert again.returncode == 2 and "objects are gone" in again.stderr


@pytest.mark.root
def test_a_namespace_that_is_not_the_labs_is_refused_and_never_removed(lab_name: str) -> None:
    foreign = f"{lab_name}-h1"
    netns.create(foreign)
    try:
        result = run_lab("up", "pair", "--name", lab_name)
        assert result.returncode == 2
        assert f"namespace {foreign} already exists and does not belong to lab {lab_name}" in result.stderr
        down = run_lab("down", lab_name)  # nothing of the lab's to remove: not up, and no error
        assert down.returncode == 0 and f"lab {lab_name} is not up" in down.stdout
        assert foreign in list_namespaces()
        assert traces(lab_name)["state"] == []
    finally:
        netns.remove(foreign)


@pytest.mark.root
@pytest.mark.parametrize("node, change, error", [
    ("r1", {"sysctls": (("net.ipv4.no_such_sysctl", "1"),)}, "sysctl net.ipv4.no_such_sysctl does not exist"),
    ("h2", {"routes": (RoutePlan(IPv4Network("10.9.0.0/16"), IPv4Address("10.7.7.7")),)},
     "add route 10.9.0.0/16 via 10.7.7.7 in {lab}-h2 (in {lab}-h2): Network is unreachable"),
])
def test_a_failed_up_rolls_back_everything(lab_name: str, node: str, change: dict, error: str) -> None:
    """The kernel refuses something late in the build: the message names it, and nothing stays."""
    plan = load_topology(PROJECT_ROOT / "topologies/router.yaml", name=lab_name)
    changed = replace(plan.node(node), **change)
    broken = replace(plan, nodes=tuple(changed if n.name == node else n for n in plan.nodes))
    with pytest.raises(NetlinkOpError) as raised:
        builder.up(broken)
    assert error.format(lab=lab_name) in str(raised.value)
    assert traces(lab_name) == NOTHING


@pytest.mark.root
def test_bench_up_builds_and_removes_chains() -> None:
    result = run_lab("bench", "up", "--sizes", "3,5", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["nodes"], r["links"], r["runs"]) for r in rows] == [(3, 2, 3), (5, 4, 3)]
    assert all(0 < r["up_seconds"] < 10 and 0 < r["down_seconds"] < 10 for r in rows)
    assert not [ns for ns in list_namespaces() if re.fullmatch(r"b\d+n[35]-n\d+", ns)]


@pytest.mark.root
def test_large_lab_shows_progress_and_comes_up(lab_name: str, tmp_path: Path) -> None:
    path = write(tmp_path, "chain.yaml", chain_yaml(30, name=lab_name))
    result = run_lab("up", str(path))
    assert result.returncode == 0, result.stderr
    assert f"lab {lab_name} is up (30 nodes)" in result.stdout
    reply = tcp_exchange(f"{lab_name}-n1", f"{lab_name}-n30", _last_address(lab_name), 5003, b"end to end")
    assert reply == b"dne ot dne"


def _last_address(lab: str) -> str:
    status = lab_status(lab)
    last = next(n for n in status["nodes"] if n["name"] == "n30")
    return last["interfaces"][0]["addresses"][0].split("/")[0]


@pytest.mark.root
def test_down_stops_processes_in_the_labs_namespaces(lab_name: str) -> None:
    assert builder.up(load_topology(PROJECT_ROOT / "topologies/pair.yaml", name=lab_name)).changed
    path = f"/var/run/netns/{lab_name}-h1"
    journaled = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: move_to(path))
    record_process(lab_name, f"{lab_name}-h1", journaled.pid)
    stray = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: move_to(path))  # as if from `lab exec`
    status = lab_status(lab_name)
    in_h1 = [p for p in status["processes"] if p["namespace"] == f"{lab_name}-h1"]  # s1 runs its stack
    assert in_h1 == [{"pid": journaled.pid, "namespace": f"{lab_name}-h1", "node": None, "running": True}]
    assert sorted(status["nodes"][0]["processes"]) == sorted([journaled.pid, stray.pid])
    builder.down(lab_name)
    assert journaled.wait(5) == -signal.SIGTERM and stray.wait(5) == -signal.SIGTERM
    assert traces(lab_name) == NOTHING


@pytest.mark.root
def test_down_sweeps_marked_namespaces_whose_state_is_gone(lab_name: str) -> None:
    """`down --all` finds such orphans by their marker; `down NAME` sweeps them. (This test does not
    run `down --all` itself: on a shared machine that would take down other people's labs.)"""
    assert builder.up(load_topology(PROJECT_ROOT / "topologies/pair.yaml", name=lab_name)).changed
    shutil.rmtree(LabState.for_lab(lab_name).directory)  # as if /run/nslab had been wiped
    assert lab_name in builder.labs_to_take_down()
    result = run_lab("down", lab_name, "--json")
    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)
    assert report["removed"] == []
    assert sorted(report["swept"]) == [f"namespace {lab_name}-h1", f"namespace {lab_name}-s1"]
    assert traces(lab_name) == NOTHING


# --- crash safety ------------------------------------------------------------------------------

CRASH_ROUNDS = 20


@pytest.mark.root
def test_sigkill_of_up_at_random_moments_then_down_leaves_nothing(lab_name: str, tmp_path: Path) -> None:
    """`lab up` killed -9 anywhere (before, during, after the build); `down` must clean all of it."""
    rng = random.Random(20261122)
    chain = write(tmp_path, "chain.yaml", chain_yaml(100, name=lab_name))  # a build long enough to hit
    topologies = {"chain": str(chain), "router": str(PROJECT_ROOT / "topologies/router.yaml")}
    build_seconds = {}  # calibrate: how long an uninterrupted build takes here, now
    for key, path in topologies.items():
        build_seconds[key] = builder.up(load_topology(path, name=lab_name)).seconds
        builder.down(lab_name)
    state = LabState.for_lab(lab_name)
    killed_mid_build = 0
    for round_number in range(CRASH_ROUNDS):
        key = "chain" if round_number % 2 == 0 else "router"
        process = subprocess.Popen([sys.executable, "-m", "lab", "up", topologies[key], "--name", lab_name],
                                   cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if round_number % 4 == 3:  # anywhere from interpreter start-up on
                time.sleep(rng.uniform(0.05, 0.9))
            else:  # inside the build: wait for the journal, then a random moment of a build's length
                deadline = time.monotonic() + 10
                while (not state.journal_path.exists() and process.poll() is None
                       and time.monotonic() < deadline):
                    time.sleep(0.0005)
                time.sleep(rng.uniform(0, build_seconds[key]))
            process.send_signal(signal.SIGKILL)
            record = state.read_plan()
            if record is not None and record["phase"] == "building" and process.wait() == -signal.SIGKILL:
                killed_mid_build += 1
        finally:
            process.kill()
            process.wait()
        builder.down(lab_name)  # also when the kill came before anything existed: "not up", no error
        assert traces(lab_name) == NOTHING, f"round {round_number}"
    print(f"kills that landed mid-build: {killed_mid_build} of {CRASH_ROUNDS}")
    assert killed_mid_build >= CRASH_ROUNDS // 4, f"only {killed_mid_build} kills landed mid-build"


@pytest.mark.root
def test_sigterm_during_up_rolls_back_at_once(lab_name: str, tmp_path: Path) -> None:
    """SIGTERM (unlike SIGKILL) lets `up` undo its work itself: exit 143 and nothing left, no `down`."""
    chain = write(tmp_path, "chain.yaml", chain_yaml(100, name=lab_name))
    state = LabState.for_lab(lab_name)
    for _ in range(3):
        process = subprocess.Popen([sys.executable, "-m", "lab", "up", str(chain)], cwd=PROJECT_ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not state.journal_path.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        process.terminate()
        code = process.wait(30)
        if code == 143:
            assert traces(lab_name) == NOTHING
            return
        assert code == 0  # finished before the signal: take it down and try again
        builder.down(lab_name)
    pytest.fail("three builds finished before SIGTERM reached them")


# --- batched rtnetlink, against a stand-in kernel (no root) -----------------------------------

def test_a_refused_request_in_a_batch_is_named_in_the_error() -> None:
    """The batch reads every acknowledgement and reports the first refusal by what it was."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel:
        batch = RtnlBatch(ours, "lab-h1")
        batch.add_address(2, IPv4Interface("10.0.0.1/24"), "add address 10.0.0.1/24 to lab-h1:eth0")
        batch.add_route(IPv4Network("10.9.0.0/16"), "10.7.7.7", "add route 10.9.0.0/16 via 10.7.7.7")
        batch.add_route(IPv4Network("0.0.0.0/0"), "10.0.0.254", "add default route")

        def acknowledge(sent: bytes) -> None:
            codes = {1: 0, 2: -errno.ENETUNREACH, 3: -errno.EEXIST}
            offset, acks = 0, b""
            while offset < len(sent):
                length, _, flags, seq, _ = struct.unpack_from("IHHII", sent, offset)
                assert flags & 0x5 == 0x5  # NLM_F_REQUEST | NLM_F_ACK: every request is answered
                acks += struct.pack("IHHIIi", 36, 2, 0, seq, 0, codes[seq]) + sent[offset:offset + 16]
                offset += length
            kernel.send(acks)

        sender = threading.Thread(target=lambda: acknowledge(kernel.recv(65536)))
        sender.start()
        with pytest.raises(NetlinkOpError) as raised:
            batch.commit()
        sender.join(5)
    assert str(raised.value) == "add route 10.9.0.0/16 via 10.7.7.7 (in lab-h1): Network is unreachable"
    assert len(batch) == 0


@pytest.mark.root
def test_entering_namespaces_nests_and_always_comes_back(lab_name: str) -> None:
    """A helper entering a namespace inside another block must return to that block's namespace:
    a TAP ioctl issued after it lands wherever the thread is."""
    def here() -> int:
        return os.stat(THREAD_NAMESPACE).st_ino

    root = here()
    first, second = f"{lab_name}-a", f"{lab_name}-b"
    with Netlink() as nl:
        try:
            nl.create_namespace(first, lab_tag(lab_name))
            nl.create_namespace(second, lab_tag(lab_name))
            with nl.inside(first):
                inside_first = here()
                assert inside_first != root
                with nl.inside(second):
                    assert here() not in (root, inside_first)
                with nl.inside(first):
                    assert here() == inside_first
                nl.ipr(second)  # opens a socket from inside `second`, then returns
                assert here() == inside_first
            assert here() == root
        finally:
            nl.remove_namespace(first)
            nl.remove_namespace(second)
    assert here() == root
    assert traces(lab_name)["namespaces"] == []
