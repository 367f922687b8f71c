"""iperf3 against the stack with stock iperf3 3.x: the kernel's `iperf3 -c` in h1 measures the stack's
iperf3 app on s1 (each way, -P 2), the stack's client (`lab stack ... connect --app iperf3`) measures a
kernel `iperf3 -s`, and `connect` times its goodput to the last ACK. Both sides' byte counts are compared:
exact where iperf3 lets them be, and within what was in flight where a stock client stops counting at its
own TEST_END (`-R` into iperf3 -c)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.experiments.http import wait_for_listener
from lab.experiments.running import RunningLab, lab_for_experiment
from lab.topology import plan_from_text
from tests.interop.conftest import unique_lab_name

IPERF3_PORT = 5201
KERNEL_IPERF3_PORT = 5202


# The pair topology with the iperf3 app named in s1's apps list, as a user's topology would.
IPERF3_PAIR = f"""
name: iperf3pair
nodes:
  h1: {{kind: kernel}}
  s1:
    kind: pystack
    apps:
      - {{app: iperf3, port: {IPERF3_PORT}}}
links:
  - endpoints: [h1:eth0, s1:eth0]
    subnet: 10.0.0.0/24
"""


@pytest.fixture(scope="module")
def iperf3_lab() -> Iterator[RunningLab]:
    """IPERF3_PAIR under a name of this module's own: its iperf3 app serves from `lab up` on."""
    plan = plan_from_text(IPERF3_PAIR, source="<iperf3 pair>", name=unique_lab_name("ia"))
    with lab_for_experiment(plan, None) as lab:
        yield lab


def test_a_topology_can_name_the_iperf3_app() -> None:
    plan = plan_from_text(IPERF3_PAIR, source="<iperf3 pair>", name="iacheck")
    (stack,) = [node for node in plan.nodes if node.kind == "pystack"]
    assert [(app.app, app.port) for app in stack.apps] == [("iperf3", IPERF3_PORT)]


def kernel_client(lab: RunningLab, *options: str) -> dict[str, Any]:
    done = lab.exec("h1", ["iperf3", "-c", lab.address("s1"), "-p", str(IPERF3_PORT), "-J", *options],
                    timeout=60)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and "error" not in report, report.get("error")
    return report


@pytest.mark.root
def test_kernel_iperf3_client_measures_the_stack_and_both_sides_count_the_same_bytes(
        iperf3_lab: RunningLab) -> None:
    report = kernel_client(iperf3_lab, "-t", "2", "--get-server-output")
    end = report["end"]
    assert end["sum_received"]["bits_per_second"] > 0 and end["sum_sent"]["bits_per_second"] > 0
    sent, received = end["sum_sent"]["bytes"], end["sum_received"]["bytes"]
    assert sent == received > 0  # the stack read to quiet after TEST_END: nothing was left in flight
    text = report["server_output_text"]
    assert "receiver" in text and f"total: {received} bytes" in text


@pytest.mark.root
def test_kernel_iperf3_client_reverse_reports_a_rate_and_the_stacks_sent_bytes(
        iperf3_lab: RunningLab) -> None:
    end = kernel_client(iperf3_lab, "-t", "2", "-R")["end"]
    sent, received = end["sum_sent"]["bytes"], end["sum_received"]["bytes"]
    assert end["sum_received"]["bits_per_second"] > 0
    # iperf3 -c -R stops counting at its TEST_END; what was in flight then arrives but is not counted
    assert 0 < received <= sent and received >= sent * 0.5, (sent, received)


@pytest.mark.root
def test_kernel_iperf3_client_with_two_streams_each_way(iperf3_lab: RunningLab) -> None:
    for options in (("-P", "2"), ("-P", "2", "-R")):
        end = kernel_client(iperf3_lab, "-t", "1", *options)["end"]
        assert len(end["streams"]) == 2
        for stream in end["streams"]:
            assert 0 < stream["receiver"]["bytes"] <= stream["sender"]["bytes"]
        if "-R" not in options:
            assert [s["sender"]["bytes"] for s in end["streams"]] == [s["receiver"]["bytes"]
                                                                      for s in end["streams"]]


@pytest.mark.root
def test_omitted_seconds_are_left_out_on_both_sides(iperf3_lab: RunningLab) -> None:
    end = kernel_client(iperf3_lab, "-t", "2", "-O", "1")["end"]
    sent, received = end["sum_sent"]["bytes"], end["sum_received"]["bytes"]
    # each side starts counting when its own omit timer fires: close, not exact
    assert received > 0 and abs(received - sent) <= 0.25 * sent, (sent, received)


@pytest.mark.root
def test_a_test_the_app_does_not_run_is_refused_in_iperf3s_words(iperf3_lab: RunningLab) -> None:
    for option in ("-u", "--bidir"):
        done = iperf3_lab.exec("h1", ["iperf3", "-c", iperf3_lab.address("s1"), "-p", str(IPERF3_PORT), "-t",
                                      "1", "-J", option], timeout=30)
        assert "not implemented" in json.loads(done.stdout)["error"]  # iperf3 -J exits 0 even so
    assert kernel_client(iperf3_lab, "-t", "1")["end"]["sum_received"]["bytes"] > 0  # and the next test runs


@pytest.mark.root
def test_a_client_killed_mid_test_frees_the_server_for_the_next(iperf3_lab: RunningLab) -> None:
    for options in (("-P", "2"), ("-R",)):
        argv = ["iperf3", "-c", iperf3_lab.address("s1"), "-p", str(IPERF3_PORT), "-t", "10", *options]
        killed = iperf3_lab.exec("h1", ["timeout", "-s", "KILL", "1.5", *argv], timeout=30)
        assert killed.returncode in (-9, 137)  # timeout itself killed (no shell in between: -9)
    time.sleep(0.3)  # the stack sees the RSTs and ends the test
    assert kernel_client(iperf3_lab, "-t", "1")["end"]["sum_received"]["bytes"] > 0


