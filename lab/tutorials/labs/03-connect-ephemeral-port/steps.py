"""Lab 3, connect and the ephemeral port: what connect() chooses, what its SYN offers, how it waits.

1. Two connects each way: the kernel's from h1 to the stack's echo port, the stack's from s1 to a
   kernel listener. Each gets an ephemeral port from its range (Linux: net.ipv4.ip_local_port_range;
   the stack: RFC 6056's double-hash choice in ephemeral_low..ephemeral_high), and each goes through
   SYN_SENT (Linux's inet_sock_set_state tracepoint, the stack's trace). Both ends are captured.
2. The SYNs read back from the captures: MSS, window scale, SACK permitted, timestamps.
3. A connect to an address that never answers, both sides at once: SYNs at about 0, 1, 3 and 7 s
   (the RTO doubles: 1, 2, 4 s apart); the connect is cut after 8 s.
4. A connect to a closed port, both ways: a RST comes back and connect() fails with ECONNREFUSED.
"""

from __future__ import annotations

import errno
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

from lab.experiments.stack_answers import connection_trace, endpoint, trace_cursor
from lab.experiments.timeout import LINEAR_TIMEOUTS_SYSCTL, unused_addresses
from lab.kernel.silent import silent_address, silent_neighbour
from lab.kernel.sockets import listening_socket, namespace_socket
from lab.kernel.sysctls import read_sysctl, swap_sysctl
from lab.kernel.tracepoints import TraceEvent, optional_kernel_trace, state_sequence, traceable_port
from lab.kernel.transfers import BackgroundCall
from lab.tools.capture import capturing
from lab.tutorials import Session, Step
from lab.tutorials.packets import syn_options, tcp_segments

KERNEL_PORT = 5400
SILENT_PORT_STACK = 5401  # the stack's connect is read from its own trace; Linux's port is drawn per run
CLOSED_PORT = 5403
CUT_AFTER = 8.0  # seconds: SYNs at 0, 1, 3, 7 s have all left
EXPECTED_GAPS = [1.0, 2.0, 4.0]
TOLERANCE = 0.2


def port_range(text: str | None) -> tuple[int, int]:
    low, high = (text or "32768 60999").split()
    return int(low), int(high)


def kernel_connects(session: Session, count: int, port: int) -> list[dict[str, Any]]:
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    found = []
    for _ in range(count):
        client = lab.kernel_socket(kernel)
        client.settimeout(5.0)
        client.connect((lab.address(stack_node), port))
        local = client.getsockname()
        found.append({"socket": client, "local": local})
    return found


def stack_connects(session: Session, count: int) -> list[dict[str, Any]]:
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    answers = []
    with lab.stack(stack_node) as control:
        for _ in range(count):
            answers.append(control.connect(lab.address(kernel), KERNEL_PORT, timeout=5.0))
    return answers


def kernel_state_sequences(events: list[TraceEvent], address: str, ports: list[int],
                           remote: tuple[str, int]) -> list[list[str]]:
    """Each kernel client's states, for clients that connected one after the other.

    tcp_v4_connect sets SYN_SENT *before* inet_hash_connect picks the port, so the tracepoint reports
    that first transition with sport 0; the n-th such event belongs to the n-th connect."""
    changes = [e for e in events if e.name == "inet_sock_set_state"]
    unported = [e for e in changes if e.ports[0] == 0 and e.fields.get("saddr") == address
                and (e.fields.get("daddr"), e.ports[1]) == remote]
    sequences = []
    for index, port in enumerate(ports):
        own = [e for e in changes if e.ports[0] == port and e.fields.get("saddr") == address]
        sequences.append(state_sequence(unported[index:index + 1] + own))
    return sequences


