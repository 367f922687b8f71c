"""The core experiments against Linux: handshake, bulk, refused, timeout, and `lab run` itself.

The experiments run in one pair lab shared by the module (`pair_lab`: kernel h1, stack s1 with its
node process); one test runs `lab run` end to end through the CLI (its own lab, up and down), and
the silent address of `timeout` is checked on two kernel nodes alone.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from lab.experiments.results import ExperimentResult
from lab.experiments.running import RunningLab
from lab.kernel.namespaces import inside_namespace
from lab.kernel.sockets import namespace_socket

PROJECT_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.root

RunIn = Callable[..., ExperimentResult]


def shape_ok(data: dict[str, Any]) -> bool:
    """The documented JSON shape of a result."""
    return (set(data) == {"experiment", "passed", "checks", "metrics"} and isinstance(data["passed"], bool)
            and all(set(c) == {"name", "passed", "detail"} and c["detail"] for c in data["checks"]))


def test_handshake_both_ways(pair_lab: RunningLab, run_in: RunIn, assert_passed: Callable) -> None:
    result = run_in(pair_lab, "handshake")
    assert_passed(result)
    data = json.loads(json.dumps(result.to_json()))
    assert shape_ok(data)
    for direction in ("kernel_to_stack", "stack_to_kernel"):
        figures = data["metrics"][direction]
        assert "ESTABLISHED" in figures["kernel_states"] and "ESTABLISHED" in figures["stack_states"]
        assert figures["kernel_tcp_info"]["snd_mss"] > 0
    names = [c["name"] for c in data["checks"]]
    assert "kernel->stack: window scale mirrors" in names and "stack->kernel: MSS agrees" in names


def test_bulk_each_way_with_the_kernel_baseline(pair_lab: RunningLab, run_in: RunIn,
                                                assert_passed: Callable) -> None:
    result = run_in(pair_lab, "bulk", bytes="8M")
    assert_passed(result)
    metrics = result.metrics
    for key in ("kernel_to_stack", "stack_to_kernel", "kernel_to_kernel"):
        assert metrics[key]["received"] == 8 << 20 and metrics[key]["sha256"] == metrics["expected_sha256"]
        assert metrics[key]["goodput_gbps"] > 0
    assert metrics["kernel_to_stack_ratio"] > 0 and metrics["stack_to_kernel_ratio"] > 0
    assert not any(n.startswith(f"{pair_lab.name}k-") for n in os.listdir("/var/run/netns"))


def test_refused_both_ways(pair_lab: RunningLab, run_in: RunIn, assert_passed: Callable) -> None:
    result = run_in(pair_lab, "refused")
    assert_passed(result)
    assert result.metrics["stack_to_kernel"]["error"] == "ECONNREFUSED"
    assert result.metrics["kernel_to_stack"]["error"] == "ECONNREFUSED"


def test_timeout_both_ways_with_the_same_backoff(pair_lab: RunningLab, run_in: RunIn,
                                                 assert_passed: Callable) -> None:
    started = time.monotonic()
    result = run_in(pair_lab, "timeout", syn_retries=2)
    assert_passed(result)
    assert result.metrics["kernel_intervals"] and len(result.metrics["stack_intervals"]) == 2
    assert time.monotonic() - started < 15  # both sides at once: one 7 s backoff, not two


def test_a_silent_address_answers_arp_and_drops_syns(lab_name: str) -> None:
    """Two kernel nodes: one hosts the silent address, the other's connect times out (not refused,
    not unreachable), and the address is gone afterwards."""
    from lab.build import builder
    from lab.kernel.silent import silent_address
    from lab.topology.chain import chain_plan

    plan = chain_plan(2, name=lab_name)
    builder.up(plan)
    near, far = plan.node("n1"), plan.node("n2")
    with silent_address(near.namespace, "eth1", "10.0.1.250"):
        sock = namespace_socket(far.namespace)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
        started = time.monotonic()
        with pytest.raises(OSError) as failure:
            sock.connect(("10.0.1.250", 9))
        sock.close()
    assert failure.value.errno == errno.ETIMEDOUT and time.monotonic() - started > 1.5
    with inside_namespace(near.namespace), IPRoute() as ipr:  # the address and the filter are gone
        index = ipr.link_lookup(ifname="eth1")[0]
        addresses = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)]
        qdiscs = [q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=index)]
    assert "10.0.1.250" not in addresses and "10.0.1.1" in addresses
    assert "ingress" not in qdiscs


def test_lab_run_end_to_end_json_and_exit_codes(lab_name: str) -> None:
    def lab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                              timeout=120, cwd=PROJECT_ROOT)

    result = lab("run", "refused", "--name", lab_name, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert shape_ok(data) and data["experiment"] == "refused" and data["passed"]
    assert not any(n.startswith(f"{lab_name}-") for n in os.listdir("/var/run/netns"))  # down again

    table = lab("run", "refused", "--name", lab_name)
    assert table.returncode == 0 and "refused: passed" in table.stdout and "ECONNREFUSED" in table.stdout

    bad = lab("run", "bulk", "--name", lab_name, "--option", "bytes=lots")
    assert bad.returncode == 2
    assert bad.stderr.startswith("lab: experiment bulk: option bytes: expected an integer")
    assert not os.path.exists(f"/var/run/netns/{lab_name}-h1")  # bad input costs no lab
    unknown = lab("run", "nope")
    assert unknown.returncode == 2 and unknown.stderr.startswith("lab: experiment 'nope': expected one of")


def test_without_tracefs_the_kernel_side_is_polled_and_says_so(pair_lab: RunningLab, run_in: RunIn,
                                                               assert_passed: Callable,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Where tracefs cannot be used, TCP_INFO polling stands in: coarser, and the result says so."""
    from lab.kernel.tracepoints import KernelTrace, TraceUnavailable

    def unavailable(self: KernelTrace) -> KernelTrace:
        raise TraceUnavailable("tracefs is not mounted and cannot be: Operation not permitted")

    monkeypatch.setattr(KernelTrace, "start", unavailable)
    handshake = run_in(pair_lab, "handshake")
    assert_passed(handshake)
    assert handshake.metrics["kernel_states_from"].startswith("TCP_INFO polling")
    assert "ESTABLISHED" in handshake.metrics["kernel_to_stack"]["kernel_states"]
    assert any("polled" in check.detail for check in handshake.checks)
    timeout = run_in(pair_lab, "timeout", syn_retries=1)
    assert_passed(timeout)
    assert timeout.metrics["kernel_times_from"].startswith("TCP_INFO polling")
    assert len(timeout.metrics["kernel_intervals"]) == 1