def kernel_server(lab: RunningLab) -> subprocess.Popen[bytes]:
    """A one-test kernel `iperf3 -s -1 -J` in h1; its JSON report is its stdout when it exits."""
    argv = ["iperf3", "-s", "-1", "-J", "-B", lab.address("h1"), "-p", str(KERNEL_IPERF3_PORT)]
    server = lab.popen("h1", argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert wait_for_listener(lab.node("h1").namespace, KERNEL_IPERF3_PORT, server, timeout=10.0)
    return server


@pytest.mark.root
@pytest.mark.parametrize(("reverse", "parallel"), [(False, 1), (True, 2)])
def test_the_stack_as_iperf3_client_against_a_kernel_server(iperf3_lab: RunningLab, reverse: bool,
                                                           parallel: int) -> None:
    server = kernel_server(iperf3_lab)
    with iperf3_lab.stack("s1") as control:
        answer = control.iperf3(iperf3_lab.address("h1"), KERNEL_IPERF3_PORT, seconds=2, parallel=parallel,
                                reverse=reverse)
    stdout, _ = server.communicate(timeout=20)
    kernel_end = json.loads(stdout)["end"]
    assert answer["parallel"] == parallel == len(answer["streams"])
    assert answer["sent_bps"] > 0 and answer["received_bps"] > 0
    assert answer["sent_bytes"] == answer["received_bytes"] > 0  # acknowledged before TEST_END / read to EOF
    kernel_bytes = kernel_end["sum_sent" if reverse else "sum_received"]["bytes"]
    assert kernel_bytes == answer["sent_bytes" if reverse else "received_bytes"]


@pytest.mark.root
def test_lab_stack_connect_app_iperf3_prints_iperf3s_summary(iperf3_lab: RunningLab) -> None:
    server = kernel_server(iperf3_lab)
    target = f"{iperf3_lab.address('h1')}:{KERNEL_IPERF3_PORT}"
    done = subprocess.run([sys.executable, "-m", "lab", "stack", iperf3_lab.name, "s1", "connect", target,
                           "--app", "iperf3", "--seconds", "1", "--parallel", "2"],
                          capture_output=True, text=True, timeout=60, check=False)
    server.communicate(timeout=20)
    assert done.returncode == 0, done.stderr
    assert "sender" in done.stdout and "receiver" in done.stdout and "[SUM]" in done.stdout
    assert done.stdout.rstrip().endswith("iperf Done.")
    server = kernel_server(iperf3_lab)
    as_json = subprocess.run([sys.executable, "-m", "lab", "stack", iperf3_lab.name, "s1", "connect", target,
                              "--app", "iperf3", "--seconds", "1", "--reverse", "--json"],
                             capture_output=True, text=True, timeout=60, check=False)
    server.communicate(timeout=20)
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["reverse"] and answer["sent_bytes"] == answer["received_bytes"] > 0
    bad = subprocess.run([sys.executable, "-m", "lab", "stack", iperf3_lab.name, "s1", "connect", target,
                          "--app", "iperf3", "--parallel", "500"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 2 and "--parallel" in bad.stderr


@pytest.mark.root
def test_lab_stack_listen_app_iperf3_serves_a_stock_client(iperf3_lab: RunningLab) -> None:
    def lab_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lab", "stack", iperf3_lab.name, "s1", *arguments],
                              capture_output=True, text=True, timeout=60, check=False)

    listened = lab_cli("listen", "5203", "--app", "iperf3")
    assert listened.returncode == 0, listened.stderr
    try:
        tables = lab_cli("tables", "--json")
        assert {"5203": "iperf3"}.items() <= {str(r["local"]).rpartition(":")[2]: r.get("app")
                                              for r in json.loads(tables.stdout)["listening"]}.items()
        done = iperf3_lab.exec("h1", ["iperf3", "-c", iperf3_lab.address("s1"), "-p", "5203", "-t", "1"],
                               timeout=60)
        assert done.returncode == 0 and b"receiver" in done.stdout, done.stderr
    finally:
        assert lab_cli("close", "5203").returncode == 0


@pytest.mark.root
def test_connect_goodput_is_timed_to_the_last_ack(iperf3_lab: RunningLab) -> None:
    """A kernel receiver in h1 that reads everything: connect's `seconds` end when the last byte was
    acknowledged, never before the send buffer was filled (the old figure, kept as buffered_*)."""
    listener = iperf3_lab.kernel_socket("h1")
    listener.bind((iperf3_lab.address("h1"), 7601))
    listener.listen(4)
    received = []

    def drain() -> None:
        conn, _ = listener.accept()
        with conn:
            total = 0
            while data := conn.recv(1 << 20):
                total += len(data)
            received.append(total)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        with iperf3_lab.stack("s1") as control:
            answer = control.connect(iperf3_lab.address("h1"), 7601, send=40_000_000, shutdown=True,
                                     timeout=20)
        reader.join(20)
    finally:
        listener.close()
    assert answer["error"] is None and answer["sent"] == 40_000_000 == received[0]
    assert answer["seconds"] >= answer["buffered_seconds"] > 0
    assert 0 < answer["goodput_bps"] <= answer["buffered_goodput_bps"]
    assert answer["snapshot"] is None or answer["snapshot"].get("send_queue", 0) == 0
