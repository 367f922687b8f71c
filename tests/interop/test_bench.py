"""`lab bench --json`: one run, the documented keys, figures that are measurements (not asserted
against the speed targets: those are benchmark figures, not pass/fail), and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.build.pids import machine_busy_seconds, thread_cpu_seconds
from lab.tools.bench import CpuSnapshot, transfer_cpu_figures, with_ratios

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "kernel_to_kernel_gbps", "kernel_to_stack_gbps", "stack_to_kernel_gbps",
    "kernel_to_stack_gbps_no_offload", "stack_to_kernel_gbps_no_offload",
    "kernel_accept_cps", "stack_accept_cps",
    "kernel_to_stack_ratio", "stack_to_kernel_ratio", "kernel_to_stack_no_offload_ratio",
    "stack_to_kernel_no_offload_ratio", "stack_accept_ratio",
}
HASHED_KEYS = {  # the same transfers against a kernel-to-kernel transfer SHA-256 checked at both ends
    "kernel_to_kernel_hashed_gbps", "kernel_to_stack_hashed_ratio", "stack_to_kernel_hashed_ratio",
    "kernel_to_stack_no_offload_hashed_ratio", "stack_to_kernel_no_offload_hashed_ratio",
}
ACCEPT_RUN_KEYS = {
    "stack_cpu_us_per_connection", "stack_accept_stack_cpu_share", "stack_accept_client_cpu_share",
    "stack_accept_slow_connects", "stack_accept_bound_by", "kernel_accept_listener_cpu_share",
    "kernel_accept_client_cpu_share", "kernel_accept_bound_by", "stack_peak_rss_mb",
}
TRANSFER_CPU_KEYS = {f"{direction}{plain}_{key}" for direction in ("kernel_to_stack", "stack_to_kernel")
                     for plain in ("", "_no_offload")
                     for key in ("stack_cpu_share", "hasher_cpu_share", "lab_cpu_share", "machine_cpu_share",
                                 "bound_by")}
VERDICTS = {"stack", "client", "listener", "machine", "none"}
TRANSFER_VERDICTS = {"stack", "hasher", "lab", "machine", "none"}


def test_a_transfer_names_who_used_the_cpu_and_who_set_the_pace() -> None:
    before = CpuSnapshot(100.0, 10.0, 12.0, 5.0, 50.0)
    busy_stack = transfer_cpu_figures(before, CpuSnapshot(102.0, 11.9, 14.5, 5.6, 52.8))
    assert busy_stack == {"stack_cpu_share": 0.95, "hasher_cpu_share": 0.3, "lab_cpu_share": 0.3,
                          "machine_cpu_share": 1.4, "bound_by": "stack"}
    busy_lab = transfer_cpu_figures(before, CpuSnapshot(102.0, 11.0, 13.0, 7.0, 55.0))
    assert busy_lab["bound_by"] == "lab" and busy_lab["lab_cpu_share"] == 1.0
    cores = os.cpu_count() or 1
    nobody_alone = transfer_cpu_figures(before, CpuSnapshot(102.0, 11.0, 13.0, 6.0, 50.0 + 2.0 * cores))
    assert nobody_alone["bound_by"] == "machine" and nobody_alone["machine_cpu_share"] == cores
    waiting = transfer_cpu_figures(before, CpuSnapshot(102.0, 10.2, 12.2, 5.1, 50.5))
    assert waiting["bound_by"] == "none"


def test_this_process_and_the_machine_are_charged_for_what_it_burns() -> None:
    before_thread, before_machine = thread_cpu_seconds(os.getpid()), machine_busy_seconds()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert thread_cpu_seconds(os.getpid()) - before_thread >= 0.25
    assert machine_busy_seconds() - before_machine >= 0.25
    assert thread_cpu_seconds(2**22 + 1) is None  # no such process


def test_ratios_are_stack_over_kernel() -> None:
    figures = with_ratios({"kernel_to_kernel_gbps": 10.0, "kernel_to_stack_gbps": 2.5,
                           "stack_to_kernel_gbps": 5.0, "kernel_to_stack_gbps_no_offload": 0.5,
                           "stack_to_kernel_gbps_no_offload": 0.0,
                           "kernel_accept_cps": 8000.0, "stack_accept_cps": 2000.0})
    assert set(figures) == KEYS
    assert figures["kernel_to_stack_ratio"] == 0.25 and figures["stack_to_kernel_ratio"] == 0.5
    assert figures["stack_to_kernel_no_offload_ratio"] == 0.0 and figures["stack_accept_ratio"] == 0.25


@pytest.mark.root
def test_bench_json_has_every_key_from_one_run(lab_name: str) -> None:
    command = [sys.executable, "-m", "lab", "bench", "--json", "--seconds", "0.5", "--name", lab_name]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures) == KEYS | HASHED_KEYS | ACCEPT_RUN_KEYS | TRANSFER_CPU_KEYS | {
        "congestion_control", "stack_workers", "stack_python", "stack_warmup_seconds"}
    assert figures["stack_workers"] == 1
    assert figures["stack_python"].startswith("CPython ") and figures["stack_warmup_seconds"] == 0.0
    assert all(isinstance(figures[k], int | float) and figures[k] > 0 for k in KEYS | HASHED_KEYS), figures
    assert figures["stack_accept_bound_by"] in VERDICTS and figures["kernel_accept_bound_by"] in VERDICTS
    assert {figures[key] for key in TRANSFER_CPU_KEYS if key.endswith("_bound_by")} <= TRANSFER_VERDICTS
    assert all(figures[key] > 0 for key in TRANSFER_CPU_KEYS if key.endswith(("_stack_cpu_share",
                                                                                "_machine_cpu_share")))
    assert figures["stack_cpu_us_per_connection"] > 0 and figures["stack_accept_stack_cpu_share"] > 0
    assert 5 < figures["stack_peak_rss_mb"] < 2048  # a CPython node holds tens of MB
    congestion = figures["congestion_control"]
    assert congestion["kernel_senders"] == congestion["stack"] and congestion["machine_default"]
    assert not [n for n in os.listdir("/var/run/netns") if n.startswith(lab_name)]
