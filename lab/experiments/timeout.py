"""`timeout`: connect to a silent address both ways; SYN retransmission times and ETIMEDOUT, compared.

Both clients run at once with the same small retry budget (the stack's `syn_retries` through
`config`, the kernel socket's TCP_SYNCNT), so the experiment takes one backoff period, about
15 s for 3 retries: SYNs at 0, 1, 3, 7 s and the give-up at 15 s (initial RTO 1 s, doubled each
time). The kernel's `net.ipv4.tcp_syn_linear_timeouts` (Linux 6.5+: the first SYN retries
without backoff) is set to 0 in the kernel node's namespace for the run and restored afterwards,
so both sides follow RFC 6298's doubling and can be compared interval by interval.

Silent destinations (see `lab.kernel.silent`): for the kernel client an unused address with a static
neighbour entry; for the stack client an address the kernel node answers ARP for and whose IPv4
frames it drops at ingress. Neither side ever sees an RST or an ICMP error.
"""

from __future__ import annotations

import errno
import socket
import time
from ipaddress import IPv4Interface
from itertools import pairwise
from typing import Any, ClassVar

from lab.experiments.base import Experiment, ExperimentError, Options
from lab.experiments.results import Check, ExperimentResult
from lab.experiments.running import RunningLab
from lab.experiments.stack_answers import connection_trace, trace_cursor
from lab.kernel.silent import SilentSetupFailed, silent_address, silent_neighbour
from lab.kernel.sockets import StatePoller, namespace_socket
from lab.kernel.sysctls import swap_sysctl
from lab.kernel.tracepoints import optional_kernel_trace
from lab.kernel.transfers import BackgroundCall

LINEAR_TIMEOUTS_SYSCTL = "net.ipv4.tcp_syn_linear_timeouts"
INITIAL_RTO = 1.0  # RFC 6298 (and both stacks' default)
LINUX_SYN_RETRIES = 6


class TimeoutExperiment(Experiment):
    summary = "connect to a silent address both ways: SYN backoff times and ETIMEDOUT compared"
    options: ClassVar[Options] = {
        "syn_retries": (3, "SYN retransmissions before giving up (both sides); 3 takes ~15 s"),
        "tolerance": (0.2, "allowed relative deviation of each backoff interval"),
        "stack_port": (7300, "destination port of the stack's connect"),
        "kernel_port": (7301, "destination port of the kernel's connect"),
    }

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        retries = options["syn_retries"]
        if not 1 <= retries <= 5:
            raise ExperimentError(f"experiment timeout: option syn_retries: expected 1 to 5, got {retries}")
        kernel, stack = lab.kernel_and_stack()
        kernel_plan = lab.node(kernel)
        kernel_iface = kernel_plan.interfaces[0]
        quiet_for_stack, quiet_for_kernel = unused_addresses(lab, kernel_iface.address, 2)
        give_up = INITIAL_RTO * (2 ** (retries + 1) - 1)
        metrics: dict[str, Any] = {
            "syn_retries": retries, "expected_intervals": expected_intervals(retries),
            "stack_destination": quiet_for_stack, "kernel_destination": quiet_for_kernel,
        }
        with optional_kernel_trace(lab.name, (options["kernel_port"],)) as (trace, unavailable):
            metrics["kernel_times_from"] = ("tracepoint tcp:tcp_retransmit_skb" if trace
                                            else f"TCP_INFO polling ({unavailable})")
            previous_linear = swap_sysctl(kernel_plan.namespace, LINEAR_TIMEOUTS_SYSCTL, "0")
            try:
                with silent_address(kernel_plan.namespace, kernel_iface.name, quiet_for_stack), \
                        silent_neighbour(kernel_plan.namespace, kernel_iface.name, quiet_for_kernel):
                    kernel_side = BackgroundCall(_kernel_connect, kernel_plan.namespace,
                                                 (quiet_for_kernel, options["kernel_port"]), retries)
                    kernel_side.start()
                    stack_times, stack_error, stack_seconds = _stack_connect(
                        lab, stack, (quiet_for_stack, options["stack_port"]), retries, give_up)
                    kernel_error, kernel_seconds, poller, started = kernel_side.join_result(give_up + 20)
            except SilentSetupFailed as error:
                raise ExperimentError(f"experiment timeout: cannot make a silent address: {error}") from None
            finally:
                if previous_linear is not None:
                    swap_sysctl(kernel_plan.namespace, LINEAR_TIMEOUTS_SYSCTL, previous_linear)
                events = trace.events() if trace else []
        if trace:
            kernel_times = [started] + [e.time for e in events if e.name == "tcp_retransmit_skb"
                                        and e.fields.get("daddr") == quiet_for_kernel]
        else:
            kernel_times = [started, *poller.retransmission_times()]
        kernel_intervals = _intervals(kernel_times)
        stack_intervals = _intervals(stack_times)
        metrics.update({
            "kernel_intervals": kernel_intervals, "stack_intervals": stack_intervals,
            "kernel_seconds": round(kernel_seconds, 3), "stack_seconds": round(stack_seconds, 3),
            "kernel_error": kernel_error, "stack_error": stack_error,
            "kernel_syn_linear_timeouts_was": previous_linear,
        })
        tolerance = options["tolerance"]
        checks = [
            Check("kernel client: ETIMEDOUT", kernel_error == "ETIMEDOUT",
                  f"{kernel_error} after {kernel_seconds:.2f} s (expected ~{give_up:g} s)"),
            Check("stack client: ETIMEDOUT", stack_error == "ETIMEDOUT",
                  f"{stack_error} after {stack_seconds:.2f} s (expected ~{give_up:g} s)"),
            _pattern_check("kernel client: SYN backoff", kernel_intervals, retries, tolerance),
            _pattern_check("stack client: SYN backoff", stack_intervals, retries, tolerance),
            _compare_check(stack_intervals, kernel_intervals, tolerance),
        ]
        return ExperimentResult.from_checks(self.name, checks, metrics)


