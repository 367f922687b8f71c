"""`bulk`: N bytes each way between the stack and a kernel socket, SHA-256 checked, with goodput
next to kernel-to-kernel goodput measured in the same run on the same kind of link.

- kernel -> stack: a kernel listener sends N bytes of the deterministic pattern; the stack
  connects, reads to EOF and reports the SHA-256 of what it received;
- stack -> kernel: the stack connects and sends N bytes of the pattern; the kernel reads to EOF
  and hashes;
- kernel -> kernel: a scratch lab `<lab>k` of two kernel nodes on one veth link of the same MTU,
  brought up and down inside the experiment, moves the same N bytes.

Goodput is measured at the receiver, first byte to last. Both pattern ends are derived from
`stack.node.apps.content.pattern`, so each side checks the other against one expected digest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from lab.build import builder
from lab.experiments.base import Experiment, ExperimentError, Options
from lab.experiments.results import Check, ExperimentResult
from lab.experiments.running import RunningLab
from lab.kernel.sockets import listening_socket, namespace_socket
from lab.kernel.transfers import (
    BackgroundCall,
    Transfer,
    pattern_sha256,
    send_pattern,
    serve_sink_once,
    serve_source_once,
)
from lab.topology import lab_name_problem, plan_from_data
from lab.topology.chain import chain_document
from lab.topology.names import derived_lab_name
from lab.topology.plan import LabPlan

MIN_SECONDS_ALLOWED = 30.0
SLOWEST_EXPECTED_BPS = 40e6  # bounds the timeouts: 40 Mbit/s is far below the stack's slowest mode


class BulkExperiment(Experiment):
    summary = "N bytes each way, SHA-256 checked, goodput next to kernel-to-kernel"
    options: ClassVar[Options] = {
        "bytes": (64 << 20, "bytes to move each way (suffixes k, K, M, G)"),
        "port": (7200, "kernel listener port (stack->kernel uses port+1)"),
        "baseline": (True, "also measure kernel-to-kernel in a scratch lab <lab>k"),
    }

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        total = options["bytes"]
        if total <= 0:
            raise ExperimentError(f"experiment bulk: option bytes: expected more than 0, got {total}")
        kernel, stack = lab.kernel_and_stack()
        expected = pattern_sha256(total)
        checks: list[Check] = []
        metrics: dict[str, Any] = {"bytes": total, "expected_sha256": expected}

        to_stack = kernel_to_stack(lab, kernel, stack, options["port"], total)
        metrics["kernel_to_stack"] = to_stack
        checks.append(_transfer_check("kernel->stack", to_stack, total, expected))
        from_stack = stack_to_kernel(lab, kernel, stack, options["port"] + 1, total)
        metrics["stack_to_kernel"] = from_stack
        checks.append(_transfer_check("stack->kernel", from_stack, total, expected))

        if options["baseline"]:
            baseline = kernel_to_kernel(lab, total)
            metrics["kernel_to_kernel"] = baseline
            checks.append(_transfer_check("kernel->kernel (baseline)", baseline, total, expected))
            for key in ("kernel_to_stack", "stack_to_kernel"):
                stack_gbps, kernel_gbps = metrics[key]["goodput_gbps"], baseline["goodput_gbps"]
                if stack_gbps and kernel_gbps:
                    metrics[f"{key}_ratio"] = round(stack_gbps / kernel_gbps, 4)
        return ExperimentResult.from_checks(self.name, checks, metrics)


def _timeout(total: int) -> float:
    return max(MIN_SECONDS_ALLOWED, total * 8 / SLOWEST_EXPECTED_BPS)


def _figures(received: int, sha256: str, seconds: float, sent: int | None = None,
             error: str | None = None) -> dict[str, Any]:
    return {"sent": sent, "received": received, "sha256": sha256, "seconds": round(seconds, 6),
            "goodput_gbps": round(received * 8 / seconds / 1e9, 4) if seconds > 0 else 0.0, "error": error}


def kernel_to_stack(lab: RunningLab, kernel: str, stack: str, port: int, total: int, *,
                    congestion: str | None = None) -> dict[str, Any]:
    """The kernel sends (with `congestion`, or the namespace's default), the stack receives and hashes:
    the stack's receive path."""
    address = lab.address(kernel)
    timeout = _timeout(total)
    listener = listening_socket(lab.node(kernel).namespace, (address, port), timeout=timeout,
                                congestion=congestion)
    serving = BackgroundCall(serve_source_once, listener, total)
    serving.start()
    try:
        with lab.stack(stack) as control:
            answer = control.connect(address, port, send=0, recv="eof", timeout=timeout)
        sent: Transfer | None = None
        try:
            sent = serving.join_result(timeout)
        except (OSError, TimeoutError) as error:
            answer.setdefault("error", f"kernel sender: {error}")
    finally:
        listener.close()
    return _figures(int(answer.get("received") or 0), str(answer.get("received_sha256") or ""),
                    float(answer.get("seconds") or 0.0), sent.sent if sent else None, answer.get("error"))


def stack_to_kernel(lab: RunningLab, kernel: str, stack: str, port: int, total: int) -> dict[str, Any]:
    """The stack sends, the kernel receives and hashes: the stack's send path."""
    address = lab.address(kernel)
    timeout = _timeout(total)
    listener = listening_socket(lab.node(kernel).namespace, (address, port), timeout=timeout)
    serving = BackgroundCall(serve_sink_once, listener)
    serving.start()
    try:
        with lab.stack(stack) as control:
            answer = control.connect(address, port, send=total, recv="eof", shutdown=True, timeout=timeout,
                                     digest_sent=False)  # the kernel receiver's digest checks it
        try:
            received: Transfer = serving.join_result(timeout)
        except (OSError, TimeoutError) as error:
            return _figures(0, "", 0.0, answer.get("sent"), f"kernel receiver: {error}")
    finally:
        listener.close()
    return _figures(received.received, received.received_sha256, received.seconds, answer.get("sent"),
                    answer.get("error"))


def scratch_lab_name(lab: str) -> str:
    name = derived_lab_name(lab, "k")
    if lab_name_problem(name):
        raise ExperimentError(f"cannot derive a scratch lab name from {lab!r}")
    return name


@contextmanager
def kernel_pair(lab: RunningLab) -> Iterator[LabPlan]:
    """A scratch lab `<lab>k` of two kernel nodes n1, n2 on one veth link of the lab's MTU."""
    document = chain_document(2, scratch_lab_name(lab.name))
    document["links"][0]["mtu"] = lab.plan.links[0].mtu if lab.plan.links else 1500  # type: ignore[index]
    plan = plan_from_data(document)
    builder.up(plan, root=lab.root)
    try:
        yield plan
    finally:
        builder.down(plan.name, root=lab.root)


def kernel_transfer(pair: LabPlan, total: int, *, verify: bool = True, port: int = 5201,
                    congestion: str | None = None) -> dict[str, Any]:
    """n1 sends `total` bytes of the pattern to n2 (kernel sockets on both ends; the sender with
    `congestion`, or the namespace's default); with `verify` n2 hashes what it receives, as the
    receiving end of every stack transfer does."""
    sender, receiver = pair.node("n1"), pair.node("n2")
    address = str(receiver.interfaces[0].address.ip)
    timeout = _timeout(total)
    listener = listening_socket(receiver.namespace, (address, port), timeout=timeout)
    serving = BackgroundCall(serve_sink_once, listener, verify)
    serving.start()
    client = namespace_socket(sender.namespace, congestion=congestion)
    try:
        client.settimeout(timeout)
        client.connect((address, port))
        sent = send_pattern(client, total, verify=False)  # the receiver's digest checks it
        received: Transfer = serving.join_result(timeout)
    finally:
        client.close()
        listener.close()
    return _figures(received.received, received.received_sha256, received.seconds, sent.sent)


def kernel_to_kernel(lab: RunningLab, total: int) -> dict[str, Any]:
    """The same transfer between two kernel sockets in a scratch lab `<lab>k` (veth, same MTU)."""
    with kernel_pair(lab) as pair:
        return kernel_transfer(pair, total)


def _transfer_check(label: str, figures: dict[str, Any], total: int, expected: str) -> Check:
    passed = figures["received"] == total and figures["sha256"] == expected and not figures["error"]
    detail = (f"{figures['received']}/{total} B in {figures['seconds']:.3f} s "
              f"({figures['goodput_gbps']:.3f} Gbit/s), SHA-256 {figures['sha256'][:16] or 'none'}"
              + (" = expected" if figures["sha256"] == expected else f" != expected {expected[:16]}"))
    if figures["error"]:
        detail += f"; error {figures['error']}"
    return Check(f"{label}: {total} B, SHA-256 exact", passed, detail)
