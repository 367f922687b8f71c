"""`handshake`: the three-way handshake both ways, and what each side believes it negotiated.

Direction 1, a kernel client connects to a stack listener (app echo); direction 2, the stack
connects to a kernel listener. Each exchanges a few bytes and closes. Reported per direction:

- the state sequence each side went through: the stack's from its trace ring, the kernel's
  from the `sock:inet_sock_set_state` tracepoint (or, without tracefs, from polling TCP_INFO);
- the options as each side sees them: the kernel through TCP_INFO (options, snd/rcv wscale,
  snd_mss), the stack through its `ss` snapshot. Window scale must mirror (the kernel's
  snd_wscale is the stack's rcv_wscale and back), SACK and timestamps must agree, and the
  sending MSS must be equal (or differ by the 12 bytes of the timestamp option when one side
  counts it in and the other does not).
"""

from __future__ import annotations

import socket
import time
from typing import Any, ClassVar

from lab.experiments.base import Experiment, Options
from lab.experiments.results import Check, ExperimentResult
from lab.experiments.running import RunningLab
from lab.experiments.stack_answers import (
    connection_trace,
    find_connection,
    snapshot_wscale,
    stack_state_sequence,
    trace_cursor,
)
from lab.kernel.sockets import StatePoller, tcp_info
from lab.kernel.tracepoints import KernelTrace, connection_events, optional_kernel_trace, state_sequence
from lab.kernel.transfers import BackgroundCall

SETTLE_SECONDS = 0.3  # after the last close: FINs and ACKs cross, trace rings catch up
PAYLOAD = b"nslab handshake\n"
TIMESTAMP_OPTION_BYTES = 12


class HandshakeExperiment(Experiment):
    summary = "three-way handshake both ways: state sequences and negotiated options on both sides"
    options: ClassVar[Options] = {
        "stack_port": (7100, "port of the stack's listener (kernel client -> stack)"),
        "kernel_port": (7101, "port of the kernel's listener (stack client -> kernel)"),
        "timeout": (5.0, "seconds allowed for each connection"),
    }

    def run(self, lab: RunningLab, options: dict[str, Any]) -> ExperimentResult:
        kernel, stack = lab.kernel_and_stack()
        checks: list[Check] = []
        metrics: dict[str, Any] = {}
        ports = (options["stack_port"], options["kernel_port"])
        with optional_kernel_trace(lab.name, ports) as (trace, _):
            metrics["kernel_states_from"] = ("tracepoint" if trace
                                             else "TCP_INFO polling (tracefs unavailable)")
            checks += self._kernel_to_stack(lab, kernel, stack, options, trace, metrics)
            checks += self._stack_to_kernel(lab, kernel, stack, options, trace, metrics)
        return ExperimentResult.from_checks(self.name, checks, metrics)

    # --- kernel client -> stack server ---------------------------------------------------------

    def _kernel_to_stack(self, lab: RunningLab, kernel: str, stack: str, options: dict[str, Any],
                         trace: KernelTrace | None, metrics: dict[str, Any]) -> list[Check]:
        port, timeout = options["stack_port"], options["timeout"]
        server = (lab.address(stack), port)
        with lab.stack(stack) as control:
            control.listen(port, "echo")
            cursor = trace_cursor(control)
            client = lab.kernel_socket(kernel)
            poller = None if trace else StatePoller(client)
            try:
                client.settimeout(timeout)
                if poller:
                    poller.start()
                started = time.perf_counter()
                client.connect(server)
                connect_seconds = time.perf_counter() - started
                local = client.getsockname()
                client.sendall(PAYLOAD)
                echoed = _recv_exactly(client, len(PAYLOAD))
                kernel_view = tcp_info(client)
                stack_view = find_connection(control.ss()["connections"], remote=local)
                client.shutdown(socket.SHUT_WR)
                while client.recv(4096):  # the echo app closes after our FIN
                    pass
            finally:
                client.close()
            time.sleep(SETTLE_SECONDS)
            events = control.trace(since=cursor).get("events", [])
            control.close_listener(port)
        stack_states = stack_state_sequence(connection_trace(events, local=server, remote=local))
        kernel_states = (state_sequence(connection_events(trace.events(), local, server)) if trace
                         else poller.finish() if poller else [])
        metrics["kernel_to_stack"] = {
            "connect_seconds": round(connect_seconds, 6), "kernel_states": kernel_states,
            "stack_states": stack_states, "kernel_tcp_info": _options_of(kernel_view),
            "stack_snapshot": stack_view,
        }
        return [
            Check("kernel->stack: connect and echo", echoed == PAYLOAD,
                  f"connected in {connect_seconds * 1000:.2f} ms; echoed {len(echoed)}/{len(PAYLOAD)} B"),
            _sequence_check("kernel->stack: kernel client states", kernel_states,
                            ["SYN_SENT", "ESTABLISHED"] if trace else ["ESTABLISHED"],  # SYN_SENT lasts 1 RTT
                            closing=["FIN_WAIT1"], polled=trace is None),
            _sequence_check("kernel->stack: stack server states", stack_states,
                            ["SYN_RECV", "ESTABLISHED"], closing=["CLOSE_WAIT", "LAST_ACK"]),
            *_option_checks("kernel->stack", kernel_view, stack_view),
        ]

    # --- stack client -> kernel server ---------------------------------------------------------

    def _stack_to_kernel(self, lab: RunningLab, kernel: str, stack: str, options: dict[str, Any],
                         trace: KernelTrace | None, metrics: dict[str, Any]) -> list[Check]:
        port, timeout = options["kernel_port"], options["timeout"]
        server = (lab.address(kernel), port)
        listener = lab.kernel_socket(kernel)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(server)
        listener.listen(8)
        listener.settimeout(timeout)
        serving = BackgroundCall(_serve_echo_once, listener)
        serving.start()
        try:
            with lab.stack(stack) as control:
                cursor = trace_cursor(control)
                answer = control.connect(server[0], port, send=len(PAYLOAD), recv="eof", shutdown=True,
                                         timeout=timeout)
                time.sleep(SETTLE_SECONDS)
                events = control.trace(since=cursor).get("events", [])
            kernel_view, peer, server_states = serving.join_result(timeout + 5)
        finally:
            listener.close()
        if answer.get("error"):
            return [Check("stack->kernel: connect and echo", False,
                          f"the stack's connect failed: {answer['error']} {answer.get('message', '')}")]
        local = tuple(answer["local"].rsplit(":", 1))
        stack_local = (local[0], int(local[1]))
        stack_states = stack_state_sequence(connection_trace(events, local=stack_local, remote=server))
        if not stack_states and answer.get("states"):
            stack_states = [str(state) for _, state in answer["states"]]
        kernel_states = (state_sequence(connection_events(trace.events(), server, peer)) if trace
                         else server_states)
        stack_view = answer.get("snapshot") or {}
        metrics["stack_to_kernel"] = {
            "connect_seconds": answer.get("connect_seconds"), "kernel_states": kernel_states,
            "stack_states": stack_states, "kernel_tcp_info": _options_of(kernel_view),
            "stack_snapshot": stack_view,
        }
        return [
            Check("stack->kernel: connect and echo",
                  answer.get("received") == len(PAYLOAD) and answer.get("sent") == len(PAYLOAD),
                  f"connected in {answer.get('connect_seconds', 0) * 1000:.2f} ms; "
                  f"sent {answer.get('sent')}, echoed {answer.get('received')} of {len(PAYLOAD)} B"),
            _sequence_check("stack->kernel: stack client states", stack_states,
                            ["SYN_SENT", "ESTABLISHED"], closing=["FIN_WAIT1"]),
            _sequence_check("stack->kernel: kernel server states", kernel_states,
                            ["SYN_RECV", "ESTABLISHED"] if trace else [],
                            closing=["CLOSE_WAIT", "LAST_ACK"], polled=trace is None,
                            accepted=answer.get("received") == len(PAYLOAD)),
            *_option_checks("stack->kernel", kernel_view, stack_view),
        ]