def expected_intervals(retries: int) -> list[float]:
    return [INITIAL_RTO * 2 ** i for i in range(retries)]


def unused_addresses(lab: RunningLab, interface: IPv4Interface, count: int) -> list[str]:
    """Addresses of the interface's subnet that no node of the lab uses, from the top down."""
    used = {str(i.address.ip) for n in lab.plan.nodes for i in n.interfaces}
    found: list[str] = []
    network = interface.network
    candidate = network.broadcast_address - 1
    while len(found) < count and candidate > network.network_address:
        if str(candidate) not in used:
            found.append(str(candidate))
        candidate -= 1
    if len(found) < count:
        raise ExperimentError(f"experiment timeout: subnet {network} has no {count} unused addresses")
    return found


def _kernel_connect(namespace: str, destination: tuple[str, int], retries: int
                    ) -> tuple[str | None, float, StatePoller, float]:
    """A kernel client with TCP_SYNCNT=retries connects; (errno name, seconds, poller, start time)."""
    sock = namespace_socket(namespace)
    poller = StatePoller(sock)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, retries)
        poller.start()
        started = time.monotonic()
        try:
            sock.connect(destination)  # blocking: the kernel's own give-up ends it
            error = None
        except OSError as failure:
            error = errno.errorcode.get(failure.errno or 0, str(failure))
        seconds = time.monotonic() - started
    finally:
        poller.finish()
        sock.close()
    return error, seconds, poller, started


def _stack_connect(lab: RunningLab, stack: str, destination: tuple[str, int], retries: int,
                   give_up: float) -> tuple[list[float], str | None, float]:
    """The stack connects with syn_retries=retries; (SYN times: first then retransmissions, error, s)."""
    with lab.stack(stack) as control:
        control.config(syn_retries=retries)
        try:
            cursor = trace_cursor(control)
            started = time.monotonic()
            answer = control.connect(destination[0], destination[1], timeout=give_up + 15)
            seconds = time.monotonic() - started
            events = control.trace(since=cursor).get("events", [])
        finally:
            control.config(syn_retries=LINUX_SYN_RETRIES)
    mine = connection_trace(events, remote=destination)
    syn_sent = [e["time"] for e in mine if e.get("name") == "inet_sock_set_state"
                and e.get("newstate") == "SYN_SENT"]
    retransmits = [e["time"] for e in mine if e.get("name") == "tcp_retransmit_skb"]
    first = syn_sent[:1]
    if not first and answer.get("states"):
        first = [float(answer["states"][0][0])]
    return first + retransmits, answer.get("error"), float(answer.get("seconds") or seconds)


def _intervals(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in pairwise(times)]


def _pattern_check(name: str, intervals: list[float], retries: int, tolerance: float) -> Check:
    expected = expected_intervals(retries)
    passed = len(intervals) == retries and all(
        abs(got - want) <= tolerance * want for got, want in zip(intervals, expected, strict=True))
    return Check(name, passed, f"intervals {intervals} s, expected {expected} s ±{tolerance:.0%}")


def _compare_check(stack: list[float], kernel: list[float], tolerance: float) -> Check:
    same_count = len(stack) == len(kernel) and bool(stack)
    close = same_count and all(abs(a - b) <= tolerance * max(a, b)
                               for a, b in zip(stack, kernel, strict=True))
    return Check("stack vs kernel: same backoff", close,
                 f"stack {stack} s, kernel {kernel} s" + ("" if close else " (differ)"))
