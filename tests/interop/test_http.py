"""The `http` experiment, the stack's http app against stock clients, and `lab stack ... get`.

Unit tests (no root) pin how curl's report is read and judged; a root test runs the kernel-side
tools (`python -m http.server` started in a namespace, curl in another) without the stack, so a
failure of the experiment points at the stack; the experiment itself runs on a pair lab, and so do
ab, curl and raw kernel sockets in h1 against the http app of s1, and `lab stack LAB s1 get URL`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.experiments.http import (
    KEEPALIVE_SIZES,
    file_sha256,
    judge_body,
    parse_curl_lines,
    run_curl,
    wait_for_listener,
)
from lab.experiments.running import RunningLab
from stack.node.apps.content import pattern, pattern_sha256


def test_curl_report_lines_are_parsed() -> None:
    text = ("curl: (7) something on stderr\n"
            "200 1 50000000 120000000.000 0.41 ab12\n"
            "200 0 0 0.000 0.001 \n")
    first, second = parse_curl_lines(text)
    assert first == {"status": 200, "connects": 1, "bytes": 50_000_000, "bytes_per_second": 1.2e8,
                     "seconds": 0.41, "header_sha256": "ab12"}
    assert second["connects"] == 0 and second["header_sha256"] is None


def test_body_verdicts(tmp_path: Path) -> None:
    size = 1000
    digest = pattern_sha256(size)
    good = {"status": 200, "bytes": size, "header_sha256": digest}
    assert judge_body(good, size, digest)[0]
    assert not judge_body({**good, "status": 206}, size, digest)[0]
    assert not judge_body({**good, "header_sha256": "0" * 64}, size, digest)[0]  # header lies
    assert not judge_body(good, size, hashlib.sha256(b"x").hexdigest())[0]  # body differs
    assert file_sha256(tmp_path / "never-written") == hashlib.sha256(b"").hexdigest()
    assert 0 in KEEPALIVE_SIZES  # an empty body on a kept-alive connection is the classic framing trap


@pytest.mark.root
def test_kernel_http_server_and_curl_between_kernel_nodes(kernel_pair: RunningLab, tmp_path: Path) -> None:
    lab = kernel_pair
    (tmp_path / "f.bin").write_bytes(b"nslab" * 1000)
    server = lab.popen("b", [sys.executable, "-m", "http.server", "8001", "--bind", lab.address("b"),
                             "--directory", str(tmp_path)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_listener(lab.node("b").namespace, 8001, server, timeout=10.0)
        out = tmp_path / "out.bin"
        done = run_curl(lab, "a", ["--output", str(out), f"http://{lab.address('b')}:8001/f.bin"])
        assert done.returncode == 0, done.stderr
        (transfer,) = parse_curl_lines(done.stderr.decode())
        assert (transfer["status"], transfer["bytes"], transfer["connects"]) == (200, 5000, 1)
        assert out.read_bytes() == b"nslab" * 1000
    finally:
        server.terminate()
        server.wait(5)


@pytest.mark.root
def test_http_experiment_passes_on_the_pair_lab(pair_lab, run_in, assert_passed) -> None:
    result = run_in(pair_lab, "http", bytes=20_000_000, file_bytes=2_000_000)
    assert_passed(result)
    assert result.metrics["large_body"]["bytes"] == 20_000_000
    assert [t["connects"] for t in result.metrics["keepalive"]] == [1] + [0] * (len(KEEPALIVE_SIZES) - 1)
    assert [r["status"] for r in result.metrics["stack_client"]["responses"]] == [200, 200]


# --- the stack's http app against stock clients in the kernel node -----------------------------------------


def read_until_close(sock: socket.socket, limit: float = 20.0) -> bytes:
    sock.settimeout(limit)
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    return bytes(data)


def raw_exchange(lab: RunningLab, request: bytes, port: int = 80) -> bytes:
    """Send `request` in one write from a kernel socket of h1 to the stack's http app; all it answers."""
    with contextlib.closing(lab.kernel_socket("h1")) as sock:
        sock.settimeout(10.0)
        sock.connect((lab.address("s1"), port))
        sock.sendall(request)
        return read_until_close(sock)


