"""`refused`: connect to a closed port, both ways; the RST comes back and connect says ECONNREFUSED.

- stack -> kernel: nothing listens on the kernel node's port; the kernel answers the SYN with an
  RST (seen by the `tcp:tcp_send_reset` tracepoint), the stack's connect fails with ECONNREFUSED;
- kernel -> stack: nothing listens on the stack's port; the stack answers with an RST (its trace
  ring's `tcp_send_reset`), the kernel socket's connect raises ECONNREFUSED.

The refusal must come in about one round trip, not after a timeout: both times are reported.
"""

from __future__ import annotations

import errno
import time
from typing import Any, ClassVar

from lab.experiments.base import Experiment, ExperimentError, Options
from lab.experiments.results import Check, ExperimentResult
from lab.experiments.running import RunningLab
from lab.experiments.stack_answers import connection_trace, endpoint, trace_cursor
from lab.kernel.tracepoints import optional_kernel_trace

QUICK_SECONDS = 0.5  # an RST answer arrives in well under this; a timeout takes seconds


class RefusedExperiment(Experiment):
    summary = "connect to a closed port both ways: RST and ECONNREFUSED on each side"
    options: ClassVar[Options] = {
        "stack_port": (7401, "a port nothing listens on at the stack"),
        "kernel_port": (7402, "a port nothing listens on at the kernel node"),
    }

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        kernel, stack = lab.kernel_and_stack()
        stack_port, kernel_port = options["stack_port"], options["kernel_port"]
        listening = {app.port for app in lab.node(stack).apps}
        if stack_port in listening:
            raise ExperimentError(f"experiment refused: stack_port {stack_port} has an app on node {stack}")
        with optional_kernel_trace(lab.name, (stack_port, kernel_port)) as (trace, _), \
                lab.stack(stack) as control:
            cursor = trace_cursor(control)
            started = time.monotonic()
            answer = control.connect(lab.address(kernel), kernel_port, timeout=5.0)
            stack_seconds = time.monotonic() - started
            kernel_error, kernel_seconds = _kernel_connect(lab, kernel, (lab.address(stack), stack_port))
            time.sleep(0.1)
            events = control.trace(since=cursor).get("events", [])
            kernel_events = trace.events() if trace else []
        stack_address, kernel_address = lab.address(stack), lab.address(kernel)
        stack_resets_sent = [e for e in events if e.get("name") == "tcp_send_reset"
                             and endpoint(e, "local") == (stack_address, stack_port)]
        stack_resets_received = [e for e in connection_trace(events, remote=(kernel_address, kernel_port))
                                 if e.get("name") == "tcp_receive_reset"]
        kernel_resets_sent = [e for e in kernel_events if e.name == "tcp_send_reset"
                              and e.fields.get("saddr") == kernel_address
                              and e.fields.get("sport") == str(kernel_port)]
        stack_error = answer.get("error")
        metrics = {
            "stack_to_kernel": {"error": stack_error, "seconds": round(stack_seconds, 4),
                                "kernel_rst_traced": len(kernel_resets_sent) if trace else None,
                                "stack_receive_reset_traced": len(stack_resets_received)},
            "kernel_to_stack": {"error": kernel_error, "seconds": round(kernel_seconds, 4),
                                "stack_rst_traced": len(stack_resets_sent)},
        }
        checks = [
            Check("stack->kernel: ECONNREFUSED", stack_error == "ECONNREFUSED",
                  f"stack connect to {kernel_address}:{kernel_port}: {stack_error} in "
                  f"{stack_seconds * 1000:.1f} ms"),
            Check("stack->kernel: refused at once", stack_seconds < QUICK_SECONDS,
                  f"{stack_seconds * 1000:.1f} ms (< {QUICK_SECONDS * 1000:.0f} ms: an RST, not a timeout)"),
            Check("kernel->stack: ECONNREFUSED", kernel_error == "ECONNREFUSED",
                  f"kernel connect to {stack_address}:{stack_port}: {kernel_error} in "
                  f"{kernel_seconds * 1000:.1f} ms"),
            Check("kernel->stack: refused at once", kernel_seconds < QUICK_SECONDS,
                  f"{kernel_seconds * 1000:.1f} ms"),
            Check("kernel->stack: the stack sent the RST", bool(stack_resets_sent),
                  f"{len(stack_resets_sent)} tcp_send_reset event(s) in the stack's trace"),
        ]
        if trace:
            checks.append(Check("stack->kernel: the kernel sent the RST", bool(kernel_resets_sent),
                                f"{len(kernel_resets_sent)} tcp_send_reset event(s) from {kernel_address}"))
        return ExperimentResult.from_checks(self.name, checks, metrics)


def _kernel_connect(lab: RunningLab, kernel: str, destination: tuple[str, int]) -> tuple[str | None, float]:
    sock = lab.kernel_socket(kernel)
    try:
        sock.settimeout(5.0)
        started = time.monotonic()
        try:
            sock.connect(destination)
            error = None
        except OSError as failure:
            error = errno.errorcode.get(failure.errno, str(failure)) if failure.errno else "timeout"
        return error, time.monotonic() - started
    finally:
        sock.close()
