"""`http`: real HTTP clients and servers on both sides of the stack.

1. curl in the kernel node fetches a large body (`/bytes/N`) from the stack's http app, and several
   bodies in one invocation; curl's own `num_connects` shows whether it reused the connection
   (HTTP/1.1 keep-alive): one connect for all of them. Every body's SHA-256 is computed from what curl
   wrote to disk and compared with the server's `X-Content-SHA256` header and with the digest of the
   stack's deterministic pattern.
2. the stack's HTTP client (`http_get` on the control socket) fetches a file of random bytes from a kernel
   `python -m http.server` started in the kernel node's namespace (and stopped afterwards); the
   digest the stack reports must equal the file's.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from lab.build.control import StackClient, StackCommandFailed
from lab.experiments.base import Experiment, ExperimentError, Options
from lab.experiments.results import STEP_ERRORS, Check, ExperimentResult, step_failed
from lab.experiments.running import RunningLab
from lab.kernel.sockdiag import kernel_listener
from stack.node.apps.content import pattern_sha256

CURL_TIMEOUT = 120.0
# One line per transfer on stderr; curl >= 7.84 prints response headers with %header{...}.
CURL_WRITE_OUT = ("%{stderr}%{http_code} %{num_connects} %{size_download} %{speed_download} "
                  "%{time_total} %header{x-content-sha256}\n")
KEEPALIVE_SIZES = (0, 1, 1460, 100_000, 1_000_000)


def parse_curl_lines(text: str) -> list[dict[str, Any]]:
    """The lines CURL_WRITE_OUT printed, one dict per transfer (other stderr lines are skipped)."""
    transfers = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        transfers.append({"status": int(fields[0]), "connects": int(fields[1]), "bytes": int(fields[2]),
                          "bytes_per_second": float(fields[3]), "seconds": float(fields[4]),
                          "header_sha256": fields[5] if len(fields) > 5 else None})
    return transfers


def file_sha256(path: Path) -> str:
    """The file's digest; curl creates no output file for an empty body, so a missing file is empty."""
    digest = hashlib.sha256()
    if not path.exists():
        return digest.hexdigest()
    with path.open("rb") as body:
        while chunk := body.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def judge_body(transfer: dict[str, Any], size: int, body_sha256: str) -> tuple[bool, str]:
    """A body is right when curl got 200 and N bytes whose digest equals the header's and the pattern's."""
    expected = pattern_sha256(size)
    wrong = [what for what, ok in (("body", body_sha256 == expected),
                                   ("X-Content-SHA256", transfer["header_sha256"] == expected)) if not ok]
    passed = transfer["status"] == 200 and transfer["bytes"] == size and not wrong
    verdict = "= header = pattern" if not wrong else f"MISMATCH ({' and '.join(wrong)} != pattern)"
    return passed, f"GET /bytes/{size}: {transfer['status']}, {transfer['bytes']} B, sha256 {verdict}"


class HttpExperiment(Experiment):
    summary = "curl fetches from the stack's http app (large body, keep-alive); the stack fetches from Linux"
    options: ClassVar[Options] = {
        "bytes": (50_000_000, "size of the large body curl fetches"),
        "file_bytes": (5_000_000, "size of the file the kernel's http.server serves to the stack"),
        "port": (8080, "stack http port when the topology has no http app; the kernel server uses port+1"),
    }

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        kernel_node, stack_node = lab.kernel_and_stack()
        checks: list[Check] = []
        metrics: dict[str, Any] = {}
        with lab.stack(stack_node, timeout=CURL_TIMEOUT) as stack, tempfile.TemporaryDirectory() as scratch:
            port, opened = http_port(lab, stack_node, options["port"])
            if opened:
                stack.listen(port, app="http")
            try:
                base = f"http://{lab.address(stack_node)}:{port}"
                parts = {
                    "curl large body": lambda: curl_large_body(lab, kernel_node, base, options["bytes"],
                                                               Path(scratch), metrics),
                    "curl keep-alive": lambda: curl_keepalive(lab, kernel_node, base, Path(scratch), metrics),
                }
                for title, part in parts.items():
                    try:
                        checks += part()
                    except (*STEP_ERRORS, subprocess.TimeoutExpired) as error:
                        checks.append(step_failed(title, error))
            finally:
                if opened:
                    stack.close_listener(port)
            try:
                checks += stack_fetches_from_kernel(lab, stack, kernel_node, options["port"] + 1,
                                                    options["file_bytes"], Path(scratch), metrics)
            except STEP_ERRORS as error:
                checks.append(step_failed("stack fetches from kernel", error))
        return ExperimentResult.from_checks(self.name, checks, metrics)


def http_port(lab: RunningLab, stack_node: str, fallback: int) -> tuple[int, bool]:
    """The port of the node's http app, or `fallback` and True (the experiment opens it itself)."""
    for app in lab.node(stack_node).apps:
        if app.app == "http":
            return app.port, False
    return fallback, True


