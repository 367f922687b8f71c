"""The plugin as a user meets it: test files in a folder of their own, run by a pytest subprocess, so the
`pytest11` entry point (not this project's conftest) provides the fixtures. Only the public plugin is
used: its fixtures and marker, and `lab.testing`'s handles through them.

The worked example is taken from docs/testing.md itself, so the documentation is what is run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.build import builder
from lab.build.state import list_labs
from lab.kernel.namespaces import list_namespaces

DOCS = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
RUN_SECONDS = 180


def example_from_docs() -> str:
    """The first Python block of docs/testing.md: the worked example."""
    match = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert match is not None, "docs/testing.md has no python example"
    return match[1]


@pytest.fixture
def lab_prefix() -> Iterator[str]:
    """A prefix for the labs of the pytest run a test starts; whatever labs carry it when the test ends
    (the run killed on a timeout, a failed expectation) are taken down, so a failing test leaves none."""
    lab_prefix = f"pp{uuid.uuid4().hex[:3]}"
    yield lab_prefix
    for name in list_labs():
        if name.startswith(lab_prefix):
            builder.down(name)


def pytest_command(folder: Path, *args: str) -> list[str]:
    # -p no:cacheprovider: nothing written beside the tests; the entry point loads the plugin
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder), *args]


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(pytest_command(folder, *args), cwd=folder, capture_output=True, text=True,
                          timeout=RUN_SECONDS, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def labs_left(lab_prefix: str) -> list[str]:
    return [name for name in list_namespaces() if name.startswith(lab_prefix)]


def test_the_entry_point_names_the_plugin_module() -> None:
    from importlib.metadata import entry_points

    (plugin,) = [e for e in entry_points(group="pytest11") if e.name == "nslab"]
    assert plugin.value == "lab.testing.plugin"


def test_a_bad_prefix_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x(nslab_prefix):\n    pass\n")
    done = run_pytest(tmp_path, "--nslab-prefix", "Bad-Prefix")
    assert done.returncode != 0
    expected = "nslab prefix 'Bad-Prefix': expected 1 to 5 lowercase letters and digits"
    assert expected in done.stdout + done.stderr


SAME_SHAPES = '''
import json
import subprocess
import sys


def test_python_and_the_cli_answer_alike(nslab):
    s1 = nslab.stack("s1")

    def cli(verb):
        done = subprocess.run([sys.executable, "-m", "lab", "stack", nslab.name, "s1", verb, "--json"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert set(cli("stats")) == set(s1.stats()) == {"counters"}
    assert set(cli("stats")["counters"]) == set(s1.stats()["counters"])
    assert set(cli("ss")) == set(s1.ss()) and "connections" in s1.ss()
    assert cli("tables").keys() == s1.tables().keys()
'''


KERNEL_HANDLES = '''
import threading


def test_the_stack_connects_to_a_kernel_listener(nslab):
    h1, s1 = nslab.kernel("h1"), nslab.stack("s1")
    listener = h1.listen(7020)
    seen = nslab.watch(7020)
    served = {}

    def serve():
        conn, _ = listener.accept()
        with conn:
            served["data"] = conn.recv(100)
            served["info"] = h1.tcp_info(conn)
            served["rows"] = [(r.state, r.local_port) for r in h1.sockets()]
            conn.sendall(served["data"])

    thread = threading.Thread(target=serve)
    thread.start()
    answer = s1.connect(h1.address, 7020, send=5, recv="eof", shutdown=True)
    thread.join(10)
    assert answer["received"] == len(served["data"]) == 5
    assert served["info"]["state"] == "CLOSE_WAIT"  # the stack shut its side down
    assert ("LISTEN", 7020) in served["rows"]
    seen.expect_states("h1", ["SYN_RECV", "ESTABLISHED"])
    seen.expect_states("s1", ["SYN_SENT", "ESTABLISHED"])
    seen.expect_counter("h1", "TcpPassiveOpens", by=1)
    seen.expect_counter("s1", "TcpActiveOpens", by=1)
    assert b"LISTEN" in h1.run("ss", "-tan", check=True).stdout


def test_two_labs(nslab_up):
    a, b = nslab_up("pair"), nslab_up("pair")
    assert a.name != b.name
    assert a.kernel("h1").run("ping", "-c1", "-W2", a.address("s1")).returncode == 0
'''


@pytest.mark.root
def test_the_documented_example_and_the_handles_pass_and_leave_no_lab(tmp_path: Path,
                                                                      lab_prefix: str) -> None:
    (tmp_path / "test_echo.py").write_text(example_from_docs())
    (tmp_path / "test_shapes.py").write_text(SAME_SHAPES)
    (tmp_path / "test_handles.py").write_text(KERNEL_HANDLES)
    done = run_pytest(tmp_path, "--nslab-prefix", lab_prefix)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout
    assert labs_left(lab_prefix) == []


WRONG_EXPECTATIONS = '''
import pytest


@pytest.fixture
def echoed(nslab):
    """A kernel client echoed by the stack on port 7010, watched and captured."""
    s1 = nslab.stack("s1")
    s1.listen(7010, app="echo")
    seen, capture = nslab.watch(7010), nslab.capture("s1")
    with nslab.kernel("h1").connect((s1.address, 7010)) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
    return seen, capture


def test_wrong_states(echoed):
    seen, _ = echoed
    seen.expect_states("s1", ["SYN_SENT", "ESTABLISHED"], within=0.5)


def test_wrong_counter(echoed):
    seen, _ = echoed
    seen.expect_counter("s1", "TcpPassiveOpens", by=2, within=0.5)


def test_wrong_flags(echoed):
    _, capture = echoed
    capture.expect_sent(flags="S", within=0.5)


@pytest.mark.nslab_topology("nosuchtopology")
def test_an_unknown_topology(nslab):
    pass


@pytest.mark.nslab_capture("s1")
def test_a_capture_for_the_whole_test(nslab):
    (capture,) = nslab.captures
    s1 = nslab.stack("s1")
    s1.listen(7011)
    with nslab.kernel("h1").connect((s1.address, 7011)) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
    capture.expect_sent(flags="R", within=0.3)


@pytest.mark.nslab_topology({"name": "mine", "nodes": {"a": {"kind": "kernel"}, "b": {"kind": "kernel"}},
                             "links": [{"endpoints": ["a:eth0", "b:eth0"], "subnet": "10.77.0.0/24"}]})
def test_a_dict_topology_and_a_failing_assert(nslab):
    done = nslab.kernel("a").run("ping", "-c1", "-W2", nslab.address("b"))
    assert done.returncode == 0
    assert nslab.name.startswith("PREFIX")
    assert False, "failing on purpose: the lab must still go down"
'''


@pytest.mark.root
def test_wrong_expectations_fail_showing_what_was_seen_and_labs_go_down(tmp_path: Path,
                                                                       lab_prefix: str) -> None:
    (tmp_path / "test_wrong.py").write_text(WRONG_EXPECTATIONS.replace("PREFIX", lab_prefix))
    done = run_pytest(tmp_path, "--nslab-prefix", lab_prefix)
    output = done.stdout
    assert done.returncode == 1, output[-3000:] + done.stderr[-2000:]
    assert "5 failed, 1 error" in output
    assert re.search(r"nslab topology: nosuchtopology: expected a readable topology file, got No such file "
                     r"or directory \(shipped topologies: [a-z, ]*pair", output), output
    # the states: what each connection of s1 went through
    assert "s1: no connection went through SYN_SENT -> ESTABLISHED (in a row)" in output
    assert re.search(r"seen 10\.0\.0\.2:7010 > 10\.0\.0\.1:\d+: LISTEN -> SYN_RECV -> ESTABLISHED -> "
                     r"CLOSE_WAIT -> LAST_ACK -> CLOSE", output), output
    # the counter: before, after, moved by
    assert re.search(r"s1: counter TcpPassiveOpens expected to move by exactly 2; seen \d+ -> \d+ "
                     r"\(moved by 1\)", output), output
    # the segment: every segment s1 sent, its SYN-ACK first
    assert "s1: expected a segment sent with flags [S]; 0 matched" in output
    assert re.search(r"sent 10\.0\.0\.2:7010 > 10\.0\.0\.1:\d+ \[S\.\] seq \d+ ack \d+ win \d+ <mss", output)
    # a capture for the whole test, named in the failure's report (and kept)
    assert "s1: expected a segment sent with flags [R]; 0 matched" in output
    pcaps = re.findall(r"capture of s1: (\S+\.pcap)", output)
    assert pcaps and all(Path(p).stat().st_size > 24 for p in pcaps), output
    # the user's own assert fails as usual, after the dict topology came up (ping passed)
    assert "failing on purpose: the lab must still go down" in output
    assert labs_left(lab_prefix) == []


SLOW_TEST = '''
import time
from pathlib import Path


def test_stopped_by_ctrl_c(nslab):
    Path("READY.part").write_text(nslab.name)
    Path("READY.part").rename("READY")  # whole or absent: the waiting test never reads it half written
    time.sleep(120)
'''


@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_stops_the_run_and_takes_the_lab_down(tmp_path: Path, signum: int,
                                                            lab_prefix: str) -> None:
    (tmp_path / "test_slow.py").write_text(SLOW_TEST)
    ready = tmp_path / "READY"
    process = subprocess.Popen(pytest_command(tmp_path, "--nslab-prefix", lab_prefix), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), "the lab never came up"
        lab = ready.read_text()
        assert any(name.startswith(f"{lab}-") for name in list_namespaces())
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2, output[-3000:]  # pytest: interrupted
    assert "KeyboardInterrupt" in output
    assert labs_left(lab_prefix) == []


def test_the_plugin_adds_only_nslab_fixtures_and_none_autouse(tmp_path: Path) -> None:
    """Loaded in every test run (this project's too): its fixtures are named nslab..., so they never clash
    with a project's own (here lab_name, pair_lab, make_lab), and none is autouse."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--fixtures", "-q"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    section = done.stdout.split("fixtures defined from lab.testing.plugin", 1)[1].split("\n---", 1)[0]
    names = re.findall(r"^(\w+)(?: \[\w+ scope\])? -- ", section, re.MULTILINE)
    assert names and all(name.startswith("nslab") for name in names), names
    assert not {"lab_name", "pair_lab", "make_lab", "kernel_pair"} & set(names)
    assert "autouse=True" not in (Path(__file__).resolve().parents[2] / "lab/testing/plugin.py").read_text()
