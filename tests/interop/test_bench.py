"""`lab bench --json`: one run, the documented keys, figures that are measurements (not asserted
against the speed targets: those are benchmark figures, not pass/fail), and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.tools.bench import with_ratios

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
VERDICTS = {"stack", "client", "listener", "machine", "none"}


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
    assert set(figures) == KEYS | HASHED_KEYS | ACCEPT_RUN_KEYS | {
        "congestion_control", "stack_workers", "stack_python", "stack_warmup_seconds"}
    assert figures["stack_workers"] == 1
    assert figures["stack_python"].startswith("CPython ") and figures["stack_warmup_seconds"] == 0.0
    assert all(isinstance(figures[k], int | float) and figures[k] > 0 for k in KEYS | HASHED_KEYS), figures
    assert figures["stack_accept_bound_by"] in VERDICTS and figures["kernel_accept_bound_by"] in VERDICTS
    assert figures["stack_cpu_us_per_connection"] > 0 and figures["stack_accept_stack_cpu_share"] > 0
    assert 5 < figures["stack_peak_rss_mb"] < 2048  # a CPython node holds tens of MB
    congestion = figures["congestion_control"]
    assert congestion["kernel_senders"] == congestion["stack"] and congestion["machine_default"]
    assert not [n for n in os.listdir("/var/run/netns") if n.startswith(lab_name)]
