"""Captures: tcpdump inside a node's namespace, writing a pcap that tcpdump -r and Wireshark read.

A kernel node is captured on one of its interfaces (default: its first); a pystack node on its TAP
(`tap0`, default: exactly the frames the stack reads and writes) or on its veth end (what is on the
wire). `capturing` starts tcpdump as a program of the running lab (so Ctrl-C or a failed step stops
it), returns once tcpdump is listening, and on leaving stops it with SIGINT so the file is complete.
tcpdump keeps root's identity (`-Z root`): Debian's tcpdump otherwise writes as user tcpdump, which
cannot write into root's folders.

`record` is `lab capture`: a capture bounded in time and size. tcpdump cannot stop at a byte count,
so the file is watched while it grows and, once tcpdump has stopped, cut back to its last whole
record within the bound. `record_stack` asks a pystack node's stack to write its own pcap of the
frames it sends and receives (the node bounds that file itself). Either way the file is complete
when the call returns, also when it is cut short by Ctrl-C.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.build.signals import note_cleanup
from lab.experiments.base import ExperimentError
from lab.experiments.running import RunningLab
from lab.topology.plan import PYSTACK_TAP

SNAPLEN = 262144  # whole 64 KB TSO super-frames, as tcpdump's default
READY_TIMEOUT_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 2.0
WATCH_INTERVAL_SECONDS = 0.02  # how often a bounded capture looks at the clock and the file's size
PCAP_HEADER_BYTES = 24
RECORD_HEADER_BYTES = 16


@dataclass
class CaptureResult:
    """What a capture wrote: the file, and tcpdump's own count of the packets it kept (set when it stops)."""

    path: Path
    node: str
    interface: str
    packets: int | None
    stopped_by: str = "duration"  # "duration", "max-bytes" or "interrupt"

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "node": self.node, "interface": self.interface,
                "packets": self.packets, "bytes": self.path.stat().st_size if self.path.exists() else 0,
                "stopped_by": self.stopped_by}


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


def record(lab: RunningLab, node: str, path: Path, interface: str | None, *, duration: float,
           max_bytes: int, bpf_filter: str | None = None) -> CaptureResult:
    """tcpdump on the node's interface for `duration` seconds or until the file holds `max_bytes`;
    the file is cut back to whole records within `max_bytes` (and `packets` recounted) if it grew past."""
    result: CaptureResult | None = None
    try:
        with capturing(lab, node, path, interface, bpf_filter=bpf_filter) as result:
            result.stopped_by = wait_for_bounds(duration, lambda: _size(path) >= max_bytes)
    except BaseException:  # Ctrl-C or SIGTERM: `capturing` has stopped tcpdump; keep the file whole
        if result is not None:
            result.stopped_by = "interrupt"
            cut_to(path, max_bytes, result)
            note_cleanup(f"stopped the capture; {path} holds {result.packets} packets")
        raise
    cut_to(path, max_bytes, result)
    return result


def record_stack(lab: RunningLab, node: str, path: Path, *, duration: float,
                 max_bytes: int) -> dict[str, Any]:
    """The node's stack records what it sends and receives to `path` (an absolute path the node
    process opens) for `duration` seconds or until `max_bytes`; the node's last status of it."""
    with lab.stack(node) as client:
        client.request("pcap", action="start", path=str(path), max_bytes=max_bytes)
        stopped_by = "interrupt"
        try:
            stopped_by = wait_for_bounds(
                duration, lambda: bool(client.request("pcap", action="status").get("full")))
        finally:
            answer = client.request("pcap", action="stop")
            answer["stopped_by"] = stopped_by
            if stopped_by == "interrupt":
                note_cleanup(f"stopped the stack's capture; {path} holds "
                             f"{answer.get('frames_in', 0) + answer.get('frames_out', 0)} frames")
    return answer


def wait_for_bounds(duration: float, full: Callable[[], bool]) -> str:
    deadline = time.monotonic() + duration
    while True:
        if full():
            return "max-bytes"
        left = deadline - time.monotonic()
        if left <= 0:
            return "duration"
        time.sleep(min(left, WATCH_INTERVAL_SECONDS))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def cut_to(path: Path, max_bytes: int, result: CaptureResult) -> None:
    """Truncate a pcap that grew past `max_bytes` after its last whole record within it."""
    if _size(path) <= max_bytes:
        return
    with path.open("r+b") as file:
        header = file.read(PCAP_HEADER_BYTES)
        order = "<" if header[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        end, packets = PCAP_HEADER_BYTES, 0
        while True:
            file.seek(end)
            raw = file.read(RECORD_HEADER_BYTES)
            if len(raw) < RECORD_HEADER_BYTES:
                break
            captured = struct.unpack(order + "IIII", raw)[2]
            following = end + RECORD_HEADER_BYTES + captured
            if following > max_bytes:
                break
            end, packets = following, packets + 1
        file.truncate(end)
    result.packets = packets