def _serve_echo_once(listener: socket.socket) -> tuple[dict[str, Any], tuple[str, int], list[str]]:
    """Accept one connection, echo until EOF, close; TCP_INFO after the echo, states seen by polling."""
    conn, peer = listener.accept()
    poller = StatePoller(conn)
    poller.start()
    with conn:
        conn.settimeout(listener.gettimeout())
        received = bytearray()
        while chunk := conn.recv(4096):
            received += chunk
            conn.sendall(chunk)
        view = tcp_info(conn)
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.05)  # the stack's last ACK: lets LAST_ACK -> CLOSE be seen
    return view, peer, poller.finish()


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _sequence_check(name: str, states: list[str], handshake: list[str], closing: list[str],
                    polled: bool = False, accepted: bool = True) -> Check:
    """The handshake states, then the closing states, must appear in this order. When the states were
    polled (no tracefs), states shorter than the polling interval may be missed, so only the handshake
    is required of them; an accepted socket is polled only from accept() on (the handshake is over by
    then: `accepted` stands for it)."""
    expected = handshake if polled else handshake + closing
    position = 0
    for state in states:
        if position < len(expected) and state == expected[position]:
            position += 1
    passed = position == len(expected) and accepted
    seen = " -> ".join(states) if states else "no state changes recorded"
    note = ""
    if polled:
        note = " (polled from accept(), which returns only completed handshakes)" if not handshake \
            else " (polled: closing states not required)"
    missing = "" if passed else f" (expected {' -> '.join(expected)} in order)"
    return Check(name, passed, seen + note + missing)


def _options_of(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("state", "options", "snd_wscale", "rcv_wscale", "snd_mss", "rcv_mss", "advmss", "pmtu")
    return {key: info.get(key) for key in keys}


def _option_checks(label: str, kernel: dict[str, Any], stack: dict[str, Any] | None) -> list[Check]:
    if not stack:
        return [Check(f"{label}: stack snapshot", False, "the stack's ss had no such connection")]
    snd, rcv = snapshot_wscale(stack)
    opts = kernel["options"]
    k_ws = (kernel["snd_wscale"], kernel["rcv_wscale"]) if opts["wscale"] else (0, 0)
    mss_gap = abs(kernel["snd_mss"] - int(stack.get("mss", 0)))
    return [
        Check(f"{label}: window scale mirrors", k_ws == (rcv, snd),
              f"kernel snd/rcv wscale {k_ws[0]}/{k_ws[1]}, stack snd/rcv {snd}/{rcv}"),
        Check(f"{label}: SACK agrees", opts["sack"] == bool(stack.get("sack")),
              f"kernel {opts['sack']}, stack {bool(stack.get('sack'))}"),
        Check(f"{label}: timestamps agree", opts["timestamps"] == bool(stack.get("timestamps")),
              f"kernel {opts['timestamps']}, stack {bool(stack.get('timestamps'))}"),
        Check(f"{label}: MSS agrees", mss_gap in (0, TIMESTAMP_OPTION_BYTES),
              f"kernel snd_mss {kernel['snd_mss']} (advertises {kernel['advmss']}), "
              f"stack mss {stack.get('mss')}"),
    ]