def ephemeral_ports(session: Session) -> None:
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    namespace = lab.node(kernel).namespace
    # The stack's echo listener for the kernel's connects, on a port of this run's own: the tracepoint's
    # CLOSE -> SYN_SENT carries no source port yet, only the destination to tell connections apart.
    echo_port = traceable_port()
    kernel_range = port_range(read_sysctl(namespace, "net.ipv4.ip_local_port_range"))
    with lab.stack(stack_node) as control:
        config = control.config().get("tcp", {})
        cursor = trace_cursor(control)
    stack_range = (int(config.get("ephemeral_low", 32768)), int(config.get("ephemeral_high", 60999)))
    session.say(f"Linux picks from net.ipv4.ip_local_port_range = {kernel_range[0]}-{kernel_range[1]} "
                f"(inet_hash_connect); the stack from {stack_range[0]}-{stack_range[1]}, by RFC 6056's "
                "double hash of the 4-tuple with a secret, then the next free port.")
    h1_pcap, s1_pcap = session.path("connect-h1.pcap"), session.path("connect-s1.pcap")
    listener = listening_socket(namespace, (lab.address(kernel), KERNEL_PORT), 8)
    with lab.stack(stack_node) as control:
        control.listen(echo_port, app="echo")
    try:
        with optional_kernel_trace(lab.name, (echo_port,)) as (trace, unavailable), \
                capturing(lab, kernel, h1_pcap, bpf_filter="tcp"), \
                capturing(lab, stack_node, s1_pcap, bpf_filter="tcp"):
            kernel_side = kernel_connects(session, 2, echo_port)
            stack_side = stack_connects(session, 2)
            for entry in kernel_side:
                entry["socket"].close()  # the kernel closes first: FIN_WAIT1, FIN_WAIT2, TIME_WAIT
            time.sleep(0.2)  # the last ACKs and FINs reach both captures
            events = trace.events() if trace else []
    finally:
        listener.close()
        with lab.stack(stack_node) as control:
            control.close_listener(echo_port)
    session.artifact("pcap", h1_pcap)
    session.artifact("pcap", s1_pcap)
    kernel_ports = [entry["local"][1] for entry in kernel_side]
    stack_ports = [endpoint(answer, "local")[1] for answer in stack_side if answer.get("local")]
    with lab.stack(stack_node) as control:
        stack_events = control.trace(since=cursor).get("events", [])
    kernel_states = kernel_state_sequences(events, lab.address(kernel), kernel_ports,
                                           (lab.address(stack_node), echo_port))
    for port, states in zip(kernel_ports, kernel_states, strict=True):
        session.states("kernel (h1)", f"{lab.address(kernel)}:{port} -> :{echo_port}", states)
    stack_states = []
    for port in stack_ports:
        mine = connection_trace(stack_events, local=(lab.address(stack_node), port))
        states = [e.get("newstate") for e in mine if e.get("name") == "inet_sock_set_state"]
        stack_states.append(states)
        session.states("stack (s1)", f"{lab.address(stack_node)}:{port} -> :{KERNEL_PORT}",
                       ["CLOSE", *states])
    session.say(f"Linux chose ports {kernel_ports}; the stack chose {stack_ports}. (Linux's tracepoint "
                "reports "
                "CLOSE -> SYN_SENT with source port 0: tcp_v4_connect enters SYN_SENT before "
                "inet_hash_connect has chosen the port.)")
    session.metric("ephemeral", {"kernel_range": kernel_range, "stack_range": stack_range,
                                 "kernel_ports": kernel_ports, "stack_ports": stack_ports,
                                 "kernel_states": kernel_states, "stack_states": stack_states,
                                 "captures": [str(h1_pcap), str(s1_pcap)]})
    sides = (("kernel", kernel_ports, kernel_range), ("stack", stack_ports, stack_range))
    for side, ports, (low, high) in sides:
        session.check(f"{side}: ephemeral ports in range and different",
                      len(ports) == 2 and all(low <= p <= high for p in ports) and ports[0] != ports[1],
                      f"ports {ports}, range {low}-{high}")
    session.check("stack: connect went through SYN_SENT",
                  bool(stack_states) and all(s[:2] == ["SYN_SENT", "ESTABLISHED"] for s in stack_states),
                  f"states {stack_states}")
    if trace:
        session.check("kernel: connect went through SYN_SENT",
                      bool(kernel_states)
                      and all(s[1:3] == ["SYN_SENT", "ESTABLISHED"] for s in kernel_states),
                      f"states {kernel_states} (tcp tracepoint inet_sock_set_state)")
    else:
        session.say(f"(Linux's states not traced: {unavailable})")


