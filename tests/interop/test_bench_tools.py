"""`lab bench tools --json`: one short run, every measurement with the stack's figure, the kernel's from
the same run, their ratio and a verdict on the CPU-bound side; how the tools' figures are read. The
figures are measurements, never asserted against a speed: this is a benchmark's test, not a timed test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.tools.bench_tools import MEASUREMENTS, ToolFailed, figure_after, with_tool_ratios
from lab.tools.iperf3_report import bitrate, iperf3_text, kernel_report_figures, transfer
from tests.interop.conftest import unique_lab_name

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VERDICTS = {"stack", "client", "server", "machine", "none"}
ROW_KEYS = {"what", "unit", "stack", "kernel", "ratio", "stack_bound_by", "kernel_bound_by",
            "stack_cpu_share", "kernel_cpu_share"}


def test_figures_are_read_from_the_tools_output() -> None:
    wrk = ("Running 1s test @ http://10.0.0.2/bytes/1000\n  2 threads\nRequests/sec:   3042.11\n"
           "Transfer/sec: 1MB\n")
    assert figure_after(wrk, "Requests/sec:", "wrk") == 3042.11
    ab = "Failed requests:        0\nRequests per second:    730.40 [#/sec] (mean)\n"
    assert figure_after(ab, "Requests per second:", "ab") == 730.4
    assert figure_after(ab, "Failed requests:", "ab") == 0
    with pytest.raises(ToolFailed, match="no 'Requests/sec:'"):
        figure_after("connection refused", "Requests/sec:", "wrk")


def test_ratios_are_the_stack_over_the_kernel_from_the_same_run() -> None:
    def side(value: float, server: str) -> dict:
        return {"value": value, "bound_by": server, "cpu_share": {server: 1.0, "client": 0.1}}

    stack = {key: side(1.0, "stack") for key in MEASUREMENTS}
    kernel = {key: side(4.0, "server") for key in MEASUREMENTS}
    kernel["curl_100mb"]["value"] = 0.0
    figures = with_tool_ratios(stack, kernel, 2.0)
    assert set(figures["measurements"]) == set(MEASUREMENTS)
    row = figures["measurements"]["http_keepalive"]
    assert set(row) == ROW_KEYS and row["ratio"] == 0.25 and row["stack_bound_by"] == "stack"
    assert figures["measurements"]["curl_100mb"]["ratio"] == 0.0


def test_iperf3_text_reads_like_iperf3() -> None:
    answer = {"remote": "10.0.0.1:5201", "reverse": False, "parallel": 2, "seconds": 1.0,
              "streams": [{"id": 1, "local": "10.0.0.2:40000", "sent_bytes": 1 << 30,
                           "received_bytes": 1 << 30, "sender_seconds": 1.0, "receiver_seconds": 1.0},
                          {"id": 3, "local": "10.0.0.2:40001", "sent_bytes": 1 << 20,
                           "received_bytes": 1 << 20, "sender_seconds": 1.0, "receiver_seconds": 1.0}],
              "sent_bytes": (1 << 30) + (1 << 20), "received_bytes": (1 << 30) + (1 << 20),
              "sender_seconds": 1.0, "receiver_seconds": 1.0, "cpu_util_local": 50.0, "cpu_util_remote": 10.0,
              "intervals": [{"start": 0.0, "end": 1.0, "bytes": [1 << 30, 1 << 20]}]}
    text = iperf3_text(answer)
    assert text.startswith("Connecting to host 10.0.0.1, port 5201") and text.endswith("iperf Done.")
    assert "1 GBytes" in text and "8.6 Gbits/sec" in text and "[SUM]" in text and "receiver" in text
    assert transfer(512) == "512 Bytes" and bitrate(941e6) == "941 Mbits/sec"
    report = {"end": {"sum_sent": {"bytes": 10, "bits_per_second": 80.0},
                      "sum_received": {"bytes": 9, "bits_per_second": 72.0},
                      "cpu_utilization_percent": {"host_total": 12.5, "remote_total": 99.0}, "streams": [{}]}}
    assert kernel_report_figures(report) == {"sent_bytes": 10, "received_bytes": 9, "sent_bps": 80.0,
                                             "received_bps": 72.0, "cpu_util_local": 12.5,
                                             "cpu_util_remote": 99.0, "streams": 1}


@pytest.mark.root
def test_bench_tools_json_has_every_measurement_from_one_run() -> None:
    name = unique_lab_name("ia")
    command = [sys.executable, "-m", "lab", "bench", "tools", "--json", "--seconds", "1", "--name", name]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
                            check=False)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures["measurements"]) == set(MEASUREMENTS) and figures["http_path"] == "/bytes/1000"
    for key, row in figures["measurements"].items():
        assert set(row) >= ROW_KEYS, key
        assert row["stack"] > 0 and row["kernel"] > 0 and row["ratio"] == pytest.approx(
            row["stack"] / row["kernel"], rel=0.01), (key, row)
        assert row["stack_bound_by"] in VERDICTS and row["kernel_bound_by"] in VERDICTS
        assert set(row["stack_cpu_share"]) == {"stack", "client"}
    iperf3 = figures["measurements"]["iperf3_kernel_to_stack"]
    assert iperf3["stack_sent_bytes"] == iperf3["stack_received_bytes"] > 0
    assert figures["measurements"]["http_connection_per_request"]["stack_failed_requests"] == 0
    assert not [n for n in os.listdir("/var/run/netns") if n.startswith(name)]


def test_an_iperf3_report_after_a_warning_is_read_and_no_report_is_one_line() -> None:
    from lab.tools.bench_tools import iperf3_json

    text = 'WARNING:  Size of data read does not correspond to offered length\n{"end": {}, "error": "x"}\n'
    assert iperf3_json(text) == {"end": {}, "error": "x"}
    for broken in ("", "iperf3: error - unable to connect\n", "{not json"):
        with pytest.raises(ToolFailed, match=r"^iperf3 gave no JSON report \(") as raised:
            iperf3_json(broken)
        assert "\n" not in str(raised.value)
