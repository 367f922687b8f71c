"""The connection-rate yardstick: connload's figures parsed, and the verdict on which side was CPU-bound."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from lab.tools.accept_rate import CONNLOAD, LoadFailed, LoadRun, bound_by, parse_run


def test_a_busy_single_threaded_stack_is_the_bound() -> None:
    assert bound_by({"stack": (0.97, 1), "client": (0.3, 4)}, cores=2) == "stack"


def test_clients_busy_on_every_core_are_the_bound() -> None:
    assert bound_by({"stack": (0.4, 1), "client": (1.9, 4)}, cores=2) == "client"


def test_two_sides_sharing_the_cores_bind_the_machine() -> None:
    assert bound_by({"listener": (0.7, 2), "client": (1.1, 4)}, cores=2) == "machine"


def test_an_idle_run_is_bound_by_nothing() -> None:
    assert bound_by({"stack": (0.1, 1), "client": (0.1, 4)}, cores=2) == "none"


def test_a_line_without_figures_fails_the_measurement() -> None:
    with pytest.raises(LoadFailed, match="printed no figures"):
        parse_run("connload: oops", "connload client")


NOT_BUILT = not CONNLOAD.exists() and os.environ.get("CI") != "true"  # CI builds it: a missing one fails


def loopback_run(client_mode: str, server_mode: str, port: int) -> tuple[LoadRun, LoadRun, dict[str, object]]:
    """connload's two ends on 127.0.0.1 for 0.3 s: the client's figures, the server's, the client's JSON."""
    server = subprocess.Popen([str(CONNLOAD), server_mode, "127.0.0.1", str(port), "20", "2"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and "listening" in server.stdout.readline()
        client = subprocess.run([str(CONNLOAD), client_mode, "127.0.0.1", str(port), "0.3", "2"],
                                capture_output=True, text=True, timeout=20, check=True)
    finally:
        out, _ = server.communicate(input="", timeout=10)
    return parse_run(client.stdout, client_mode), parse_run(out, server_mode), json.loads(client.stdout)


@pytest.mark.skipif(NOT_BUILT, reason="build/connload is built by `make venv`")
def test_connload_on_loopback_counts_what_the_listener_accepts() -> None:
    ran, accepted, printed = loopback_run("client", "server", 17931)
    assert ran.count > 0 and ran.errors == 0
    assert accepted.count == ran.count  # every completed connect was accepted, none counted twice
    assert printed["mode"] == "client"


@pytest.mark.skipif(NOT_BUILT, reason="build/connload is built by `make venv`")
def test_connload_request_and_respond_count_the_same_exchanges() -> None:
    """The keep-alive yardstick of bench_exchanges: every request answered is counted once at each end."""
    ran, answered, printed = loopback_run("request", "respond", 17932)
    assert ran.count > 0 and ran.errors == 0
    assert answered.count == ran.count
    assert printed["mode"] == "request"


@pytest.mark.skipif(NOT_BUILT, reason="build/connload is built by `make venv`")
def test_connload_refuses_bad_arguments_with_exit_2() -> None:
    result = subprocess.run([str(CONNLOAD), "client", "127.0.0.1", "0", "1", "1"], capture_output=True,
                            text=True, timeout=5)
    assert result.returncode == 2 and "PORT" in result.stderr and len(result.stderr.splitlines()) == 1