def status_lines(raw: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+(?=\r\n)", raw)


def ab_figures(text: str) -> dict[str, float]:
    """ab's summary lines `Name:   value [unit]` that carry a number."""
    figures = {}
    for name, value in re.findall(r"^([A-Za-z][A-Za-z -]+):\s+([0-9]+(?:\.[0-9]+)?)\b(?!\.)", text,
                                  re.MULTILINE):
        figures[name.strip()] = float(value)
    return figures


@pytest.mark.root
def test_ab_keep_alive_completes_with_every_request_kept_alive(pair_lab: RunningLab) -> None:
    """ab -k speaks HTTP/1.0 with `Connection: Keep-Alive` and reuses a connection only when the answer
    says keep-alive (without it, ab waits for a close that never comes)."""
    assert shutil.which("ab"), "ab is missing: `make peers` installs apache2-utils"
    done = pair_lab.exec("h1", ["ab", "-k", "-q", "-n", "2000", "-c", "10", "-s", "10",
                                f"http://{pair_lab.address('s1')}/"], timeout=120)
    text = done.stdout.decode()
    assert done.returncode == 0, text[-800:] + done.stderr.decode()[-400:]
    figures = ab_figures(text)
    assert figures["Complete requests"] == 2000 and figures["Failed requests"] == 0, text[-800:]
    assert figures["Keep-Alive requests"] == 2000, text[-800:]
    assert figures["Requests per second"] > 0


@pytest.mark.root
def test_curl_http10_keep_alive_reuses_the_connection(pair_lab: RunningLab) -> None:
    base = f"http://{pair_lab.address('s1')}"
    done = pair_lab.exec("h1", ["curl", "-sS", "-v", "--http1.0", "-H", "Connection: keep-alive",
                                "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n",
                                f"{base}/bytes/1000", f"{base}/"], timeout=30)
    assert done.returncode == 0, done.stderr.decode()[-500:]
    assert done.stdout.split() == [b"1", b"0"]  # the second transfer connected no more
    verbose = done.stderr.decode().lower()
    assert verbose.count("< connection: keep-alive") == 2  # the server says the connection persists
    assert "re-using existing connection" in verbose


@pytest.mark.root
def test_pipelined_requests_from_a_kernel_socket_are_answered_in_order(pair_lab: RunningLab) -> None:
    answer = raw_exchange(pair_lab, b"GET /bytes/3 HTTP/1.1\r\nHost: s\r\n\r\n"
                                    b"HEAD /bytes/100000 HTTP/1.1\r\nHost: s\r\n\r\n"
                                    b"GET /nowhere HTTP/1.1\r\nHost: s\r\n\r\n"
                                    b"POST /upload HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"4\r\nnsla\r\n1\r\nb\r\n0\r\n\r\n"
                                    b"GET /bytes/100000 HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
    assert status_lines(answer) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found",
                                    b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]
    assert answer.count(b"\r\nDate: ") == 5
    responses = answer.split(b"HTTP/1.1 ")[1:]
    assert responses[0].endswith(b"\r\n\r\n" + pattern(3))
    assert b"Content-Length: 100000\r\n" in responses[1] and responses[1].endswith(b"\r\n\r\n")  # HEAD
    assert f"sha256 {hashlib.sha256(b'nslab').hexdigest()}".encode() in responses[3]
    assert b"Content-Length: 100000\r\n" in responses[4] and responses[4].endswith(pattern(100_000))


@pytest.mark.root
@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"garbage\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: s\r\n\r\n", 505),
    (b"BREW / HTTP/1.1\r\nHost: s\r\n\r\n", 501),
    (b"DELETE / HTTP/1.1\r\nHost: s\r\n\r\n", 405),
    (b"POST /upload HTTP/1.1\r\nHost: s\r\n\r\n", 411),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: s\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: s\r\nCookie: " + b"c" * 40_000 + b"\r\n\r\n", 431),
])
def test_bad_requests_from_a_kernel_socket_get_their_status(pair_lab: RunningLab, request_bytes: bytes,
                                                           status: int) -> None:
    answer = raw_exchange(pair_lab, request_bytes + b"GET / HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:120]
    if status == 405:
        assert b"\r\nAllow: GET, HEAD\r\n" in answer


@pytest.mark.root
def test_a_huge_head_or_get_leaves_ping_and_the_control_socket_answering(pair_lab: RunningLab) -> None:
    """HEAD /bytes/20000000000 used to digest 20 GB on the node's loop (about 11 s with nothing answered);
    a GET of as much streams while hello and ping go on being answered."""
    stack = pair_lab.address("s1")
    with contextlib.closing(pair_lab.kernel_socket("h1")) as head, pair_lab.stack("s1") as control:
        head.settimeout(30.0)
        head.connect((stack, 80))
        head.sendall(b"HEAD /bytes/20000000000 HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
        started = time.monotonic()
        control.hello()
        hello_seconds = time.monotonic() - started
        pinged = pair_lab.exec("h1", ["ping", "-c", "1", "-W", "1", stack], timeout=10)
        answer = read_until_close(head)
        assert hello_seconds < 1.0, f"hello took {hello_seconds:.2f} s during the HEAD"
        assert pinged.returncode == 0, pinged.stdout.decode()
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nContent-Length: 20000000000\r\n" in answer

        with contextlib.closing(pair_lab.kernel_socket("h1")) as bulk:
            bulk.settimeout(10.0)
            bulk.connect((stack, 80))
            bulk.sendall(b"GET /bytes/20000000000 HTTP/1.1\r\nHost: s\r\n\r\n")
            received = 0
            hellos: list[float] = []
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                received += len(bulk.recv(1 << 20))
                if received > 20_000_000 and len(hellos) < 5:
                    started = time.monotonic()
                    control.hello()
                    hellos.append(time.monotonic() - started)
            pinged = pair_lab.exec("h1", ["ping", "-c", "1", "-W", "1", stack], timeout=10)
        assert hellos and max(hellos) < 1.0, hellos
        assert pinged.returncode == 0


def run_lab_cli(*arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "lab", *arguments], capture_output=True, timeout=timeout,
                          check=False)


@pytest.mark.root
def test_lab_stack_get_fetches_to_a_file_or_stdout_with_the_receivers_figures(pair_lab: RunningLab,
                                                                             tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    blob = random.Random(7).randbytes(3_000_000)
    (served / "blob.bin").write_bytes(blob)
    kernel = pair_lab.address("h1")
    server = pair_lab.popen("h1", [sys.executable, "-m", "http.server", "8011", "--bind", kernel,
                                   "--directory", str(served)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_listener(pair_lab.node("h1").namespace, 8011, server, timeout=10.0)
        url = f"http://{kernel}:8011/blob.bin"
        to_file = run_lab_cli("stack", pair_lab.name, "s1", "get", url, "-o", str(tmp_path / "out.bin"),
                              "--json")
        to_stdout = run_lab_cli("stack", pair_lab.name, "s1", "get", url)
        missing = run_lab_cli("stack", pair_lab.name, "s1", "get", f"http://{kernel}:8011/missing")
    finally:
        server.terminate()
        server.wait(5)
    assert to_file.returncode == 0, to_file.stderr.decode()
    assert (tmp_path / "out.bin").read_bytes() == blob
    (response,) = json.loads(to_file.stdout)["responses"]
    assert response["status"] == 200 and response["bytes"] == len(blob)
    assert response["sha256"] == hashlib.sha256(blob).hexdigest() and response["goodput_bps"] > 0
    assert to_stdout.returncode == 0 and to_stdout.stdout == blob
    summary = to_stdout.stderr.decode()
    assert f"200 OK, {len(blob)} B" in summary and "Mbit/s at the receiver" in summary
    assert missing.returncode == 1 and b"404" in missing.stderr


@pytest.mark.root
@pytest.mark.parametrize("url", ["ftp://10.0.0.1/", "http://h1/", "http://10.0.0.1:99999/", "10.0.0.1/x"])
def test_lab_stack_get_refuses_a_bad_url_in_one_line(pair_lab: RunningLab, url: str) -> None:
    done = run_lab_cli("stack", pair_lab.name, "s1", "get", url)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode().count("\n") == 1 and "get: URL" in done.stderr.decode()
