"""Captures: tcpdump inside a node's namespace, writing a pcap that tcpdump -r and Wireshark read.

A kernel node is captured on one of its interfaces (default: its first); a pystack node on its TAP
(`tap0`, default: exactly the frames the stack reads and writes) or on its veth end (what is on the
wire). `capturing` starts tcpdump as a program of the running lab (so Ctrl-C or a failed step stops
it), returns once tcpdump is listening, and on leaving stops it with SIGINT so the file is complete.
tcpdump keeps root's identity (`-Z root`): Debian's tcpdump otherwise writes as user tcpdump, which
cannot write into root's folders.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from lab.experiments.base import ExperimentError
from lab.experiments.running import RunningLab
from lab.topology.plan import PYSTACK_TAP

SNAPLEN = 262144  # whole 64 KB TSO super-frames, as tcpdump's default
READY_TIMEOUT_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 2.0


@dataclass
class CaptureResult:
    """What a capture wrote: the file, and tcpdump's own count of the packets it kept (set when it stops)."""

    path: Path
    node: str
    interface: str
    packets: int | None


def capture_interface(lab: RunningLab, node: str, interface: str | None) -> str:
    """The interface to capture on: the one asked for (checked against the node's), or the default."""
    plan = lab.node(node)
    names = [iface.name for iface in plan.interfaces]
    if plan.kind == "pystack":
        names.append(PYSTACK_TAP)
    if interface is None:
        return PYSTACK_TAP if plan.kind == "pystack" else names[0]
    if interface not in names:
        raise ExperimentError(f"node {node} of lab {lab.name} has no interface {interface!r} "
                              f"(interfaces: {', '.join(names)})")
    return interface


def tcpdump_argv(interface: str, path: Path, bpf_filter: str | None = None) -> list[str]:
    # --immediate-mode: without it packets still in the capture ring when tcpdump stops are lost
    argv = ["tcpdump", "-i", interface, "-w", str(path), "-U", "--immediate-mode", "-n", "-s", str(SNAPLEN),
            "-Z", "root"]
    return argv + ([bpf_filter] if bpf_filter else [])


@contextmanager
def capturing(lab: RunningLab, node: str, path: Path, interface: str | None = None, *,
              bpf_filter: str | None = None) -> Iterator[CaptureResult]:
    """A pcap of `node`'s interface while the block runs; the result's `packets` is set on exit."""
    chosen = capture_interface(lab, node, interface)
    path.parent.mkdir(parents=True, exist_ok=True)
    process = lab.popen(node, tcpdump_argv(chosen, path, bpf_filter),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = _wait_until_listening(process)
    result = CaptureResult(path, node, chosen, None)
    try:
        yield result
    finally:
        result.packets = stop_capture(process, stderr)


def _wait_until_listening(process: subprocess.Popen[bytes]) -> bytearray:
    """Block until tcpdump says it is listening (or fails): packets sent before that would be missed."""
    assert process.stderr is not None
    seen = bytearray()
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while b"listening on" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            stop_capture(process, seen)
            last = seen.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"tcpdump did not start listening: {last[0][:200]}")
        ready, _, _ = select.select([process.stderr], [], [], min(left, 0.1))
        if ready:
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                continue
            seen += chunk
    return seen


def stop_capture(process: subprocess.Popen[bytes], stderr: bytearray) -> int | None:
    """SIGINT (tcpdump flushes and prints its counts), SIGKILL after a grace; the packets it captured."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        _, rest = process.communicate(timeout=STOP_TIMEOUT_SECONDS)
        stderr += rest or b""
    except subprocess.TimeoutExpired:
        process.kill()
        with suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=STOP_TIMEOUT_SECONDS)
    for line in stderr.decode(errors="replace").splitlines():
        words = line.split()
        if len(words) >= 3 and words[1:3] == ["packets", "captured"]:
            return int(words[0])
    return None
