"""The `http` experiment: curl against the stack's http app, the stack's client against Linux.

Unit tests (no root) pin how curl's report is read and judged; a root test runs the kernel-side
tools (`python -m http.server` started in a namespace, curl in another) without the stack, so a
failure of the experiment points at the stack; the experiment itself runs on a pair lab.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
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
from stack.node.apps.content import pattern_sha256


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