def syn_offers(session: Session) -> None:
    lab = session.lab
    kernel = lab.first("kernel")
    expected_mss = lab.node(kernel).interfaces[0].mtu - 40  # IPv4 and TCP headers without options
    seen = session.metrics.get("ephemeral", {})
    found: dict[str, dict[str, Any]] = {}
    for capture in seen.get("captures", []):
        for captured in tcp_segments(Path(capture)):
            if not captured.is_syn:
                continue
            who = "kernel" if captured.src[0] == lab.address(kernel) else "stack"
            found.setdefault(f"{who} SYN in {Path(capture).stem}", syn_options(captured.segment))
    for name, options in sorted(found.items()):
        session.say(f"{name}: MSS {options['mss']}, window scale {options['wscale']}, SACK permitted "
                    f"{options['sack_permitted']}, timestamps {options['timestamps']}, "
                    f"window {options['window']}")
    session.metric("syn_options", found)
    for who in ("kernel", "stack"):
        offers = [o for name, o in found.items() if name.startswith(who)]
        session.check(f"{who}: its SYN offers MSS, window scale, SACK and timestamps (both captures)",
                      len(offers) == 2 and all(o["mss"] == expected_mss and o["wscale"] is not None
                                               and o["sack_permitted"] and o["timestamps"] for o in offers),
                      "; ".join(f"{k}: {v}" for k, v in found.items() if k.startswith(who))
                      + f" (MSS expected {expected_mss})" if offers else "no SYN captured")


def kernel_silent_connect(namespace: str, destination: tuple[str, int]) -> tuple[float, str]:
    """A kernel connect that waits at most CUT_AFTER seconds: (when it began, how it ended)."""
    client = namespace_socket(namespace)
    client.settimeout(CUT_AFTER)
    started = time.monotonic()
    try:
        client.connect(destination)
        outcome = "connected"
    except TimeoutError:
        outcome = f"cut after {CUT_AFTER:g} s"
    except OSError as error:
        outcome = errno.errorcode.get(error.errno or 0, str(error))
    finally:
        client.close()
    return started, outcome


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in pairwise(times)]


def backoff_check(session: Session, side: str, intervals: list[float]) -> None:
    passed = len(intervals) >= 3 and all(abs(got - want) <= TOLERANCE * want
                                         for got, want in zip(intervals, EXPECTED_GAPS, strict=False))
    session.check(f"{side}: SYN retransmissions about 1, 2, 4 s apart", passed,
                  f"gaps {intervals} s, expected {EXPECTED_GAPS} s ±{TOLERANCE:.0%}")