def run_curl(lab: RunningLab, node: str, args: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        done = lab.exec(node, ["curl", "--silent", "--show-error", "--max-time", str(int(CURL_TIMEOUT)),
                               "--write-out", CURL_WRITE_OUT, *args], timeout=CURL_TIMEOUT + 10)
    except FileNotFoundError:
        raise ExperimentError("experiment http needs curl on this machine (apt-get install curl)") from None
    return done


def curl_large_body(lab: RunningLab, node: str, base: str, size: int, scratch: Path,
                    metrics: dict[str, Any]) -> list[Check]:
    body = scratch / "large.bin"
    done = run_curl(lab, node, ["--output", str(body), f"{base}/bytes/{size}"])
    transfers = parse_curl_lines(done.stderr.decode(errors="replace"))
    if done.returncode != 0 or len(transfers) != 1:
        return [Check(f"curl GET /bytes/{size}", False,
                      f"curl exit {done.returncode}: {done.stderr.decode(errors='replace').strip()[-200:]}")]
    transfer = transfers[0]
    passed, detail = judge_body(transfer, size, file_sha256(body))
    body.unlink()
    gbps = transfer["bytes_per_second"] * 8 / 1e9
    metrics["large_body"] = {**transfer, "gbps": round(gbps, 3)}
    return [Check(f"curl GET /bytes/{size}: body exact", passed, f"{detail}; {gbps:.3f} Gbit/s")]


def curl_keepalive(lab: RunningLab, node: str, base: str, scratch: Path,
                   metrics: dict[str, Any]) -> list[Check]:
    """Several URLs (KEEPALIVE_SIZES) in one curl invocation: curl reuses the connection when the server
    keeps it open."""
    args: list[str] = []
    for index, size in enumerate(KEEPALIVE_SIZES):
        args += ["--output", str(scratch / f"keepalive{index}.bin"), f"{base}/bytes/{size}"]
    done = run_curl(lab, node, args)
    transfers = parse_curl_lines(done.stderr.decode(errors="replace"))
    metrics["keepalive"] = transfers
    if done.returncode != 0 or len(transfers) != len(KEEPALIVE_SIZES):
        return [Check("curl keep-alive requests", False,
                      f"curl exit {done.returncode}, {len(transfers)} of {len(KEEPALIVE_SIZES)} transfers: "
                      f"{done.stderr.decode(errors='replace').strip()[-200:]}")]
    verdicts = [judge_body(t, size, file_sha256(scratch / f"keepalive{i}.bin"))
                for i, (t, size) in enumerate(zip(transfers, KEEPALIVE_SIZES, strict=True))]
    connects = [t["connects"] for t in transfers]
    bodies_ok = all(passed for passed, _ in verdicts)
    return [
        Check(f"curl keep-alive: {len(transfers)} bodies exact", bodies_ok,
              "; ".join(detail for passed, detail in verdicts if not passed) or
              f"sizes {list(KEEPALIVE_SIZES)}, each sha256 = header = pattern"),
        Check("curl keep-alive: one connection for all requests", sum(connects) == 1,
              f"num_connects per request {connects} (expected 1 then 0s)"),
    ]


def stack_fetches_from_kernel(lab: RunningLab, stack: StackClient, node: str, port: int, size: int,
                              scratch: Path, metrics: dict[str, Any]) -> list[Check]:
    """The stack's client against `python -m http.server` in the kernel node's namespace."""
    served = scratch / "served"
    served.mkdir()
    blob = served / "blob.bin"
    blob.write_bytes(os.urandom(size))
    expected = file_sha256(blob)
    address = lab.address(node)
    server = lab.popen(node, [sys.executable, "-m", "http.server", str(port), "--bind", address,
                              "--directory", str(served)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for_listener(lab.node(node).namespace, port, server, timeout=10.0):
            return [Check("stack GET from kernel http.server", False,
                          f"python -m http.server did not listen on {address}:{port} within 10 s "
                          f"(exit code {server.poll()})")]
        answer = stack.http_get(address, port, "/blob.bin", count=2)
        try:
            missing = stack.http_get(address, port, "/missing.bin", count=1)
        except StackCommandFailed as failure:
            missing = {"responses": [], "error": str(failure)}
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
    responses = answer.get("responses", [])
    metrics["stack_client"] = {"file_bytes": size, "responses": responses,
                               "connections": answer.get("connections"),
                               "missing": missing.get("responses", [])}
    exact = [r for r in responses
             if r.get("status") == 200 and r.get("bytes") == size and r.get("sha256") == expected]
    seconds = responses[0].get("seconds") if responses else None
    rate = f"{size * 8 / seconds / 1e6:.0f} Mbit/s" if seconds else "no timing"
    not_found = [r.get("status") for r in missing.get("responses", [])]
    return [
        Check("stack GET /blob.bin x2 from kernel http.server: bodies exact",
              len(exact) == 2 == len(responses),
              f"{len(exact)} of {len(responses)} responses 200 with {size} B and the file's sha256; {rate}"),
        # http.server answers HTTP/1.0 and closes after each response: the client must open a new connection.
        Check("stack client reconnects after an HTTP/1.0 server closes", answer.get("connections") == 2,
              f"{answer.get('connections')} connections for 2 requests (expected 2)"),
        Check("stack GET of a missing file sees 404", not_found == [404], f"statuses {not_found}"),
    ]


def wait_for_listener(namespace: str, port: int, process: subprocess.Popen[bytes], *, timeout: float) -> bool:
    """Poll the namespace's sockets until something listens on `port` (False: it died or took too long)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kernel_listener(namespace, port) is not None:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    return False