def silent_peer(session: Session) -> None:
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    plan = lab.node(kernel)
    iface = plan.interfaces[0]
    quiet_for_stack, quiet_for_kernel = unused_addresses(lab, iface.address, 2)
    silent_port = traceable_port()  # tcp_retransmit_skb is machine-wide: this run's own destination port
    session.say(f"Both connect to an address that never answers ({quiet_for_stack} for the stack, "
                f"{quiet_for_kernel} for Linux): the SYN is resent each time the retransmission timer "
                f"fires (tcp_retransmit_timer), and the timer doubles. Cut after {CUT_AFTER:g} s.")
    previous = swap_sysctl(plan.namespace, LINEAR_TIMEOUTS_SYSCTL, "0")
    try:
        with optional_kernel_trace(lab.name, (silent_port,)) as (trace, unavailable), \
                silent_address(plan.namespace, iface.name, quiet_for_stack), \
                silent_neighbour(plan.namespace, iface.name, quiet_for_kernel), \
                lab.stack(stack_node, timeout=CUT_AFTER + 20) as control:
            cursor = trace_cursor(control)
            kernel_side = BackgroundCall(kernel_silent_connect, plan.namespace,
                                         (quiet_for_kernel, silent_port))
            kernel_side.start()
            answer = control.connect(quiet_for_stack, SILENT_PORT_STACK, timeout=CUT_AFTER)
            kernel_started, kernel_outcome = kernel_side.join_result(CUT_AFTER + 10)
            events = trace.events() if trace else []
            stack_events = control.trace(since=cursor).get("events", [])
    finally:
        if previous is not None:
            swap_sysctl(plan.namespace, LINEAR_TIMEOUTS_SYSCTL, previous)
    mine = connection_trace(stack_events, remote=(quiet_for_stack, SILENT_PORT_STACK))
    stack_times = [e["time"] for e in mine if e.get("name") == "inet_sock_set_state"
                   and e.get("newstate") == "SYN_SENT"][:1]
    stack_times += [e["time"] for e in mine if e.get("name") == "tcp_retransmit_skb"]
    stack_gaps = gaps(stack_times)
    kernel_times = [kernel_started] + [e.time for e in events if e.name == "tcp_retransmit_skb"
                                       and e.fields.get("daddr") == quiet_for_kernel]
    kernel_gaps = gaps(kernel_times)
    session.say(f"Stack: SYN_SENT, then SYNs {stack_gaps} s apart; connect ended with "
                f"{answer.get('error') or 'a connection'}.")
    session.say(f"Linux: SYNs {kernel_gaps} s apart (tcp:tcp_retransmit_skb); connect {kernel_outcome}."
                if trace else f"Linux: {kernel_outcome} (tracepoints unavailable: {unavailable})")
    session.metric("syn_backoff", {"stack_gaps": stack_gaps, "kernel_gaps": kernel_gaps,
                                   "stack_outcome": answer.get("error"), "kernel_outcome": kernel_outcome,
                                   "kernel_syn_linear_timeouts_was": previous})
    backoff_check(session, "stack", stack_gaps)
    if trace:
        backoff_check(session, "kernel", kernel_gaps)


def refused(session: Session) -> None:
    lab = session.lab
    kernel, stack_node = lab.kernel_and_stack()
    client = lab.kernel_socket(kernel)
    client.settimeout(5.0)
    try:
        client.connect((lab.address(stack_node), CLOSED_PORT))
        kernel_outcome = "connected"
    except OSError as error:
        kernel_outcome = errno.errorcode.get(error.errno or 0, str(error))
    finally:
        client.close()
    with lab.stack(stack_node) as control:
        answer = control.connect(lab.address(kernel), CLOSED_PORT, timeout=5.0)
    stack_outcome = answer.get("error") or "connected"
    session.say(f"Nothing listens on port {CLOSED_PORT}: the SYN is answered with a RST, and connect() "
                f"fails at once. Linux's client: {kernel_outcome}; the stack's: {stack_outcome}.")
    session.metric("refused", {"kernel": kernel_outcome, "stack": stack_outcome})
    session.check("kernel client: ECONNREFUSED from a closed stack port", kernel_outcome == "ECONNREFUSED",
                  kernel_outcome)
    session.check("stack client: ECONNREFUSED from a closed Linux port", stack_outcome == "ECONNREFUSED",
                  stack_outcome)


STEPS = [
    Step("connect() picks an ephemeral port and enters SYN_SENT", ephemeral_ports),
    Step("What each SYN offers (tcp_connect_init's choices)", syn_offers),
    Step("A silent peer: the SYN is retransmitted with backoff", silent_peer),
    Step("A closed port: RST and ECONNREFUSED", refused),
]
